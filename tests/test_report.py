"""The HTML run report (gankit.report): its verdict never reassures falsely (gankit.doctor.verdict),
it is rendered from a Jinja2 template with autoescaping, cites works by name, and starts with a
command line that reproduces the run (gankit.reproduce)."""

import json
import re
import shlex

import pytest
import torch
from helpers import run_cli

from gankit.config import resolve_config
from gankit.doctor import analyse_run
from gankit.doctor.verdict import assess, assess_run
from gankit.report import build_report
from gankit.reproduce import reproduce_argv

cli = run_cli


def fake_run(path, *, d_acc, covered, assigned, recall, eval_results=None, n_logs=20,
             data="mnist5k", model="dcgan", loss="nonsaturating", d_real=8.0, d_fake=-8.0):
    """A run directory written by hand: config, run.json, metrics.jsonl, probes.jsonl and, when
    given, eval.json - the files the report reads."""
    path.mkdir(parents=True)
    cfg = resolve_config(model, {"data": {"name": data}, "loss": {"name": loss},
                                 "train": {"steps": n_logs * 50}}).to_dict()
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "run.json").write_text(json.dumps({
        "status": "finished", "step": n_logs * 50, "gankit": "test",
        "data_info": {"name": data, "n": 5000, "shape": [1, 28, 28], "num_classes": 10,
                      "is_image": True, "kind": "images"}}))
    with open(path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps({"step": 50 * i, "loss/D": 0.01, "loss/G": 7.0, "D/real": d_real,
                                "D/fake": d_fake, "D/acc": d_acc, "grad/G": 1.0,
                                "grad/D": 0.1, "it_s": 30.0, "time": 2.0 * i}) + "\n" for i in range(1, n_logs + 1))
    hist = [0] * 10
    for c in range(covered):
        hist[c] = 25
    with open(path / "probes.jsonl", "w") as f:
        f.writelines(json.dumps({"step": step, "doctor/div_ratio": 0.9, "doctor/classes": 10,
                                "doctor/hist": hist, "doctor/assigned_frac": assigned,
                                "doctor/covered": covered,
                                "doctor/lost": [str(c) for c in range(covered, 10)],
                                "doctor/precision": 0.5, "doctor/recall": recall}) + "\n" for step in range(250, n_logs * 50 + 1, 250))
    if eval_results is not None:
        (path / "eval.json").write_text(json.dumps({"results": eval_results, "protocol": {
            "n_fake": 2000, "n_real": 2000, "seed": 0}}))
    return path


def verdict_section(html: str) -> str:
    return re.search(r'<section id="verdict" class="verdict (\w+)">(.*?)</section>', html,
                     re.DOTALL).group(0)


def test_issue_example_is_not_reported_green(tmp_path):
    """The issue's run: D accuracy 1.0, 0 of 10 classes covered, recall 0. The doctor's rules
    name no failure mode (the class histogram is not assignable, the non-saturating loss keeps
    G's gradient alive), and the report used to say 'no failure mode detected' in green."""
    run = fake_run(tmp_path / "run", d_acc=1.0, covered=0, assigned=0.0, recall=0.0,
                   eval_results={"fid": 310.0, "precision": 0.0, "recall": 0.0})
    rows = analyse_run(run)["rows"]
    assert not [r for r in rows if r["severity"] in ("critical", "warning")]  # the doctor's gap
    html = build_report(run)
    sec = verdict_section(html)
    assert 'class="verdict critical"' in sec and "Samples not recognisable" in sec
    assert "0 of 10 classes covered" in sec and "recall 0.00" in sec
    assert "only 0% of the probe" in sec and "pinned at 1.00" in sec
    assert "No failure mode detected" not in html and 'class="ok"' not in html
    assert 'class="bad"' in html  # the diagnoses section points at the verdict, in red
    v = assess_run(run)
    assert v.level == "unrecognisable" and v.severity == "critical" and not v.ok


