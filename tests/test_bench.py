"""gankit bench: the Trainer's time budget, the Parzen-window estimator, bits per dimension through
likelihood(), the leaderboard against bench.json, resuming a bench, and one-line errors."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import cli_output

from gankit.bench import (
    BenchSpec,
    leaderboard_rows,
    parse_budget,
    parse_sets,
    parzen_log_likelihood,
    parzen_select,
    theis_findings,
)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# two small families on the ring: an MLP GAN and a VAE (which has log_prob)
TOY = ["--data", "ring8", "--models", "gan,vae", "--n", "40", "--nll-n", "40",
       "--set", "gan:model.g_hidden=16", "--set", "gan:model.d_hidden=16",
       "--set", "vae:model.hidden=16", "--set", "train.batch_size=16"]


# -- the time budget ---------------------------------------------------------------------------

def test_budget_stops_at_a_checkpoint_and_is_recorded(tmp_path):
    import gankit
    from gankit.train import checkpoint as ckpt

    run = gankit.train("gan", "ring8", steps=10**6, out=tmp_path / "r", progress=False,
                       overrides={"train.max_seconds": 0.4, "train.budget_kind": "wall",
                                  "train.doctor": False, "model.g_hidden": 16,
                                  "model.d_hidden": 16,
                                  "train.ckpt_every": 10**5})
    tr = run.trainer
    assert tr.stopped_by == "budget"
    assert 1 <= tr.step < 10**6
    assert tr.seconds["wall"] >= 0.4
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["stopped_by"] == "budget" and info["step"] == tr.step
    assert info["checkpoint_step"] == tr.step  # the last step was checkpointed
    state = ckpt.read_state(ckpt.latest_checkpoint(tmp_path / "r"))
    assert state["step"] == tr.step and state["seconds"]["wall"] >= 0.4
    # a resumed run whose budget is spent takes no step, and keeps the time trained
    again = gankit.resume(tmp_path / "r", progress=False)
    assert again.trainer.step == tr.step and again.trainer.stopped_by == "budget"
    assert again.trainer.seconds["wall"] >= state["seconds"]["wall"]


def test_budget_in_cpu_seconds_counts_process_time(tmp_path):
    import gankit

    t0 = time.process_time()
    run = gankit.train("gan", "ring8", steps=10**6, save=False, progress=False,
                       overrides={"train.max_seconds": 0.3, "train.budget_kind": "cpu",
                                  "train.doctor": False, "model.g_hidden": 16,
                                  "model.d_hidden": 16})
    used = time.process_time() - t0
    assert run.trainer.stopped_by == "budget"
    assert 0.3 <= run.trainer.seconds["cpu"] <= used


def test_budget_flags_parse_and_refuse():
    assert parse_budget("120s") == 120 and parse_budget("2m") == 120
    assert parse_budget("1.5h") == 5400 and parse_budget("90") == 90
    from gankit.errors import ConfigError

    for bad in ("fast", "-3s", "0", "3 days"):
        with pytest.raises(ConfigError):
            parse_budget(bad)


# -- Parzen windows ----------------------------------------------------------------------------

def test_parzen_matches_the_closed_form_mixture_of_gaussians():
    from scipy.stats import multivariate_normal

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 3, generator=g, dtype=torch.float64)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    sigma = 0.7
    want = np.log(np.mean([multivariate_normal(c.numpy(), sigma ** 2 * np.eye(3)).pdf(x.numpy())
                           for c in centers], axis=0))
    got = parzen_log_likelihood(centers, x, sigma).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # far from every kernel the log-likelihood is finite (log-sum-exp), not -inf
    assert torch.isfinite(parzen_log_likelihood(centers, x + 1e3, 0.01)).all()


def test_parzen_bandwidth_is_the_maximum_likelihood_one_on_the_validation_split():
    # one kernel at c: the validation log-likelihood peaks at sigma^2 = mean |x - c|^2 / D
    g = torch.Generator().manual_seed(1)
    c = torch.zeros(1, 4, dtype=torch.float64)
    val = 0.3 * torch.randn(2000, 4, generator=g, dtype=torch.float64)
    best = float(((val - c) ** 2).sum(1).mean() / 4) ** 0.5
    grid = np.sort(np.concatenate([np.geomspace(0.01, 3, 30), [best]]))
    res = parzen_select(c, val, val[:10], grid)
    assert res["parzen_sigma"] == pytest.approx(best)
    assert not res["parzen_sigma_at_edge"]
    want = float(parzen_log_likelihood(c, val[:10], best).mean())
    assert res["parzen_ll"] == pytest.approx(want)


# -- bits per dim through likelihood() ---------------------------------------------------------

def test_bits_per_dim_follow_the_family_likelihood_declaration(monkeypatch):
    from gankit.api import _load_data
    from gankit.bench import _real_sets, evaluate_entry
    from gankit.config import resolve_config
    from gankit.trained import TrainedModel, build_model

    cfg = resolve_config("vae", {"data": {"name": "mnist5k"},
                                 "model": {"arch": "mlp", "hidden": 32, "latent_dim": 4}})
    ds = _load_data(cfg)
    fam = build_model(cfg, ds.describe()).eval()
    spec = BenchSpec(data="mnist5k", models=["vae"], n=20, nll_n=8)
    real = _real_sets(ds, spec)
    trained = TrainedModel(fam, torch.device("cpu"))
    res, prot = evaluate_entry(trained, ds, spec, real, {}, {"k": 3})
    lp = trained.log_prob(real["nll"], seed=spec.eval_seed, k=3).double()
    lik = fam.likelihood()
    assert lik["space"] == "binary" and res["nll_kind"] == lik["kind"] == "lower-bound"
    assert res["nll_nats"] == pytest.approx(float(-lp.mean()))
    assert res["nll_bpd"] == pytest.approx(float(-lp.mean()) / (784 * math.log(2)))
    assert prot["nll"]["options"] == {"k": 3}
    # a dequantized model shifts by log 256 per dimension (gankit.likelihood's convention)
    monkeypatch.setattr(type(fam), "likelihood",
                        lambda self: {"space": "dequantized", "kind": "exact"})
    res2, _ = evaluate_entry(trained, ds, spec, real, {}, {"k": 3})
    assert res2["nll_bpd"] == pytest.approx((784 * math.log(256) - float(lp.mean()))
                                            / (784 * math.log(2)))
    assert res2["nll_kind"] == "exact"


# -- the bench: leaderboard, resume, errors ------------------------------------------------------

def _md_table(text):
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


@pytest.fixture(scope="module")
def toy_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b"
    r = subprocess.run([sys.executable, "-m", "gankit.cli", "bench", *TOY, "--budget", "60s",
                        "--max-steps", "30", "--seeds", "0,1", "--out", str(out)],
                       env=ENV, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_leaderboard_table_matches_bench_json(toy_bench):
    out, stdout = toy_bench
    data = json.loads((out / "bench.json").read_text())
    assert set(data["entries"]) == {"gan-seed0", "gan-seed1", "vae-seed0", "vae-seed1"}
    for e in data["entries"].values():  # the step cap ended these (the budget is longer)
        assert e["train"]["steps"] == 30 and e["train"]["stopped_by"] == "steps"
    rows = _md_table((out / "leaderboard.md").read_text())
    assert [r["model"] for r in rows] == ["gan", "vae", "training data (reference)"]
    for r in rows[:2]:
        es = [e for e in data["entries"].values() if e["model"] == r["model"]]
        for head, key, fmt in (("recall ↑", "recall", ".3f"), ("modes ↑", "modes_covered", ".1f"),
                               ("Parzen LL nats* ↑", "parzen_ll", ".1f")):
            vals = [e["results"][key] for e in es]
            want = f"{format(np.mean(vals), fmt)} ± {format(np.std(vals, ddof=1), fmt)}"
            assert r[head] == want, (r["model"], head)
        assert r["params"] == format(es[0]["params"], ",.0f")
    vae = data["entries"]["vae-seed0"]["results"]
    assert vae["nll_space"] == "continuous" and "nll_bpd" not in vae  # points: nats, no bits/dim
    assert rows[1]["NLL nats ↓"].endswith("(bound)") and rows[0]["NLL nats ↓"] == "-"
    # the reference row: training data scored as samples covers every mode of the ring
    assert rows[2]["modes ↑"] == "8.0"
    html = (out / "leaderboard.html").read_text()
    assert "Theis et al. 2016" in html and "<table>" in html and "http" not in html
    assert "Parzen-window estimates are unreliable" in stdout
    # Theis et al.: only one model with a likelihood here, and the text says so
    assert theis_findings(data)[0].startswith("Not demonstrable here")


def test_an_evaluated_bench_is_kept_and_an_interrupted_entry_resumed(toy_bench, tmp_path):
    import shutil

    src, _ = toy_bench
    out = tmp_path / "b"
    shutil.copytree(src, out)
    data = json.loads((out / "bench.json").read_text())
    # vae seed 1 was interrupted during training: no results, run.json says so
    data["entries"]["vae-seed1"]["results"] = None
    (out / "bench.json").write_text(json.dumps(data))
    info_path = out / "runs" / "vae-seed1" / "run.json"
    info = json.loads(info_path.read_text())
    (info_path).write_text(json.dumps({**info, "status": "interrupted"}))
    stamp = (out / "runs" / "gan-seed0" / "run.json").stat().st_mtime_ns
    r = subprocess.run([sys.executable, "-m", "gankit.cli", "bench", *TOY, "--budget", "60s",
                        "--max-steps", "30", "--seeds", "0,1", "--out", str(out)],
                       env=ENV, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("kept (evaluated before)") == 3
    assert "vae seed 1: training" in r.stdout and "resuming the interrupted training" in r.stdout
    assert (out / "runs" / "gan-seed0" / "run.json").stat().st_mtime_ns == stamp
    new = json.loads((out / "bench.json").read_text())
    assert new["entries"]["vae-seed1"]["results"]["steps"] == 30  # evaluated again
    assert new["entries"]["gan-seed0"] == data["entries"]["gan-seed0"]


def test_a_bench_killed_during_training_continues_from_the_checkpoint(tmp_path):
    out = tmp_path / "b"
    args = [sys.executable, "-m", "gankit.cli", "bench", "--data", "ring8", "--models", "gan",
            "--n", "40", "--nll-n", "40", "--set", "model.g_hidden=16",
            "--set", "train.ckpt_every=5", "--budget", "2s", "--budget-kind", "cpu",
            "--out", str(out)]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    latest = out / "runs" / "gan-seed0" / "checkpoints" / "latest"
    for _ in range(1200):
        if latest.exists() and int(latest.read_text().strip()[5:]) >= 5:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "leaderboard.md").exists()
    r = subprocess.run(args, env=ENV, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "resuming the interrupted training from step" in r.stdout
    e = json.loads((out / "bench.json").read_text())["entries"]["gan-seed0"]
    assert e["train"]["stopped_by"] == "budget" and e["train"]["seconds_cpu"] >= 2
    assert e["results"]["steps"] == e["train"]["steps"] >= 5


@pytest.mark.parametrize("args, msg", [
    (["--models", "gan,dcgn"], "unknown model 'dcgn' (did you mean 'dcgan'?)"),
    (["--models", "pix2pix"], "model 'pix2pix' cannot sample"),
    (["--models", "gan,dcgan"], "model 'dcgan' needs images; 'ring8' holds points"),
    (["--models", "gan", "--budget", "soon"], "--budget 'soon' is not a duration"),
    (["--models", "gan", "--set", "vae:model.hidden=8"], "'vae' is not among the benched"),
    (["--models", "gan", "--set", "gan:log_prob.k=3"], "model 'gan' has no log_prob"),
])
def test_errors_are_one_line_with_exit_2(capsys, tmp_path, args, msg):
    code, _, err = cli_output(capsys, "bench", "--data", "ring8", *args, "--out",
                              tmp_path / "b")
    assert code == 2 and len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "b").exists()


def test_a_bench_config_file_with_an_unknown_key_is_one_line(capsys, tmp_path):
    cfg = tmp_path / "bench.yaml"
    cfg.write_text("data: ring8\nmodels: [gan]\nbudgte: 10s\n")
    code, _, err = cli_output(capsys, "bench", "--config", cfg, "--out", tmp_path / "b")
    assert code == 2 and len(err) == 1, err
    assert "unknown bench key 'budgte' (did you mean 'budget'?)" in err[0]


def test_a_bench_folder_refuses_another_budget(capsys, toy_bench):
    out, _ = toy_bench
    code, _, err = cli_output(capsys, "bench", *TOY, "--budget", "5s", "--max-steps", "30",
                              "--seeds", "0,1", "--out", out)
    assert code == 2 and len(err) == 1 and "budget=60.0" in err[0], err


def test_per_model_settings_split_into_config_sample_and_log_prob():
    sets = parse_sets(["model.hidden=8", "vae:log_prob.k=100", "gan:sample.truncation=1.5"],
                      ["gan", "vae"])
    spec = BenchSpec(data="ring8", models=["gan", "vae"], sets=sets)
    assert spec.split_sets("vae") == (["model.hidden=8"], {}, {"k": 100})
    assert spec.split_sets("gan") == (["model.hidden=8"], {"truncation": 1.5}, {})
    yaml_like = parse_sets({"all": {"train.batch_size": 32}, "vae": ["log_prob.k=5"]},
                           ["gan", "vae"])
    assert yaml_like == {"gan": ["train.batch_size=32"],
                         "vae": ["train.batch_size=32", "log_prob.k=5"]}


def test_theis_finding_names_the_pair_from_the_numbers():
    def entry(m, fid, bpd, parzen):
        return {"model": m, "seed": 0, "results": {"fid": fid, "nll_bpd": bpd, "parzen_ll": parzen,
                                                   "nll_kind": "exact"}}

    data = {"spec": {"models": ["a", "b"]}, "reference": None,
            "entries": {"a": entry("a", 30.0, 1.0, 100.0), "b": entry("b", 10.0, 2.0, 200.0)}}
    found = theis_findings(data)
    assert any(re.match(r"a has the better held-out likelihood \(1\.000 vs 2\.000 bits/dim\) "
                        r"but the worse FID \(30 vs 10\) than b", t) for t in found), found
    assert any(t.startswith("Parzen ranks b above a") for t in found)
    _, rows = leaderboard_rows(data)
    assert [r["model"] for r in rows] == ["a", "b"]


def test_a_diverged_entry_is_on_the_board_without_metrics():
    from types import SimpleNamespace

    from gankit.bench import evaluate_entry, markdown_table

    fam = SimpleNamespace(name="gan", capabilities=frozenset({"sample"}))
    nan = SimpleNamespace(model=fam, sample=lambda n, seed, **o: torch.full((n, 2), math.nan))
    spec = BenchSpec(data="ring8", models=["gan"], n=10)
    res, _ = evaluate_entry(nan, None, spec, {"real": torch.zeros(10, 2)}, {}, {})
    assert res["failed"].startswith("10 of 10 samples are not finite") and "recall" not in res
    good = {"recall": 0.5, "sample_ms": 1.0}
    data = {"spec": {"models": ["gan"]}, "reference": None, "entries": {
        "gan-seed0": {"model": "gan", "seed": 0, "results": {**res, "sample_ms": 2.0}},
        "gan-seed1": {"model": "gan", "seed": 1, "results": good}}}
    table = markdown_table(data)
    assert table[0] == "| model | seeds | recall ↑ | sample ms/ex ↓ |"
    assert table[2] == "| gan (diverged: 1 of 2 seeds) | 0,1 | - | 1.500 ± 0.707 |"
