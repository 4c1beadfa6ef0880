"""One convention for likelihoods, so models of different kinds are compared on one scale.

Every family with the ``log_prob`` capability returns ``[N]`` log-likelihoods in **nats per
example** and declares, through :meth:`~gankit.models.base.ModelFamily.likelihood`, what they are
of (``space``) and how they were obtained (``kind``):

- ``space="binary"``: images in [-1, 1] read as probabilities ``(x + 1) / 2`` and evaluated on
  ONE fixed binarisation (:func:`fixed_binarize`: pixel i is 1 when ``p_i > u_i`` with a threshold
  field ``u ~ U[0, 1)`` drawn once from :data:`EVAL_BINARIZATION_SEED`), the same for every model,
  so the binary models (Bernoulli VAE, PixelCNN, RBM/DBN) score the very same binary images.
  Training uses dynamic binarisation (:func:`dynamic_binarize`; Salakhutdinov & Murray 2008).
  Bits per dimension: ``-log p / (D ln 2)``.
- ``space="dequantized"``: 8-bit images, modelled as a density on ``[0, 1]^D`` after uniform
  dequantisation ``y = (k + u) / 256`` (:func:`dequantize`; Theis et al. 2016). ``E_u log p(y) -
  D ln 256`` lower-bounds the log-probability of the 8-bit image; bits per dimension
  ``(D ln 256 - log p(y)) / (D ln 2)`` (the convention of NICE, RealNVP, PixelCNN++, DDPM).
- ``space="continuous"``: points (ring8, grid25), a density in the data's own units; reported in
  nats per point (bits per dimension are not defined for them).

``kind`` is ``"exact"`` (flows, autoregressive models, GMMs), ``"lower-bound"`` (ELBO, IWAE, the
diffusion variational bound) or ``"estimate"`` (annealed importance sampling of an RBM's
partition function: stochastic, and it tends to over-estimate log p when the AIS run is short).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from .errors import ConfigError

__all__ = ["EVAL_BINARIZATION_SEED", "KINDS", "SPACES", "bits_per_dim", "dequantize",
           "dynamic_binarize", "fixed_binarize", "levels"]

#: Seed of the fixed threshold field of the evaluation binarisation (shared by every model).
EVAL_BINARIZATION_SEED = 0
SPACES = ("binary", "dequantized", "continuous")
KINDS = ("exact", "lower-bound", "estimate")

_THRESHOLDS: dict[tuple[int, ...], Tensor] = {}


def thresholds(shape: tuple[int, ...]) -> Tensor:
    """The evaluation threshold field ``u ~ U[0, 1)^shape`` (one per example shape, cached)."""
    shape = tuple(int(s) for s in shape)
    if shape not in _THRESHOLDS:
        g = torch.Generator().manual_seed(EVAL_BINARIZATION_SEED)
        _THRESHOLDS[shape] = torch.rand(shape, generator=g)
    return _THRESHOLDS[shape]


def fixed_binarize(x: Tensor) -> Tensor:
    """The fixed evaluation binarisation of images ``x`` ``[N, ...]`` in [-1, 1]: ``{0, 1}``
    values, pixel i is 1 when ``(x_i + 1) / 2 > u_i`` (:func:`thresholds`); binary inputs
    (-1 / +1) are unchanged."""
    u = thresholds(tuple(x.shape[1:])).to(x.device)
    return ((x + 1) / 2 > u).to(x.dtype)


def dynamic_binarize(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """A fresh Bernoulli((x + 1) / 2) draw per pixel (training targets), ``{0, 1}`` values."""
    return torch.bernoulli(((x + 1) / 2).clamp(0, 1), generator=generator)


def levels(x: Tensor) -> Tensor:
    """Images in [-1, 1] -> their 8-bit grey levels ``k`` in {0, ..., 255} (float, rounded)."""
    return ((x + 1) * 127.5).round().clamp(0, 255)


def dequantize(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Images in [-1, 1] -> ``y = (k + u) / 256`` in [0, 1), ``k`` = :func:`levels`,
    ``u ~ U[0, 1)`` from ``generator``."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (levels(x) + u) / 256


def bits_per_dim(log_prob: Tensor | float, dims: int,
                 space: Literal["binary", "dequantized", "continuous"]) -> float:
    """Mean bits per dimension of log-likelihoods (nats per example, ``dims`` dimensions each)
    in a ``space`` of the module docstring; NaN for ``continuous`` (not defined)."""
    if space not in SPACES:
        raise ConfigError(f"unknown likelihood space '{space}'; spaces: {', '.join(SPACES)}")
    lp = float(torch.as_tensor(log_prob, dtype=torch.float64).mean())
    if space == "continuous":
        return math.nan
    shift = dims * math.log(256) if space == "dequantized" else 0.0
    return (shift - lp) / (dims * math.log(2))