def test_green_only_when_the_evidence_supports_it(tmp_path):
    good = {"d_acc": 0.62, "covered": 10, "assigned": 0.9, "recall": 0.55, "d_real": 0.4, "d_fake": -0.3}
    run = fake_run(tmp_path / "good", **good, eval_results={"fid": 12.0, "recall": 0.5})
    html = build_report(run)
    sec = verdict_section(html)
    assert 'class="verdict ok"' in sec and "No failure mode detected" in sec
    assert "<li>" not in sec  # no reasons listed
    # the same run without any evaluation: red "insufficient evidence", naming what is missing
    bare = fake_run(tmp_path / "bare", **good)
    sec = verdict_section(build_report(bare))
    assert 'class="verdict critical"' in sec and "Insufficient evidence" in sec
    assert "no evaluation" in sec
    # too few log records
    short = fake_run(tmp_path / "short", **good, n_logs=2, eval_results={"fid": 12.0})
    v = assess_run(short)
    assert v.level == "insufficient" and any("only 2 log record" in r for r in v.reasons)


def test_assess_rules_one_by_one():
    logs = [{"step": 50 * i, "loss/D": 1.0, "D/acc": 0.6} for i in range(1, 11)]
    probe = {"step": 500, "doctor/classes": 10, "doctor/hist": [30] * 10,
             "doctor/assigned_frac": 0.9, "doctor/covered": 10, "doctor/lost": [],
             "doctor/recall": 0.5}
    ev = {"results": {"fid": 5.0}}
    base = {"logs": logs, "probes": [probe], "evals": [], "eval_json": ev, "best_json": None, "rows": []}
    assert assess(**base).ok
    # D pinned at 1: insufficient evidence even with recognisable samples
    pinned = [dict(r, **{"D/acc": 1.0}) for r in logs]
    v = assess(**{**base, "logs": pinned})
    assert v.level == "insufficient" and "pinned" in v.reasons[0]
    assert assess(**{**base, "logs": pinned}, adversarial=False).ok  # a VAE has no D
    # low classifier confidence alone
    v = assess(**{**base, "probes": [dict(probe, **{"doctor/assigned_frac": 0.1})]})
    assert v.level == "unrecognisable" and "10%" in v.reasons[0]
    # evaluation recall / coverage near 0, from eval.json or eval records
    assert assess(**{**base, "eval_json": {"results": {"recall": 0.01}}}).level == \
        "unrecognisable"
    assert assess(**{**base, "eval_json": None, "evals": [{"step": 9, "eval/coverage": 0.0}]}
                  ).level == "unrecognisable"
    # no probe at all; translators are never probed (their evaluation is the evidence)
    assert assess(**{**base, "probes": []}).level == "insufficient"
    assert assess(**{**base, "probes": []}, samples=False).ok
    assert assess(**{**base, "probes": [], "eval_json": None}, samples=False).level == \
        "insufficient"
    # a diagnosis wins over "ok"; amber when it is only a warning and the evidence is there
    v = assess(**{**base, "rows": [{"severity": "warning"}]})
    assert v.level == "diagnosed" and v.severity == "warning"
    assert assess(**{**base, "rows": [{"severity": "info"}]}).ok


def test_report_escapes_and_cites_works_by_name(tmp_path):
    """Autoescaping: a hostile data name cannot inject markup. The doctor's explanations
    (vanishing gradients under the saturating loss) cite authors and titles, not numbers."""
    run = fake_run(tmp_path / "run", d_acc=1.0, covered=10, assigned=0.9, recall=0.5,
                   d_real=9.0, d_fake=-9.0, loss="minimax", data="<script>alert(1)</script>",
                   eval_results={"fid": 40.0})
    html = build_report(run)
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "vanishing generator gradients" in html
    assert not re.search(r"\b(seed|deck)s? ?\d{3}|\b00\d/00\d\b", html, re.IGNORECASE)
    assert "Wenzel (2023)" in html and "Generative Adversarial Networks and Other Generative " \
        "Models" in html  # the sources section gives the full reference


