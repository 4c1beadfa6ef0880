"""Synthetic anatomy with a known ground truth: ellipse phantoms, lesions and 3-D blob volumes.

No medical images can be downloaded, so the medical tasks are built on phantoms whose tissue
map, lesion mask and contrast are known exactly: every translation, anomaly map or
segmentation can then be scored against the truth rather than judged by eye.

A phantom is a random "body" in the spirit of the Shepp-Logan head phantom (Shepp & Logan
1974, "The Fourier reconstruction of a head section"; scikit-image ships it as
``skimage.data.shepp_logan_phantom``): an outer body ellipse with a subcutaneous fat ring,
one or two bones and two to four organs, each a tissue class of :data:`TISSUES`. The
tissue map is rendered in a *contrast*: a table of intensities per tissue. Two contrasts of one
tissue map make a CT/MR-style pair (the same anatomy, different intensities per class: fat is
dark-grey on CT and bright on T1 MR, bone the brightest on CT and dark on MR), which is the
cross-modality synthesis setting of the seeds (CT -> MR translation with CycleGAN, Wolterink et
al. 2017).

Lesions are discs of a lesion tissue placed inside the body; their union is the ground-truth
mask of abnormality detection and segmentation. :func:`blob_volumes` makes 3-D volumes with
blobs for volumetric segmentation (vox2vox, Cirillo et al. 2020).

Everything is generated from a seed with NumPy and is bit-identical across machines.
"""

from __future__ import annotations

import numpy as np

#: Tissue classes of a phantom's label map.
TISSUES = ("background", "soft tissue", "fat", "organ", "bone", "lesion")
BACKGROUND, SOFT, FAT, ORGAN, BONE, LESION = range(len(TISSUES))

#: Intensities (in [0, 1]) of each tissue class under each contrast. "ct" orders tissues as
#: X-ray attenuation does (air < fat < soft tissue < organ < bone); "mr" as a T1-weighted MR
#: image does (bone and air dark, fat bright). Lesions are hyper-intense on both.
CONTRASTS: dict[str, tuple[float, ...]] = {
    "ct": (0.0, 0.45, 0.30, 0.55, 1.0, 0.80),
    "mr": (0.0, 0.40, 0.90, 0.25, 0.10, 0.70),
}


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float, angle: float
             ) -> np.ndarray:
    """Boolean mask ``[h, w]`` of a rotated ellipse (centre and radii in pixels)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    y, x = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def tissue_map(rng: np.random.Generator, size: int) -> np.ndarray:
    """One random phantom's tissue labels ``int64 [size, size]`` (values index :data:`TISSUES`).

    The body is an ellipse filling 70-90 % of the field of view, rotated by up to 0.3 rad; a fat
    ring of 6-10 % of its radii lines it; inside, one or two bone ellipses, then two to four organ
    ellipses (in the remaining soft tissue) at random positions well inside the body.
    """
    h = w = size
    c = (size - 1) / 2.0
    ry, rx = rng.uniform(0.35, 0.45, 2) * size
    ang = rng.uniform(-0.3, 0.3)
    cy, cx = c + rng.uniform(-0.03, 0.03, 2) * size
    lab = np.zeros((h, w), np.int64)
    body = _ellipse(h, w, cy, cx, ry, rx, ang)
    lab[body] = FAT
    t = rng.uniform(0.06, 0.10)
    lab[_ellipse(h, w, cy, cx, ry * (1 - t), rx * (1 - t), ang)] = SOFT
    for cls, count, (lo, hi) in ((BONE, rng.integers(1, 3), (0.05, 0.09)),
                                 (ORGAN, rng.integers(2, 5), (0.10, 0.20))):
        for _ in range(int(count)):
            r = rng.uniform(0.0, 0.45)
            phi = rng.uniform(0, 2 * np.pi)
            oy, ox = cy + r * ry * np.sin(phi), cx + r * rx * np.cos(phi)
            a, b = rng.uniform(lo, hi, 2) * size
            inside = _ellipse(h, w, oy, ox, a, b, rng.uniform(0, np.pi)) & (lab == SOFT)
            lab[inside] = cls
    return lab


def add_lesions(rng: np.random.Generator, lab: np.ndarray, count: int,
                radius: tuple[float, float] = (0.04, 0.08)) -> np.ndarray:
    """Paint ``count`` lesion discs (radius a fraction of the side) into the soft tissue and
    organs of ``lab`` in place; return the lesion mask ``bool [H, W]`` (their union)."""
    size = lab.shape[0]
    mask = np.zeros(lab.shape, bool)
    inner = np.argwhere((lab == SOFT) | (lab == ORGAN))
    for _ in range(count):
        if not len(inner):
            break
        cy, cx = inner[rng.integers(len(inner))]
        r = rng.uniform(*radius) * size
        disc = _ellipse(*lab.shape, cy, cx, r, r, 0.0) & (lab != BACKGROUND) & (lab != FAT)
        mask |= disc
    lab[mask] = LESION
    return mask


def render(lab: np.ndarray, contrast: str = "ct", noise: float = 0.0,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Intensities ``float32`` in [0, 1] of tissue map(s) ``lab`` under ``contrast`` (a key of
    :data:`CONTRASTS`), plus Gaussian noise of std ``noise`` (clipped to [0, 1])."""
    table = np.asarray(CONTRASTS[contrast], np.float32)
    img = table[lab]
    if noise > 0:
        if rng is None:
            raise ValueError("noise needs a random generator")
        img = np.clip(img + rng.normal(0.0, noise, img.shape).astype(np.float32), 0.0, 1.0)
    return img.astype(np.float32)


