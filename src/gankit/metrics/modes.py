"""Mode-collapse counts on toy mixtures and Stacked MNIST.

Mode collapse — the generator covering only some modes of the data (seed 004 §"mode collapse",
deck 003 "Mode Collapse") — is measured where the modes are known:

- 2-D Gaussian mixtures (ring8, grid25 in :mod:`gankit.data.builtin`), following VEEGAN
  (Srivastava et al., 2017, "VEEGAN: Reducing Mode Collapse in GANs using Implicit Variational
  Learning") and PacGAN (Lin et al., 2018, "PacGAN: The power of two samples in generative
  adversarial networks"): a sample is *high quality* when it lies within 3 standard deviations
  of its nearest centre; a mode is *covered* when at least ``min_count`` high-quality samples are
  nearest to it (default 1: PacGAN's "at least one high-quality sample"; some papers demand a
  larger count, pass it as ``min_count`` and record it); the *reverse KL* ``KL(p_gen || uniform)``
  compares the distribution of high-quality samples over modes with the uniform mixture weights.
- Stacked MNIST (Metz et al., 2017, "Unrolled Generative Adversarial Networks"; PacGAN): three
  digits stacked as colour channels give 1,000 modes; a pretrained classifier labels each channel
  and the mode is the digit triple.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .fid import as_features

__all__ = ["mode_stats", "stacked_mnist_modes"]


def _kl_to_uniform(counts: np.ndarray) -> float:
    """``KL(p || U)`` for the empirical ``p = counts / sum(counts)`` over ``len(counts)`` bins."""
    total = counts.sum()
    if total == 0:
        return float("nan")  # no samples to form a distribution from
    p = counts[counts > 0] / total  # 0·log 0 = 0
    return float(np.sum(p * np.log(p * counts.size)))


def mode_stats(
    samples: Any,
    centers: Any,
    sigma: float,
    *,
    n_sigma: float = 3.0,
    min_count: int = 1,
) -> dict[str, Any]:
    """Mode coverage of ``samples [N, d]`` against mixture ``centers [K, d]`` with std ``sigma``.

    VEEGAN (Srivastava et al., 2017) / PacGAN (Lin et al., 2018) protocol, see the module
    docstring. Distances are Euclidean; "within ``n_sigma`` standard deviations" means
    ``||x - c|| <= n_sigma * sigma``. Returns:

    - ``modes_covered`` (int): modes with at least ``min_count`` high-quality samples;
    - ``n_modes`` (int): ``K``;
    - ``high_quality_frac`` (float): fraction of samples that are high quality;
    - ``per_mode_counts`` (``int64 [K]``): high-quality samples nearest to each mode;
    - ``kl_to_uniform`` (float): ``KL(p || uniform)`` of ``per_mode_counts`` normalised, in nats
      (NaN when there is no high-quality sample).
    """
    x = as_features(samples, "samples")
    c = as_features(centers, "centers")
    if x.shape[1] != c.shape[1]:
        raise DataError(f"samples are {x.shape[1]}-D but centers are {c.shape[1]}-D")
    if not sigma > 0:
        raise DataError(f"sigma must be positive, got {sigma}")
    if min_count < 1:
        raise DataError(f"min_count must be >= 1, got {min_count}")
    # N x K is small for toy mixtures (K <= 25), so the direct difference form is affordable and
    # exact, unlike the GEMM expansion used for high-dimensional features.
    dist = np.linalg.norm(x[:, None, :] - c[None, :, :], axis=2)  # [N, K]
    nearest = dist.argmin(axis=1)
    hq = dist[np.arange(x.shape[0]), nearest] <= n_sigma * sigma
    counts = np.bincount(nearest[hq], minlength=c.shape[0]).astype(np.int64)
    return {
        "modes_covered": int((counts >= min_count).sum()),
        "n_modes": int(c.shape[0]),
        "high_quality_frac": float(hq.mean()),
        "per_mode_counts": counts,
        "kl_to_uniform": _kl_to_uniform(counts),
    }


def stacked_mnist_modes(pred_digits: Any, *, min_count: int = 1) -> dict[str, Any]:
    """Modes of Stacked MNIST from per-channel digit predictions ``pred_digits [N, 3]``.

    Metz et al. (2017) / PacGAN (Lin et al., 2018) protocol: the mode of a sample is the triple of
    predicted digits (``100·d0 + 10·d1 + d2``). Returns ``modes_covered`` (modes with at least
    ``min_count`` samples, out of 1,000), ``kl_to_uniform`` = ``KL(p_modes || uniform over 1000)``
    with the empirical ``p_modes``, in nats, and ``per_mode_counts`` (``int64 [1000]``).
    """
    if isinstance(pred_digits, torch.Tensor):
        pred_digits = pred_digits.detach().cpu().numpy()
    d = np.asarray(pred_digits)
    if d.ndim != 2 or d.shape[1] != 3 or d.shape[0] == 0:
        raise DataError(f"pred_digits: expected an [N, 3] array of digits, got shape {d.shape}")
    if not np.issubdtype(d.dtype, np.integer):
        if not (np.isfinite(d).all() and (d == np.round(d)).all()):
            raise DataError("pred_digits: expected integer digit labels")
        d = d.astype(np.int64)
    if d.min() < 0 or d.max() > 9:
        raise DataError(f"pred_digits: digits must lie in 0..9, found {d.min()}..{d.max()}")
    if min_count < 1:
        raise DataError(f"min_count must be >= 1, got {min_count}")
    mode = d[:, 0].astype(np.int64) * 100 + d[:, 1] * 10 + d[:, 2]
    counts = np.bincount(mode, minlength=1000).astype(np.int64)
    return {
        "modes_covered": int((counts >= min_count).sum()),
        "kl_to_uniform": _kl_to_uniform(counts),
        "per_mode_counts": counts,
    }
