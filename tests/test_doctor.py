"""The GAN doctor (gankit.doctor), its divergence rollback, and the HTML run report.

Trainings are short, on ring8 or digits with small networks and one thread (conftest.py). The
recipes were chosen so that each failure mode appears reliably with the fixed seed:

* vanishing gradients: the saturating minimax loss with a strong D (lr_d = 10 lr_g, 5 D steps
  per G step) on digits - D(x) -> 1 and D(G(z)) -> 0 within ~40 steps (seed 000/001 §3.4);
* mode collapse: the MLP GAN on ring8 without batch norm in G at lr 1e-3 collapses onto two or
  three of the eight modes within a few hundred steps (seed 002 §3.1);
* divergence: SGD at lr 1e3 gives NaN within a few steps.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from helpers import run_cli
from safetensors.torch import load_file

import gankit
from gankit.doctor import TrainingDiverged, analyse_run
from gankit.doctor import rules as R

SMALL_MLP = {"model.g_hidden": 64, "model.d_hidden": 64, "model.g_layers": 3, "model.d_layers": 2}
QUIET = {"train.sample_every": 100000, "train.ckpt_every": 100000}


def train(model: str, data: str, steps: int, out: Path, seed: int = 0, **over) -> gankit.Run:
    return gankit.train(model, data, steps=steps, seed=seed, out=out, progress=False,
                        overrides={**QUIET, **over})


def events(run_dir: Path) -> list[dict]:
    p = Path(run_dir) / "diagnostics.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []


def raised(run_dir: Path, name: str) -> list[dict]:
    return [e for e in events(run_dir) if e["diagnosis"] == name and e["state"] in ("raised", "changed")]


# ---------------------------------------------------------------------------------------------
# (a)-(d): live diagnoses on real trainings
# ---------------------------------------------------------------------------------------------

def test_minimax_with_strong_d_is_diagnosed_with_vanishing_gradients(tmp_path):
    run = train("gan", "digits", 60, tmp_path / "run", **{
        "model.g_hidden": 128, "model.d_hidden": 128, "loss.name": "minimax",
        "optim.lr_g": 1e-4, "optim.lr_d": 1e-3, "optim.n_critic": 5,
        "train.log_every": 5, "train.doctor_every": 1000})
    found = raised(run.run_dir, "vanishing_gradients")
    assert found, events(run.run_dir)
    e = found[0]
    assert e["severity"] == "critical"
    ev = e["evidence"]
    assert ev["D(x)"] > 0.9 and ev["D(G(z))"] < 0.1 and ev["D_acc"] >= 0.97
    assert ev["loss"] == "minimax" and ev["minimax_grad_scale"] < 0.1
    # the generator's gradient norm, logged by the doctor, has fallen from its early peak
    assert ev["grad_G"] < 0.5 * ev["grad_G_peak"]
    assert "§3.4" in e["seed_ref"] and "non-saturating" in " ".join(e["remedies"])
    # and the same rules reach the same verdict offline, from the files alone
    rows = {r["diagnosis"]: r for r in analyse_run(run.run_dir)["rows"]}
    assert rows["vanishing_gradients"]["severity"] == "critical"


def test_collapse_prone_gan_on_ring8_is_flagged_with_its_lost_modes(tmp_path):
    run = train("gan", "ring8", 400, tmp_path / "run", **SMALL_MLP, **{
        "model.g_batchnorm": False, "optim.lr_g": 1e-3, "optim.lr_d": 1e-3,
        "train.batch_size": 128, "train.log_every": 25, "train.doctor_every": 50})
    found = raised(run.run_dir, "mode_collapse")
    assert found, events(run.run_dir)
    ev = found[0]["evidence"]
    assert ev["classes"] == 8 and ev["covered"] <= 4
    assert len(ev["lost"]) == 8 - ev["covered"]
    # lost modes are named by index and centre, e.g. "3 (-0.71,+0.71)"
    assert all(re.fullmatch(r"\d \([+-]\d\.\d\d,[+-]\d\.\d\d\)", m) for m in ev["lost"])
    assert found[0]["severity"] == "critical"
    assert "lost" in found[0]["summary"]
    # the probe's histogram agrees with an independent count of the final samples
    x = run.generator.sample(2000, seed=0).numpy()
    from gankit.metrics import mode_stats

    assert mode_stats(x, run.data.info["centers"], 0.01, n_sigma=30)["modes_covered"] < 8


def test_absurd_learning_rate_is_rolled_back_and_the_run_finishes(tmp_path):
    out = tmp_path / "run"
    run = train("gan", "ring8", 60, out, **SMALL_MLP, **{
        "optim.name": "sgd", "optim.lr_g": 1e3, "optim.lr_d": 1e3, "train.log_every": 5,
        "train.ckpt_every": 20, "train.keep_ckpts": 100, "train.doctor_lr_factor": 0.01})
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert run.trainer.step == 60
    acts = [e for e in events(out) if e["state"] == "action"]
    assert acts and all(e["title"] == "rollback" for e in acts)
    assert raised(out, "divergence")[0]["evidence"]["nonfinite"]
    ev = acts[-1]["evidence"]
    assert ev["lr_after"]["G"][0] == pytest.approx(1e3 * 0.01 ** len(acts))
    assert run.trainer.opts["G"].param_groups[0]["lr"] == pytest.approx(1e3 * 0.01 ** len(acts))
    # no checkpoint ever holds a diverged state, and the log keeps only the replayed steps
    for ck in (out / "checkpoints").glob("step_*"):
        for net in ("G", "D", "G_ema"):
            assert all(torch.isfinite(v).all() for v in load_file(ck / f"{net}.safetensors").values())
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 60
    assert all(math.isfinite(v) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
               for k, v in r.items() if k.startswith(("loss/", "grad/")))


def test_divergence_between_log_steps_is_caught_before_the_checkpoint(tmp_path):
    # log only at the end: the doctor's isfinite check at checkpoint steps must catch the NaNs
    out = tmp_path / "run"
    train("gan", "ring8", 30, out, **SMALL_MLP, **{
        "optim.name": "sgd", "optim.lr_g": 1e3, "optim.lr_d": 1e3, "train.log_every": 1000,
        "train.ckpt_every": 10, "train.keep_ckpts": 100, "train.doctor_lr_factor": 1e-4})
    first = raised(out, "divergence")[0]
    assert first["evidence"]["checked_at"] == "checkpoint step" and first["step"] == 10
    for ck in (out / "checkpoints").glob("step_*"):
        assert all(torch.isfinite(v).all() for v in load_file(ck / "G.safetensors").values())


def test_divergence_stops_clearly_after_the_rollback_limit(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="doctor_max_rollbacks"):
        train("gan", "ring8", 60, out, **SMALL_MLP, **{
            "optim.name": "sgd", "optim.lr_g": 1e3, "optim.lr_d": 1e3, "train.log_every": 5,
            "train.doctor_max_rollbacks": 1})
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    acts = [e for e in events(out) if e["state"] == "action"]
    assert [a["title"] for a in acts] == ["rollback", "training stopped"]


@pytest.mark.parametrize("case", ["gan-ring8", "dcgan-digits"])
def test_healthy_short_runs_raise_no_false_alarm(case, tmp_path):
    if case == "gan-ring8":
        run = train("gan", "ring8", 600, tmp_path / "run", **SMALL_MLP, **{
            "optim.lr_g": 1e-3, "optim.lr_d": 1e-3, "train.batch_size": 128,
            "train.log_every": 25, "train.doctor_every": 100})
    else:
        run = train("dcgan", "digits", 200, tmp_path / "run", **{
            "model.width": 8, "train.log_every": 10, "train.doctor_every": 50})
    bad = [e for e in events(run.run_dir) if e["severity"] in ("warning", "critical")]
    assert not bad, bad
    probes = [json.loads(ln) for ln in (run.run_dir / "probes.jsonl").read_text().splitlines()]
    assert probes and all("doctor/div_ratio" in p for p in probes)
    if case == "gan-ring8":  # the probe sees the healthy generator cover every mode
        assert probes[-1]["doctor/covered"] == 8 and probes[-1]["doctor/div_ratio"] > 0.8


def test_doctor_does_not_change_training(tmp_path):
    """Probes use their own generator and eval mode: weights are bit-identical with it off."""
    over = {"model.width": 8, "train.log_every": 4, "train.doctor_every": 3, "train.batch_size": 16}
    a = train("dcgan", "digits", 12, tmp_path / "a", **over)
    b = train("dcgan", "digits", 12, tmp_path / "b", **over, **{"train.doctor": False})
    for k, net in a.trainer.nets.items():
        sb = b.trainer.nets[k].state_dict()
        assert all(torch.equal(v, sb[n]) for n, v in net.state_dict().items()), k
    assert (tmp_path / "a" / "probes.jsonl").exists()
    assert not (tmp_path / "b" / "probes.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# (e): the rules on synthetic windows
# ---------------------------------------------------------------------------------------------

INFO = R.RunInfo(loss="nonsaturating", probabilistic=True)


def logs(n: int, **series) -> list[dict]:
    out = []
    for i in range(n):
        rec = {"step": 50 * (i + 1)}
        for k, v in series.items():
            rec[k.replace("_", "/", 1)] = v(i) if callable(v) else v
        out.append(rec)
    return out


def test_oscillation_rule_finds_cycles_not_noise_or_trends():
    rng = torch.Generator().manual_seed(0)
    noise = torch.randn(24, generator=rng).tolist()
    cyc = R.Window(logs(24, loss_G=lambda i: 1.0 + 0.5 * math.sin(2 * math.pi * i / 8),
                        loss_D=lambda i: 1.2 - 0.3 * math.sin(2 * math.pi * i / 8)))
    d = R.oscillation(cyc, INFO)
    assert d is not None and d.severity == "warning"  # no metric shows progress
    assert d.evidence["period_steps"] == pytest.approx(400, rel=0.15)
    assert d.evidence["corr_loss_D_loss_G"] < -0.9  # the players trade places
    assert R.oscillation(R.Window(logs(24, loss_G=lambda i: 1 + 0.1 * noise[i],
                                       loss_D=lambda i: 1 - 0.1 * noise[i])), INFO) is None
    assert R.oscillation(R.Window(logs(24, loss_G=lambda i: 3 - 0.1 * i + 0.01 * noise[i],
                                       loss_D=lambda i: 0.5 + 0.01 * i)), INFO) is None
    # cycling losses while the samples improve: reported for information only
    improving = R.Window(cyc.logs, evals=[{"step": 50 * i, "eval/fid": 100.0 - 5 * i}
                                          for i in range(1, 25)])
    assert R.oscillation(improving, INFO).severity == "info"
    assert R.oscillation(R.Window(cyc.logs[:10]), INFO) is None  # too short to tell


def test_helvetica_rule_needs_a_fooled_d_and_collapsed_samples():
    fooled = logs(6, D_acc=0.5, D_real=0.0, D_fake=0.1, loss_G=0.7, loss_D=1.38)
    collapsed = [{"step": 200, "doctor/div_ratio": 0.6}, {"step": 300, "doctor/div_ratio": 0.04}]
    d = R.helvetica(R.Window(fooled, collapsed), INFO)
    assert d is not None and d.severity == "critical"
    assert d.evidence["D(G(z))"] == pytest.approx(R.sigmoid(0.1))
    assert "Helvetica" in d.explanation and "Bénédict" in d.seed_ref
    winning_d = logs(6, D_acc=0.99, D_real=4.0, D_fake=-4.0, loss_G=3.0, loss_D=0.1)
    assert R.helvetica(R.Window(winning_d, collapsed), INFO) is None
    assert R.helvetica(R.Window(fooled, [{"step": 300, "doctor/div_ratio": 0.9}]), INFO) is None
    # a fresh generator's low diversity is not a collapse: it has not fallen from anything
    rising = [{"step": 200, "doctor/div_ratio": 0.03}, {"step": 300, "doctor/div_ratio": 0.05}]
    assert R.helvetica(R.Window(fooled, rising), INFO) is None
    single_mode = [{"step": 300, "doctor/div_ratio": 0.5, "doctor/classes": 8,
                    "doctor/hist": [300, 0, 0, 0, 0, 0, 0, 0], "doctor/assigned_frac": 0.9,
                    "doctor/lost": [str(i) for i in range(1, 8)]}]
    assert R.helvetica(R.Window(fooled, single_mode), INFO) is not None


def test_divergence_rule_nonfinite_and_exploding_gradients():
    ok = logs(5, loss_D=1.3, loss_G=0.7, grad_G=lambda i: 1.0 + 0.1 * i)
    assert R.divergence(R.Window(ok), INFO) is None
    nan = ok + [{"step": 300, "loss/D": "nan", "loss/G": 0.7, "grad/G": "inf"}]
    d = R.divergence(R.Window(nan), INFO)
    assert d.severity == "critical" and set(d.evidence["nonfinite"]) == {"loss/D", "grad/G"}
    boom = ok + [{"step": 300, "loss/D": 1.3, "loss/G": 0.7, "grad/G": 5e4}]
    assert R.divergence(R.Window(boom), INFO).evidence["exploding"]["grad/G"]["now"] == 5e4
    jump = ok + [{"step": 300, "loss/D": 1.3, "loss/G": 0.7, "grad/G": 30.0}]
    assert R.divergence(R.Window(jump), INFO) is None  # large, but not orders of magnitude
    # under fp16 loss scaling inf gradients are expected (the scaler skips those steps)
    fp16 = R.RunInfo(fp16=True)
    assert R.divergence(R.Window(ok + [{"step": 300, "loss/D": 1.3, "grad/G": "inf"}]), fp16) is None


def test_vanishing_rule_depends_on_the_loss_and_the_gradient():
    strong = logs(4, D_acc=1.0, D_real=9.0, D_fake=-9.0, loss_D=0.0, loss_G=0.0,
                  grad_G=lambda i: [2.0, 1.0, 0.9, 0.8][i])
    assert R.vanishing_gradients(R.Window(strong), R.RunInfo(loss="minimax")).severity == "critical"
    # non-saturating: a winning D alone is not a vanishing gradient ...
    assert R.vanishing_gradients(R.Window(strong), INFO) is None
    # ... unless G's gradient has collapsed
    fading = logs(4, D_acc=1.0, D_real=9.0, D_fake=-9.0, loss_D=0.0, loss_G=9.0,
                  grad_G=lambda i: [2.0, 0.5, 0.1, 0.05][i])
    d = R.vanishing_gradients(R.Window(fading), INFO)
    assert d is not None and d.evidence["grad_G_ratio"] == pytest.approx(0.025)
    balanced = logs(4, D_acc=0.7, D_real=0.5, D_fake=-0.5, loss_D=1.2, loss_G=0.9, grad_G=1.0)
    assert R.vanishing_gradients(R.Window(balanced), R.RunInfo(loss="minimax")) is None


def probe(step: int, hist: list[int], div: float = 0.9, **kw) -> dict:
    names = [str(i) for i in range(len(hist))]
    total = sum(hist)
    lost = [n for n, c in zip(names, hist) if c < R.LOST_SHARE * total / len(hist)]
    return {"step": step, "doctor/div_ratio": div, "doctor/classes": len(hist),
            "doctor/hist": hist, "doctor/assigned_frac": 0.9, "doctor/lost": lost, **kw}


def test_mode_collapse_rule_needs_confirmation_and_names_lost_classes():
    full = probe(100, [30] * 10)
    two = probe(200, [150, 150] + [0] * 8)
    assert R.mode_collapse(R.Window(probes=[full]), INFO) is None
    # a fall in coverage is enough; so is the same loss seen on two probes in a row
    d = R.mode_collapse(R.Window(probes=[full, two]), INFO)
    assert d.severity == "critical" and d.evidence["lost"] == [str(i) for i in range(2, 10)]
    assert R.mode_collapse(R.Window(probes=[two]), INFO) is None
    assert R.mode_collapse(R.Window(probes=[two, probe(300, [150, 150] + [0] * 8)]), INFO)
    one_missing = [probe(100, [30] * 9 + [0]), probe(200, [30] * 9 + [0])]
    assert R.mode_collapse(R.Window(probes=one_missing), INFO).severity == "warning"
    # diversity falling to a fraction of its earlier value
    falling = [probe(100, [30] * 10, div=0.9), probe(200, [30] * 10, div=0.2)]
    assert "diversity" in R.mode_collapse(R.Window(probes=falling), INFO).summary


def test_memorisation_rule():
    copies = {"step": 500, "doctor/mem_z_u": -6.0, "doctor/mem_frac_near": 0.3,
              "doctor/mem_median_ratio": 0.2}
    assert R.memorisation(R.Window(probes=[copies]), INFO).severity == "critical"
    fine = {"step": 500, "doctor/mem_z_u": 2.0, "doctor/mem_frac_near": 0.01}
    assert R.memorisation(R.Window(probes=[fine]), INFO) is None


def test_tracker_reports_state_changes_only():
    t = R.Tracker(INFO, rules={"divergence": R.divergence})
    for rec in logs(3, loss_D=1.0, loss_G=1.0):
        t.add(rec)
        assert t.update() == []
    t.add({"step": 200, "loss/D": "nan", "loss/G": 1.0})
    assert [e.state for e in t.update()] == ["raised"]
    t.add({"step": 250, "loss/D": "nan", "loss/G": 1.0})
    assert t.update() == []  # same state: silent
    t.add({"step": 300, "loss/D": 1.0, "loss/G": 1.0})
    assert [e.state for e in t.update()] == ["resolved"]


# ---------------------------------------------------------------------------------------------
# (f): gankit doctor / gankit report
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def collapsed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    train("gan", "ring8", 300, out, seed=1, **SMALL_MLP, **{
        "model.g_batchnorm": False, "optim.lr_g": 1e-3, "optim.lr_d": 1e-3,
        "train.batch_size": 128, "train.log_every": 25, "train.doctor_every": 50,
        "train.sample_every": 100})
    return out


cli = run_cli


def test_cli_doctor_and_report(collapsed_run, tmp_path, capsys):
    assert cli("doctor", str(collapsed_run)) == 0
    text = capsys.readouterr().out
    assert "mode collapse" in text and "critical" in text and "remedy 1" in text
    assert cli("doctor", str(collapsed_run), "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["diagnosis"] == "mode_collapse" for r in rows)

    out = tmp_path / "r.html"
    assert cli("report", str(collapsed_run), "--out", str(out)) == 0
    html = out.read_text()
    n_samples = len(list((collapsed_run / "samples").glob("*.png")))
    images = re.findall(r'src="([^"]*)"', html)
    assert len(images) >= 4 + n_samples  # curves, D, gradients, probes, every sample grid
    assert all(s.startswith("data:image/png;base64,") for s in images)
    assert "http:" not in html and "https:" not in html and "<link" not in html
    assert "<script" not in html
    assert "mode collapse" in html and "Cohen &amp; Giryes (2022) §3.1" in html and "lost" in html
    # user-facing citations name the works, never the source documents' numbers
    assert not re.search(r"\b(seed|deck)s? ?\d{3}|\b00\d/00\d\b", html, re.IGNORECASE)
    # the sample grids are embedded byte for byte
    import base64

    first = min((collapsed_run / "samples").glob("*.png")).read_bytes()
    assert base64.b64encode(first).decode() in html


def test_cli_errors_exit_2(tmp_path, capsys):
    assert cli("doctor", str(tmp_path / "nope")) == 2
    assert cli("report", str(tmp_path / "nope")) == 2
    assert "error:" in capsys.readouterr().err


def test_memorisation_probe_flags_a_generator_that_copies_its_training_set():
    """The probe's memorisation statistics (every few probes) on a stub generator that returns
    training images, versus one that returns unseen held-out digits."""
    from types import SimpleNamespace

    from gankit.data import load_data
    from gankit.doctor.callback import Probe

    ds = load_data("mnist5k")

    def trainer(source: torch.Tensor) -> SimpleNamespace:
        model = SimpleNamespace(draw=lambda n, seed, nets=None: source[:n])
        return SimpleNamespace(cfg=SimpleNamespace(train=SimpleNamespace(seed=0)), model=model,
                               device=torch.device("cpu"), sampling_nets=dict, step=100)

    copier, honest = trainer(ds.x[100:]), trainer(ds.x_test[:])
    probe = Probe(copier, ds, 200)
    rec = probe.run(copier, final=True)
    assert rec["doctor/mem_space"] == "lenet-mnist" and rec["doctor/mem_z_u"] < -3
    d = R.memorisation(R.Window(probes=[rec]), INFO)
    assert d is not None and d.severity == "critical"
    rec = probe.run(honest, final=True)
    assert R.memorisation(R.Window(probes=[rec]), INFO) is None
    # real digits from either set are diverse and recognisable: no collapse either way
    assert rec["doctor/covered"] == 10 and rec["doctor/div_ratio"] > 0.9
