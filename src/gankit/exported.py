"""Reading a ``gankit export`` folder back: the manifest, checksums and the model.

The writing side is :mod:`gankit.export`; this module sits below the API so that
``gankit.load(DIR)`` can recognise and read an export without importing the exporter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from .errors import CheckpointError, ConfigError
from .models.base import ModelFamily
from .rundir import sha256_file
from .trained import WEIGHTS, TrainedModel, build_model

#: The manifest that marks a folder as a gankit export.
EXPORT_MANIFEST = "gankit-export.json"
#: Version of the export layout; a reader refuses newer versions it does not know.
EXPORT_FORMAT = 1


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is an exported model folder (it holds the manifest)."""
    return (Path(path) / EXPORT_MANIFEST).is_file()


def _all_networks(model: ModelFamily) -> dict[str, nn.Module]:
    return {**model.networks(), **model.frozen_networks()}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return {}
    return d if isinstance(d, dict) else {}


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------

def read_manifest(path: str | Path) -> dict[str, Any]:
    p = Path(path) / EXPORT_MANIFEST
    try:
        m = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{p} is not readable ({e})") from None
    if not isinstance(m, dict) or m.get("format") != "gankit-export":
        raise CheckpointError(f"{p} is not a gankit export manifest")
    if not isinstance(m.get("version"), int) or m["version"] > EXPORT_FORMAT:
        raise CheckpointError(f"{path} is a gankit export of format version {m.get('version')}; "
                              f"this gankit reads up to version {EXPORT_FORMAT} (upgrade gankit)")
    return m


def load_export(path: str | Path, *, weights: str = "ema", device: str = "cpu") -> Any:
    """The :class:`~gankit.api.TrainedModel` of an exported folder (what ``gankit.load`` returns
    for one). An export holds one set of weights: ``weights`` other than ``ema`` (the default)
    must name the kind it holds. Every file's SHA-256 is checked against the manifest."""
    from .config import resolve_config
    from .train import checkpoint as ckpt
    from .train.trainer import FamilyBuffers, pick_device

    path = Path(path)
    m = read_manifest(path)
    if weights not in WEIGHTS:
        raise ConfigError(f"weights must be ema, raw, last or best, got '{weights}'")
    if WEIGHTS[weights] not in ("ema", m.get("weights")):
        raise ConfigError(f"{path} is an export of the {m.get('weights')} weights only; "
                          f"{weights} weights are in the run it came from")
    for rel, digest in (m.get("files") or {}).items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"{path} is incomplete: {rel} is missing")
        if sha256_file(f) != digest:
            raise CheckpointError(f"{f} does not match its checksum in {EXPORT_MANIFEST} "
                                  f"(damaged or modified)")
    raw = _read_json(path / "config.json")
    if "model" not in raw:
        raise CheckpointError(f"{path}/config.json is missing or not a gankit config")
    cfg = resolve_config(raw["model"]["name"], raw)
    model = build_model(cfg, m["data_info"])
    for k, net in _all_networks(model).items():
        ckpt.load_into(net, path / "weights" / f"{k}.safetensors")
    if model.family_buffers():
        ckpt.load_into(FamilyBuffers(model), path / "weights" / "family.safetensors")
    dev = pick_device(device)
    model.to(dev).eval()
    return TrainedModel(model, dev)
