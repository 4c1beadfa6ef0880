"""Abnormality-detection tasks with a known ground truth: train on normal images only, test on a
labelled mix of normal and anomalous ones (the f-AnoGAN setting, Schlegl et al. 2019, "f-AnoGAN:
Fast unsupervised anomaly detection with generative adversarial networks").

Every task here has the same layout: ``x`` holds normal images only (``y`` is all 0), ``x_test``
a fixed mix with ``y_test`` = 0 for normal and 1 for anomalous images; the classes are
``["normal", "anomalous"]`` and ``info["anomaly_test"]`` is ``y_test == 1`` as booleans (what
``gankit eval --metrics auroc`` ranks against, and what keeps the doctor's memorisation check
comparing samples with held-out *normal* images only). Nothing is downloaded; everything is deterministic (fixed seeds,
independent of ``train.seed``, so every run is scored on the same test set).

- ``mnist-anomaly`` / ``mnist-anomaly-K`` (K = 0..9): the MNIST-5k digits (the 4,000/1,000 split
  of ``mnist5k``), one digit class held out as the anomaly. ``x`` holds the 3,600 training
  images of the nine other digits; ``x_test`` all 1,000 test images, of which the 100 of the
  held-out digit are anomalous (``y_test = 1``). ``mnist-anomaly`` is ``mnist-anomaly-0``.
  Digits are padded from 28x28 to 32x32 with a background border (as ``edges2digits``), so
  strided networks halve them to 4x4. ``info["digits_test"]``: the digit of each test image;
  ``info["anomaly_digit"]``: the held-out digit.
- ``phantom-lesions``: healthy 32x32 ellipse phantoms (:mod:`gankit.data.phantoms`, "ct"
  contrast, Gaussian noise of std :data:`PHANTOM_NOISE`) for training (2,000 images); the test
  set is 200 healthy and 200 phantoms with one or two lesions each (discs of radius 6-12 % of
  the side, intensity 0.8, in soft tissue or organs), ``info["masks_test"]`` the lesion masks
  ``bool [400, 1, 32, 32]`` (all False for the healthy half). A validation split of the same
  make (``info["x_val"]``, ``info["y_val"]``, ``info["masks_val"]``: 100 healthy + 100 with
  lesions, from other seeds) is where a residual threshold may be chosen without touching the
  test set.
"""

from __future__ import annotations

import numpy as np
import torch

from ..registry import DATASETS
from .base import Dataset
from .builtin import mnist5k_arrays
from .phantoms import add_lesions, render, tissue_map

__all__ = ["ANOMALY_CLASSES", "PHANTOM_NOISE", "mnist_anomaly", "phantom_lesions"]

ANOMALY_CLASSES = ["normal", "anomalous"]
#: Gaussian noise (std, in [0, 1] intensity units) of the phantom images.
PHANTOM_NOISE = 0.02
PHANTOM_SIZE = 32
#: Lesion radius range, as a fraction of the side (at 32 px: 1.9 to 3.8 pixels).
LESION_RADIUS = (0.06, 0.12)
# Seeds of the phantom splits: train, validation (healthy, lesions), test (healthy, lesions).
_SEEDS = {"train": 1100, "val_healthy": 1101, "val_lesions": 1102, "test_healthy": 1103,
          "test_lesions": 1104}

_META = {"kind": "images", "classes": ANOMALY_CLASSES, "metrics": ["fid", "kid"],
         "probe": "images"}


