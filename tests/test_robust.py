"""Runs that survive mistakes: one-line errors that leave the run directory as it was, locks,
checksummed checkpoints with fallback, truthful interruption, no dead ends (issue 10, 5 and 9)."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import cli_output
from safetensors.torch import load_file

import gankit
from gankit.errors import CheckpointError, ConfigError, Interrupted
from gankit.rundir import RunDir
from gankit.train import checkpoint as ckpt
from gankit.train.trainer import Callback

TINY = ["--batch-size", "16", "--no-progress", "--set", "model.width=8",
        "--set", "train.ckpt_every=2", "--set", "train.sample_every=100",
        "--set", "train.log_every=2", "--set", "train.keep_ckpts=5"]
OVER = {"model.width": 8, "train.batch_size": 16, "train.ckpt_every": 2,
        "train.sample_every": 100, "train.log_every": 2, "train.keep_ckpts": 5}


cli = cli_output


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*"))
            if p.is_file()}


def assert_one_error(code, err, match=""):
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0] and match in err[0], err


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A finished 4-step DCGAN run on digits with checkpoints at steps 0, 2 and 4."""
    out = tmp_path_factory.mktemp("base") / "run"
    gankit.train("dcgan", "digits", steps=4, out=out, overrides=OVER, progress=False)
    return out


@pytest.fixture
def run(base_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst


def final(run_dir: Path) -> Path:
    return ckpt.latest_checkpoint(run_dir, quiet=True)


# -- one line, exit 2, nothing written ------------------------------------------------------------
@pytest.mark.parametrize("extra,match", [
    (["--set", "optim.lr_g=-1"], "optim.lr_g"),
    (["--set", "optim.lr=0"], "optim.lr"),
    (["--set", "optim.nets.D.lr=-0.1"], "optim.nets.D.lr"),
    (["--set", "train.ema_decay=2"], "train.ema_decay"),
    (["--set", "train.eval_metrics=[fdi]", "--eval-every", "2"], "did you mean 'fid'"),
    (["--batch-size", "5000"], "larger than the dataset"),
    (["--set", "model.latent_dim=-1"], "latent_dim must be >= 1"),
    (["--set", "model.width=0"], "width must be >= 1"),
    (["--set", "optim.betas_d=[2,0.9]"], "optim.betas_d"),
    (["--set", "loss.lambda_gp=-1"], "loss.lambda_gp"),
])
def test_bad_values_fail_before_anything_is_written(capsys, tmp_path, extra, match):
    code, _, err = cli(capsys, "train", "dcgan", "--data", "digits", "--steps", "2", *TINY,
                       *extra, "--out", tmp_path / "r")
    assert_one_error(code, err, match)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content,match", [
    (b"\x00\xff\xfe\x80binary", "not a text file"),
    (b"data: digits\n", "section 'data' must be a mapping"),
    (b"train: [1, 2]\n", "section 'train' must be a mapping"),
    (b"- a\n- b\n", "top level must be a mapping"),
    (b"train: {steps: [oops\n", "not valid YAML"),
    (b"1: 2\n", "section names are words"),
])
def test_bad_config_files_are_one_line(capsys, tmp_path, content, match):
    f = tmp_path / "c.yaml"
    f.write_bytes(content)
    code, _, err = cli(capsys, "train", "dcgan", "--config", f, "--out", tmp_path / "r")
    assert_one_error(code, err, match)
    assert not (tmp_path / "r").exists()


def test_out_that_is_a_file_or_unwritable(capsys, tmp_path, base_run, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    args = ["train", "dcgan", "--data", "digits", "--steps", "2", *TINY]
    assert_one_error(*cli(capsys, *args, "--out", f)[::2], "is a file")
    assert_one_error(*cli(capsys, *args, "--out", f / "sub")[::2], "is a file")
    assert f.read_text() == "x"
    # a read-only parent (simulated: the tests run as root, who may write anywhere)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if self.parent == ro:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert_one_error(*cli(capsys, *args, "--out", ro / "x")[::2], "Permission denied")
    assert list(ro.iterdir()) == []
    # sample / eval / report outputs in a folder that is not writable: refused before any work
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == ro else real_access(p, m))
    before = snapshot(base_run)
    for cmd in (["sample", base_run, "--out", ro / "s.png"],
                ["eval", base_run, "--n", "10", "--out", ro / "e.json"],
                ["report", base_run, "--out", ro / "r.html"]):
        assert_one_error(*cli(capsys, *cmd)[::2], "not writable")
    (tmp_path / "d.png").mkdir()
    assert_one_error(*cli(capsys, "sample", base_run, "--out", f)[::2], "is a file")
    assert_one_error(*cli(capsys, "sample", base_run, "--out", tmp_path / "d.png")[::2],
                     "is a folder")
    assert_one_error(*cli(capsys, "report", base_run, "--out", f / "r.html")[::2], "is a file")
    assert snapshot(base_run) == before and list(ro.iterdir()) == []


