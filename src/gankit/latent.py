"""Latent-space tools of trained generators: the truncation sweep and inversion.

The truncation trick (Brock et al. 2019 §3.1; Marchesi 2017) samples z from a normal truncated
at ``|z_i| <= t`` (entries beyond it are redrawn): the smaller t, the closer samples stay to the
mode of the latent distribution, so they look better (fidelity, measured by precision) while
covering less of the data (variety, measured by recall); FID weighs both. :func:`truncation_sweep`
measures that trade-off on a run: the same ``n`` latent seeds at every threshold, scored against
``n`` real images by the run's dataset's features (``lenet-mnist`` for digits), so the curve
shows the trade-off rather than sampling noise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError

__all__ = ["invert", "truncation_sweep", "write_truncation_sweep"]


def truncation_sweep(run_dir: str | Path, thresholds: list[float | None], *, n: int = 1000,
                     seed: int = 0, metrics: list[str] | None = None, split: str = "test",
                     weights: str = "ema", progress: Any = None) -> dict[str, Any]:
    """Precision, recall and FID (or ``metrics``) of ``n`` samples of a run at each truncation
    threshold (``None``: no truncation) against ``n`` real images of ``split``.

    Returns ``{"rows": [{"threshold", <metric>: value, ...}], "protocol": {...}}``."""
    from .api import _load_data, _read_config, load
    from .metrics.evaluate import _subsample, evaluate_sets

    if not thresholds:
        raise ConfigError("give at least one truncation threshold")
    bad = [t for t in thresholds if t is not None and not (t > 0 and math.isfinite(t))]
    if bad:
        raise ConfigError(f"truncation thresholds must be positive numbers, got {bad[0]}")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be train or test, got '{split}'")
    cfg, _ = _read_config(Path(run_dir))
    trained = load(run_dir, weights=weights)
    trained.model.require("sample")
    if not hasattr(trained.model, "truncate"):
        raise ConfigError(f"model '{trained.model.name}' has no latent to truncate")
    ds = _load_data(cfg)
    real = ds.x_test if split == "test" and ds.x_test is not None else ds.x
    real = _subsample(real, n, seed)
    names = metrics or ["fid", "pr"]
    rows, protocol = [], {}
    for t in thresholds:
        opts = {"truncation": t} if t is not None else {}
        fake = trained.sample(len(real), seed=seed, **opts)
        res = evaluate_sets(real, fake, metrics=names, dataset=ds.name, info=ds.info, seed=seed)
        rows.append({"threshold": t, **res["results"]})
        protocol = res["protocol"]
        if progress is not None:
            progress(t, res["results"])
    return {"rows": rows, "protocol": {**protocol, "run": str(run_dir), "weights": weights,
                                       "split": split, "n": len(real), "latent_seed": seed,
                                       "same_latents": True}}


def write_truncation_sweep(res: dict[str, Any], out: Path, samples: torch.Tensor | None = None
                           ) -> list[Path]:
    """``out/truncation.json`` and ``out/truncation.png`` (metrics against the threshold; with
    ``samples`` ``[T, k, C, H, W]``, a row of samples per threshold beside it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "truncation.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
    rows = res["rows"]
    labels = ["none" if r["threshold"] is None else f"{r['threshold']:g}" for r in rows]
    keys = [k for k in ("precision", "recall", "density", "coverage") if k in rows[0]]
    ncols = 1 + ("fid" in rows[0]) + (samples is not None)
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.4), squeeze=False)
    ax = axes[0, 0]
    for k in keys:
        ax.plot(range(len(rows)), [r[k] for r in rows], marker="o", label=k)
    ax.set_xticks(range(len(rows)), labels)
    ax.set_xlabel("truncation threshold (smaller: closer to the mode)")
    ax.legend(fontsize=8)
    ax.set_title("fidelity (precision) vs variety (recall)", fontsize=9)
    if "fid" in rows[0]:
        ax = axes[0, 1]
        ax.plot(range(len(rows)), [r["fid"] for r in rows], marker="o", color="k")
        ax.set_xticks(range(len(rows)), labels)
        ax.set_xlabel("truncation threshold")
        ax.set_title("FID", fontsize=9)
    if samples is not None:
        ax = axes[0, -1]
        t, k = samples.shape[:2]
        grid = samples[:, :, 0].clamp(-1, 1).permute(0, 2, 1, 3).reshape(
            t * samples.shape[-2], k * samples.shape[-1])
        ax.imshow(grid.numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.set_yticks([samples.shape[-2] * (i + 0.5) for i in range(t)], labels)
        ax.set_xticks([])
        ax.set_title("the same latents, one row per threshold", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "truncation.png", dpi=100)
    plt.close(fig)
    return [out / "truncation.json", out / "truncation.png"]


def invert(trained: Any, x: torch.Tensor, *, labels: Any = None, steps: int = 300,
           lr: float = 0.05, restarts: int = 4, prior: float = 1e-3, seed: int = 0,
           batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Find latents that make a GAN's generator reproduce real images (inversion by
    optimisation; Zhu et al. 2016 "Generative Visual Manipulation on the Natural Image
    Manifold", Creswell & Bharath 2019): for each image, ``restarts`` seeded starting points
    z ~ N(0, I) are moved by Adam (``lr``, ``steps``) to minimise

        ||G(z[, c]) - x||^2 / D + prior * ||z||^2 / d

    (mean squared pixel error plus a weak pull toward the latent prior's typical set), with G
    frozen in eval mode (the EMA weights of a run); the restart with the lowest pixel error is
    kept. Conditional generators take ``labels`` (one int or one per image); without them every
    class is tried and the best kept (its class is returned).

    Returns ``{"z" [N, latent], "images" G(z) [N, ...], "mse" [N], "labels" [N] or absent}``.
    """
    from .models.base import GANFamily

    model = trained.model
    if not isinstance(model, GANFamily) or "sample" not in model.capabilities:
        raise ConfigError(f"model '{model.name}' has no generator G(z) to invert")
    if steps < 1 or restarts < 1 or not lr > 0 or prior < 0:
        raise ConfigError("invert needs steps >= 1, restarts >= 1, lr > 0 and prior >= 0")
    x = torch.as_tensor(x, dtype=torch.float32)
    if tuple(x.shape[1:]) != tuple(model.sample_shape):
        raise ConfigError(f"images of shape {list(x.shape[1:])} cannot be inverted by a model "
                          f"of {list(model.sample_shape)} samples")
    n = len(x)
    if model.conditional:
        if labels is None:
            classes = [torch.full((n,), k, dtype=torch.int64) for k in range(model.num_classes)]
        else:
            classes = [model.condition(n, labels).cpu()]
    else:
        if labels is not None:
            raise ConfigError(f"model '{model.name}' is unconditional: labels cannot be chosen")
        classes = [None]
    dev = model.device
    g = torch.Generator(device="cpu").manual_seed(seed)
    best_z = torch.zeros(n, model.latent_dim)
    best_img = torch.zeros_like(x)
    best_err = torch.full((n,), math.inf)
    best_c = torch.zeros(n, dtype=torch.int64)
    with model.substituted(trained.nets), model.evaluating():
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            for lo in range(0, n, batch_size):
                xb = x[lo:lo + batch_size].to(dev)
                m = len(xb)
                for c in classes:
                    cb = None if c is None else c[lo:lo + m].to(dev)
                    for _ in range(restarts):
                        z = model.sample_latent(m, g).to(dev).requires_grad_(True)
                        opt = torch.optim.Adam([z], lr=lr)
                        for _ in range(steps):
                            opt.zero_grad()
                            out = model.generate(model.G, z, cb)
                            err = (out - xb).pow(2).flatten(1).mean(1)
                            loss = (err + prior * z.pow(2).mean(1)).sum()
                            loss.backward()
                            opt.step()
                        with torch.no_grad():
                            out = model.generate(model.G, z, cb)
                            err = (out - xb).pow(2).flatten(1).mean(1).cpu()
                        sl = slice(lo, lo + m)
                        better = err < best_err[sl]
                        best_err[sl] = torch.where(better, err, best_err[sl])
                        best_z[sl][better] = z.detach().cpu()[better]
                        best_img[sl][better] = out.detach().cpu()[better]
                        if cb is not None:
                            best_c[sl][better] = cb.cpu()[better]
        finally:
            for p in params:
                p.requires_grad_(True)
    res = {"z": best_z, "images": best_img, "mse": best_err}
    if model.conditional:
        res["labels"] = best_c
    return res
