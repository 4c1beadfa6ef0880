"""Atomic checkpoints in a run directory (the layout is :mod:`gankit.rundir`'s).

A checkpoint is written into a temporary folder, every file fsync'ed, then renamed into place and
only then named in ``checkpoints/latest`` (itself replaced atomically), so a crash at any instant
leaves the previous checkpoint intact. Weights are safetensors, one file per network (and per EMA
copy, ``{net}_ema``); ``optim.pt``/``rng_*.pt`` hold only tensors and plain values and are read
with ``torch.load(weights_only=True)``. No pickled code is loaded.

Every checkpoint ends with ``manifest.json``, written last: the SHA-256 and size of each of its
files. :func:`latest_checkpoint` (used by resume, sample, eval and ``gankit.load``) verifies it
and, when the newest checkpoint is damaged (a file changed, cut or missing, a manifest that does
not parse), falls back to the newest intact one, saying so in one line on stderr. Checkpoints of
earlier releases (``state.json`` without ``"format": 2``), which have no manifest, are accepted
when their ``state.json`` reads.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError
from ..rundir import atomic_write_text, fsync_path, sha256_file

__all__ = ["CheckpointError", "atomic_write_text", "checkpoint_step", "fsync_path",
           "latest_checkpoint", "load_into", "load_pt", "load_weights", "publish", "read_state",
           "tmp_dir", "verify", "write_checkpoint", "write_manifest", "write_rank_state",
           "write_weights"]

MANIFEST = "manifest.json"


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
    path = Path(folder) / "state.json"
    try:
        st = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no state.json (an incomplete checkpoint)") from None
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path} is corrupt ({type(e).__name__})") from None
    if not isinstance(st, dict) or not isinstance(st.get("step"), int) or st["step"] < 0:
        raise CheckpointError(f"{path} is corrupt (no step)")
    return st


def write_manifest(folder: Path) -> None:
    """Record the SHA-256 and size of every file of ``folder`` in ``manifest.json`` (written
    last, fsync'ed): what :func:`verify` checks."""
    files = {f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size}
             for f in sorted(Path(folder).iterdir()) if f.is_file() and f.name != MANIFEST}
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps({"files": files}, indent=1))
    fsync_path(path)


def verify(folder: Path) -> None:
    """Raise :class:`CheckpointError` naming the first problem unless ``folder`` is intact: every
    file of its manifest present with its size and SHA-256, and ``state.json`` readable."""
    folder = Path(folder)
    man = folder / MANIFEST
    if man.is_file():
        try:
            files = json.loads(man.read_bytes().decode("utf-8"))["files"]
            items = [(str(k), int(v["bytes"]), str(v["sha256"])) for k, v in files.items()]
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            raise CheckpointError(f"{man} is corrupt") from None
        for name, size, digest in items:
            f = folder / name
            if not f.is_file():
                raise CheckpointError(f"{f} is missing")
            if f.stat().st_size != size or sha256_file(f) != digest:
                raise CheckpointError(f"{f} does not match its checksum (damaged)")
    state = read_state(folder)
    if not man.is_file() and state.get("format", 1) >= 2:
        raise CheckpointError(f"{man} is missing (damaged checkpoint)")


def write_checkpoint(folder: Path, nets: dict[str, nn.Module], optim: dict[str, Any],
                     state: dict[str, Any]) -> None:
    """Write weights, optimizer state and trainer state into ``folder`` (rank 0), then the
    manifest of checksums over every file (the other ranks' ``rng_*.pt`` included)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, net in nets.items():
        save_file(state_for_safetensors(net), folder / f"{name}.safetensors")
    torch.save(optim, folder / "optim.pt")
    (folder / "state.json").write_text(json.dumps(state, indent=1))
    for f in folder.iterdir():
        fsync_path(f)
    write_manifest(folder)


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


def checkpoint_step(folder: Path) -> int:
    """The step in a checkpoint folder's name (``step_00000012`` -> 12)."""
    return int(Path(folder).name.split("_", 1)[1])


def _candidates(run_dir: Path) -> list[Path]:
    """Published checkpoints, the one ``latest`` names first, then the others newest first."""
    ck = run_dir / "checkpoints"
    found = sorted((p for p in ck.glob("step_*") if p.is_dir() and p.name[5:].isdigit()),
                   reverse=True) if ck.is_dir() else []
    ptr = ck / "latest"
    named = None
    if ptr.is_file():
        try:
            named = ck / ptr.read_text().strip()
        except (OSError, ValueError):
            named = None
    if named is not None and named in found:
        found.remove(named)
        found.insert(0, named)
    return found


def has_checkpoint(run_dir: Path, trained: bool = False) -> bool:
    """Whether ``run_dir`` holds any published checkpoint (intact or not); ``trained``: one
    after step 0 (the doctor's safety net at step 0 holds no training)."""
    return any(not trained or checkpoint_step(c) > 0 for c in _candidates(Path(run_dir)))


def latest_checkpoint(run_dir: Path, *, quiet: bool = False) -> Path:
    """The newest intact checkpoint of ``run_dir`` (see :func:`verify`).

    When the checkpoint ``checkpoints/latest`` names is damaged, the newest intact older one is
    returned and one line says so on stderr (unless ``quiet``); when none is intact, a
    :class:`CheckpointError` names the problem of the newest.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} is not a gankit run directory (no config.json)")
    cands = _candidates(run_dir)
    if not cands:
        raise CheckpointError(f"{run_dir} has no checkpoint yet (training stopped before the "
                              f"first one; see train.ckpt_every)")
    first: CheckpointError | None = None
    for ck in cands:
        try:
            verify(ck)
        except CheckpointError as e:
            first = first or e
            continue
        if first is not None and not quiet and os.environ.get("RANK", "0") == "0":
            print(f"warning: {first}; using the newest intact checkpoint, {ck.name}",
                  file=sys.stderr)
        return ck
    raise CheckpointError(f"no intact checkpoint in {run_dir}: {first}")


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
