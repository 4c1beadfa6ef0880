"""Two-contrast phantom tasks: CT -> MR-style translation with the anatomy known.

The same random phantom (:mod:`gankit.data.phantoms`) rendered in two contrasts is the
cross-modality synthesis setting of the seeds (CT -> MR with CycleGAN, Wolterink et al. 2017;
shape-consistent CycleGAN, Zhang, Yang & Zheng 2018): each tissue class has a different
intensity in each modality, so a translator must learn the per-tissue intensity map while
keeping every boundary where it is. Training is unpaired, as with real scans from different
patients; evaluation is paired, so every translation is scored against the true rendering of
its own anatomy, and every translated image can be segmented and compared with its tissue map.
"""

from __future__ import annotations

import numpy as np
import torch

from ..registry import DATASETS
from .base import Dataset
from .phantoms import TISSUES, phantoms, render

#: ct2mr's sizes: phantoms of each training domain and held-out pairs, the side in pixels and
#: the std of the Gaussian noise of every rendering (in [0, 1] units, before scaling to [-1, 1]).
CT2MR = {"n_a": 800, "n_b": 800, "n_test": 200, "size": 32, "noise": 0.03}


def _images(img: np.ndarray) -> torch.Tensor:
    """``float32 [N, H, W]`` in [0, 1] -> ``[N, 1, H, W]`` in [-1, 1]."""
    return torch.from_numpy(img).unsqueeze(1).mul(2.0).sub(1.0)


def contrast_pair_dataset(name: str = "ct2mr", *, n_a: int = 800, n_b: int = 800,
                          n_test: int = 200, size: int = 32, noise: float = 0.03,
                          source: str = "ct", target: str = "mr", seed: int = 0) -> Dataset:
    """Unpaired two-contrast phantoms for training, paired ones for evaluation.

    Three disjoint phantom sets come from three seeds derived from ``seed``: ``n_a`` rendered
    in the ``source`` contrast (domain A, ``a``), ``n_b`` others in the ``target`` contrast
    (domain B, ``x``), and ``n_test`` rendered in both (``a_test[i]`` and ``x_test[i]`` show the
    same tissue map with independent noise). Phantoms carry 0-2 lesions. Every rendering gets
    Gaussian noise of std ``noise``. ``info`` holds the tissue label maps (``int64 [N, H, W]``,
    values index :data:`~gankit.data.phantoms.TISSUES`): ``a_labels`` (of ``a``), ``x_labels``
    (of ``x``), ``labels_test`` (of both test splits), and ``label_classes`` (the tissue names).
    """
    ss = np.random.SeedSequence([seed, 2018])
    s_a, s_b, s_t, s_noise = (int(s.generate_state(1)[0]) for s in ss.spawn(4))
    lab_a, _ = phantoms(n_a, size, s_a, lesions=(0, 2))
    lab_b, _ = phantoms(n_b, size, s_b, lesions=(0, 2))
    lab_t, _ = phantoms(n_test, size, s_t, lesions=(0, 2))
    rng = np.random.default_rng(s_noise)
    a = _images(render(lab_a, source, noise, rng))
    x = _images(render(lab_b, target, noise, rng))
    a_test = _images(render(lab_t, source, noise, rng))
    x_test = _images(render(lab_t, target, noise, rng))
    info = {"a_labels": torch.from_numpy(lab_a), "x_labels": torch.from_numpy(lab_b),
            "labels_test": torch.from_numpy(lab_t), "label_classes": list(TISSUES),
            "contrasts": [source, target], "noise": noise,
            "paired_test": True}  # a_test[i] and x_test[i]: one anatomy
    return Dataset(name, x, None, 0, x_test, None, info=info, a=a, a_test=a_test,
                   pairing="unpaired")


@DATASETS.register("ct2mr",
                   description="phantoms rendered CT-like (A) and T1-MR-like (B), 32x32, "
                               "800/800 unpaired + 200 held-out pairs with tissue maps "
                               "(CycleGAN / shape-consistent CycleGAN task)",
                   meta={"kind": "unpaired", "probe": None})
def ct2mr(seed: int = 0, **_: object) -> Dataset:
    """CT -> MR-style translation of ellipse phantoms (:func:`contrast_pair_dataset` with
    :data:`CT2MR`): 800 CT renderings (domain A) and 800 MR renderings of other phantoms
    (domain B) to train on, unpaired; 200 held-out phantoms rendered in both contrasts, paired.

    32x32 pixels (not 64): the benchmarks train three CycleGAN variants on two shared CPU cores
    within minutes, and 32 px still resolves every tissue (the fat ring is 1-2 pixels wide, bones
    3-6). The tissue maps of every split are in ``info`` (``a_labels``, ``x_labels``,
    ``labels_test``, ``int64 [N, 32, 32]``; ``label_classes`` names them), so translations can be
    segmented and scored against the anatomy. Noise std 0.03 (in [0, 1] units) on each
    rendering. The data do not depend on ``seed``: the task is fixed.
    """
    return contrast_pair_dataset("ct2mr", **CT2MR)


def segment_by_contrast(x: torch.Tensor, contrast: str = "mr") -> torch.Tensor:
    """The tissue of each pixel of images ``[N, 1, H, W]`` in [-1, 1] read off its intensity: the
    class whose intensity under ``contrast`` (:data:`~gankit.data.phantoms.CONTRASTS`) is
    nearest, ``int64 [N, H, W]``. On a true rendering this recovers the tissue map up to noise; on
    a translation it tells whether each pixel got the right tissue's intensity at the right place,
    with no learned segmenter in between."""
    from .phantoms import CONTRASTS

    table = torch.tensor(CONTRASTS[contrast], dtype=torch.float32) * 2 - 1  # [K] in [-1, 1]
    d = (x[:, 0, :, :, None].float() - table).abs()  # [N, H, W, K]
    return d.argmin(-1)


def label_agreement(pred: torch.Tensor, true: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Pixel accuracy and Dice of predicted label maps against the true ones (``int64 [N, H,
    W]``): ``dice`` is the mean over the foreground classes (1..K-1) present in ``true`` of
    ``2 |P ∩ T| / (|P| + |T|)`` over all pixels of the set; ``dice_<k>`` per class."""
    out = {"accuracy": float((pred == true).float().mean())}
    dices = []
    for k in range(1, num_classes):
        t, p = true == k, pred == k
        if int(t.sum()) == 0:
            continue
        d = float(2 * (p & t).sum() / (p.sum() + t.sum()))
        out[f"dice_{k}"] = d
        dices.append(d)
    out["dice"] = float(np.mean(dices)) if dices else float("nan")
    return out
