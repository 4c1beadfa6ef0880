"""Inception Score (Salimans et al., 2016, "Improved Techniques for Training GANs").

``IS = exp(E_x KL(p(y|x) || p(y)))`` over a classifier's predictions on generated samples: high
when each sample is confidently classified (low-entropy ``p(y|x)``) and the classes are balanced
(high-entropy marginal ``p(y)``). It never looks at real data (deck 003, "Evaluation Metrics"),
and it is only meaningful with the classifier it was defined for (DESIGN.md §5).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax, logsumexp

from ..errors import DataError
from .fid import as_features

__all__ = ["inception_score"]


def _log_probs(x: np.ndarray, from_logits: bool) -> np.ndarray:
    if from_logits:
        return log_softmax(x, axis=1)
    if (x < 0).any() or (x > 1).any():
        raise DataError("inception_score: probabilities must lie in [0, 1]; pass from_logits=True for logits")
    sums = x.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise DataError(
            f"inception_score: probability rows must sum to 1 (found sums in [{sums.min():.4g}, "
            f"{sums.max():.4g}]); pass from_logits=True for logits"
        )
    # Renormalise away float32 rounding; log(0) -> -inf is harmless because it is only ever
    # multiplied by p = 0 below, where we define 0·log 0 = 0.
    with np.errstate(divide="ignore"):
        return np.log(x / sums[:, None])


def _split_score(logp: np.ndarray) -> float:
    # log p(y) = log mean_x p(y|x), computed from log-probabilities so it stays finite.
    log_py = logsumexp(logp, axis=0) - np.log(logp.shape[0])
    p = np.exp(logp)
    with np.errstate(invalid="ignore"):  # 0 * -inf where p = 0; masked just below
        terms = np.where(p > 0, p * (logp - log_py), 0.0)  # 0·log 0 = 0
    return float(np.exp(terms.sum(axis=1).mean()))


def inception_score(
    logits_or_probs: Any,
    *,
    splits: int = 10,
    seed: int | None = 0,
    from_logits: bool = True,
) -> tuple[float, float]:
    """Inception Score ``(mean, std)`` over ``splits`` disjoint splits (Salimans et al., 2016).

    ``logits_or_probs`` is ``[N, C]`` classifier logits (default) or probabilities
    (``from_logits=False``). Rows are shuffled with ``numpy.random.default_rng(seed)`` before
    splitting, so a sorted input (e.g. generated class by class) does not bias the splits;
    ``seed=None`` keeps the given order, as the original code does. Split ``i`` holds rows
    ``[i·N // splits, (i+1)·N // splits)``, and ``std`` is the population standard deviation
    (``ddof=0``) across splits, both as in the original code. Computed in float64.
    """
    x = as_features(logits_or_probs, "logits" if from_logits else "probabilities")
    n = x.shape[0]
    if splits < 1 or n < splits:
        raise DataError(f"inception_score: need 1 <= splits <= N, got splits={splits}, N={n}")
    logp = _log_probs(x, from_logits)
    if seed is not None:
        logp = logp[np.random.default_rng(seed).permutation(n)]
    scores = np.array(
        [_split_score(logp[i * n // splits : (i + 1) * n // splits]) for i in range(splits)]
    )
    return float(scores.mean()), float(scores.std())
