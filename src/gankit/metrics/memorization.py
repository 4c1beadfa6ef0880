"""Nearest-neighbour checks for training-set memorisation.

A generator that copies its training data scores well on FID, IS and precision, so those metrics
cannot reveal it; deck 003 ("Prevents the discriminator from memorizing training data") raises the
concern. Following the data-copying test of Meehan et al. (2020, "A Non-Parametric Test to Detect
Data-Copying in Generative Models"), we compare how close generated samples lie to the training set
with how close *held-out* real samples lie to it: if the model generalises, the two distance
distributions match; if it copies, generated samples are systematically closer. (Meehan et al.
additionally partition space into cells; this is the global, uncelled version of their statistic.)

Run it in a feature space where distance means similarity (e.g. Inception or LeNet features),
and with a held-out set drawn from the same distribution as, but disjoint from, the training set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from ..errors import DataError
from .fid import as_features, check_same_dim
from .prdc import sq_dist_block, sq_norms

__all__ = ["memorization_report", "nn_distances"]


def nn_distances(query: Any, reference: Any, *, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance ``[N]`` from each ``query`` row to its nearest ``reference`` row.

    The nearest row is found with blocked float64 GEMMs of ``chunk`` query rows; its distance is
    then recomputed directly as ``||q - r||``, so exact copies give exactly 0 (the GEMM expansion
    alone would leave rounding noise of order ``sqrt(eps)·|q|``).
    """
    q = as_features(query, "query")
    r = as_features(reference, "reference")
    check_same_dim(q, r, ("query", "reference"))
    if chunk < 1:
        raise DataError(f"chunk must be >= 1, got {chunk}")
    shift = r.mean(axis=0)  # centring keeps the expansion accurate; distances are unchanged
    q, r = q - shift, r - shift
    r_sq = sq_norms(r)
    out = np.empty(q.shape[0])
    for s in range(0, q.shape[0], chunk):
        e = min(s + chunk, q.shape[0])
        nearest = sq_dist_block(q[s:e], sq_norms(q[s:e]), r, r_sq).argmin(axis=1)
        out[s:e] = np.linalg.norm(q[s:e] - r[nearest], axis=1)
    return out


def memorization_report(
    samples: Any,
    train: Any,
    heldout: Any,
    *,
    quantile: float = 0.01,
    flag_frac: float = 0.05,
    flag_z: float = -3.0,
    chunk: int = 1024,
) -> dict[str, Any]:
    """Compare sample→train with heldout→train nearest-neighbour distances (Meehan et al., 2020).

    Returns a flat dict:

    - ``median_ratio``: median sample→train distance / median heldout→train distance
      (≈1 when the model generalises, →0 when it copies, >1 when samples are off-manifold);
    - ``frac_closer_than_heldout_q``: fraction of samples nearer to the training set than the
      ``quantile`` (default 1st percentile) of heldout→train distances; ≈ ``quantile`` without
      copying;
    - ``ks_statistic``, ``ks_pvalue``: two-sample Kolmogorov–Smirnov test between the two
      distance samples (``scipy.stats.ks_2samp``, two-sided);
    - ``z_u``: Meehan et al.'s Mann–Whitney statistic, ``(U - mn/2) / sqrt(mn(m+n+1)/12)`` with
      ``U`` the number of (sample, heldout) pairs where the sample is farther from train;
      strongly negative means data copying, strongly positive means underfitting;
    - ``flag_near_copies``: ``frac_closer_than_heldout_q > flag_frac``;
    - ``flag_data_copying``: ``z_u < flag_z``;
    - ``median_sample_dist``, ``median_heldout_dist``, ``n_samples``, ``n_heldout``, ``quantile``.
    """
    s = as_features(samples, "samples", min_rows=2)
    t = as_features(train, "train")
    h = as_features(heldout, "heldout", min_rows=2)
    check_same_dim(s, t, ("samples", "train"))
    check_same_dim(h, t, ("heldout", "train"))
    if not 0.0 < quantile < 1.0:
        raise DataError(f"quantile must lie in (0, 1), got {quantile}")
    d_s = nn_distances(s, t, chunk=chunk)
    d_h = nn_distances(h, t, chunk=chunk)
    med_h = float(np.median(d_h))
    if med_h == 0.0:
        raise DataError("heldout: at least half of the rows also appear in train; use a disjoint set")
    threshold = float(np.quantile(d_h, quantile))
    ks = stats.ks_2samp(d_s, d_h)
    m, n = d_s.size, d_h.size
    u = stats.mannwhitneyu(d_s, d_h, alternative="two-sided").statistic  # pairs with d_s > d_h
    z_u = float((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))
    frac = float((d_s < threshold).mean())
    return {
        "median_ratio": float(np.median(d_s)) / med_h,
        "frac_closer_than_heldout_q": frac,
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "z_u": z_u,
        "flag_near_copies": bool(frac > flag_frac),
        "flag_data_copying": bool(z_u < flag_z),
        "median_sample_dist": float(np.median(d_s)),
        "median_heldout_dist": med_h,
        "n_samples": int(m),
        "n_heldout": int(n),
        "quantile": float(quantile),
    }
