"""Image-to-image tasks with a hidden ground truth: every translation can be scored.

Unpaired translation (CycleGAN, Zhu et al. 2017) is usually judged by eye, because two photo
collections have no "right" translation. These built-ins are generated in code from data that
ships with installed packages, so the true mapping is known and a translation is measured, not
admired:

- ``thin2thick`` (unpaired): MNIST-5k digits drawn with 1-pixel strokes (domain A) and with
  5-pixel strokes (domain B), made by morphology from *disjoint* halves of the training digits;
  the held-out split is paired (the same digit thin and thick), so a translation is scored by
  PSNR/SSIM/L1 against the true thick image and by whether the shipped LeNet still reads its
  digit.
- ``mnist2digits`` (unpaired): MNIST-5k digits (A) and scikit-learn's 8x8 digits upscaled to
  MNIST's 20x20 box (B); both domains keep their labels, so a translation is scored by whether
  it keeps the digit (label preservation, the check the CycleGAN paper's "FCN score" makes with
  a classifier).
- ``ct-sparse`` (paired): sparse-view CT reconstruction -> the true image, from random ellipse
  phantoms (:mod:`gankit.data.phantoms`) and scikit-image's Shepp-Logan phantom: filtered
  back-projection from 18 views (streak artefacts) in, the phantom out (the setting of Jin et al.
  2017, "Deep convolutional neural network for inverse problems in imaging", with the GAN loss of
  pix2pix, Isola et al. 2017).

Nothing is written to disk; each dataset is rebuilt (deterministically, no seed involved) when
it is loaded, and the slow parts are cached in memory for the process.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..registry import DATASETS
from .base import Dataset
from .builtin import DIGIT_CLASSES, mnist5k_arrays

#: Side of the digit tasks: MNIST's 28x28 padded by 2 px (LeNet-5's input size), so CycleGAN's
#: ResNet generator (side a multiple of 4) and a 5-level U-Net both take it.
DIGIT_SIDE = 32
#: Radius of the disk that thickens the 1-pixel skeleton in ``thin2thick`` (strokes 5 px wide).
THICK_RADIUS = 2
#: Grey level (of 255) at or above which an MNIST pixel is ink before thinning.
INK_THRESHOLD = 128


def _pm1(a: np.ndarray) -> torch.Tensor:
    """``[N, H, W]`` in [0, 1] (or bool) -> float32 ``[N, 1, H, W]`` in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return (t * 2.0 - 1.0).clamp_(-1.0, 1.0).unsqueeze(1)


# ---------------------------------------------------------------------------------------------
# thin2thick
# ---------------------------------------------------------------------------------------------
def thin_strokes(digits: np.ndarray) -> np.ndarray:
    """The 1-pixel skeletons ``bool [N, H, W]`` of uint8 digits ``[N, H, W]``: pixels of grey
    level >= :data:`INK_THRESHOLD` are ink, thinned by ``skimage.morphology.skeletonize``
    (Zhang & Suen 1984) one image at a time."""
    from skimage.morphology import skeletonize

    ink = np.asarray(digits) >= INK_THRESHOLD
    return np.stack([skeletonize(im) for im in ink]) if len(ink) else ink


def thicken(thin: np.ndarray, radius: int = THICK_RADIUS) -> np.ndarray:
    """Binary dilation of ``bool [N, H, W]`` strokes by a disk of ``radius``: the true
    ``thin2thick`` mapping A -> B, exactly."""
    from scipy import ndimage
    from skimage.morphology import disk

    se = disk(radius).astype(bool)
    return np.stack([ndimage.binary_dilation(im, structure=se) for im in thin]) \
        if len(thin) else thin.copy()


@functools.lru_cache(maxsize=1)
def _thin2thick_arrays() -> tuple[np.ndarray, ...]:
    xtr, ytr, xte, yte = mnist5k_arrays()
    pad = ((0, 0), (2, 2), (2, 2))
    thin_tr, thin_te = thin_strokes(np.pad(xtr, pad)), thin_strokes(np.pad(xte, pad))
    return thin_tr, thicken(thin_tr), ytr, thin_te, thicken(thin_te), yte


