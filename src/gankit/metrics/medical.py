"""Per-image metrics of image-to-image translation, segmentation and anomaly detection.

Every output of a translator, a segmenter or a map generator has a ground truth in the
medical tasks (a target image, a lesion mask), so these metrics compare each output with its
own target rather than two distributions:

- ``mae``: mean absolute error on the [-1, 1] scale (pix2pix's L1 term, Isola et al. 2017);
- ``psnr`` and ``ssim``: from :mod:`gankit.metrics.paired` (data range 2, Wang et al. 2004);
- ``ncc``: normalised cross-correlation, the Pearson correlation of the pixel values of a map
  and its target (Baumgartner et al. 2018 score VA-GAN's maps by it);
- ``dice`` and ``jaccard``: overlap of masks (Dice 1945, Jaccard 1912), both thresholded at 0
  (gankit masks are images in [-1, 1]: -1 outside, +1 inside);
- ``auroc``: the area under the ROC curve of scores against binary labels, computed as the
  Mann-Whitney U statistic (ties count one half; Hanley & McNeil 1982).

Per-image functions take ``[N, C, H, W]`` (or ``[N, C, D, H, W]``) tensors or arrays and return
float64 ``[N]``; the registered forms (``gankit eval --metrics dice,...``) average them and
state the convention in their protocol.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError

__all__ = ["MASK_THRESHOLD", "auroc", "dice", "jaccard", "mae", "ncc"]

#: Masks and segmentations in [-1, 1] are foreground where the value is above this.
MASK_THRESHOLD = 0.0


def _as_float64(x: Any, what: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise DataError(f"{what}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise DataError(f"{what}: expected a non-empty batch [N, ...], got shape {list(x.shape)}")
    x = x.detach().cpu()
    if x.dtype == torch.bool:
        return x.double() * 2.0 - 1.0  # a boolean mask: True -> +1, False -> -1
    x = x.double()
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{what}: contains NaN or infinite values")
    return x


def _pair(pred: Any, target: Any) -> tuple[Tensor, Tensor]:
    p, t = _as_float64(pred, "pred"), _as_float64(target, "target")
    if p.shape != t.shape:
        raise DataError(f"pred and target must have the same shape, got {list(p.shape)} and "
                        f"{list(t.shape)}")
    return p.flatten(1), t.flatten(1)  # [N, P]


def mae(pred: Any, target: Any) -> Tensor:
    """Mean absolute error of each pair, ``[N]`` (on the scale of the inputs: [-1, 1])."""
    p, t = _pair(pred, target)
    return (p - t).abs().mean(1)


def ncc(pred: Any, target: Any) -> Tensor:
    """Normalised cross-correlation of each pair, ``[N]``, in [-1, 1]:
    ``sum((p - mean p)(t - mean t)) / sqrt(sum (p - mean p)^2 * sum (t - mean t)^2)``.

    A constant image has no correlation with anything: its NCC is NaN (the registered metric
    averages over the defined pairs and counts the others).
    """
    p, t = _pair(pred, target)
    p = p - p.mean(1, keepdim=True)
    t = t - t.mean(1, keepdim=True)
    den = (p.square().sum(1) * t.square().sum(1)).sqrt()
    num = (p * t).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, math.nan))


def _masks(pred: Any, target: Any, threshold: float) -> tuple[Tensor, Tensor]:
    p, t = _pair(pred, target)
    return p > threshold, t > threshold


def dice(pred: Any, target: Any, threshold: float = MASK_THRESHOLD) -> Tensor:
    """Dice coefficient of each pair of masks, ``[N]``: ``2 |P & T| / (|P| + |T|)`` with
    ``P = pred > threshold`` and ``T = target > threshold``; two empty masks agree fully (1)."""
    p, t = _masks(pred, target, threshold)
    inter = (p & t).sum(1).double()
    total = (p.sum(1) + t.sum(1)).double()
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


def jaccard(pred: Any, target: Any, threshold: float = MASK_THRESHOLD) -> Tensor:
    """Jaccard index (intersection over union) of each pair of masks, ``[N]``; two empty masks
    give 1. Equal to ``dice / (2 - dice)`` image by image."""
    p, t = _masks(pred, target, threshold)
    inter = (p & t).sum(1).double()
    union = (p | t).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely positive) against binary
    ``labels`` (1/True positive): the probability that a random positive outscores a random
    negative, ties counting one half (the Mann-Whitney U statistic over ``n_pos * n_neg``).

    Computed from average ranks in float64, O(N log N). Needs both classes.
    """
    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores,
                   dtype=np.float64).ravel()
    y = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels).ravel()
    if s.shape != y.shape:
        raise DataError(f"auroc: {s.size} scores but {y.size} labels")
    if not np.isfinite(s).all():
        raise DataError("auroc: the scores contain NaN or infinite values")
    if not np.isin(y, (0, 1)).all():
        raise DataError("auroc: labels must be binary (0/1 or False/True)")
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"auroc needs positives and negatives, got {n_pos} positive and {n_neg} "
                        f"negative labels")
    from scipy.stats import rankdata

    ranks = rankdata(s)  # average ranks: ties share the mean of their ranks
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


