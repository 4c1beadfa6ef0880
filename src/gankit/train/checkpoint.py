"""Atomic checkpoints in a run directory (the layout is :mod:`gankit.rundir`'s).

A checkpoint is written into a temporary folder, every file fsync'ed, then renamed into place and
only then named in ``checkpoints/latest`` (itself replaced atomically), so a crash at any instant
leaves the previous checkpoint intact. Weights are safetensors, one file per network (and per EMA
copy, ``{net}_ema``); ``optim.pt``/``rng_*.pt`` hold only tensors and plain values and are read
with ``torch.load(weights_only=True)``. No pickled code is loaded.
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
from ..rundir import atomic_write_text, fsync_path

__all__ = ["CheckpointError", "atomic_write_text", "fsync_path", "latest_checkpoint",
           "load_into", "load_pt", "load_weights", "publish", "read_state", "tmp_dir",
           "write_checkpoint", "write_rank_state", "write_weights"]


def state_for_safetensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def tmp_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f".tmp-step_{step:08d}"


def write_rank_state(folder: Path, rank: int, rng: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(rng, folder / f"rng_{rank}.pt")
    fsync_path(folder / f"rng_{rank}.pt")


def write_weights(folder: Path, nets: dict[str, nn.Module]) -> None:
    """Write ``{name}.safetensors`` per module into ``folder`` atomically (temporary folder,
    fsync, rename): a crash leaves the old folder or none."""
    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, net in nets.items():
        save_file(state_for_safetensors(net), tmp / f"{name}.safetensors")
    for f in tmp.iterdir():
        fsync_path(f)
    old = folder.with_name(f".old-{folder.name}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    fsync_path(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def read_state(folder: Path) -> dict[str, Any]:
    """A checkpoint's ``state.json`` (step, world size, time)."""
    try:
        return json.loads((Path(folder) / "state.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no state.json (an incomplete checkpoint)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{folder}/state.json is corrupt ({e})") from None


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
