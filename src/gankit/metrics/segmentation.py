"""Segmentation overlap and uncertainty-error agreement, in 2-D and 3-D.

- Dice (Dice 1945; the F1 score of the voxels): ``2 |P n T| / (|P| + |T|)``.
- Jaccard (intersection over union): ``|P n T| / |P u T|``; ``J = D / (2 - D)`` per sample.

Both are :func:`gankit.metrics.medical.dice` / ``jaccard`` (re-exported here), computed per
sample over every voxel after the batch axis (``[N, 1, H, W]`` masks or ``[N, 1, D, H, W]``
volumes alike). A sample whose prediction and truth are both empty scores 1 (nothing to find,
nothing found), the convention of the medical segmentation challenges.

Uncertainty (Monte-Carlo dropout, Gal & Ghahramani 2016; used for segmentation by Kendall et
al. 2017): a good uncertainty map is high where the prediction is wrong. :func:`uncertainty_error`
measures it by Spearman's rank correlation (scipy) between the predicted variance and the actual
error, pooled over pixels and per image (mean variance vs the image's error rate).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from .medical import dice, jaccard

__all__ = ["dice", "jaccard", "segmentation_report", "spearman", "to_mask", "uncertainty_error"]


def to_mask(x: Any, threshold: float = 0.0) -> Tensor:
    """A boolean mask from a bool tensor/array (as is) or a float one (``> threshold``: masks in
    {-1, +1} with the default 0, probabilities with 0.5)."""
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    return t if t.dtype == torch.bool else t > threshold


def spearman(a: Any, b: Any) -> float:
    """Spearman's rank correlation of two equally long sets of values (flattened), by
    ``scipy.stats.spearmanr`` (ties get average ranks); NaN when either set is constant."""
    from scipy.stats import spearmanr

    x = np.asarray(torch.as_tensor(a).double().flatten())
    y = np.asarray(torch.as_tensor(b).double().flatten())
    if x.shape != y.shape:
        raise DataError(f"spearman needs two sets of one size, got {x.size} and {y.size}")
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def uncertainty_error(variance: Any, prob: Any, target: Any, *, max_pixels: int = 2_000_000,
                      seed: int = 0) -> dict[str, float]:
    """How well a variance map predicts where a segmentation is wrong.

    ``variance``: the per-pixel predictive variance ``[N, 1, ...]`` (of T Monte-Carlo dropout
    passes); ``prob``: the mean foreground probability; ``target``: the true mask. The error of
    a pixel is ``|prob - truth|`` (0 = confidently right, 1 = confidently wrong). Returns

    - ``spearman_pixel``: Spearman's rho of variance vs error over all pixels (a random
      ``max_pixels`` of them, seeded, when there are more: scipy ranks in memory);
    - ``spearman_image``: rho of each image's mean variance vs its ``1 - Dice`` of the
      thresholded mean prediction (which images are hard);
    - ``n_pixels``, ``n_images``.
    """
    v = torch.as_tensor(variance).double()
    p = torch.as_tensor(prob).double()
    t = to_mask(target)
    if not v.shape == p.shape == t.shape:
        raise DataError(f"variance {tuple(v.shape)}, probabilities {tuple(p.shape)} and truth "
                        f"{tuple(t.shape)} must have one shape")
    err = (p - t.double()).abs()
    vf, ef = v.flatten(), err.flatten()
    if vf.numel() > max_pixels:
        keep = torch.randperm(vf.numel(), generator=torch.Generator().manual_seed(seed))
        vf, ef = vf[keep[:max_pixels]], ef[keep[:max_pixels]]
    per_image_err = 1.0 - dice(p > 0.5, t)
    return {"spearman_pixel": spearman(vf, ef),
            "spearman_image": spearman(v.flatten(1).mean(1), per_image_err),
            "n_pixels": int(vf.numel()), "n_images": int(v.shape[0])}


def segmentation_report(model: Any, ds: Any, *, n: int, seed: int,
                        nets: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dice and Jaccard of a segmenter on the held-out pairs of ``ds`` (the training pairs when
    the data has no test split): the first ``n`` inputs segmented (``model.infer("segment")``,
    seeded), the probabilities thresholded at 0.5, each mask scored against its ground truth;
    ``dice``/``jaccard`` are the means over the images, ``dice_std`` their spread."""
    held_out = ds.a_test is not None and ds.x_test is not None
    a, x = (ds.a_test, ds.x_test) if held_out else (ds.a, ds.x)
    m = min(n, len(a))
    prob = model.infer("segment", a[:m], seed, nets=nets)
    d, j = dice(prob > 0.5, x[:m]), jaccard(prob > 0.5, x[:m])
    return {"results": {"dice": float(d.mean()), "dice_std": float(d.std()) if m > 1 else 0.0,
                        "jaccard": float(j.mean())},
            "protocol": {"task": "segment held-out inputs",
                         "pairs": "held-out" if held_out else "training (no test split)",
                         "n": m, "seed": seed, "threshold": 0.5,
                         "reduction": "mean over images of the per-image score"}}
