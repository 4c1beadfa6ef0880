"""Anomaly-detection metrics: image AUROC, pixel AUROC and Dice of a thresholded anomaly map.

The f-AnoGAN evaluation (Schlegl et al. 2019, "f-AnoGAN: Fast unsupervised anomaly detection with
generative adversarial networks"): an anomaly score per image is judged by the area under the
ROC curve against the image labels; a per-pixel anomaly map (the residual ``|x - G(E(x))|``) by
the AUROC over all pixels against the lesion masks and by the Dice overlap of the map
thresholded at one value.

The threshold must not be tuned on the images it is scored on: :func:`best_dice_threshold`
picks it on a separate labelled validation split, :func:`percentile_threshold` from normal
images alone (no labels); either is then applied to the test set with :func:`dice`.

Inputs are NumPy arrays or torch tensors; everything is computed in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .medical import auroc  # the Mann-Whitney AUROC, one implementation
from .medical import dice as medical_dice

__all__ = ["auroc", "best_dice_threshold", "dice", "percentile_threshold", "pixel_auroc"]


def _np(a: Any, dtype: Any = np.float64) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def pixel_auroc(maps: Any, masks: Any) -> float:
    """AUROC over every pixel of ``maps`` ``[N, ...]`` against the boolean ``masks`` of the
    same shape (1 = abnormal pixel)."""
    m, g = _np(maps), _np(masks, bool)
    if m.shape != g.shape:
        raise DataError(f"pixel_auroc: maps {m.shape} and masks {g.shape} differ")
    return auroc(m.ravel(), g.ravel())


def dice(pred: Any, truth: Any, empty: float = 1.0) -> float:
    """Dice overlap ``2 |P & T| / (|P| + |T|)`` of two boolean masks with all pixels of all
    images pooled (:func:`gankit.metrics.medical.dice` of the masks as one sample); ``empty``
    when both are empty. 1 for identical masks, 0 for disjoint ones."""
    p, t = _np(pred, bool), _np(truth, bool)
    if p.shape != t.shape:
        raise DataError(f"dice: masks {p.shape} and {t.shape} differ")
    if not p.any() and not t.any():
        return float(empty)
    return float(medical_dice(torch.from_numpy(p.reshape(1, -1)),
                              torch.from_numpy(t.reshape(1, -1)))[0])


def best_dice_threshold(maps: Any, masks: Any, candidates: int = 200) -> tuple[float, float]:
    """``(threshold, dice)``: the threshold among ``candidates`` quantiles of ``maps`` (from
    the median up) whose binarisation ``maps > threshold`` has the highest pooled Dice with
    ``masks``. Use it on a validation split, then apply the threshold to the test set."""
    m, g = _np(maps), _np(masks, bool)
    if m.shape != g.shape:
        raise DataError(f"best_dice_threshold: maps {m.shape} and masks {g.shape} differ")
    qs = np.quantile(m.ravel(), np.linspace(0.5, 1.0, candidates, endpoint=False))
    best = (float(qs[0]), -1.0)
    for q in np.unique(qs):
        d = dice(m > q, g)
        if d > best[1]:
            best = (float(q), d)
    return best


def percentile_threshold(normal_maps: Any, percentile: float = 99.0) -> float:
    """The ``percentile``-th percentile of the residuals of normal images: an unsupervised
    threshold (a pixel brighter than ``percentile`` % of normal pixels is called abnormal)."""
    if not 0 < percentile < 100:
        raise DataError(f"percentile must be in (0, 100), got {percentile}")
    return float(np.percentile(_np(normal_maps).ravel(), percentile))
