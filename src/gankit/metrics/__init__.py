"""Sample-quality metrics computed from feature arrays (DESIGN.md §5).

Every metric takes ``[N, D]`` numpy arrays or torch tensors (features, classifier logits or raw
points), works in float64 and raises :class:`~gankit.errors.DataError` for malformed input.
Feature extractors live in a separate registry (``gankit.registry.FEATURES``).

Each metric is also registered in ``gankit.registry.METRICS`` as a :class:`Metric` record with a
uniform call ``metric(real, fake, **options) -> dict[str, float]``, so a CLI can loop over them:

======== ========== ==================================================== =========================
name     needs      returns                                              paper
======== ========== ==================================================== =========================
fid      features   ``fid``                                              Heusel et al. 2017
fid-inf  features   ``fid_inf``, ``fid_inf_slope``                       Chong & Forsyth 2020
kid      features   ``kid_mean``, ``kid_std``                            Bińkowski et al. 2018
is       logits     ``is_mean``, ``is_std`` (``real`` ignored)           Salimans et al. 2016
pr       features   ``precision``, ``recall``                            Kynkäänniemi et al. 2019
dc       features   ``density``, ``coverage``                            Naeem et al. 2020
modes    points     ``modes_covered``, ``high_quality_frac``,            VEEGAN 2017, PacGAN 2018
                    ``kl_to_uniform`` (``real`` ignored; needs
                    ``centers=`` and ``sigma=``)
psnr     paired     ``psnr`` (dB, data range 2)                          --
ssim     paired     ``ssim``                                             Wang et al. 2004
mae      paired     ``mae`` (on [-1, 1])                                 --
ncc      paired     ``ncc``, ``ncc_n_undefined``                         Baumgartner et al. 2018
dice     paired     ``dice`` (masks thresholded at 0)                    Dice 1945
jaccard  paired     ``jaccard`` (masks thresholded at 0)                 Jaccard 1912
auroc    scores     ``auroc`` (``real``: binary labels, ``fake``:        Hanley & McNeil 1982
                    scores)
======== ========== ==================================================== =========================

``paired`` metrics compare output ``i`` with target ``i`` (``real`` the targets, ``fake`` the
outputs of a translator or segmenter, see :mod:`gankit.metrics.medical`); ``gankit eval`` feeds
them a translating run's outputs on the held-out inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..registry import METRICS
from . import extractors as _extractors  # noqa: F401  (registers the feature extractors)
from . import medical as _med
from .bootstrap import bootstrap_ci
from .fid import FIDInfinity, feature_stats, fid, fid_from_stats, fid_infinity
from .inception_score import inception_score
from .kid import kid
from .memorization import memorization_report, nn_distances
from .modes import mode_stats, stacked_mnist_modes
from .prdc import density_coverage, prdc, precision_recall

__all__ = [
    "FIDInfinity",
    "Metric",
    "bootstrap_ci",
    "density_coverage",
    "feature_stats",
    "fid",
    "fid_from_stats",
    "fid_infinity",
    "inception_score",
    "kid",
    "memorization_report",
    "mode_stats",
    "nn_distances",
    "prdc",
    "precision_recall",
    "stacked_mnist_modes",
]

Needs = Literal["features", "logits", "points", "paired", "scores"]


@dataclass(frozen=True)
class Metric:
    """A registered metric: what input it needs and a uniform ``fn(real, fake, **options)``.

    ``needs`` tells the caller what to feed: ``"features"`` (extractor outputs for both sets),
    ``"logits"`` (classifier logits of the fake set only), ``"points"`` (raw low-dimensional
    samples, e.g. toy mixtures), ``"paired"`` (targets and outputs, row ``i`` against row
    ``i``) or ``"scores"`` (binary labels and a score per sample). ``protocol`` holds the default settings so a result can record
    them next to the value (DESIGN.md §5: every result records its protocol).
    """

    name: str
    needs: Needs
    fn: Callable[..., dict[str, float]]
    description: str
    protocol: dict[str, Any] = field(default_factory=dict)

    def __call__(self, real: Any, fake: Any, **options: Any) -> dict[str, float]:
        return self.fn(real, fake, **options)


def _fid(real: Any, fake: Any) -> dict[str, float]:
    return {"fid": fid(real, fake)}


def _fid_inf(real: Any, fake: Any, **kw: Any) -> dict[str, float]:
    r = fid_infinity(real, fake, **kw)
    return {"fid_inf": r.value, "fid_inf_slope": r.slope}


def _kid(real: Any, fake: Any, **kw: Any) -> dict[str, float]:
    mean, std = kid(real, fake, **kw)
    return {"kid_mean": mean, "kid_std": std}


def _is(real: Any, fake: Any, **kw: Any) -> dict[str, float]:
    mean, std = inception_score(fake, **kw)
    return {"is_mean": mean, "is_std": std}


def _pr(real: Any, fake: Any, **kw: Any) -> dict[str, float]:
    p, r = precision_recall(real, fake, **kw)
    return {"precision": p, "recall": r}


def _dc(real: Any, fake: Any, **kw: Any) -> dict[str, float]:
    d, c = density_coverage(real, fake, **kw)
    return {"density": d, "coverage": c}


def _modes(real: Any, fake: Any, *, centers: Any, sigma: float, **kw: Any) -> dict[str, float]:
    s = mode_stats(fake, centers, sigma, **kw)
    return {
        "modes_covered": float(s["modes_covered"]),
        "n_modes": float(s["n_modes"]),
        "high_quality_frac": s["high_quality_frac"],
        "kl_to_uniform": s["kl_to_uniform"],
    }


_METRICS = [
    Metric("fid", "features", _fid, "Fréchet distance of Gaussian fits (Heusel et al. 2017)",
           {"dtype": "float64", "sqrt": "eigh symmetric form", "cov_ddof": 1}),
    Metric("fid-inf", "features", _fid_inf, "FID extrapolated to infinite samples (Chong & Forsyth 2020)",
           {"n_points": 15, "n_min": "max(min(5000, n_fake // 5), 50)", "seed": 0}),
    Metric("kid", "features", _kid, "Unbiased MMD² with a cubic kernel (Bińkowski et al. 2018)",
           {"kernel": "(x.y/d + 1)^3", "n_subsets": 100, "subset_size": 1000, "seed": 0}),
    Metric("is", "logits", _is, "Inception Score of fake logits (Salimans et al. 2016)",
           {"splits": 10, "seed": 0, "from_logits": True}),
    Metric("pr", "features", _pr, "Improved precision/recall (Kynkäänniemi et al. 2019)",
           {"k": 3, "inside": "<="}),
    Metric("dc", "features", _dc, "Density/coverage (Naeem et al. 2020)", {"k": 5, "inside": "<="}),
    Metric("modes", "points", _modes, "Toy-mixture modes covered and HQ fraction (VEEGAN/PacGAN)",
           {"n_sigma": 3.0, "min_count": 1}),
    Metric("psnr", "paired", _med.paired_psnr, "Peak signal-to-noise ratio of each output "
           "against its target, dB", _med.PAIRED_PROTOCOLS["psnr"]),
    Metric("ssim", "paired", _med.paired_ssim, "Structural similarity of each output against "
           "its target (Wang et al. 2004)", _med.PAIRED_PROTOCOLS["ssim"]),
    Metric("mae", "paired", _med.paired_mae, "Mean absolute error of each output against its "
           "target", _med.PAIRED_PROTOCOLS["mae"]),
    Metric("ncc", "paired", _med.paired_ncc, "Normalised cross-correlation of each map with "
           "its target (Baumgartner et al. 2018)", _med.PAIRED_PROTOCOLS["ncc"]),
    Metric("dice", "paired", _med.paired_dice, "Dice overlap of each mask (thresholded at 0) "
           "with its target", _med.PAIRED_PROTOCOLS["dice"]),
    Metric("jaccard", "paired", _med.paired_jaccard, "Jaccard index (IoU) of each mask "
           "(thresholded at 0) with its target", _med.PAIRED_PROTOCOLS["jaccard"]),
    Metric("auroc", "scores", _med.scored_auroc, "Area under the ROC curve of anomaly scores "
           "(Hanley & McNeil 1982)", _med.AUROC_PROTOCOL),
]

for _m in _METRICS:
    if _m.name not in METRICS:  # tolerate importlib.reload in interactive sessions
        METRICS.register(_m.name, _m, description=_m.description)
del _m
