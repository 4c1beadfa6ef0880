"""``--devices N``: run one ``gankit`` command in N processes, as ``torchrun`` would.

``gankit train ... --devices 2`` starts two copies of the same command (without ``--devices``)
with the environment of ``torch.distributed``'s ``env://`` rendezvous (``MASTER_ADDR``,
``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``); each joins the
process group in :func:`gankit.train.distributed.init_distributed` (NCCL on GPUs, one GPU per
process; gloo on CPU) and the Trainer averages gradients over them. It is the launch
``torchrun --standalone --nproc-per-node N -m gankit.cli ...`` does, done here so that:

- only rank 0 prints (the others' stdout is discarded, their stderr kept for a failure);
- an error is one line and one exit code (rank 0's, or the first failing rank's), never the
  launcher's report of child tracebacks;
- one Ctrl-C reaches every process exactly once (the processes run in their own session and
  the launcher forwards the signal), so all of them finish the step and checkpoint together;
  a second Ctrl-C stops them at once;
- when one process fails, the others, which would wait for it in a collective, are stopped.

The world size is recorded in ``run.json`` and in each checkpoint's ``state.json``; a run can be
resumed with another number of processes (see :meth:`gankit.train.trainer.Trainer.load_checkpoint`
for what then is and is not bit-identical).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from .errors import ConfigError


def strip_devices(argv: list[str]) -> list[str]:
    """``argv`` without its ``--devices N`` / ``--devices=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--devices":
            skip = True
        elif not a.startswith("--devices="):
            out.append(a)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_devices(n: int) -> None:
    if n < 1:
        raise ConfigError(f"--devices must be >= 1, got {n}")
    if os.environ.get("WORLD_SIZE") not in (None, "1") and int(os.environ["WORLD_SIZE"]) != n:
        raise ConfigError(f"--devices {n} inside a launch of {os.environ['WORLD_SIZE']} "
                          f"processes; give one or the other")


def launch(argv: list[str], n: int) -> int:
    """Run ``python -m gankit.cli *argv`` in ``n`` processes; the exit code to use."""
    import torch

    if torch.cuda.is_available() and n > torch.cuda.device_count():
        raise ConfigError(f"--devices {n}: this machine has {torch.cuda.device_count()} GPU(s)")
    port = _free_port()
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n), "GROUP_RANK": "0",
            "PYTHONUNBUFFERED": "1",
            "GANKIT_RUN_STAMP": time.strftime("%Y%m%d-%H%M%S")}  # one default --out for all
    if "OMP_NUM_THREADS" not in base:  # n processes share the cores
        base["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
    cmd = [sys.executable, "-m", "gankit.cli", *strip_devices(argv)]
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(1, n)]  # noqa: SIM115
    procs = []
    for r in range(n):
        env = {**base, "RANK": str(r), "LOCAL_RANK": str(r)}
        procs.append(subprocess.Popen(
            cmd, env=env, start_new_session=True,
            stdout=None if r == 0 else subprocess.DEVNULL,
            stderr=None if r == 0 else logs[r - 1]))

    def forward(signum: int, frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGINT)

    old = signal.signal(signal.SIGINT, forward) if _main_thread() else None
    stopped: set[int] = set()
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.returncode not in (None, 0)]
            if failed:  # the others would wait for it in a collective
                time.sleep(2.0)  # let them finish on their own (a shared Ctrl-C, one error)
                for i, p in enumerate(procs):
                    if p.poll() is None:
                        stopped.add(i)
                        p.kill()
                for p in procs:
                    p.wait()
                break
            time.sleep(0.05)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    codes = [p.returncode if p.returncode >= 0 else 128 - p.returncode for p in procs]
    if codes[0] != 0 and 0 not in stopped:
        return codes[0]
    for r in range(1, n):
        if codes[r] != 0 and r not in stopped:
            logs[r - 1].seek(0)
            lines = [ln for ln in logs[r - 1].read().splitlines() if ln.strip()]
            msg = lines[-1] if lines else f"error: process {r} exited with code {codes[r]}"
            print(f"{msg} (process {r} of {n})", file=sys.stderr)
            return codes[r]
    return codes[0]


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
