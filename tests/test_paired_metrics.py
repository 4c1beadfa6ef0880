"""Paired image-to-image metrics (gankit.metrics.paired): analytic cases for L1 / PSNR / SSIM and
the Laplacian-variance sharpness, monotonicity under noise and blur, the digit classifier's
label accuracy on real MNIST-5k test digits (and its 32 -> 28 crop), and the report's layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gankit.errors import ConfigError, DataError
from gankit.metrics.paired import (
    digit_label_accuracy,
    digit_predictions,
    l1_error,
    laplacian_variance,
    paired_report,
    psnr,
    ssim,
    to_digit_input,
)


def rand_images(n: int, c: int, size: int, lo: float = -1.0, hi: float = 1.0, seed: int = 0
                ) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g, dtype=torch.float64) * (hi - lo) + lo


def smooth_images(n: int, c: int, size: int) -> torch.Tensor:
    """Smooth structured images in [-0.6, 0.6]: sums of low-frequency sinusoids."""
    i = torch.arange(size, dtype=torch.float64)
    yy, xx = torch.meshgrid(i, i, indexing="ij")
    out = torch.empty(n, c, size, size, dtype=torch.float64)
    for k in range(n):
        for ch in range(c):
            f1, f2 = 0.15 + 0.05 * k, 0.2 + 0.07 * ch
            out[k, ch] = 0.3 * torch.sin(f1 * xx) + 0.3 * torch.cos(f2 * yy + k)
    return out


def checkerboard(size: int) -> torch.Tensor:
    """x[i, j] = (-1)^(i + j), shape [1, 1, size, size]."""
    i = torch.arange(size)
    return ((-1.0) ** (i[:, None] + i[None, :])).to(torch.float64)[None, None]


# ---------------------------------------------------------------------------------------------
# L1, PSNR, SSIM
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [1, 3])
def test_identical_sets(c: int) -> None:
    x = rand_images(4, c, 16)
    assert torch.equal(l1_error(x, x.clone()), torch.zeros(4, dtype=torch.float64))
    p = psnr(x, x.clone())
    assert p.shape == (4,) and bool(torch.isposinf(p).all())
    torch.testing.assert_close(ssim(x, x.clone()), torch.ones(4, dtype=torch.float64),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("d", [0.01, 0.1, 0.37, -0.25])
def test_constant_offset(d: float) -> None:
    target = rand_images(3, 3, 12, -0.5, 0.5)
    pred = target + d
    torch.testing.assert_close(l1_error(pred, target), torch.full((3,), abs(d), dtype=torch.float64),
                               atol=1e-12, rtol=0)
    # MSE = d^2 exactly, so PSNR = 10 log10(2^2 / d^2).
    expected = 10 * math.log10(4 / d**2)
    assert torch.allclose(psnr(pred, target), torch.full((3,), expected, dtype=torch.float64),
                          atol=1e-6, rtol=0)
    # a different data_range shifts PSNR by 20 log10(R / 2)
    assert torch.allclose(psnr(pred, target, data_range=1.0), torch.full(
        (3,), expected - 20 * math.log10(2), dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("c", [1, 3])
def test_ssim_decreases_with_noise(c: int) -> None:
    target = smooth_images(2, c, 32)
    eps = torch.randn(target.shape, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64)
    sigmas = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4]
    s = torch.stack([ssim((target + sd * eps).clamp(-1, 1), target) for sd in sigmas])  # [6, 2]
    assert torch.allclose(s[0], torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert bool((s[1:] < s[:-1]).all()), s
    assert float(s[-1].max()) < 0.5


def test_ssim_colour_is_channel_mean_and_size_guard() -> None:
    # With three equal channels, the colour SSIM (mean over channels) equals the grey SSIM;
    # mixing up the channel axis with a spatial one would break this.
    grey_t = smooth_images(2, 1, 24)
    grey_p = (grey_t + 0.1 * rand_images(2, 1, 24, seed=3)).clamp(-1, 1)
    g = ssim(grey_p, grey_t)
    assert float(g.max()) < 0.99
    torch.testing.assert_close(ssim(grey_p.repeat(1, 3, 1, 1), grey_t.repeat(1, 3, 1, 1)), g,
                               atol=1e-12, rtol=0)
    # the 11-tap Gaussian window needs 11 px
    assert ssim(rand_images(1, 1, 11), rand_images(1, 1, 11, seed=1)).shape == (1,)
    with pytest.raises(ConfigError, match="at least 11x11"):
        ssim(rand_images(1, 1, 10), rand_images(1, 1, 10, seed=1))
    with pytest.raises(ConfigError):
        ssim(rand_images(1, 3, 6), rand_images(1, 3, 6, seed=1))


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. (2004), eq. 13, written out: Gaussian-weighted local means, population
    (co)variances, C1 = (0.01 R)^2, C2 = (0.03 R)^2 with R = 2, averaged away from the 5-px
    border that the 11-tap window (sigma 1.5, truncated at 3.5 sigma) cannot cover."""
    from scipy.ndimage import gaussian_filter

    def blur(z: np.ndarray) -> np.ndarray:
        return gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s[5:-5, 5:-5].mean())