def test_eval_n_must_be_positive(capsys, run):
    before = snapshot(run)
    assert_one_error(*cli(capsys, "eval", run, "--n", "-5")[::2], "--n")
    assert_one_error(*cli(capsys, "sample", run, "--n", "0", "--out", run / "s.png")[::2], "--n")
    with pytest.raises(ConfigError, match="positive"):
        gankit.evaluate_run(run, n=-5) if hasattr(gankit, "evaluate_run") else \
            __import__("gankit.api", fromlist=["x"]).evaluate_run(run, n=-5)
    assert snapshot(run) == before


# -- resume validates before it writes -------------------------------------------------------------
def test_failing_resume_changes_nothing(capsys, run):
    before = snapshot(run)
    for steps, match in (("2", "below the step of the checkpoint (4)"),
                         ("0", "below the step of the checkpoint")):
        assert_one_error(*cli(capsys, "resume", run, "--steps", steps, "--no-progress")[::2],
                         match)
    # a config that no longer validates
    cfg = json.loads((run / "config.json").read_text())
    cfg["optim"]["lr_g"] = -1
    (run / "config.json").write_text(json.dumps(cfg))
    before = snapshot(run)
    assert_one_error(*cli(capsys, "resume", run, "--steps", "8", "--no-progress")[::2],
                     "optim.lr_g")
    assert snapshot(run) == before


def test_damaged_run_files_are_one_line_and_change_nothing(capsys, run):
    for name, content in (("run.json", b"\xff\xfe"), ("run.json", b"[1, 2]"),
                          ("config.json", b"{\"model\": 3}"), ("config.json", b"\x00\x01")):
        d = run.parent / f"d{len(list(run.parent.iterdir()))}"
        shutil.copytree(run, d)
        (d / name).write_bytes(content)
        before = snapshot(d)
        assert_one_error(*cli(capsys, "resume", d, "--steps", "6", "--no-progress")[::2], name)
        assert_one_error(*cli(capsys, "sample", d, "--out", run.parent / "s.png")[::2], name)
        assert snapshot(d) == before


# -- checksums and fallback ------------------------------------------------------------------------
def test_checkpoints_carry_a_manifest_of_checksums(run):
    ck = final(run)
    man = json.loads((ck / "manifest.json").read_text())["files"]
    assert set(man) == {p.name for p in ck.iterdir()} - {"manifest.json"}
    ckpt.verify(ck)
    with open(ck / "optim.pt", "r+b") as f:  # one flipped byte
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(CheckpointError, match="optim.pt does not match its checksum"):
        ckpt.verify(ck)


