"""Atomic checkpoints in a run directory.

Layout::

    run_dir/config.json            resolved config
    run_dir/run.json               data description, status, versions
    run_dir/metrics.jsonl          one JSON line per log interval
    run_dir/samples/step_*.png     grids from a fixed z
    run_dir/checkpoints/latest     name of the newest complete checkpoint
    run_dir/checkpoints/step_00000500/{G,D,G_ema}.safetensors, optim.pt, rng_<rank>.pt, state.json

A checkpoint is written into a temporary folder, every file fsync'ed, then renamed into place and
only then named in ``latest`` (itself replaced atomically), so a crash at any instant leaves the
previous checkpoint intact. Weights are safetensors; ``optim.pt``/``rng_*.pt`` hold only tensors
and plain values and are read with ``torch.load(weights_only=True)``. No pickled code is loaded.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError

WEIGHT_FILES = ("G", "D", "G_ema")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def state_for_safetensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def tmp_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f".tmp-step_{step:08d}"


def write_rank_state(folder: Path, rank: int, rng: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(rng, folder / f"rng_{rank}.pt")
    fsync_path(folder / f"rng_{rank}.pt")


def write_checkpoint(folder: Path, nets: dict[str, nn.Module], optim: dict[str, Any],
                     state: dict[str, Any]) -> None:
    """Write weights, optimizer state and trainer state into ``folder`` (rank 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, net in nets.items():
        save_file(state_for_safetensors(net), folder / f"{name}.safetensors")
    torch.save(optim, folder / "optim.pt")
    (folder / "state.json").write_text(json.dumps(state, indent=1))
    for f in folder.iterdir():
        fsync_path(f)


def publish(run_dir: Path, folder: Path, step: int, keep: int) -> Path:
    """Rename a complete temporary checkpoint into place, point ``latest`` at it, prune old ones."""
    ck = run_dir / "checkpoints"
    final = ck / f"step_{step:08d}"
    if final.exists():  # re-saving the same step (e.g. Ctrl-C right after a periodic save)
        shutil.rmtree(final)
    os.replace(folder, final)
    fsync_path(ck)
    atomic_write_text(ck / "latest", final.name + "\n")
    done = sorted(p for p in ck.glob("step_*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ck.glob(".tmp-*"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} is not a gankit run directory (no config.json)")
    ptr = run_dir / "checkpoints" / "latest"
    if not ptr.is_file():
        raise CheckpointError(f"{run_dir} has no checkpoint yet (training stopped before the "
                              f"first one; see train.ckpt_every)")
    ck = run_dir / "checkpoints" / ptr.read_text().strip()
    if not ck.is_dir():
        raise CheckpointError(f"{ptr} names {ck.name}, which is missing")
    return ck


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None


def load_into(module: nn.Module, path: Path) -> None:
    sd = load_weights(path)
    try:
        module.load_state_dict(sd)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{path} does not fit this model ({first}); was the config "
                              f"changed since the run was made?") from None


def load_pt(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (corrupt or crafted file: any failure is "unreadable")
        raise CheckpointError(f"{path} could not be read safely ({type(e).__name__}: {e})") from None