@DATASETS.register(
    "thin2thick",
    description="MNIST-5k digits with 1-px strokes <-> 5-px strokes, unpaired (disjoint halves); "
                "paired held-out split (true mapping known)",
    meta={"kind": "unpaired", "classes": DIGIT_CLASSES, "features": "lenet-mnist",
          "metrics": ["l1", "psnr", "ssim", "label_acc", "fid", "kid"], "probe": None,
          "paired_test": True})
def thin2thick(**_: object) -> Dataset:
    """Thin strokes -> thick strokes, an unpaired task whose true mapping is known.

    Each MNIST-5k digit (the fixed 4,000/1,000 split) is padded 28 -> 32, binarised at grey
    level 128 and thinned to its 1-pixel skeleton (:func:`thin_strokes`); its thick version is
    that skeleton dilated by a disk of radius 2 (:func:`thicken`, strokes 5 px wide). So the true
    map A -> B is *exactly* "dilate by a radius-2 disk", and B -> A is the skeleton.

    Training is truly unpaired: domain A (``a``, thin) holds the first 2,000 training digits and
    domain B (``x``, thick) the other 2,000, so no digit appears in both. The held-out split is
    paired: ``a_test[i]`` and ``x_test[i]`` are the thin and thick versions of the same test
    digit, so translations are scored against the truth (L1/PSNR/SSIM) and by the shipped LeNet
    (``y_test`` are the digit labels; it reads 96% of the skeletons and 95% of the thick digits
    of the training set right).

    ``info``: ``y_a`` (labels of domain A's digits), ``y_a_test`` (= ``y_test``),
    ``index_a``/``index_b`` (their rows in ``mnist5k_arrays()``'s training split; disjoint), and
    ``paired_test`` (True: ``gankit eval`` scores the held-out translations pair by pair).
    """
    thin_tr, thick_tr, ytr, thin_te, thick_te, yte = _thin2thick_arrays()
    half = len(thin_tr) // 2
    ia, ib = np.arange(half), np.arange(half, len(thin_tr))
    return Dataset(
        "thin2thick", _pm1(thick_tr[ib]), torch.from_numpy(ytr[ib].copy()), 10,
        _pm1(thick_te), torch.from_numpy(yte.copy()),
        a=_pm1(thin_tr[ia]), a_test=_pm1(thin_te), pairing="unpaired",
        info={"y_a": torch.from_numpy(ytr[ia].copy()), "y_a_test": torch.from_numpy(yte.copy()),
              "index_a": torch.from_numpy(ia), "index_b": torch.from_numpy(ib),
              "paired_test": True})


# ---------------------------------------------------------------------------------------------
# mnist2digits
# ---------------------------------------------------------------------------------------------
#: scikit-learn's 8x8 digits fill their frame; MNIST's fill a 20x20 box centred in 28x28. The
#: 8x8 digits are upscaled to this box (bicubic) and centred in 32x32 like a padded MNIST digit.
DIGITS_BOX = 20
#: Held-out fraction of scikit-learn's digits (stratified, seed 0).
DIGITS_TEST_FRACTION = 0.2


def upscale_digits(images: np.ndarray, side: int = DIGIT_SIDE, box: int = DIGITS_BOX
                   ) -> np.ndarray:
    """scikit-learn digits ``[N, 8, 8]`` in 0..16 -> ``float32 [N, side, side]`` in [0, 1]:
    bicubic upscaling to ``box`` x ``box`` (clipped: cubic overshoots), centred on a black
    ``side`` x ``side`` background."""
    from skimage.transform import resize

    lo = (side - box) // 2
    out = np.zeros((len(images), side, side), np.float32)
    for i, im in enumerate(images):
        up = resize(np.asarray(im, np.float64) / 16.0, (box, box), order=3, anti_aliasing=False)
        out[i, lo:lo + box, lo:lo + box] = np.clip(up, 0.0, 1.0)
    return out


def _split_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = round(len(idx) * DIGITS_TEST_FRACTION)
        test.append(idx[:k])
        train.append(idx[k:])
    tr, te = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    return d.images[tr], y[tr], d.images[te], y[te]