def test_ssim_matches_formula() -> None:
    # constant images a, b: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 0.2, -0.3
    c1 = (0.01 * 2) ** 2
    pa = torch.full((1, 1, 16, 16), a, dtype=torch.float64)
    pb = torch.full((1, 1, 16, 16), b, dtype=torch.float64)
    assert float(ssim(pa, pb)[0]) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1),
                                                    abs=1e-12)
    # textured images against the written-out formula
    t = smooth_images(2, 1, 20)
    p = (t + 0.2 * rand_images(2, 1, 20, seed=5)).clamp(-1, 1)
    got = ssim(p, t)
    for i in range(2):
        assert float(got[i]) == pytest.approx(reference_ssim(p[i, 0].numpy(), t[i, 0].numpy()),
                                              abs=1e-10)


def test_validation() -> None:
    x = rand_images(2, 1, 12)
    with pytest.raises(DataError, match="same shape"):
        l1_error(x, rand_images(2, 1, 13))
    with pytest.raises(DataError, match="same shape"):
        paired_report(x, x[:1])
    with pytest.raises(DataError, match=r"\[N, C, H, W\]"):
        psnr(x[0], x[0])
    bad = x.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        ssim(bad, x)
    with pytest.raises(ConfigError):
        psnr(x, x, data_range=0.0)


# ---------------------------------------------------------------------------------------------
# sharpness: variance of the Laplacian
# ---------------------------------------------------------------------------------------------
def test_laplacian_variance_analytic() -> None:
    const = torch.stack([torch.full((2, 9, 9), v, dtype=torch.float64) for v in (-1.0, 0.3, 1.0)])
    # zero up to float rounding of 0.3 * (1 + 1 + 1 + 1 - 4)
    torch.testing.assert_close(laplacian_variance(const), torch.zeros(3, dtype=torch.float64),
                               atol=1e-20, rtol=0)

    # Checkerboard x = (-1)^(i+j): the four neighbours of every pixel have the opposite sign, so
    # the Laplacian is (sum of neighbours) - 4 x = -4x - 4x = -8x, i.e. +-8 at every interior
    # pixel. Its variance is E[L^2] - E[L]^2 = 64 - 64 * mean(x_interior)^2.
    # 8x8: the 6x6 interior has as many +1 as -1, mean 0 -> variance 64.
    torch.testing.assert_close(laplacian_variance(checkerboard(8)),
                               torch.tensor([64.0], dtype=torch.float64), atol=1e-12, rtol=0)
    # 5x5: the 3x3 interior holds five of one sign and four of the other, mean 1/9 ->
    # variance 64 (1 - 1/81).
    torch.testing.assert_close(laplacian_variance(checkerboard(5)),
                               torch.tensor([64.0 * 80 / 81], dtype=torch.float64),
                               atol=1e-12, rtol=0)
    # colour: channels are averaged (checkerboard, its negation, a constant) -> (64 + 64 + 0) / 3.
    cb = checkerboard(8)[0, 0]
    colour = torch.stack([cb, -cb, torch.full_like(cb, 0.5)])[None]
    torch.testing.assert_close(laplacian_variance(colour),
                               torch.tensor([128.0 / 3], dtype=torch.float64), atol=1e-12, rtol=0)
    with pytest.raises(ConfigError):
        laplacian_variance(rand_images(1, 1, 2))