def phantoms(n: int, size: int = 64, seed: int = 0, lesions: int | tuple[int, int] = 0
             ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random phantoms: tissue maps ``int64 [n, size, size]`` and lesion masks ``bool
    [n, size, size]`` (all False without lesions). ``lesions`` is a count or an inclusive
    ``(low, high)`` range of lesions per phantom."""
    rng = np.random.default_rng(seed)
    labs = np.empty((n, size, size), np.int64)
    masks = np.zeros((n, size, size), bool)
    lo, hi = (lesions, lesions) if isinstance(lesions, int) else lesions
    for i in range(n):
        labs[i] = tissue_map(rng, size)
        k = int(rng.integers(lo, hi + 1)) if hi > 0 else 0
        if k:
            masks[i] = add_lesions(rng, labs[i], k)
    return labs, masks


def shepp_logan(size: int = 64) -> np.ndarray:
    """scikit-image's modified Shepp-Logan phantom (400x400, shipped with the package),
    resized to ``size`` with anti-aliasing: ``float32 [size, size]`` in [0, 1]."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    img = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True, order=1)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def blob_volumes(n: int, size: int = 32, seed: int = 0, blobs: tuple[int, int] = (1, 3),
                 radius: tuple[float, float] = (0.08, 0.16), noise: float = 0.1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 3-D volumes with ellipsoid blobs: intensities ``float32 [n, size, size, size]`` in
    [0, 1] and the blob masks ``bool [n, size, size, size]``.

    Each volume is a smooth background (an ellipsoidal "organ" at intensity 0.4 in air at 0.1)
    with ``blobs`` (inclusive range) ellipsoids of intensity 0.75 inside it, radii a fraction
    of the side, plus Gaussian noise of std ``noise`` (clipped to [0, 1]).
    """
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[0:size, 0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2.0
    vols = np.empty((n, size, size, size), np.float32)
    masks = np.zeros((n, size, size, size), bool)
    for i in range(n):
        r = rng.uniform(0.35, 0.45, 3) * size
        organ = ((zz - c) / r[0]) ** 2 + ((yy - c) / r[1]) ** 2 + ((xx - c) / r[2]) ** 2 <= 1
        vol = np.where(organ, 0.4, 0.1)
        for _ in range(int(rng.integers(blobs[0], blobs[1] + 1))):
            rr = rng.uniform(*radius, 3) * size
            off = rng.uniform(-0.5, 0.5, 3) * (r - rr.max())
            blob = ((zz - c - off[0]) / rr[0]) ** 2 + ((yy - c - off[1]) / rr[1]) ** 2 \
                + ((xx - c - off[2]) / rr[2]) ** 2 <= 1
            masks[i] |= blob & organ
        vol = np.where(masks[i], 0.75, vol)
        vols[i] = np.clip(vol + rng.normal(0.0, noise, vol.shape), 0.0, 1.0)
    return vols, masks