def test_cli_doctor_says_insufficient_evidence(tmp_path, capsys):
    run = fake_run(tmp_path / "run", d_acc=1.0, covered=0, assigned=0.0, recall=0.0)
    assert cli("doctor", str(run)) == 0
    out = capsys.readouterr().out
    assert "Samples not recognisable" in out and "no failure mode detected" not in out


def test_reproduce_command_rebuilds_the_same_run(tmp_path, capsys):
    """The report's command line, run as printed (plus --out), resolves to the same config and,
    on CPU, trains bit-identical weights."""
    a = tmp_path / "a"
    assert cli("train", "dcgan", "--data", "digits", "--steps", "3", "--batch-size", "16",
               "--seed", "7", "--out", str(a), "--no-progress",
               "--set", "model.width=8", "--set", "optim.betas_g=[0.0,0.99]",
               "--set", "optim.lr_d=1e-05", "--set", "tricks.label_smoothing=0.1",
               "--set", "train.log_every=1", "--set", "train.doctor=false") == 0
    html = build_report(a)
    cmd = re.search(r'<pre class="cmd">(.*?)</pre>', html, re.DOTALL).group(1)
    import html as html_mod

    argv = shlex.split(html_mod.unescape(cmd))
    cfg = json.loads((a / "config.json").read_text())
    assert argv == reproduce_argv(cfg)
    assert argv[:3] == ["gankit", "train", "dcgan"] and "--seed" in argv
    assert argv[argv.index("--seed") + 1] == "7"
    assert "optim.lr_d=1e-05" in argv and "tricks.label_smoothing=0.1" in argv
    b = tmp_path / "b"
    assert cli(*argv[1:], "--out", str(b), "--no-progress") == 0
    assert json.loads((b / "config.json").read_text()) == cfg
    from safetensors.torch import load_file

    for f in sorted((a / "checkpoints").glob("step_*/*.safetensors")):
        other = load_file(b / "checkpoints" / f.parent.name / f.name)
        assert all(torch.equal(v, other[k]) for k, v in load_file(f).items()), f.name


def test_reproduce_quotes_values_the_parser_would_misread():
    cfg = resolve_config("dcgan", {"data": {"name": "my data/with space"},
                                   "tricks": {"diffaugment": "color,translation"},
                                   "train": {"device": "cpu"}}).to_dict()
    argv = reproduce_argv(cfg)
    from gankit.api import _layers

    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    flags = {"data": {"name": argv[argv.index("--data") + 1]},
             "train": {"steps": int(argv[argv.index("--steps") + 1]),
                       "batch_size": int(argv[argv.index("--batch-size") + 1]),
                       "seed": int(argv[argv.index("--seed") + 1])}}
    again = resolve_config("dcgan", *_layers(None, sets, flags)).to_dict()
    assert again == cfg


def test_custom_runs_say_they_cannot_be_reproduced_from_the_cli():
    from gankit.errors import ConfigError

    with pytest.raises(ConfigError, match="custom networks"):
        reproduce_argv({"model": {"name": "custom"}})


def test_every_doctor_text_gets_plain_citations():
    """What the doctor shows (explanations, remedies, sources) names works, not file numbers;
    diagnoses written by earlier versions (which cited numbers) are rewritten when shown."""
    from gankit.doctor.citations import plain_citations
    from gankit.doctor.rules import KNOWLEDGE

    numbered = re.compile(r"\b(seed|deck|chapter)s? ?\d{3}|\b00\d/00\d\b", re.IGNORECASE)
    texts = [t for v in KNOWLEDGE.values() for t in (v["explanation"], v["seed_ref"],
                                                      *v["remedies"])]
    for t in texts:
        assert not numbered.search(t), t
    old = ["Seed 002 §3.1: 'Mode collapse'", "deck 003 #9", "seed 000/001 Box 4", "seed 004 [1]"]
    for t in old:
        assert numbered.search(t) and not numbered.search(plain_citations(t)), t
    assert plain_citations("Box 4 (000/001)") == "Wenzel (2023), Box 4"
