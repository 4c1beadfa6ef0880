"""k-NN manifold metrics: improved precision/recall and density/coverage.

- Precision and recall (Kynkäänniemi et al., 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models"): each set's manifold is the union of balls around its samples,
  the radius of a ball being the distance to the sample's k-th nearest neighbour in its own set
  (the sample itself excluded). Precision is the fraction of fake samples inside the real
  manifold, recall the fraction of real samples inside the fake manifold. They separate sample
  *quality* from *diversity* — the distinction FID and IS blur (seed 004, "Evaluating GANs").
- Density and coverage (Naeem et al., 2020, "Reliable Fidelity and Diversity Metrics for
  Generative Models"): density counts how many real balls contain each fake sample (divided by k),
  so it is robust to real outliers; coverage is the fraction of real balls that contain at least
  one fake sample, so it ignores an over-estimated fake manifold.

A point ``y`` is inside the ball of ``x`` when ``||y - x|| <= radius(x)`` (DESIGN.md §5). Pairwise
distances are computed in float64 blocks of rows, so memory stays bounded (about 128 MB per block
by default) and the result does not depend on the block size. Both sets are centred on the real
mean first: distances do not change, but the ``|a|² + |b|² - 2 a·b`` expansion loses much less
precision when features share a large common offset (e.g. non-negative Inception activations).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError
from .fid import as_features, check_same_dim

__all__ = ["density_coverage", "prdc", "precision_recall"]

_BLOCK_ELEMENTS = 1 << 24  # float64 entries per distance block: 128 MB


def _rows_per_block(n_cols: int, batch_size: int | None) -> int:
    if batch_size is not None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        return int(batch_size)
    return max(1, _BLOCK_ELEMENTS // max(n_cols, 1))


def sq_norms(x: np.ndarray) -> np.ndarray:
    """Row-wise squared Euclidean norms ``[N]``."""
    return np.einsum("ij,ij->i", x, x)


def sq_dist_block(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[len(a), len(b)]`` via one GEMM, clipped at 0."""
    d = a @ b.T
    d *= -2.0
    d += a_sq[:, None]
    d += b_sq[None, :]
    np.maximum(d, 0.0, out=d)  # rounding can make near-duplicates slightly negative
    return d


def knn_sq_radii(x: np.ndarray, k: int, *, batch_size: int | None = None) -> np.ndarray:
    """Squared distance ``[N]`` from each row of ``x`` to its k-th nearest *other* row of ``x``.

    The point itself is excluded by index, not by value, so exact duplicates in ``x`` still count
    as neighbours at distance 0.
    """
    n = x.shape[0]
    x_sq = sq_norms(x)
    out = np.empty(n)
    step = _rows_per_block(n, batch_size)
    for s in range(0, n, step):
        e = min(s + step, n)
        d = sq_dist_block(x[s:e], x_sq[s:e], x, x_sq)  # [e - s, N]
        d[np.arange(e - s), np.arange(s, e)] = np.inf
        out[s:e] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return out


def _prepare(real: Any, fake: Any, k: int, fake_knn: bool) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise DataError(f"k must be a positive integer, got {k}")
    # A k-NN radius needs k other points in the same set.
    r = as_features(real, "real", min_rows=int(k) + 1)
    f = as_features(fake, "fake", min_rows=int(k) + 1 if fake_knn else 1)
    check_same_dim(r, f)
    shift = r.mean(axis=0)
    return r - shift, f - shift


def prdc(real: Any, fake: Any, *, k: int = 5, batch_size: int | None = None) -> dict[str, float]:
    """Precision, recall, density and coverage with one ``k``, sharing the distance passes.

    Kynkäänniemi et al. (2019) for precision/recall, Naeem et al. (2020) for density/coverage;
    see the module docstring. ``batch_size`` is the number of rows per distance block
    (default: as many as fit in 128 MB); results do not depend on it. Returns
    ``{"precision", "recall", "density", "coverage"}``.
    """
    return _manifold_metrics(real, fake, k, batch_size, want_recall=True)


def _manifold_metrics(
    real: Any, fake: Any, k: int, batch_size: int | None, *, want_recall: bool
) -> dict[str, float]:
    r, f = _prepare(real, fake, k, want_recall)
    k = int(k)
    n, m = r.shape[0], f.shape[0]
    r_rad = knn_sq_radii(r, k, batch_size=batch_size)  # [N]
    f_rad = knn_sq_radii(f, k, batch_size=batch_size) if want_recall else None  # [M]
    r_sq, f_sq = sq_norms(r), sq_norms(f)
    balls_containing_fake = np.zeros(m, dtype=np.int64)  # per fake: number of real balls around it
    covered = np.empty(n, dtype=bool)
    recalled = np.empty(n, dtype=bool)
    step = _rows_per_block(m, batch_size)
    for s in range(0, n, step):
        e = min(s + step, n)
        d = sq_dist_block(r[s:e], r_sq[s:e], f, f_sq)  # [e - s, M]
        inside_real = d <= r_rad[s:e, None]
        balls_containing_fake += inside_real.sum(axis=0)
        covered[s:e] = inside_real.any(axis=1)
        if f_rad is not None:
            recalled[s:e] = (d <= f_rad[None, :]).any(axis=1)
    out = {
        "precision": float((balls_containing_fake > 0).mean()),
        "density": float(balls_containing_fake.sum() / (k * m)),
        "coverage": float(covered.mean()),
    }
    if want_recall:
        out["recall"] = float(recalled.mean())
    return out


def precision_recall(
    real: Any, fake: Any, *, k: int = 3, batch_size: int | None = None
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019), ``k = 3`` as in the paper.

    Precision: fraction of ``fake`` rows within the k-NN ball of some ``real`` row. Recall:
    fraction of ``real`` rows within the k-NN ball of some ``fake`` row. Needs more than ``k``
    samples in each set. ``batch_size`` only bounds memory; results do not depend on it.
    """
    out = _manifold_metrics(real, fake, k, batch_size, want_recall=True)
    return out["precision"], out["recall"]


def density_coverage(
    real: Any, fake: Any, *, k: int = 5, batch_size: int | None = None
) -> tuple[float, float]:
    """Density and coverage (Naeem et al., 2020), ``k = 5`` as recommended there.

    Density: ``1/(k M) · Σ_j #{i : fake_j in ball(real_i)}`` — 1 on average when the two
    distributions match, above 1 when fakes crowd around dense real regions. Coverage: fraction of
    ``real`` rows whose k-NN ball contains at least one ``fake`` row. Only the real set's k-NN
    radii are used, so the fake set needs no k-NN pass. ``batch_size`` only bounds memory.
    """
    out = _manifold_metrics(real, fake, k, batch_size, want_recall=False)
    return out["density"], out["coverage"]
