"""Where a command writes: output paths checked before any work is done.

The commands that write files (sample, translate, score, eval, report, ...) call
:func:`check_target` first, so a path that cannot be written is one clear line (exit 2) before
a model is loaded or anything is computed, and nothing already written is touched.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


def console():
    """Rich output whose lines are never broken at the terminal width (paths stay whole and
    copyable; off a terminal rich would otherwise wrap at 80 columns)."""
    from rich.console import Console

    return Console(soft_wrap=True)


def check_target(out: Path, file: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be written: a folder where a file
    is meant, a file where a folder is meant, a file as a parent, a read-only folder.
    ``file``: the output is one file whatever its name (eval, report); otherwise a .png/.npy
    name is a file and any other a folder of images."""
    as_file = file or out.suffix in (".png", ".npy")
    if as_file and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name")
    if not as_file and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder, a .png or a .npy")
    parent = out.parent if as_file or not out.exists() else out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {parent} is not writable")


def write_output(x, out: Path, n: int, names: list[str] | None = None) -> None:
    """A .npy array, a .png grid, or a folder of PNGs (named after ``names`` when given)."""
    import numpy as np

    from .train.callbacks import save_samples

    if out.suffix == ".npy":
        np.save(out, x.numpy())
    elif out.suffix == ".png":
        save_samples(x, out)
    else:
        from .data.images import save_images

        if x.dim() != 4:
            raise ConfigError("a folder output needs images; use .npy for points")
        save_images(x, out, names=names)
    console().print(f"wrote {n} outputs to {out}")
