"""Experiment tracking (gankit.tracking), what a training prints (gankit.train.console), and
`gankit runs` / `gankit compare` (gankit.runs)."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch

import gankit
from gankit.cli import main
from gankit.errors import ConfigError
from gankit.tracking import CsvTracker, TensorBoardTracker, Tracking

TINY = {"model.width": 8, "train.doctor": False, "train.ckpt_every": 1000}


def tiny_train(ds, out, steps=4, **over):
    return gankit.train("dcgan", ds, steps=steps, batch_size=8, out=out, progress=False,
                        overrides={**TINY, "train.log_every": 2, "train.sample_every": 2, **over})


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames or []), list(r)


# -- CSV --------------------------------------------------------------------------------------

def test_csv_header_grows_by_an_atomic_rewrite_and_rewinds(tmp_path):
    t = CsvTracker(tmp_path / "csv")
    t.scalars(1, {"loss/D": 1.0, "loss/G": 2.0})
    t.scalars(2, {"loss/D": 0.5, "loss/G": 2.5})
    t.scalars(3, {"loss/D": 0.25, "loss/G": 3.0, "grad/D": 7.0})  # a new key
    t.scalars(3, {"eval/fid": 12.5})  # eval records have their own file
    head, rows = read_csv(tmp_path / "csv" / "metrics.csv")
    assert head == ["step", "loss/D", "loss/G", "grad/D"]
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["grad/D"] == "" and rows[2]["grad/D"] == "7.0"
    assert read_csv(tmp_path / "csv" / "eval.csv") == (["step", "eval/fid"],
                                                       [{"step": "3", "eval/fid": "12.5"}])
    # a new tracker on the same folder (a resumed run) keeps the header and appends
    t2 = CsvTracker(tmp_path / "csv")
    t2.rewind(2)
    t2.scalars(3, {"loss/D": 0.3, "loss/G": 2.9})
    head, rows = read_csv(tmp_path / "csv" / "metrics.csv")
    assert head == ["step", "loss/D", "loss/G", "grad/D"]
    assert [(r["step"], r["loss/D"], r["grad/D"]) for r in rows] == [
        ("1", "1.0", ""), ("2", "0.5", ""), ("3", "0.3", "")]
    t2.text("doctor/mode_collapse", 3, "raised: collapse")
    t2.hparams({"train.steps": 10}, {"loss/D": 0.3})
    assert read_csv(tmp_path / "csv" / "events.csv")[1][0]["value"] == "raised: collapse"
    assert {r["key"]: r["value"] for r in read_csv(tmp_path / "csv" / "hparams.csv")[1]} == \
        {"train.steps": "10", "loss/D": "0.3"}


# -- a real training: every stream reaches every tracker ------------------------------------------

def test_training_feeds_csv_and_tensorboard_with_scalars_eval_images_hparams(tiny_images,
                                                                              tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tiny_train(tiny_images, tmp_path / "r", steps=4, **{
        "train.trackers": ["jsonl", "csv", "tensorboard"], "train.eval_every": 2,
        "train.eval_n": 48, "train.eval_metrics": ["fid"]})
    d = run.run_dir
    # the canonical record is unchanged: one training line per log step, eval lines beside
    recs = [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if "it_s" in r]
    assert [r["step"] for r in train_recs] == [2, 4]
    assert list(train_recs[0])[:3] == ["step", "time", "it_s"]
    assert [r["step"] for r in recs if "eval/fid" in r] == [2, 4]
    # CSV
    head, rows = read_csv(d / "csv" / "metrics.csv")
    assert head[:3] == ["step", "time", "it_s"] and "loss/D" in head
    assert [float(r["loss/D"]) for r in rows] == [r["loss/D"] for r in train_recs]
    assert [float(r["eval/fid"]) for r in read_csv(d / "csv" / "eval.csv")[1]] == \
        [r["eval/fid"] for r in recs if "eval/fid" in r]
    images = [r for r in read_csv(d / "csv" / "events.csv")[1] if r["kind"] == "image"]
    assert [int(r["step"]) for r in images] == [2, 4] and Path(images[0]["value"]).exists()
    # TensorBoard, read back from its event file
    ev = EventAccumulator(str(d / "tb"), size_guidance={"images": 0, "scalars": 0,
                                                        "tensors": 0})
    ev.Reload()
    tags = ev.Tags()
    assert {"loss/D", "loss/G", "it_s", "eval/fid"} <= set(tags["scalars"])
    assert [round(s.value, 5) for s in ev.Scalars("loss/D")] == \
        [round(r["loss/D"], 5) for r in train_recs]
    assert [s.step for s in ev.Scalars("eval/fid")] == [2, 4]
    assert "samples" in tags["images"]
    img = ev.Images("samples")
    assert [i.step for i in img] == [2, 4] and img[0].width > 16
    assert "_hparams_/session_start_info" in ev.PluginTagToContent("hparams")


def test_tensorboard_text_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = TensorBoardTracker(tmp_path / "tb")
    tb.text("doctor/mode_collapse", 7, "[critical] raised: mode collapse: 2 of 8 modes")
    tb.image("samples", 7, torch.zeros(3, 8, 8))
    tb.hparams({"train.steps": 10, "optim.lr_g": 2e-4, "data.image_size": None},
               {"loss/D": 0.5})
    tb.close()
    ev = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    ev.Reload()
    t = ev.Tensors("doctor/mode_collapse/text_summary")
    assert t[0].step == 7
    assert b"2 of 8 modes" in t[0].tensor_proto.string_val[0]
    assert "samples" in ev.Tags()["images"]
    assert set(ev.PluginTagToContent("hparams")) >= {"_hparams_/experiment",
                                                      "_hparams_/session_start_info"}


def test_diagnoses_reach_trackers_and_are_printed_without_progress(tmp_path, capsys):
    """The doctor's findings go to every tracker (CSV here) and to stderr, with progress off."""
    run = gankit.train("gan", "digits", steps=60, seed=0, out=tmp_path / "vg", progress=False,
                       overrides={"model.g_hidden": 128, "model.d_hidden": 128,
                                  "loss.name": "minimax", "optim.lr_g": 1e-4,
                                  "optim.lr_d": 1e-3, "optim.n_critic": 5,
                                  "train.log_every": 5, "train.doctor_every": 1000,
                                  "train.sample_every": 100000, "train.ckpt_every": 100000,
                                  "train.trackers": ["csv"]})
    err = capsys.readouterr().err
    assert re.search(r"doctor critical .*vanishing", err, re.IGNORECASE), err
    texts = [r for r in read_csv(run.run_dir / "csv" / "events.csv")[1] if r["kind"] == "text"]
    assert any(r["tag"] == "doctor/vanishing_gradients" and "critical" in r["value"]
               for r in texts), texts