# ---------------------------------------------------------------------------------------------
# registered forms: metric(target, pred) -> {name: mean over images}
# ---------------------------------------------------------------------------------------------
def _mean(v: Tensor) -> float:
    return float(v.mean())


def paired_psnr(target: Any, pred: Any) -> dict[str, float]:
    from .paired import psnr

    v = psnr(pred, target)
    finite = torch.isfinite(v)
    return {"psnr": float(v[finite].mean()) if bool(finite.any()) else math.inf}


def paired_ssim(target: Any, pred: Any) -> dict[str, float]:
    from .paired import ssim

    return {"ssim": _mean(ssim(pred, target))}


def paired_mae(target: Any, pred: Any) -> dict[str, float]:
    return {"mae": _mean(mae(pred, target))}


def paired_ncc(target: Any, pred: Any) -> dict[str, float]:
    v = ncc(pred, target)
    ok = ~torch.isnan(v)
    return {"ncc": float(v[ok].mean()) if bool(ok.any()) else math.nan,
            "ncc_n_undefined": float((~ok).sum())}


def paired_dice(target: Any, pred: Any) -> dict[str, float]:
    return {"dice": _mean(dice(pred, target))}


def paired_jaccard(target: Any, pred: Any) -> dict[str, float]:
    return {"jaccard": _mean(jaccard(pred, target))}


def scored_auroc(labels: Any, scores: Any) -> dict[str, float]:
    return {"auroc": auroc(scores, labels)}


PAIRED_PROTOCOLS: dict[str, dict[str, Any]] = {
    "psnr": {"data_range": 2.0, "formula": "10 log10(R^2 / MSE) per image",
             "aggregate": "mean over finite values"},
    "ssim": {"implementation": "skimage.metrics.structural_similarity", "data_range": 2.0,
             "gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False,
             "reference": "Wang et al. 2004", "aggregate": "mean over images"},
    "mae": {"formula": "mean |pred - target| per image on [-1, 1]",
            "aggregate": "mean over images"},
    "ncc": {"formula": "Pearson correlation of pixel values per image",
            "aggregate": "mean over images with a defined NCC (non-constant pred and target); "
                         "the others counted in ncc_n_undefined"},
    "dice": {"threshold": MASK_THRESHOLD, "formula": "2|P&T| / (|P|+|T|) per image, "
             "P = pred > 0, T = target > 0", "empty": "two empty masks score 1",
             "aggregate": "mean over images"},
    "jaccard": {"threshold": MASK_THRESHOLD, "formula": "|P&T| / |P or T| per image",
                "empty": "two empty masks score 1", "aggregate": "mean over images"},
}
AUROC_PROTOCOL: dict[str, Any] = {
    "formula": "Mann-Whitney U / (n_pos n_neg), ties 1/2", "score": "higher = abnormal",
    "labels": "info['anomaly_test'] (bool per test image), else y_test of a 2-class dataset",
}


def check_paired(name: str, pred: Tensor, target: Tensor) -> None:
    """A :class:`ConfigError` when a paired metric cannot compare these sets."""
    if len(pred) != len(target):
        raise ConfigError(f"metric '{name}' compares each output with its target, but there are "
                          f"{len(pred)} outputs and {len(target)} targets")
