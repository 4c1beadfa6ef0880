"""Paired metrics for image-to-image translation, where every output has a ground-truth target.

pix2pix (Isola et al., 2017, "Image-to-image translation with conditional adversarial networks")
is judged against the target image of each input, not against a distribution: per-image errors
(L1, PSNR), structural similarity (SSIM, Wang et al., 2004), a sharpness statistic (variance of
the Laplacian, Pech-Pacheco et al., 2000) that exposes the blur an L1-only generator produces, and,
for digits, whether the shipped classifier still reads the intended label from the output.

All functions take float tensors ``[N, C, H, W]`` in [-1, 1] (``uint8`` in [0, 255] is mapped to
[-1, 1]) and compute in float64. Per-image functions return a float64 tensor ``[N]``;
:func:`paired_report` aggregates them and records its protocol.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, DataError

__all__ = [
    "LAPLACIAN_KERNEL",
    "SSIM_MIN_SIZE",
    "digit_label_accuracy",
    "digit_predictions",
    "l1_error",
    "laplacian_variance",
    "paired_report",
    "psnr",
    "ssim",
    "to_digit_input",
]

#: Value range of gankit images; the ``data_range`` of PSNR and SSIM.
DATA_RANGE = 2.0

#: The 4-neighbour discrete Laplacian used by :func:`laplacian_variance`.
LAPLACIAN_KERNEL = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))

#: SSIM settings of Wang et al. (2004): an 11-tap Gaussian window (sigma 1.5, truncated at 3.5
#: sigma) and population (not sample) covariances; K1, K2 are scikit-image's defaults.
SSIM_SETTINGS: dict[str, Any] = {
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
    "data_range": DATA_RANGE,
}

#: Smallest side SSIM accepts: the Gaussian window is 2 * int(3.5 * 1.5 + 0.5) + 1 = 11 px.
SSIM_MIN_SIZE = 2 * int(3.5 * SSIM_SETTINGS["sigma"] + 0.5) + 1

#: Side of the digit classifier's input, and the MNIST-to-LeNet-5 padding (28 + 2 * 2 = 32).
DIGIT_SIZE = 28
DIGIT_PAD = 2


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _images(x: Any, what: str) -> Tensor:
    """Validate one batch ``[N, C, H, W]`` and return it as a float64 CPU tensor."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise DataError(f"{what}: expected a torch.Tensor or numpy array, got {type(x).__name__}.")
    if x.ndim != 4:
        raise DataError(f"{what}: expected images of shape [N, C, H, W], got {list(x.shape)}.")
    if x.shape[0] == 0:
        raise DataError(f"{what}: the batch is empty.")
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        return x.double() / 127.5 - 1.0  # [0, 255] -> [-1, 1]
    if not x.is_floating_point():
        raise DataError(f"{what}: expected float images in [-1, 1] or uint8, got {x.dtype}.")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{what}: contains NaN or infinite values.")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.5 or hi > 1.5:
        # As in gankit.metrics.features: not an error, but [0, 255] floats ruin every metric.
        warnings.warn(f"{what}: values span [{lo:.3g}, {hi:.3g}], but gankit images are in "
                      "[-1, 1]; did you pass [0, 255] or unnormalised data?", stacklevel=3)
    return x.double()


def _pair(pred: Any, target: Any) -> tuple[Tensor, Tensor]:
    p, t = _images(pred, "pred"), _images(target, "target")
    if p.shape != t.shape:
        raise DataError(f"pred and target must have the same shape, got {list(p.shape)} and "
                        f"{list(t.shape)}.")
    return p, t


# ---------------------------------------------------------------------------------------------
# per-image metrics
# ---------------------------------------------------------------------------------------------
def l1_error(pred: Any, target: Any) -> Tensor:
    """Mean absolute error of each image pair, ``[N]``, on the [-1, 1] scale.

    The L1 term pix2pix trains with (Isola et al., 2017, eq. 3), averaged over ``C * H * W``.
    """
    p, t = _pair(pred, target)
    return (p - t).abs().flatten(1).mean(dim=1)


