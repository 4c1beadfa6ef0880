"""Exact resume after SIGKILL / Ctrl-C, and 2-process data parallel training on CPU."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import checkpoint_tensors
from safetensors.torch import load_file

COMMON = ["--batch-size", "16", "--no-progress", "--set", "train.ckpt_every=4",
          "--set", "train.log_every=2", "--set", "train.sample_every=100",
          "--set", "train.keep_ckpts=10"]
ARGS = ["dcgan", "--data", "digits", "--steps", "24", *COMMON, "--set", "model.width=8"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def sets(name: str) -> list[str]:
    """The family's declared tiny model as --set flags."""
    from gankit.registry import MODELS

    return [a for k, v in MODELS.get(name).tiny.items() for a in ("--set", f"{k}={v}")]


# Runs that must resume bit-identically after SIGKILL: the original GAN, the two families of
# the new core (a paired translator and a likelihood model) and a learning-rate schedule.
CASES = {
    "dcgan": ARGS,
    "gan": ["gan", "--data", "ring8", "--steps", "24", *COMMON, *sets("gan")],
    "pix2pix": ["pix2pix", "--data", "edges2digits", "--steps", "24", *COMMON, *sets("pix2pix")],
    "vae": ["vae", "--data", "digits", "--steps", "24", *COMMON, *sets("vae")],
    "schedule": [*ARGS, "--set", "optim.schedule=cosine", "--set", "optim.warmup=5",
                 "--set", "optim.nets.G.schedule=linear", "--set", "optim.decay_start=6"],
}


def gankit(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gankit.cli", *args], env=ENV,
                          capture_output=True, text=True, check=False, **kw)


def final_weights(run: Path) -> dict:
    """Every tensor of the final checkpoint: all networks, EMA copies, optimizer state."""
    ck = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert ck.name == "step_00000024"
    return checkpoint_tensors(ck, with_lr=True)


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"


def wait_for_checkpoint(run: Path, proc, min_step: int) -> None:
    latest = run / "checkpoints" / "latest"
    for _ in range(1200):
        if latest.exists() and int(latest.read_text().strip()[5:]) >= min_step:
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    r = gankit("train", *ARGS, "--out", str(run))
    assert r.returncode == 0, r.stderr
    return final_weights(run), run


def killed_and_resumed(args: list[str], tmp_path: Path) -> tuple[Path, Path]:
    """Train ``args`` uninterrupted (``ref``) and again SIGKILLed after its step-8 checkpoint
    and resumed (``run``); both must have exited 0. Returns ``(run, ref)``."""
    ref = tmp_path / "ref"
    r = gankit("train", *args, "--out", str(ref))
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gankit.cli", "train", *args, "--out", str(run)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(run, proc, 8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    r = gankit("resume", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr
    return run, ref


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_after_sigkill_is_bit_identical(case, tmp_path):
    run, ref = killed_and_resumed(CASES[case], tmp_path)
    assert_identical(final_weights(run), final_weights(ref))
    # the log has each step once, as the uninterrupted run's
    steps = [line.split(",")[0] for line in (run / "metrics.jsonl").read_text().splitlines()]
    ref_steps = [line.split(",")[0] for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert steps == ref_steps


def test_ctrl_c_checkpoints_then_resumes_identically(reference, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gankit.cli", "train", *ARGS, "--out", str(run)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(run, proc, 4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "gankit resume" in err
    import json

    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    r = gankit("resume", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert_identical(final_weights(run), reference[0])


@pytest.mark.parametrize("model,data,extra", [
    ("dcgan", "digits", ["model.width=8"]),
    ("gan", "ring8", ["loss.name=wasserstein", "loss.gp=wgan-gp", "optim.n_critic=2"]),
    ("pix2pix", "edges2digits", ["model.width=4", "model.n_layers=1"]),
])
def test_two_process_ddp_keeps_ranks_identical(tmp_path, model, data, extra):
    over = ["train.steps=6", "train.batch_size=16", "train.ckpt_every=3", "train.sample_every=100",
            *extra]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(29500 + os.getpid() % 1000),
                        str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path), model, data,
                        *over], env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    a = load_file(tmp_path / "rank0.safetensors")
    b = load_file(tmp_path / "rank1.safetensors")
    assert_identical(a, b)
    # training happened and was saved by rank 0 only, with the world size recorded
    ck = tmp_path / "run" / "checkpoints" / "step_00000006"
    assert (ck / "rng_0.pt").exists() and (ck / "rng_1.pt").exists()
    init = torch.load(ck / "optim.pt", weights_only=True)
    assert init["opts"]["G"]["state"] and init["opts"]["D"]["state"]
