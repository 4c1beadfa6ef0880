"""The command line that reproduces a run: ``gankit train MODEL --data ... --set ...``.

Every config value that differs from what the command's own flags and the model's defaults give
is written as a ``--set key=value`` override (data-dependent defaults the family filled in
included), so resolving the command's config yields the run's saved config exactly, seed
included; on CPU the new run is then bit-identical to the old one.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

__all__ = ["reproduce_argv", "reproduce_command"]

#: config keys that have their own ``gankit train`` flag
_FLAGS = {("train", "steps"): "--steps", ("train", "batch_size"): "--batch-size",
          ("train", "seed"): "--seed"}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out |= _flatten(v, key + ".")
        else:
            out[key] = v
    return out


def _value(v: Any) -> str:
    """A ``--set`` value that :func:`gankit.config.parse_value` reads back as ``v``."""
    from .config import parse_value

    if isinstance(v, str):
        return v if parse_value(v) == v else json.dumps(v)  # quote "1e-3"-like strings, "null"
    if isinstance(v, float):
        return repr(v)
    return json.dumps(v, separators=(",", ":"))


def reproduce_argv(cfg: dict[str, Any]) -> list[str]:
    """The ``gankit train`` argument list whose resolved config equals ``cfg`` (a saved
    config.json). Custom networks (``gankit.GAN``) cannot be rebuilt from the command line: a
    :class:`~gankit.errors.ConfigError`."""
    from .config import resolve_config
    from .errors import ConfigError

    name = cfg.get("model", {}).get("name")
    if not name or name == "custom":
        raise ConfigError("runs of custom networks are reproduced from Python, not the command "
                          "line")
    data = cfg.get("data", {}).get("name", "mnist5k")
    t = cfg.get("train", {})
    argv = ["gankit", "train", name, "--data", str(data)]
    flags = {"data": {"name": data}, "train": {}}
    for (sec, key), flag in _FLAGS.items():
        if key in t:
            argv += [flag, str(t[key])]
            flags["train"][key] = t[key]
    base = _flatten(resolve_config(name, flags).to_dict())
    want = _flatten(cfg)
    for key, v in want.items():
        if key == "model.name" or (key in base and base[key] == v):
            continue
        argv += ["--set", f"{key}={_value(v)}"]
    return argv


def reproduce_command(cfg: dict[str, Any]) -> str:
    """:func:`reproduce_argv` as one shell-quoted line."""
    return " ".join(shlex.quote(a) for a in reproduce_argv(cfg))