# -- optional adapters, with fake packages --------------------------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def fn(self, name: str, ret=None):
        def call(*a, **k):
            self.calls.append((name, a, k))
            return ret
        return call

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def fake_wandb(rec: Recorder) -> types.ModuleType:
    m = types.ModuleType("wandb")
    run = types.SimpleNamespace(log=rec.fn("log"), finish=rec.fn("finish"),
                                config=types.SimpleNamespace(update=rec.fn("config.update")),
                                summary=types.SimpleNamespace(update=rec.fn("summary.update")))
    m.init = rec.fn("init", run)
    m.Image = lambda img, caption=None: ("Image", img.size, caption)
    m.Html = lambda s: ("Html", s)
    return m


def fake_mlflow(rec: Recorder) -> types.ModuleType:
    m = types.ModuleType("mlflow")
    for name in ("set_experiment", "log_metrics", "log_image", "log_text", "log_params",
                 "end_run"):
        setattr(m, name, rec.fn(name))
    m.start_run = rec.fn("start_run", object())
    return m


def test_wandb_and_mlflow_adapters_receive_every_stream(tiny_images, tmp_path, monkeypatch):
    rw, rm = Recorder(), Recorder()
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(rw))
    monkeypatch.setitem(sys.modules, "mlflow", fake_mlflow(rm))
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    run = tiny_train(tiny_images, tmp_path / "w", steps=4, **{
        "train.trackers": ["wandb", "mlflow"], "train.eval_every": 4, "train.eval_n": 48,
        "train.eval_metrics": ["fid"]})
    # wandb
    init = rw.calls[0]
    assert init[0] == "init" and init[2]["project"] == "proj" and init[2]["name"] == "w"
    assert init[2]["config"]["train"]["steps"] == 4
    logs = [c for c in rw.calls if c[0] == "log"]
    scal = [(c[2]["step"], c[1][0]) for c in logs if "loss/D" in c[1][0]]
    assert [s for s, _ in scal] == [2, 4]
    assert any("eval/fid" in c[1][0] and c[2]["step"] == 4 for c in logs)
    imgs = [c for c in logs if "samples" in c[1][0]]
    assert [c[2]["step"] for c in imgs] == [2, 4] and imgs[0][1][0]["samples"][0] == "Image"
    assert rw.names()[-3:] == ["config.update", "summary.update", "finish"]
    assert "eval/fid" in next(c for c in rw.calls if c[0] == "summary.update")[1][0]
    # mlflow
    assert rm.names()[:2] == ["set_experiment", "start_run"]
    assert rm.calls[1][2]["run_name"] == "w"
    mets = [c for c in rm.calls if c[0] == "log_metrics" and "step" in c[2]]
    assert [c[2]["step"] for c in mets if "loss/G" in c[1][0]] == [2, 4]
    assert any("eval/fid" in c[1][0] for c in mets)
    assert [c[1][1] for c in rm.calls if c[0] == "log_image"] == \
        ["samples/step_00000002.png", "samples/step_00000004.png"]
    params = {k: v for c in rm.calls if c[0] == "log_params" for k, v in c[1][0].items()}
    assert params["train.steps"] == "4" and params["model.name"] == "dcgan"
    assert rm.names()[-1] == "end_run"
    assert run.run_dir is not None


