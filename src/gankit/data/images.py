"""Image utilities (grids, PNG export, 2-D point plots) without torchvision.

All inputs follow the project convention: float tensors ``[N, C, H, W]`` in [-1, 1] with C = 1
or 3. Files are written atomically (temporary file in the same folder, then ``os.replace``) so an
interrupted run never leaves a truncated sample grid behind.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["make_grid", "plot_points", "save_grid", "save_images", "to_uint8"]

_MIN_TILE_PX = 56  # save_grid's default scale makes every tile at least this tall
_MAX_REAL_POINTS = 20_000  # plot_points thins the real cloud beyond this (it is only context)


def _as_images(x: torch.Tensor) -> torch.Tensor:
    """Detached float32 CPU ``[N, C, H, W]`` with NaN/Inf replaced, in [-1, 1]."""
    x = torch.as_tensor(x).detach()
    if x.dim() == 3:  # one image [C, H, W]
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, C, H, W] with C = 1 or 3, got shape {tuple(x.shape)}")
    x = x.to("cpu", torch.float32)
    # Diverged generators emit NaN; show it as mid-grey instead of undefined uint8 values.
    return torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0).clamp_(-1.0, 1.0)


def _quantize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 0..255 (round to nearest)."""
    return ((x + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Convert images ``[N, C, H, W]`` in [-1, 1] to a ``uint8`` array ``[N, H, W, C]``.

    -1 maps to 0 and 1 to 255; values outside [-1, 1] are clipped and NaN becomes mid-grey.
    """
    return _quantize(_as_images(x)).permute(0, 2, 3, 1).contiguous().numpy()


def make_grid(
    x: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0
) -> np.ndarray:
    """Tile images ``[N, C, H, W]`` in [-1, 1] into one ``uint8`` RGB array ``[H', W', 3]``.

    ``nrow`` is the number of images per row (default ``ceil(sqrt(N))``, a near-square grid);
    tiles are separated and surrounded by ``padding`` pixels of ``pad_value`` (in image units:
    1.0 is white, -1.0 black), which also fills empty cells of the last row. Grayscale images are
    replicated to RGB. ``H' = rows * (H + padding) + padding``, likewise for ``W'``.
    """
    x = _as_images(x)
    n, c, h, w = x.shape
    if n == 0:
        raise ValueError("make_grid needs at least one image")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    ncol = min(n, nrow if nrow is not None else math.ceil(math.sqrt(n)))
    if ncol < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    rows = math.ceil(n / ncol)
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    grid = torch.full(
        (3, rows * (h + padding) + padding, ncol * (w + padding) + padding),
        float(max(-1.0, min(1.0, pad_value))),
    )
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    return _quantize(grid).permute(1, 2, 0).contiguous().numpy()


def _atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_name)`` on a temp file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs should be readable
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def save_grid(
    x: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None
) -> Path:
    """Write a grid of images ``[N, C, H, W]`` in [-1, 1] to a PNG at ``path``; returns the path.

    ``scale`` enlarges the grid by an integer factor with nearest-neighbour upsampling so small
    images stay crisp and visible; by default it is the smallest factor that makes each tile at
    least 56 px tall (7 for 8x8 digits, 2 for 28x28 MNIST, 1 from 56 px up). The file is written
    atomically.
    """
    grid = make_grid(x, nrow=nrow)
    h = int(torch.as_tensor(x).shape[-2])
    if scale is None:
        scale = max(1, math.ceil(_MIN_TILE_PX / max(h, 1)))
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if scale > 1:
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    img = Image.fromarray(grid)
    return _atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"))


def save_images(x: torch.Tensor, folder: str | Path, prefix: str = "img",
                names: list[str] | None = None) -> list[Path]:
    """Write each image of ``[N, C, H, W]`` in [-1, 1] as its own PNG in ``folder``.

    Files are named ``{prefix}_{i:05d}.png`` (zero-padded so name order is sample order), or
    ``{names[i]}.png`` when ``names`` are given (``gankit translate`` keeps the inputs' names);
    one-channel images are saved as 8-bit grayscale (mode ``L``), three-channel as RGB. Used to
    export samples for ``gankit eval --fake FOLDER``. Returns the written paths in order.
    """
    arr = to_uint8(x)  # [N, H, W, C]
    if names is not None and (len(names) != len(arr) or len(set(names)) != len(names)):
        raise ValueError(f"need {len(arr)} distinct names, got {len(names)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(arr) - 1)))
    paths: list[Path] = []
    for i, a in enumerate(arr):
        p = folder / (f"{names[i]}.png" if names is not None else f"{prefix}_{i:0{width}d}.png")
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(p, format="PNG")
        paths.append(p)
    return paths


def _points(t: torch.Tensor, what: str) -> np.ndarray:
    a = torch.as_tensor(t).detach().to("cpu", torch.float32).numpy()
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"plot_points expects {what} points [N, 2], got shape {a.shape}")
    return a[:, :2]


def plot_points(
    fake: torch.Tensor, real: torch.Tensor | None, path: str | Path, title: str = ""
) -> Path:
    """Scatter-plot 2-D points and save a PNG (dpi 100); returns the path.

    ``real`` (optional) is drawn as small light-grey dots underneath, ``fake`` in colour on top,
    with equal axis scales so a ring stays round -- the classic view of mode collapse on the toy
    mixtures (seed 002 §3.1, VEEGAN's ring/grid figures). Points with more than two coordinates
    are plotted by their first two. The figure is not registered with pyplot, so nothing leaks.
    """
    # Headless-safe without touching the caller's backend: a Figure of its own on an Agg canvas
    # never opens a window.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    f = _points(fake, "fake")
    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if real is not None:
        r = _points(real, "real")
        if len(r) > _MAX_REAL_POINTS:  # evenly spaced subset: deterministic, keeps all modes
            r = r[np.linspace(0, len(r) - 1, _MAX_REAL_POINTS).astype(np.int64)]
        ax.scatter(r[:, 0], r[:, 1], s=2, c="#c8c8c8", linewidths=0, label="real", rasterized=True)
    ax.scatter(f[:, 0], f[:, 1], s=4, c="tab:red", alpha=0.6, linewidths=0, label="fake",
               rasterized=True)
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title)
    if real is not None:
        ax.legend(loc="upper right", markerscale=3, frameon=False)
    fig.tight_layout()
    out = _atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    fig.clf()
    return out