@DATASETS.register(
    "mnist2digits",
    description="MNIST-5k digits <-> scikit-learn's 8x8 digits upscaled to 32x32, unpaired, "
                "labels kept (label preservation)",
    meta={"kind": "unpaired", "classes": DIGIT_CLASSES, "features": "lenet-mnist",
          "metrics": ["label_acc", "fid", "kid"], "probe": None})
def mnist2digits(**_: object) -> Dataset:
    """MNIST -> scikit-learn digits, an unpaired domain-shift task between two digit styles.

    Domain A (``a``/``a_test``): the MNIST-5k digits of the fixed 4,000/1,000 split, padded
    28 -> 32. Domain B (``x``/``x_test``): scikit-learn's 1,797 8x8 digits (17 grey levels,
    UCI optical digits), upscaled bicubically to MNIST's 20x20 digit box and centred in 32x32
    (:func:`upscale_digits`); a stratified 80/20 split (seed 0): 1,438 train, 359 test. The
    same digit looks different in the two domains (blocky, frame-filling, thick vs MNIST's thin
    pen strokes), but a faithful translation keeps its class. There is no paired truth, so a
    translation is scored by label preservation: the shipped LeNet's accuracy on ``G_AB(a_test)``
    against ``info["y_a_test"]`` (the LeNet reads 91% of the upscaled scikit-learn digits, its
    ceiling on domain B), and by FID/KID against domain B.

    ``y``/``y_test`` are domain B's labels; ``info["y_a"]``/``info["y_a_test"]`` domain A's.
    """
    xtr, ytr, xte, yte = mnist5k_arrays()
    pad = ((0, 0), (2, 2), (2, 2))
    btr, by, bte, byt = _split_digits()
    return Dataset(
        "mnist2digits", _pm1(upscale_digits(btr)), torch.from_numpy(by), 10,
        _pm1(upscale_digits(bte)), torch.from_numpy(byt),
        a=_pm1(np.pad(xtr, pad) / 255.0), a_test=_pm1(np.pad(xte, pad) / 255.0),
        pairing="unpaired",
        info={"y_a": torch.from_numpy(ytr), "y_a_test": torch.from_numpy(yte)})


# ---------------------------------------------------------------------------------------------
# ct-sparse
# ---------------------------------------------------------------------------------------------
#: Side of the CT phantoms, the number of projection angles of the sparse-view input, and of
#: the full-view reference reconstruction (both evenly spaced over 180 degrees).
CT_SIDE = 64
SPARSE_VIEWS = 18
FULL_VIEWS = 180
CT_TRAIN, CT_TEST = 1000, 200
#: Seeds of the training and held-out phantoms (:func:`gankit.data.phantoms.phantoms`).
CT_SEEDS = (11, 12)


def fbp(images: np.ndarray, views: int) -> np.ndarray:
    """Filtered back-projection of ``[N, H, W]`` images in [0, 1] from ``views`` parallel-beam
    projections evenly spaced over [0, 180) degrees (``skimage.transform.radon`` then
    ``iradon`` with the ramp filter, inside the inscribed circle): ``float32 [N, H, W]``,
    clipped to [0, 1] (the display window of the phantoms' intensities)."""
    from skimage.transform import iradon, radon

    theta = np.linspace(0.0, 180.0, views, endpoint=False)
    out = np.empty(np.shape(images), np.float32)
    for i, im in enumerate(images):
        sino = radon(np.asarray(im, np.float64), theta=theta, circle=True)
        out[i] = iradon(sino, theta=theta, circle=True, filter_name="ramp")
    return np.clip(out, 0.0, 1.0)


