"""``--devices N``: gankit launches its own data-parallel processes (gloo on this CPU machine);
only rank 0 prints; a run resumes with another number of processes (issue 10, item 8)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import checkpoint_tensors

from gankit.launch import strip_devices

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("WORLD_SIZE", None)
ENV.pop("RANK", None)
ARGS = ["dcgan", "--data", "digits", "--batch-size", "16", "--no-progress",
        "--set", "model.width=8", "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
        "--set", "train.sample_every=100", "--set", "train.keep_ckpts=10"]


def gankit(*args):
    return subprocess.run([sys.executable, "-m", "gankit.cli", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=300, check=False)


def state(run: Path, step: int) -> dict:
    return json.loads((run / "checkpoints" / f"step_{step:08d}" / "state.json").read_text())


def test_strip_devices():
    assert strip_devices(["train", "gan", "--devices", "2", "--steps", "3"]) == \
        ["train", "gan", "--steps", "3"]
    assert strip_devices(["resume", "r", "--devices=4"]) == ["resume", "r"]


def test_devices_2_trains_then_resumes_with_1(tmp_path):
    run = tmp_path / "run"
    r = gankit("train", *ARGS, "--steps", "4", "--devices", "2", "--out", run)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("done:") == 1  # rank 0 alone prints
    assert "Traceback" not in r.stderr
    ck4 = run / "checkpoints" / "step_00000004"
    assert state(run, 4)["world"] == 2 and (ck4 / "rng_0.pt").exists() and (ck4 / "rng_1.pt").exists()
    assert json.loads((run / "run.json").read_text())["world"] == 2
    # a different number of processes: continues from the same weights, optimizer and data
    r = gankit("resume", run, "--steps", "8", "--devices", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert state(run, 8)["world"] == 1
    opt = torch.load(run / "checkpoints" / "step_00000008" / "optim.pt", weights_only=True)
    assert all(float(s["step"]) == 8 for s in opt["opts"]["G"]["state"].values())  # not restarted
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_same_number_of_processes_resumes_bit_identically(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert gankit("train", *ARGS, "--steps", "8", "--devices", "2", "--out", ref).returncode == 0
    assert gankit("train", *ARGS, "--steps", "4", "--devices", "2", "--out", run).returncode == 0
    r = gankit("resume", run, "--steps", "8", "--devices", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    a = checkpoint_tensors(run / "checkpoints" / "step_00000008")
    b = checkpoint_tensors(ref / "checkpoints" / "step_00000008")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_error_under_devices_is_one_line(tmp_path):
    r = gankit("train", *ARGS, "--steps", "4", "--devices", "2", "--out", tmp_path / "r",
               "--batch-size", "15")  # not divisible by 2 processes
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "divisible" in lines[0], lines
    r = gankit("train", *ARGS, "--devices", "0", "--out", tmp_path / "r")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --devices must be >= 1")


def test_one_ctrl_c_stops_every_process_at_the_same_checkpointed_step(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gankit.cli", "train", *ARGS, "--steps", "2000",
                             "--devices", "2", "--out", str(run)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    latest = run / "checkpoints" / "latest"
    for _ in range(1200):
        if latest.exists() and latest.read_text().strip() != "step_00000000":
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # to the launcher, as a terminal's Ctrl-C would be
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "checkpoint saved" in lines[0], lines
    step = int(re.search(r"step (\d+)", lines[0]).group(1))
    ck = run / "checkpoints" / f"step_{step:08d}"
    assert state(run, step)["world"] == 2 and (ck / "rng_1.pt").exists()
    assert not (run / ".lock").exists()
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
