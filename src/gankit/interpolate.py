"""Latent interpolation: walks between random latent vectors, as a grid and an animated GIF.

Each row of the grid joins two latent vectors drawn from the model's prior by spherical linear
interpolation (slerp, Shoemake 1985, "Animating rotation with quaternion curves"): a Gaussian
latent has nearly all its mass near a sphere of radius sqrt(d), and the straight line between
two such points passes through the low-norm interior the generator never saw in training, while
slerp keeps the norm (White 2016, "Sampling Generative Networks"). Rows are ``(start, end)``
pairs of seeds; columns are the ``steps`` points ``t = 0 .. 1`` of the walk.

GAN families interpolate in the generator's input ``z`` (their ``sample_latent`` prior and
``generate``); the VAE in its code space (``z ~ N(0, I)`` through ``decode``). Conditional
models hold the class fixed along each row. Families without a latent space (translators,
...) refuse with a one-line :class:`~gankit.models.base.CapabilityError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import ConfigError
from .models.base import CapabilityError, GANFamily, ModelFamily

__all__ = ["interpolate", "latent_walk", "slerp", "write_interpolation"]


def slerp(z0: Tensor, z1: Tensor, t: Tensor | float, eps: float = 1e-7) -> Tensor:
    """Spherical linear interpolation between rows of ``z0`` and ``z1`` (``[N, D]``) at ``t``.

    ``t`` is a float or a tensor broadcastable to ``[N, 1]``. The angle is that between the
    directions of the two vectors; the formula ``sin((1-t)W)/sin W z0 + sin(tW)/sin W z1``
    (Shoemake 1985) is applied to the unnormalised vectors, so their norms are interpolated too.
    Nearly parallel rows (``sin W < eps``) fall back to the straight line.
    """
    t = torch.as_tensor(t, dtype=z0.dtype, device=z0.device)
    if t.dim() == 0:
        t = t.expand(len(z0), 1)
    elif t.dim() == 1:
        t = t[:, None]
    a = z0 / z0.norm(dim=1, keepdim=True).clamp_min(eps)
    b = z1 / z1.norm(dim=1, keepdim=True).clamp_min(eps)
    omega = torch.acos((a * b).sum(1, keepdim=True).clamp(-1.0, 1.0))  # [N, 1]
    so = torch.sin(omega)
    lerp = (1 - t) * z0 + t * z1
    safe = so.abs() > eps
    so_ = torch.where(safe, so, torch.ones_like(so))
    spherical = (torch.sin((1 - t) * omega) / so_) * z0 + (torch.sin(t * omega) / so_) * z1
    return torch.where(safe, spherical, lerp)


def latent_walk(model: ModelFamily) -> tuple[Callable[[int, torch.Generator], Tensor],
                                             Callable[[Tensor, Tensor | None], Tensor]]:
    """``(draw(n, generator) -> z [n, D], render(z, c) -> samples)`` of a family with a latent
    space; a :class:`CapabilityError` for one without."""
    model.require("sample")
    if isinstance(model, GANFamily):
        def draw(n: int, g: torch.Generator) -> Tensor:
            return model.sample_latent(n, g, model.device)

        def render(z: Tensor, c: Tensor | None) -> Tensor:
            return model.generate(model.G, z, c)

        return draw, render
    dim = getattr(model, "latent_dim", None)
    if "decode" in model.capabilities and isinstance(dim, int) and dim > 0:
        def draw_code(n: int, g: torch.Generator) -> Tensor:
            return torch.randn(n, dim, generator=g, device=model.device)

        def decode(z: Tensor, c: Tensor | None) -> Tensor:
            return model.decode(z)

        return draw_code, decode
    raise CapabilityError(f"model '{model.name}' has no latent space to interpolate in")


def interpolate(trained: Any, n_rows: int = 4, steps: int = 8, seed: int = 0,
                labels: Any = None) -> Tensor:
    """A latent interpolation grid: ``[n_rows * steps, ...]`` samples on the CPU, row-major.

    Row ``i`` walks by slerp from the latent drawn for seed ``seed + 2i`` to that of seed
    ``seed + 2i + 1`` in ``steps`` equal steps of ``t`` (both ends included). ``labels``
    (conditional models): one int for every row, or ``n_rows`` ints, one class per row; default
    row ``i`` shows class ``i mod K``. Uses the sampling weights (EMA copies where kept).
    """
    if n_rows < 1 or steps < 2:
        raise ConfigError(f"interpolation needs at least 1 row and 2 steps, got {n_rows} rows "
                          f"and {steps} steps")
    model = trained.model
    draw, render = latent_walk(model)
    row_c = model.condition(n_rows, labels)  # [n_rows] or None; checks labels
    with model.substituted(trained.nets), model.evaluating(), torch.inference_mode():
        z0, z1 = [], []
        for i in range(n_rows):
            z0.append(draw(1, model.seeded(seed + 2 * i, model.device)))
            z1.append(draw(1, model.seeded(seed + 2 * i + 1, model.device)))
        a, b = torch.cat(z0), torch.cat(z1)  # [n_rows, D]
        t = torch.linspace(0, 1, steps, device=a.device)
        # [n_rows, steps, D] -> rows of consecutive steps
        z = torch.stack([slerp(a, b, float(s)) for s in t], 1).flatten(0, 1)
        c = None if row_c is None else row_c.repeat_interleave(steps)
        return render(z, c).float().cpu()


def write_interpolation(trained: Any, out: str | Path, n_rows: int = 4, steps: int = 8,
                        seed: int = 0, labels: Any = None, frame_ms: int = 120
                        ) -> tuple[Path, Path]:
    """Write the grid of :func:`interpolate` to ``out`` (a .png) and an animated GIF beside it
    (same name, ``.gif``): frame ``j`` shows every row at step ``j``, walking forth and back.
    Returns ``(png, gif)``."""
    from PIL import Image

    from .data.images import make_grid, save_grid

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--interpolate writes a .png grid (and a .gif beside it), got '{out}'")
    x = interpolate(trained, n_rows, steps, seed, labels)
    if x.dim() != 4:
        raise ConfigError("interpolation grids and GIFs show images; this model samples points "
                          "(use gankit.load(RUN).interpolate(...) from Python)")
    png = save_grid(x, out, nrow=steps)
    per_row = x.view(n_rows, steps, *x.shape[1:])
    scale = max(1, math.ceil(56 / x.shape[-2]))  # small images stay visible, as in the grids
    frames = []
    for j in [*range(steps), *range(steps - 2, 0, -1)]:  # forth and back: a seamless loop
        grid = make_grid(per_row[:, j], nrow=min(n_rows, 4))
        img = Image.fromarray(grid)
        if scale > 1:
            img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        frames.append(img)
    gif = out.with_suffix(".gif")
    tmp = gif.with_name(f".{gif.name}.tmp")
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                   duration=frame_ms, loop=0)
    tmp.replace(gif)
    return png, gif