def ct_sparse_arrays(n_train: int = CT_TRAIN, n_test: int = CT_TEST, side: int = CT_SIDE,
                     views: int = SPARSE_VIEWS) -> dict[str, np.ndarray]:
    """The arrays of ``ct-sparse`` (all ``float32 [N, side, side]`` in [0, 1]):

    ``phantom``/``sparse`` (training targets and inputs), ``phantom_test``/``sparse_test``
    (held-out targets and inputs), and ``tissue_test`` (``int64`` tissue maps of the random
    held-out phantoms, -1 for Shepp-Logan). The held-out set is ``n_test - 1`` random phantoms
    (seed ``CT_SEEDS[1]``) followed by scikit-image's Shepp-Logan phantom (last)."""
    from .phantoms import phantoms, render, shepp_logan

    labs, _ = phantoms(n_train, side, seed=CT_SEEDS[0])
    labs_t, _ = phantoms(n_test - 1, side, seed=CT_SEEDS[1])
    ph = render(labs, "ct")
    ph_t = np.concatenate([render(labs_t, "ct"), shepp_logan(side)[None]])
    tissue_t = np.concatenate([labs_t, np.full((1, side, side), -1, np.int64)])
    return {"phantom": ph, "sparse": fbp(ph, views), "phantom_test": ph_t,
            "sparse_test": fbp(ph_t, views), "tissue_test": tissue_t}


def full_view_reference(x_test: torch.Tensor, views: int = FULL_VIEWS) -> torch.Tensor:
    """What a full scan gives: the filtered back-projection from ``views`` (180) projections of
    images ``[N, 1, H, W]`` in [-1, 1] (e.g. ``ct-sparse``'s ``x_test``), in [-1, 1]. The
    reference a sparse-view reconstruction is compared with (about 20 ms per 64x64 image, so it
    is computed on demand, not with the dataset)."""
    img = ((x_test[:, 0].double() + 1.0) / 2.0).clamp(0.0, 1.0).numpy()
    return _pm1(fbp(img, views))


@functools.lru_cache(maxsize=1)
def _ct_sparse_cached() -> dict[str, np.ndarray]:
    return ct_sparse_arrays()


@DATASETS.register(
    "ct-sparse",
    description="sparse-view CT (18-view FBP, streaks) -> the true image, 64x64 ellipse "
                "phantoms + Shepp-Logan, paired 1,000/200",
    meta={"kind": "paired", "features": "random-cnn", "metrics": ["l1", "psnr", "ssim"],
          "probe": None})
def ct_sparse(**_: object) -> Dataset:
    """Sparse-view CT reconstruction as paired translation (Jin et al. 2017, "Deep convolutional
    neural network for inverse problems in imaging": a U-Net removes the streaks of a sparse-view
    filtered back-projection; here with pix2pix's GAN + L1 objective, Isola et al. 2017).

    Targets ``x``: random 64x64 ellipse phantoms (:func:`gankit.data.phantoms.tissue_map`,
    rendered in the ``"ct"`` contrast: air 0, fat 0.3, soft tissue 0.45, organ 0.55, bone 1).
    Inputs ``a``: the filtered back-projection (:func:`fbp`, ramp filter) of each phantom from
    18 parallel-beam views over 180 degrees, clipped to [0, 1]: the image with the streaks of
    angular undersampling. The target is the phantom itself (the true image), not a full-view
    reconstruction: the truth is known exactly, and a full-view FBP still has its own errors
    (:func:`full_view_reference`: the 180-view FBP, the reference a conventional full scan
    reaches). 1,000 training pairs (phantom seed 11); 200 held-out
    pairs: 199 random phantoms (seed 12) and, last, scikit-image's Shepp-Logan phantom (Shepp &
    Logan 1974), an out-of-distribution head section (``info["shepp_logan_index"]``).

    All images in [-1, 1]. ``info``: ``tissue_test`` (int64 tissue maps ``[200, 64, 64]``, -1
    for Shepp-Logan), ``views`` (18), ``shepp_logan_index`` (199). Generated in about 4 s (one
    CPU thread, unloaded), kept in memory for the process, never cached on disk.
    """
    arr = _ct_sparse_cached()
    return Dataset(
        "ct-sparse", _pm1(arr["phantom"]), None, 0, _pm1(arr["phantom_test"]), None,
        a=_pm1(arr["sparse"]), a_test=_pm1(arr["sparse_test"]), pairing="paired",
        info={"tissue_test": torch.from_numpy(arr["tissue_test"].copy()),
              "views": SPARSE_VIEWS, "shepp_logan_index": len(arr["phantom_test"]) - 1})
