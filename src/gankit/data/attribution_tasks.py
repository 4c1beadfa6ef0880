"""Built-in tasks for visual feature attribution, with the ground-truth effect known per pixel.

``vagan-squares``: the synthetic data of Baumgartner et al. 2018, "Visual Feature Attribution
using Wasserstein GANs" (§4.1), generated in code at 64 px. The disease effect of every patient
is known exactly, so an attribution map can be scored against it (normalised cross-correlation,
:mod:`gankit.metrics.attribution`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from ..registry import DATASETS
from .base import Dataset

#: The recipe of the authors' generator at 112 px, scaled by 64/112 to 64 px: a background of
#: Gaussian noise smoothed with a Gaussian kernel (sigma 2.5 px at 112 -> 1.43 at 64) and
#: rescaled to std 50; 20x20 squares of intensity 100 (two background stds) -> 12x12; the second
#: square's offset from the centre ``round(size / 3.5)`` along both axes, jittered by up to
#: 5 px -> 3 px per axis.
SQUARES = {"size": 64, "std": 50.0, "sigma": 2.5 * 64 / 112, "effect": 100.0, "half": 6,
           "offset": round(64 / 3.5), "jitter": 3, "n": 4000, "test_fraction": 0.2, "seed": 42}


def square_images(n_healthy: int, n_patient: int, seed: int = 42, size: int = 64,
                  std: float = 50.0, sigma: float = 2.5 * 64 / 112, effect: float = 100.0,
                  half: int = 6, offset: int | None = None, jitter: int = 3
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x [N, 1, S, S] float32 in [-1, 1], y int64 [N], parts uint8 [N, 1, S, S])``.

    Healthy images (``y = 0``, first ``n_healthy``) are smoothed noise; patients (``y = 1``)
    are the same kind of image plus ``effect`` on a centre square of side ``2 half`` and on a
    second square of that side centred ``(+offset, +offset)`` (subtype A, first half of the
    patients) or ``(-offset, -offset)`` (subtype B) from the centre, each axis jittered by an
    integer in ``[-jitter, jitter]``. Each image is then mapped linearly from its own
    [min, max] to [-1, 1], as the authors' code does. ``parts`` labels the effect: 1 on the
    centre square, 2 on the second square, 0 elsewhere (all 0 for healthy images).
    """
    rng = np.random.default_rng(seed)
    offset = round(size / 3.5) if offset is None else offset
    n = n_healthy + n_patient
    noise = rng.normal(0.0, std, (n, size, size))
    smooth = gaussian_filter(noise, sigma=(0, sigma, sigma))  # per image, 2-D
    smooth *= std / smooth.std(axis=(1, 2), keepdims=True)
    parts = np.zeros((n, size, size), np.uint8)
    c = size // 2
    jit = rng.integers(-jitter, jitter + 1, (n_patient, 2))
    for k in range(n_patient):
        i = n_healthy + k
        sign = 1 if k < (n_patient + 1) // 2 else -1  # subtype A, then subtype B
        r, q = c + sign * offset + jit[k, 0], c + sign * offset + jit[k, 1]
        parts[i, r - half:r + half, q - half:q + half] = 2
        parts[i, c - half:c + half, c - half:c + half] = 1
    img = smooth + effect * (parts > 0)
    lo = img.min(axis=(1, 2), keepdims=True)
    hi = img.max(axis=(1, 2), keepdims=True)
    x = (2.0 * (img - lo) / (hi - lo) - 1.0).astype(np.float32)
    y = np.r_[np.zeros(n_healthy, np.int64), np.ones(n_patient, np.int64)]
    return x[:, None], y, parts[:, None]


@DATASETS.register("vagan-squares",
                   description="healthy smoothed noise vs patients with a centre square and a "
                               "jittered second square, 64x64, 3,200/800 split, effect masks "
                               "known (Baumgartner et al. 2018)",
                   meta={"kind": "images", "classes": ["healthy", "patient"],
                         "features": "random-cnn", "metrics": [], "probe": "images"})
def vagan_squares(**_: object) -> Dataset:
    """The synthetic task of Baumgartner et al. 2018 (§4.1) at 64 px (:data:`SQUARES`).

    4,000 images: 2,000 healthy (class 0, smoothed noise) and 2,000 patients (class 1: the same
    kind of noise plus a centre square and a second square near the lower-right (subtype A) or
    upper-left (subtype B) corner, jittered). A fixed stratified split holds out 20 % (800
    images, 400 patients) as the test set; the data is the same whatever the training seed.

    ``info`` adds the ground truth of the disease effect:

    - ``masks`` / ``masks_test``: bool ``[N, 1, 64, 64]``, True where the effect was added (both
      squares; all False for healthy images), aligned with ``x`` / ``x_test``;
    - ``parts`` / ``parts_test``: uint8 ``[N, 1, 64, 64]``, 1 on the centre square, 2 on the
      second square, 0 elsewhere (to measure how much of each square a map recovers);
    - ``subtype`` / ``subtype_test``: int64 ``[N]``, 0 healthy, 1 subtype A, 2 subtype B;
    - ``recipe``: the constants of :data:`SQUARES`.

    A different ``data.image_size`` resizes the images but not these masks: keep 64.
    """
    s = SQUARES
    n_half = s["n"] // 2
    x, y, parts = square_images(n_half, n_half, seed=s["seed"], size=s["size"], std=s["std"],
                                sigma=s["sigma"], effect=s["effect"], half=s["half"],
                                offset=s["offset"], jitter=s["jitter"])
    sub = y.copy()
    sub[n_half + (n_half + 1) // 2:] = 2
    # a fixed stratified split: the same fraction of every subtype held out
    rng = np.random.default_rng(s["seed"] + 1)
    test = np.zeros(len(y), bool)
    for k in (0, 1, 2):
        idx = np.flatnonzero(sub == k)
        test[rng.choice(idx, round(len(idx) * s["test_fraction"]), replace=False)] = True
    tr, te = np.flatnonzero(~test), np.flatnonzero(test)
    tr, te = tr[rng.permutation(len(tr))], te[rng.permutation(len(te))]

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    info = {"masks": t(parts[tr] > 0), "masks_test": t(parts[te] > 0),
            "parts": t(parts[tr]), "parts_test": t(parts[te]),
            "subtype": t(sub[tr]), "subtype_test": t(sub[te]), "recipe": dict(s)}
    return Dataset("vagan-squares", t(x[tr]), t(y[tr]), 2, t(x[te]), t(y[te]), info=info)