def test_missing_tracker_package_is_one_line_and_writes_nothing(tiny_images, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'gankit\[wandb\]'"):
        tiny_train(tiny_images, tmp_path / "x", **{"train.trackers": ["wandb"]})
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as e:
        main(["train", "gan", "--data", "ring8", "--steps", "2", "--out", str(tmp_path / "y"),
              "--set", "train.trackers=[jsonl,wandb]"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install" in err
    with pytest.raises(ConfigError, match="did you mean 'tensorboard'"):
        tiny_train(tiny_images, tmp_path / "z", **{"train.trackers": ["tensorbord"]})


def test_tracking_callback_rewinds_csv_on_resume(tmp_path):
    """Resuming: rows of the undone steps leave the CSV like they leave metrics.jsonl."""
    run = gankit.train("gan", "ring8", steps=4, batch_size=16, out=tmp_path / "r",
                       progress=False,
                       overrides={"model.g_hidden": 16, "model.d_hidden": 16,
                                  "train.doctor": False, "train.log_every": 1,
                                  "train.sample_every": 1000, "train.ckpt_every": 2,
                                  "train.trackers": ["csv"]})
    d = run.run_dir
    # as if the run died after step 4's log but before its checkpoint: steps 3, 4 are undone
    import shutil

    ck = d / "checkpoints"
    shutil.rmtree(ck / "step_00000004")
    (ck / "latest").write_text("step_00000002")
    before = read_csv(d / "csv" / "metrics.csv")[1]
    gankit.resume(d, progress=False)
    after = read_csv(d / "csv" / "metrics.csv")[1]
    assert [int(r["step"]) for r in after] == [1, 2, 3, 4]
    # bit-identical resume: the redone rows equal the first ones (time/speed aside)
    assert [r["loss/D"] for r in after] == [r["loss/D"] for r in before]


# -- what a training prints ---------------------------------------------------------------------

def test_plain_progress_lines_when_stdout_is_not_a_terminal(tiny_images, tmp_path, capsys):
    steps = 40
    gankit.train("dcgan", tiny_images, steps=steps, batch_size=8, out=tmp_path / "p",
                 progress=True, overrides={**TINY, "train.log_every": 20,
                                           "train.sample_every": 1000})
    out = capsys.readouterr().out
    for label in ("device", "dtype", "data ", "image size", "parameters", "steps", "run dir",
                  "threads"):
        assert re.search(rf"^{label}", out, re.MULTILINE), (label, out)
    assert re.search(r"^parameters\s+G \S+, D \S+", out, re.MULTILINE)
    assert re.search(r"^threads\s+\d+ \(", out, re.MULTILINE)
    lines = [ln for ln in out.splitlines() if ln.startswith("step ")]
    got = [int(re.match(r"step (\d+)/(\d+) \((\d+)%\)", ln).group(1)) for ln in lines]
    # at least one line per 10% of the run, the last at the end
    assert len(got) >= 10 and got[-1] == steps
    gaps = [b - a for a, b in zip([0, *got], got)]
    assert max(gaps) <= steps / 10, got
    assert all("it/s" in ln and "ETA" in ln for ln in lines)
    assert "D=" in lines[-1] and "G=" in lines[-1]
    assert "\x1b[" not in out  # no terminal control codes in a log file


def test_progress_bar_keeps_step_and_eta_at_80_columns():
    from rich.console import Console

    from gankit.train.console import make_progress

    con = Console(file=io.StringIO(), width=80, force_terminal=True, record=True,
                  color_system=None)
    p = make_progress(con, disable=False)
    task = p.add_task("train", total=2000, completed=1234, speed="35.2 it/s",
                      losses="  ".join(f"loss{i}=0.123" for i in range(12)))
    for _ in range(3):
        p.advance(task, 0)
    con.print(p.get_renderable())
    text = con.export_text()
    line = [ln for ln in text.splitlines() if "1234/2000" in ln]
    assert line, text
    assert len(line[0]) <= 80 and "ETA" in line[0] and "62%" in line[0]
    assert re.search(r"ETA \d+:\d\d:\d\d|ETA -:--:--", line[0]), line[0]
    assert "…" in line[0]  # the loss text is what gets cut


def test_bar_mode_on_a_terminal_prints_summary_and_final_bar(tiny_images, monkeypatch):
    import rich
    from rich.console import Console

    con = Console(file=io.StringIO(), width=80, force_terminal=True, record=True,
                  color_system=None)
    monkeypatch.setattr(rich, "_console", con)
    gankit.train("dcgan", tiny_images, steps=6, batch_size=8, save=False, progress=True,
                 overrides={**TINY, "train.log_every": 3})
    text = con.export_text()
    assert "threads" in text and "parameters" in text
    assert any("6/6" in ln and "ETA" in ln for ln in text.splitlines()), text
    assert not any(ln.startswith("step ") for ln in text.splitlines())


# -- runs and compare ---------------------------------------------------------------------------

@pytest.fixture
def two_runs(tiny_images, tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        gankit.train("dcgan", tiny_images, steps=4, batch_size=8, seed=seed,
                     out=root / f"s{seed}", progress=False,
                     overrides={**TINY, "train.log_every": 2, "train.sample_every": 1000,
                                "train.eval_every": 2, "train.eval_n": 48,
                                "train.eval_metrics": ["fid"]})
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    (root / "broken" / "run.json").write_text("{}")
    return root


def test_runs_lists_status_step_and_best(two_runs, capsys):
    main(["runs", str(two_runs), "--json"])
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"s0", "s1", "broken"}
    for k in ("s0", "s1"):
        r = rows[k]
        assert (r["status"], r["step"], r["total"], r["model"], r["data"]) == \
            ("finished", 4, 4, "dcgan", "tiny")
        best = json.loads((two_runs / k / "best" / "best.json").read_text())
        assert r["best_metric"] == "fid" and r["best_value"] == pytest.approx(best["value"])
        assert r["best"].startswith("fid=") and re.match(r"\d{4}-\d\d-\d\d", r["modified"])
    assert rows["broken"]["status"].startswith("damaged")
    main(["runs", str(two_runs)])
    table = capsys.readouterr().out
    assert "s0" in table and "finished" in table and "4/4" in table


def test_compare_writes_one_self_contained_page(two_runs, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    main(["compare", str(two_runs / "s0"), str(two_runs / "s1"), "--out", str(out)])
    page = out.read_text()
    assert "s0" in page and "s1" in page
    assert page.count("<svg") >= 3  # loss/D, loss/G, eval/fid at least
    assert re.search(r"<svg[^>]*aria-label=\"loss/D\"", page)
    assert re.search(r"<svg[^>]*aria-label=\"eval/fid\"", page)
    # both runs' curves are overlaid: two polylines in the loss/D plot
    lossd = page.split('aria-label="loss/D"')[1].split("</svg>")[0]
    assert lossd.count("<polyline") == 2
    # config differences: the seed
    assert "train.seed" in page
    # nothing external: no scripts, stylesheets or images fetched from anywhere
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<script" not in page and "<link" not in page
    fids = [json.loads((two_runs / k / "best" / "best.json").read_text()) for k in ("s0", "s1")]
    assert fids
    with pytest.raises(SystemExit) as e:
        main(["compare", str(tmp_path / "nope"), "--out", str(tmp_path / "c.html")])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error:")


def test_tracking_callback_hparams_carry_final_eval(tmp_path):
    """The hyper-parameters are sent with the last evaluation results as their metrics."""
    cb = Tracking(tmp_path, ["csv"])
    cb.trackers = [CsvTracker(tmp_path / "csv")]
    cb.config = {"train.steps": 3}
    cb.on_log(None, "metrics", {"step": 1, "loss/D": 0.7, "time": 1.0})
    assert cb.final == {"loss/D": 0.7}
    cb.on_log(None, "eval", {"step": 2, "eval/fid": 3.5})
    cb.on_log(None, "metrics", {"step": 3, "loss/D": 0.6, "loss/G": "nan"})
    assert cb.final == {"eval/fid": 3.5}
    cb.on_train_end(None)
    hp = {r["key"]: r["value"] for r in read_csv(tmp_path / "csv" / "hparams.csv")[1]}
    assert hp == {"train.steps": "3", "eval/fid": "3.5"}
    _, rows = read_csv(tmp_path / "csv" / "metrics.csv")
    assert rows[-1]["loss/G"] == "nan"


def test_own_tracker_through_the_callback(tiny_images, tmp_path):
    """A user's Tracker subclass receives the same scalars, images and hparams."""
    from gankit.tracking import Tracker

    class Mine(Tracker):
        def __init__(self):
            self.calls = []

        def scalars(self, step, values):
            self.calls.append(("scalars", step, sorted(values)))

        def image(self, tag, step, image):
            self.calls.append(("image", step, tag, Path(image).name))

        def hparams(self, hparams, metrics):
            self.calls.append(("hparams", hparams["train.steps"], sorted(metrics)))

        def text(self, tag, step, text):
            self.calls.append(("text", step, tag))

        def close(self):
            self.calls.append(("close",))

    mine = Mine()
    gankit.train("dcgan", tiny_images, steps=4, batch_size=8, out=tmp_path / "m", progress=False,
                 overrides={**TINY, "train.log_every": 2, "train.sample_every": 4},
                 callbacks=[Tracking(own=[mine])])
    scal = [c for c in mine.calls if c[0] == "scalars"]
    assert [c[1] for c in scal] == [2, 4] and {"loss/D", "loss/G", "it_s"} <= set(scal[0][2])
    assert ("image", 4, "samples", "step_00000004.png") in mine.calls
    assert mine.calls[-2:] == [("hparams", 4, ["loss/D", "loss/G"]), ("close",)]
    with pytest.raises(TypeError):
        type("Half", (Tracker,), {"scalars": lambda self, s, v: None})()


def test_runs_reads_only_the_tail_and_skips_a_torn_line(tmp_path):
    from gankit.runs import run_row

    d = tmp_path / "r"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model": {"name": "gan"}, "data": {"name": "ring8"},
                                               "train": {"steps": 5000}}))
    (d / "run.json").write_text(json.dumps({"status": "interrupted", "step": 4000}))
    lines = [json.dumps({"step": s, "time": 1.0, "it_s": 2.0, "loss/D": 0.5, "pad": "x" * 200})
             for s in range(10, 4010, 10)]
    (d / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4010, "ti')  # > 64 KiB
    assert (d / "metrics.jsonl").stat().st_size > 65536
    r = run_row(d)
    assert (r["status"], r["step"], r["total"], r["model"], r["data"], r["best"]) == \
        ("interrupted", 4000, 5000, "gan", "ring8", None)


def test_runs_tells_a_killed_run_from_a_live_one(tmp_path):
    """status "running" is only shown while a live process holds the run's lock."""
    import os
    import socket

    from gankit.runs import run_row

    d = tmp_path / "r"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model": {"name": "gan"}, "data": {"name": "ring8"},
                                               "train": {"steps": 100}}))
    (d / "run.json").write_text(json.dumps({"status": "running", "step": 0}))
    assert run_row(d)["status"] == "stopped (process gone)"  # no lock at all
    host = socket.gethostname()
    (d / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": host}))
    assert run_row(d)["status"] == "running"  # this very process holds it
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    (d / ".lock").write_text(json.dumps({"pid": dead, "host": host}))
    assert run_row(d)["status"] == "stopped (process gone)"
