"""Attribution maps of a classifier and their agreement with a ground-truth effect.

The baselines of Baumgartner et al. 2018 ("Visual Feature Attribution using Wasserstein GANs",
§4) for VA-GAN's maps, written for any differentiable score ``f: [N, C, H, W] -> [N]`` (e.g. a
classifier's logit of the patient class):

- :func:`gradient_saliency`: Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional
  Networks": the magnitude of the score's gradient with respect to each pixel, ``|df/dx|``
  (the maximum over channels for colour images).
- :func:`integrated_gradients`: Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep
  Networks": ``(x - x') * integral_0^1 df/dx(x' + a (x - x')) da`` from a baseline ``x'``,
  approximated by the midpoint rule; it satisfies completeness, ``sum(IG) = f(x) - f(x')`` up to
  the quadrature error.

and the score of a map against the truth:

- :func:`ncc`: the normalised cross-correlation of two maps per sample (the paper's measure):
  ``mean((a - mean a)(b - mean b)) / (std a std b)`` in [-1, 1], invariant to positive affine
  changes of intensity of either map;
- :func:`mass_fractions`: how the absolute mass of a map splits over labelled regions (which of
  the effect's parts a map recovers).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import DataError
from .medical import ncc as medical_ncc

Score = Callable[[Tensor], Tensor]


def _grad(f: Score, x: Tensor) -> Tensor:
    """``df/dx`` for each sample's own score (the scores of a batch are independent)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = f(x)
        if out.shape != (len(x),):
            raise DataError(f"the score must give one value per image [{len(x)}], got shape "
                            f"{tuple(out.shape)}")
        (g,) = torch.autograd.grad(out.sum(), x)
    return g


def gradient_saliency(f: Score, x: Tensor) -> Tensor:
    """Saliency ``[N, 1, H, W]``: ``max_c |d f(x) / d x_c|`` (Simonyan et al. 2014, §3.1)."""
    return _grad(f, x).abs().amax(1, keepdim=True)


def integrated_gradients(f: Score, x: Tensor, baseline: Tensor | float = 0.0, steps: int = 64,
                         batch: int = 256) -> Tensor:
    """Integrated gradients ``[N, C, H, W]`` of ``f`` at ``x`` from ``baseline`` (Sundararajan
    et al. 2017, eq. 1), with the path integral approximated by the midpoint rule over
    ``steps`` points ``x' + (k + 1/2)/steps (x - x')``; ``batch`` images per backward pass."""
    if steps < 1:
        raise DataError(f"integrated gradients needs steps >= 1, got {steps}")
    x = x.detach()
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    diff = x - base
    total = torch.zeros_like(x)
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
    per = max(1, batch // max(1, len(x)))  # path points per pass
    for i in range(0, steps, per):
        a = alphas[i:i + per].view(-1, 1, 1, 1, 1)  # [k, 1, 1, 1, 1]
        pts = (base + a * diff).flatten(0, 1)  # [k * N, C, H, W]
        total += _grad(f, pts).view(len(a), *x.shape).sum(0)
    return diff * total / steps


def ncc(a: Tensor, b: Tensor) -> Tensor:
    """Normalised cross-correlation ``[N]`` of maps ``a`` and ``b`` (same shape ``[N, ...]``):
    :func:`gankit.metrics.medical.ncc`, the Pearson correlation of their pixels sample by
    sample, except that a constant map (which correlates with nothing) scores 0 rather than
    NaN, so a map generator that outputs nothing is averaged in as a failure."""
    if a.shape != b.shape:
        raise DataError(f"ncc compares maps of one shape, got {tuple(a.shape)} and "
                        f"{tuple(b.shape)}")
    return torch.nan_to_num(medical_ncc(a, b), nan=0.0)


def mass_fractions(m: Tensor, parts: Tensor, labels: int) -> Tensor:
    """``[N, labels]``: the fraction of ``|m|``'s mass on each region ``0 .. labels - 1`` of
    the label map ``parts`` (same shape as ``m``); each row sums to 1 (0 for an all-zero map)."""
    if m.shape != parts.shape:
        raise DataError(f"map {tuple(m.shape)} and region labels {tuple(parts.shape)} differ")
    w = m.detach().abs().flatten(1).double()
    lab = parts.flatten(1).long()
    out = torch.zeros(len(m), labels, dtype=torch.float64, device=m.device)
    out.scatter_add_(1, lab, w)
    return out / w.sum(1, keepdim=True).clamp_min(1e-300)
