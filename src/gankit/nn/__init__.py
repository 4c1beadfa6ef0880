"""Layers shared by several model families."""

from __future__ import annotations

import math

from torch import Tensor, nn


def spectral_norm_all(module: nn.Module, exclude: tuple[type, ...] = ()) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every conv/linear weight of ``module``,
    except inside submodules of the ``exclude`` types (e.g. conditional batch norm's gain and
    bias maps, which start at zero).

    Uses ``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration per forward in
    training mode); the power-iteration vectors are buffers, so they are checkpointed.
    """
    skip = {id(m) for ex in module.modules() if exclude and isinstance(ex, exclude)
            for m in ex.modules()}
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)) and id(m) not in skip:
            nn.utils.parametrizations.spectral_norm(m)
    return module


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. 2016 initialisation: weights N(0, 0.02), BN scale N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def conv_stages(resolution: int, min_size: int = 4) -> tuple[int, int]:
    """``(k, s0)``: the most stride-2 stages such that ``resolution = s0 * 2**k`` with ``s0 >= min_size``.

    28 -> (2, 7), 32 -> (3, 4), 64 -> (4, 4), 8 -> (1, 4). At least one stage is always used.
    """
    k = 0
    while resolution % 2 ** (k + 1) == 0 and resolution // 2 ** (k + 1) >= min_size:
        k += 1
    if k == 0:
        raise ValueError(f"resolution {resolution} cannot be halved to >= {min_size}; "
                         f"resize with data.image_size (e.g. 32)")
    return k, resolution // 2**k


def downsampling_trunk(channels: int, resolution: int, width: int,
                       max_width: int) -> tuple[nn.Sequential, int]:
    """``(trunk, features)``: DCGAN's discriminator trunk without normalisation (4x4 stride-2
    convolutions, LeakyReLU 0.2; widths ``width * 2**i`` capped at ``max_width``) from
    ``[N, channels, R, R]`` down to ``s0 x s0`` (:func:`conv_stages`), and the number of
    features it gives once flattened. The encoders of the VAE and f-AnoGAN put a linear head
    on it."""
    k, s0 = conv_stages(resolution)
    chans = [min(width * 2 ** i, max_width) for i in range(k)]  # e.g. [32, 64]
    layers: list[nn.Module] = []
    c_in = channels
    for c in chans:
        layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.LeakyReLU(0.2)]
        c_in = c
    return nn.Sequential(*layers), chans[-1] * s0 * s0


class Flatten(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


def prod(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def mlp(n_in: int, hidden: int, layers: int, n_out: int, act: nn.Module, *,
        batchnorm: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """``layers`` hidden layers of ``hidden`` units (Linear[, BatchNorm], ``act``[, Dropout]),
    then a linear output: the multilayer perceptron of the original GAN (Goodfellow et al. 2014),
    BEGAN's point autoencoder (ELU) and the VAE (tanh, Kingma & Welling 2014 App. C)."""
    mods: list[nn.Module] = []
    d = n_in
    for _ in range(layers):
        mods.append(nn.Linear(d, hidden))
        if batchnorm:
            mods.append(nn.BatchNorm1d(hidden))
        mods.append(act)
        if dropout > 0:
            mods.append(nn.Dropout(dropout))
        d = hidden
    mods.append(nn.Linear(d, n_out))
    return nn.Sequential(*mods)