def psnr(pred: Any, target: Any, data_range: float = DATA_RANGE) -> Tensor:
    """Peak signal-to-noise ratio of each image pair in dB, ``[N]``: ``10 log10(R^2 / MSE)``.

    ``R = data_range`` is 2 for [-1, 1] images. Identical images have MSE 0 and PSNR ``+inf``;
    aggregate with a finite-aware mean (as :func:`paired_report` does) or report the infinity.
    """
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) \
            or not math.isfinite(data_range) or data_range <= 0:
        raise ConfigError(f"psnr: data_range must be a positive number, got {data_range!r}.")
    p, t = _pair(pred, target)
    mse = (p - t).square().flatten(1).mean(dim=1)  # [N]
    return 10.0 * torch.log10(float(data_range) ** 2 / mse)  # mse 0 -> R^2 / 0 = +inf


def ssim(pred: Any, target: Any) -> Tensor:
    """Mean structural similarity of each image pair, ``[N]`` (Wang et al., 2004).

    Computed per image in float64 by ``skimage.metrics.structural_similarity`` with
    ``data_range=2``, an 11-tap Gaussian window (``gaussian_weights=True``, ``sigma=1.5``) and
    ``use_sample_covariance=False``, as in the paper; colour images use ``channel_axis`` (the mean
    of the per-channel SSIMs). scikit-image averages the SSIM map after cropping the 5-px border
    the window cannot cover. Images with a side under :data:`SSIM_MIN_SIZE` (11 px) raise
    :class:`ConfigError`, since the window would not fit.
    """
    from skimage.metrics import structural_similarity

    p, t = _pair(pred, target)
    h, w = int(p.shape[2]), int(p.shape[3])
    if min(h, w) < SSIM_MIN_SIZE:
        raise ConfigError(f"ssim needs images of at least {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} px for "
                          f"its 11-tap Gaussian window (Wang et al. 2004), got {h}x{w}.")
    pn, tn = p.numpy(), t.numpy()  # float64 [N, C, H, W]
    colour = p.shape[1] > 1
    out = np.empty(p.shape[0], dtype=np.float64)
    for i in range(p.shape[0]):
        if colour:  # skimage wants channels last
            a, b = pn[i].transpose(1, 2, 0), tn[i].transpose(1, 2, 0)  # [H, W, C]
            out[i] = structural_similarity(a, b, channel_axis=-1, **SSIM_SETTINGS)
        else:
            out[i] = structural_similarity(pn[i, 0], tn[i, 0], **SSIM_SETTINGS)
    return torch.from_numpy(out)


def laplacian_variance(x: Any) -> Tensor:
    """Sharpness of each image, ``[N]``: the variance over pixels of its 3x3 Laplacian.

    The "variance of the Laplacian" focus measure (Pech-Pacheco et al., 2000, "Diatom autofocusing
    in brightfield microscopy: a comparative study"): the image (in [-1, 1]) is convolved with
    ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` in 'valid' mode (no padding, so no border artefacts),
    and the population variance of the ``(H - 2) x (W - 2)`` response is taken per channel, then
    averaged over channels. Blurrier images give lower values; a constant image gives 0.
    """
    x = _images(x, "images")
    n, c, h, w = x.shape
    if min(h, w) < 3:
        raise ConfigError(f"laplacian_variance needs images of at least 3x3 px, got {h}x{w}.")
    k = torch.tensor(LAPLACIAN_KERNEL, dtype=torch.float64).view(1, 1, 3, 3)
    lap = F.conv2d(x.reshape(n * c, 1, h, w), k)  # [N*C, 1, H-2, W-2], valid
    var = lap.flatten(1).var(dim=1, unbiased=False)  # [N*C]
    return var.view(n, c).mean(dim=1)


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _digit_classifier() -> Any:
    from ..registry import FEATURES

    return FEATURES.get("lenet-mnist")()


def to_digit_input(x: Any) -> Tensor:
    """Grey digit images ``[N, 1, H, W]`` -> the classifier's ``[N, 1, 28, 28]`` (float32).

    32x32 images are centre-cropped by 2 px on each side (the border MNIST digits are padded with
    for LeNet-5, LeCun et al., 1998), so a padded digit is classified exactly as the original;
    other sizes are resized with :func:`gankit.data.files.resize_images` (bilinear, antialiased).
    Only one channel is accepted (:class:`ConfigError` otherwise).
    """
    from ..data.files import resize_images

    x = _images(x, "digit images")
    if x.shape[1] != 1:
        raise ConfigError(f"digit_label_accuracy needs 1-channel images, got {x.shape[1]} "
                          "channels.")
    h, w = int(x.shape[2]), int(x.shape[3])
    if (h, w) == (DIGIT_SIZE + 2 * DIGIT_PAD,) * 2:
        x = x[:, :, DIGIT_PAD:DIGIT_PAD + DIGIT_SIZE, DIGIT_PAD:DIGIT_PAD + DIGIT_SIZE]
    elif (h, w) != (DIGIT_SIZE, DIGIT_SIZE):
        x = resize_images(x, DIGIT_SIZE)
    return x.float().contiguous()  # [N, 1, 28, 28]