def test_laplacian_variance_decreases_with_blur() -> None:
    x = rand_images(2, 1, 32)
    values = []
    for k in (1, 3, 5, 7, 9):  # box blur of growing width (k = 1 is the identity)
        pad = k // 2
        blurred = F.avg_pool2d(F.pad(x, (pad,) * 4, mode="circular"), k, stride=1)
        values.append(laplacian_variance(blurred))
    v = torch.stack(values)  # [5, 2]
    assert bool((v[1:] < v[:-1]).all()), v
    assert float((v[-1] / v[0]).max()) < 0.05


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, np.ndarray]:
    """200 real MNIST-5k test digits as float32 [200, 1, 28, 28] in [-1, 1], and their labels."""
    from gankit.data.builtin import mnist5k_arrays

    _, _, xte, yte = mnist5k_arrays()
    x = torch.from_numpy(xte[:200].astype(np.float32) / 127.5 - 1.0)[:, None]
    return x, yte[:200]


def test_digit_label_accuracy(digits: tuple[torch.Tensor, np.ndarray]) -> None:
    x, y = digits
    acc = digit_label_accuracy(x, y)
    assert acc > 0.95
    # MNIST padded to 32x32 for LeNet-5: the 2-px crop recovers the digit exactly.
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)
    assert padded.shape[-1] == 32
    assert torch.equal(to_digit_input(padded), x)
    np.testing.assert_array_equal(digit_predictions(padded), digit_predictions(x))
    assert digit_label_accuracy(padded, y) == acc
    shuffled = np.random.default_rng(0).permutation(y)
    assert digit_label_accuracy(x, shuffled) < 0.3
    with pytest.raises(ConfigError, match="1-channel"):
        digit_label_accuracy(x.repeat(1, 3, 1, 1), y)
    with pytest.raises(DataError):
        digit_label_accuracy(x, y[:10])


def test_paired_report(digits: tuple[torch.Tensor, np.ndarray]) -> None:
    x, y = digits
    target = x[:20].double()
    pred = target.clone()
    d = 0.1
    pred[10:] = (pred[10:] + d).clamp(-1, 1)  # half identical, half shifted
    rep = paired_report(pred, target)
    res = rep["results"]
    assert set(res) == {"l1", "psnr", "psnr_n_inf", "ssim", "sharpness", "sharpness_target"}
    assert res["psnr_n_inf"] == 10
    # the finite mean is over the 10 shifted images only
    assert res["psnr"] == pytest.approx(float(psnr(pred[10:], target[10:]).mean()), abs=1e-9)
    assert math.isfinite(res["psnr"])
    assert res["l1"] == pytest.approx(float(l1_error(pred, target).mean()), abs=1e-12)
    assert res["sharpness_target"] == pytest.approx(float(laplacian_variance(target).mean()))
    assert rep["protocol"]["n"] == 20
    assert rep["protocol"]["ssim"]["use_sample_covariance"] is False
    assert rep["protocol"]["sharpness"]["kernel"] == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    assert "label_acc" not in rep["protocol"]

    rep2 = paired_report(pred, target, labels=y[:20])
    assert set(rep2["results"]) == set(res) | {"label_acc"}
    assert rep2["results"]["label_acc"] == digit_label_accuracy(pred, y[:20])
    assert rep2["protocol"]["label_acc"]["classifier"]["extractor"] == "lenet-mnist"

    all_inf = paired_report(target, target)["results"]
    assert all_inf["psnr"] == math.inf and all_inf["psnr_n_inf"] == 20