def _pad32(a: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, 28, 28]`` -> float32 ``[N, 1, 32, 32]`` in [-1, 1], background -1."""
    a = np.pad(a, ((0, 0), (2, 2), (2, 2)))
    return torch.from_numpy(a.astype(np.float32) / 255.0 * 2.0 - 1.0).unsqueeze(1)


def mnist_anomaly(digit: int = 0) -> Dataset:
    """MNIST-5k with ``digit`` held out as the anomaly (module docstring)."""
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be in 0..9, got {digit}")
    xtr, ytr, xte, yte = mnist5k_arrays()
    keep = ytr != digit
    x = _pad32(xtr[keep])
    y_test = torch.from_numpy((yte == digit).astype(np.int64))
    name = "mnist-anomaly" if digit == 0 else f"mnist-anomaly-{digit}"
    return Dataset(name, x, torch.zeros(len(x), dtype=torch.int64), 2, _pad32(xte), y_test,
                   info={"anomaly_digit": digit, "digits_test": torch.from_numpy(yte),
                         "anomaly_test": y_test.bool()})


def _register_mnist(name: str, digit: int, listed: bool) -> None:
    more = "; mnist-anomaly-K holds digit K out" if listed else ""
    DATASETS.register(name, lambda **_: mnist_anomaly(digit),
                      description=f"MNIST-5k at 32x32, digit {digit} held out as the anomaly: "
                                  f"train on the 9 other digits, test on all 1,000 (Schlegl et "
                                  f"al. 2019 setting){more}",
                      meta={**_META, "features": "lenet-mnist", "listed": listed})


_register_mnist("mnist-anomaly", 0, True)
for _d in range(10):  # one per held-out digit; `gankit datasets` lists only mnist-anomaly
    _register_mnist(f"mnist-anomaly-{_d}", _d, False)


def _phantom_set(n: int, seed: int, lesions: bool, size: int = PHANTOM_SIZE
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rendered phantoms ``[n, 1, size, size]`` in [-1, 1] and their lesion masks ``bool
    [n, 1, size, size]``; with ``lesions`` each has one or two lesions."""
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, size, size), np.float32)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        lab = tissue_map(rng, size)
        if lesions:
            k = int(rng.integers(1, 3))
            masks[i] = add_lesions(rng, lab, k, LESION_RADIUS)
            if not masks[i].any():  # no room for a disc (cannot happen at these sizes)
                raise RuntimeError("phantom without a lesion in the lesion split")
        imgs[i] = render(lab, "ct", PHANTOM_NOISE, rng)
    x = torch.from_numpy(imgs * 2.0 - 1.0).unsqueeze(1)
    return x, torch.from_numpy(masks).unsqueeze(1)


def _mixed(n_each: int, seed_healthy: int, seed_lesions: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n_each`` healthy then ``n_each`` lesion phantoms: images, labels (0/1), masks."""
    xh, mh = _phantom_set(n_each, seed_healthy, False)
    xl, ml = _phantom_set(n_each, seed_lesions, True)
    y = torch.cat([torch.zeros(n_each, dtype=torch.int64), torch.ones(n_each, dtype=torch.int64)])
    return torch.cat([xh, xl]), y, torch.cat([mh, ml])


@DATASETS.register("phantom-lesions",
                   description="32x32 CT-contrast ellipse phantoms: train on 2,000 healthy, test "
                               "on 200 healthy + 200 with lesions, pixel masks in info "
                               "(f-AnoGAN task, Schlegl et al. 2019)",
                   meta={**_META, "features": "random-cnn"})
def phantom_lesions(**_: object) -> Dataset:
    """Healthy phantoms for training, a labelled healthy/lesion mix with masks for testing
    (module docstring)."""
    x, _m = _phantom_set(2000, _SEEDS["train"], False)
    x_val, y_val, m_val = _mixed(100, _SEEDS["val_healthy"], _SEEDS["val_lesions"])
    x_test, y_test, m_test = _mixed(200, _SEEDS["test_healthy"], _SEEDS["test_lesions"])
    return Dataset("phantom-lesions", x, torch.zeros(len(x), dtype=torch.int64), 2, x_test, y_test,
                   info={"masks_test": m_test, "x_val": x_val, "y_val": y_val, "masks_val": m_val,
                         "anomaly_test": y_test.bool()})