def digit_predictions(x: Any) -> np.ndarray:
    """Digit classes ``int64 [N]`` that the shipped ``lenet-mnist`` classifier reads from ``x``.

    ``x`` is prepared by :func:`to_digit_input` (crop 32 -> 28, otherwise resize; grey only).
    """
    return _digit_classifier().predict(to_digit_input(x))


def digit_label_accuracy(x: Any, labels: Any) -> float:
    """Fraction of images in ``x`` that the shipped digit classifier predicts as ``labels``.

    For class-conditional or label-preserving translation of digits: a sample that no longer reads
    as its intended digit counts as a failure, however close it is to its target in L1.
    """
    x = _images(x, "digit images")
    y = torch.as_tensor(np.asarray(labels)).reshape(-1)
    n = int(x.shape[0])
    if y.numel() != n:
        raise DataError(f"labels must hold one class per image, got {y.numel()} labels for "
                        f"{n} images.")
    if y.is_floating_point() or y.dtype == torch.bool or int(y.min()) < 0 or int(y.max()) > 9:
        raise DataError("labels must be integer digit classes in 0..9.")
    pred = digit_predictions(x)
    return float(np.mean(pred == y.numpy().astype(np.int64)))


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def paired_report(pred: Any, target: Any, labels: Any = None) -> dict[str, Any]:
    """All paired metrics of ``pred`` against ``target``, with the protocol that produced them.

    ``results``: ``l1``, ``psnr`` (mean over the finite values; ``psnr_n_inf`` counts identical
    pairs, whose PSNR is +inf; ``psnr`` is +inf when every pair is identical), ``ssim``,
    ``sharpness`` and ``sharpness_target`` (mean Laplacian variance of ``pred`` and of ``target``:
    an output much smoother than its target is blurred), and ``label_acc`` (fraction of ``pred``
    the digit classifier reads as ``labels``) only when ``labels`` are given.
    """
    p, t = _pair(pred, target)
    ps = psnr(p, t)
    finite = torch.isfinite(ps)
    results: dict[str, Any] = {
        "l1": float(l1_error(p, t).mean()),
        "psnr": float(ps[finite].mean()) if bool(finite.any()) else math.inf,
        "psnr_n_inf": int((~finite).sum()),
        "ssim": float(ssim(p, t).mean()),
        "sharpness": float(laplacian_variance(p).mean()),
        "sharpness_target": float(laplacian_variance(t).mean()),
    }
    import skimage

    protocol: dict[str, Any] = {
        "n": int(p.shape[0]),
        "image_shape": list(p.shape[1:]),
        "value_range": [-1.0, 1.0],
        "dtype": "float64",
        "l1": "mean |pred - target| per image, then mean over images",
        "psnr": {"data_range": DATA_RANGE, "formula": "10 log10(R^2 / MSE) per image",
                 "aggregate": "mean over finite values; identical pairs (+inf) counted in "
                              "psnr_n_inf"},
        "ssim": {"implementation": f"skimage.metrics.structural_similarity "
                                   f"(scikit-image {skimage.__version__})",
                 **SSIM_SETTINGS, "window": f"{SSIM_MIN_SIZE}-tap Gaussian, truncate 3.5",
                 "K1": 0.01, "K2": 0.03,
                 "colour": "channel_axis: mean of per-channel SSIM",
                 "reference": "Wang et al. 2004"},
        "sharpness": {"kernel": [list(r) for r in LAPLACIAN_KERNEL], "padding": "valid",
                      "statistic": "population variance over pixels, mean over channels",
                      "reference": "Pech-Pacheco et al. 2000"},
    }
    if labels is not None:
        results["label_acc"] = digit_label_accuracy(p, labels)
        protocol["label_acc"] = {
            "classifier": _digit_classifier().protocol(),
            "input": f"pred; 32x32 centre-cropped by {DIGIT_PAD} px to {DIGIT_SIZE}x{DIGIT_SIZE}, "
                     "other sizes resized with gankit.data.files.resize_images; 1 channel only",
        }
    return {"results": results, "protocol": protocol}