@pytest.mark.parametrize("damage", ["state", "weights", "missing", "manifest"])
def test_damaged_newest_checkpoint_falls_back_to_an_intact_one(capsys, run, damage):
    ck4 = run / "checkpoints" / "step_00000004"
    {"state": lambda: (ck4 / "state.json").write_text("{garbage"),
     "weights": lambda: (ck4 / "G_ema.safetensors").write_bytes(b"\0" * 10),
     "missing": lambda: (ck4 / "optim.pt").unlink(),
     "manifest": lambda: (ck4 / "manifest.json").write_bytes(b"\xff")}[damage]()
    # load / sample: the weights of step 2, said once on stderr
    g = gankit.load(run)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "using the newest intact checkpoint, step_00000002" in err[0]
    ref = load_file(run / "checkpoints" / "step_00000002" / "G_ema.safetensors")
    assert all(torch.equal(v, g.model.G.state_dict()[k]) for k, v in ref.items())
    # resume continues from step 2 and reaches step 6
    code, _, err = cli(capsys, "resume", run, "--steps", "6", "--no-progress")
    assert code == 0, err
    assert len(err) == 1 and err[0].startswith("warning:") and "step_00000002" in err[0]
    assert ckpt.read_state(final(run))["step"] == 6
    steps = [r["step"] for r in RunDir(run).read("metrics") if "it_s" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # steps 3, 4 retrained once each


def test_every_checkpoint_damaged_is_one_line(capsys, run):
    for ck in (run / "checkpoints").glob("step_*"):
        (ck / "state.json").write_bytes(b"\x00")
    before = snapshot(run)
    assert_one_error(*cli(capsys, "resume", run, "--no-progress")[::2], "no intact checkpoint")
    assert_one_error(*cli(capsys, "sample", run, "--out", run.parent / "s.png")[::2],
                     "no intact checkpoint")
    assert snapshot(run) == before


def test_cut_last_metrics_line_at_resume(capsys, run):
    m = run / "metrics.jsonl"
    m.write_bytes(m.read_bytes().rstrip(b"\n") + b'\n{"step": 5, "note": "\xc3')  # cut in a char
    code, _, err = cli(capsys, "resume", run, "--steps", "6", "--no-progress")
    assert code == 0, err
    lines = m.read_text().splitlines()
    assert all(isinstance(json.loads(ln), dict) for ln in lines)  # the torn line is gone
    assert json.loads(lines[-1])["step"] == 6


# -- full disk ---------------------------------------------------------------------------------------
def test_full_disk_during_a_checkpoint(capsys, run, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full)
    intact = snapshot(run / "checkpoints")
    code, _, err = cli(capsys, "resume", run, "--steps", "8", "--no-progress")
    assert_one_error(code, err, "could not write the checkpoint of step 6")
    assert "No space left on device" in err[0] and "step 4 is intact" in err[0]
    assert snapshot(run / "checkpoints") == intact  # no partial folder, old ones untouched
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and info["checkpoint_step"] == 4
    assert not (run / ".lock").exists()
    monkeypatch.undo()
    code, _, err = cli(capsys, "resume", run, "--steps", "8", "--no-progress")
    assert code == 0 and ckpt.read_state(final(run))["step"] == 8


# -- the writer's lock ------------------------------------------------------------------------------
def test_a_run_being_trained_cannot_be_resumed(capsys, run):
    before = snapshot(run)
    with RunDir(run).locked():
        code, _, err = cli(capsys, "resume", run, "--steps", "6", "--no-progress")
        assert_one_error(code, err, f"in use by process {os.getpid()}")
        code, _, err = cli(capsys, "train", "dcgan", "--data", "digits", "--steps", "2", *TINY,
                           "--out", run, "--overwrite")
        assert code == 2
        assert snapshot(run) == before | {".lock": (run / ".lock").read_bytes()}
    assert not (run / ".lock").exists()


def test_a_stale_lock_is_taken_over_and_a_foreign_one_is_not(capsys, run):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = run / ".lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert RunDir(run).lock_owner() is None
    code, _, err = cli(capsys, "resume", run, "--steps", "6", "--no-progress")
    assert code == 0, err
    assert not lock.exists()
    lock.write_text(json.dumps({"pid": 1, "host": "another-machine", "started": "x"}))
    code, _, err = cli(capsys, "resume", run, "--steps", "8", "--no-progress")
    assert_one_error(code, err, "on another-machine")
    assert lock.exists()


# -- interruption tells the truth; no dead ends --------------------------------------------------
class _SigintAt(Callback):
    """Sends this process SIGINT ``times`` times at the end of step ``at`` (as Ctrl-C would)."""

    def __init__(self, at, times):
        self.at, self.times = at, times

    def on_step_end(self, tr):
        if tr.step == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


def test_one_ctrl_c_saves_the_step_two_say_what_was_saved(tmp_path):
    over = {**OVER, "train.doctor": False}
    with pytest.raises(Interrupted) as e1:
        gankit.train("dcgan", "digits", steps=20, out=tmp_path / "a", overrides=over,
                     progress=False, callbacks=[_SigintAt(3, 1)])
    assert (e1.value.step, e1.value.saved) == (3, 3) and "checkpoint saved" in e1.value.message()
    with pytest.raises(Interrupted) as e2:
        gankit.train("dcgan", "digits", steps=20, out=tmp_path / "b", overrides=over,
                     progress=False, callbacks=[_SigintAt(3, 2)])
    assert (e2.value.step, e2.value.saved) == (3, 2)
    msg = e2.value.message()
    assert "without saving it" in msg and "step 2" in msg and "gankit resume" in msg
    assert final(tmp_path / "b").name == "step_00000002"
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["status"] == "interrupted" and info["checkpoint_step"] == 2


def test_a_run_stopped_before_its_first_checkpoint_is_no_dead_end(capsys, tmp_path):
    """Ctrl-C at once: train refuses the folder with the way out; --overwrite and resume work,
    and resume-from-scratch equals a fresh run bit for bit."""
    over = {**OVER, "train.doctor": False, "train.ckpt_every": 100}
    out = tmp_path / "r"
    with pytest.raises(Interrupted) as e:
        gankit.train("dcgan", "digits", steps=4, out=out, overrides=over, progress=False,
                     callbacks=[_SigintAt(1, 2)])
    assert e.value.saved is None and "from step 0" in e.value.message()
    assert not ckpt.has_checkpoint(out)
    with pytest.raises(ConfigError, match="--overwrite"):
        gankit.train("dcgan", "digits", steps=4, out=out, overrides=over, progress=False)
    code, _, err = cli(capsys, "resume", out, "--no-progress")
    assert code == 0 and len(err) == 1 and "from step 0" in err[0]
    ref = gankit.train("dcgan", "digits", steps=4, out=tmp_path / "ref", overrides=over,
                       progress=False)
    a, b = load_file(final(out) / "G.safetensors"), load_file(final(ref.run_dir) / "G.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # --overwrite of a folder that holds trained checkpoints, or is no run, is refused
    with pytest.raises(ConfigError, match="--overwrite refused"):
        gankit.train("dcgan", "digits", steps=4, out=out, overrides=over, progress=False,
                     overwrite=True)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not a gankit run"):
        gankit.train("dcgan", "digits", steps=4, out=other, overrides=over, progress=False,
                     overwrite=True)
    assert (other / "notes.txt").read_text() == "keep"


def test_overwrite_replaces_a_run_without_checkpoint(capsys, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model": {"name": "dcgan"}}))
    (out / "run.json").write_text(json.dumps({"status": "failed"}))
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    args = ["train", "dcgan", "--data", "digits", "--steps", "2", *TINY, "--out", out]
    code, _, err = cli(capsys, *args)
    assert_one_error(code, err, "status failed); start again there with --overwrite")
    code, _, err = cli(capsys, *args, "--overwrite")
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert ckpt.read_state(final(out))["step"] == 2
    assert not (out / ".lock").exists()


# -- which weights ----------------------------------------------------------------------------------
def test_weights_last_best_ema_raw(capsys, tmp_path):
    over = {**OVER, "train.eval_every": 2, "train.eval_n": 64, "train.eval_metrics": ["fid"]}
    r = gankit.train("dcgan", "digits", steps=4, out=tmp_path / "r", overrides=over,
                     progress=False).run_dir
    ck = final(r)
    G = {w: gankit.load(r, weights=w).model.G.state_dict() for w in ("ema", "raw", "last",
                                                                      "best")}
    ema, raw = load_file(ck / "G_ema.safetensors"), load_file(ck / "G.safetensors")
    assert all(torch.equal(G["ema"][k], ema[k]) and torch.equal(G["last"][k], ema[k]) for k in ema)
    assert all(torch.equal(G["raw"][k], raw[k]) for k in raw)
    assert not all(torch.equal(ema[k], raw[k]) for k in raw)
    best = load_file(r / "best" / "G_ema.safetensors")
    assert all(torch.equal(G["best"][k], best[k]) for k in best)
    with pytest.raises(ConfigError, match="ema, raw, last or best"):
        gankit.load(r, weights="newest")
    code, _, err = cli(capsys, "sample", r, "--weights", "last", "--n", "4",
                         "--out", tmp_path / "s.npy")
    assert code == 0 and (tmp_path / "s.npy").exists(), err
    code, out, _ = cli(capsys, "sample", "--help")
    assert "last: same as ema" in " ".join(out.split())
