"""DCGAN: the all-convolutional GAN of Radford et al. 2016 (seed 002 §4.3, deck 003).

Their rules: strided (transposed) convolutions instead of pooling, batch norm in both networks
(not on G's output or D's input), ReLU in G with tanh output, LeakyReLU(0.2) in D, no hidden
fully connected layers, weights N(0, 0.02), Adam lr 2e-4 with beta1 0.5. The number of stride-2
stages adapts to the resolution (28 -> 7x7 base, 32/64 -> 4x4 base, 8 -> 4x4).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..data.sizes import STAGED
from ..nn import conv_stages, dcgan_init, spectral_norm_all
from ..nn.minibatch import MinibatchDiscrimination, MinibatchStdDev, fit_mbdisc, widened_linear
from ..registry import MODELS
from ..tricks import d_layer_kwargs
from .base import GANFamily, Params


class DCGANParams(Params):
    latent_dim: int = 100
    width: int = 64  # channels of the highest-resolution G/D stage (ngf/ndf); doubles per stage
    max_width: int = 512
    spectral_norm: bool = False  # on D (Miyato et al. 2018); drops D's batch norm


class DCGenerator(nn.Module):
    """z [N, latent] (+ class embedding) -> image [N, C, R, R] in [-1, 1]."""

    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int,
                 max_width: int, n_classes: int = 0) -> None:
        super().__init__()
        k, s0 = conv_stages(resolution)
        chans = [min(width * 2 ** i, max_width) for i in reversed(range(k))]  # e.g. [256, 128, 64]
        self.n_classes = n_classes
        self.s0, self.c0 = s0, chans[0]
        # Projection of z to the base feature map (Radford et al.'s first "fully connected" layer
        # reshaped to a 4-D tensor), followed by BN + ReLU.
        self.project = nn.Linear(latent_dim + n_classes, chans[0] * s0 * s0, bias=False)
        self.bn0 = nn.BatchNorm2d(chans[0])
        ups: list[nn.Module] = []
        for i in range(k - 1):
            ups += [nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, 1, bias=False),
                    nn.BatchNorm2d(chans[i + 1]), nn.ReLU(True)]
        ups += [nn.ConvTranspose2d(chans[-1], channels, 4, 2, 1), nn.Tanh()]
        self.ups = nn.Sequential(*ups)
        dcgan_init(self)

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        if self.n_classes:
            z = torch.cat([z, nn.functional.one_hot(c, self.n_classes).to(z.dtype)], 1)
        h = self.project(z).view(-1, self.c0, self.s0, self.s0)  # [N, C0, s0, s0]
        return self.ups(torch.relu(self.bn0(h)))


class DCFeatures(nn.Sequential):
    """D's convolutional trunk: image [N, C, R, R] (+ label) -> penultimate features [N, F].

    Still the ``nn.Sequential`` of conv stages it always was (same children, same state-dict
    keys), called as ``features(x, c=None)``: it prepends the one-hot label planes of a
    conditional D (Mirza & Osindero 2014), applies ``dropout`` after every LeakyReLU when set
    (``tricks.d_dropout``; Goodfellow et al. 2014 trained D with dropout) and flattens the last
    feature map, so ``F = C_last * s0 * s0``.
    """

    def __init__(self, layers: list[nn.Module], n_classes: int = 0) -> None:
        super().__init__(*layers)
        self.n_classes = n_classes
        self.dropout = 0.0

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if self.n_classes:
            maps = nn.functional.one_hot(c, self.n_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, maps.expand(-1, -1, x.shape[2], x.shape[3])], 1)
        for m in self:
            x = m(x)
            if self.dropout > 0 and isinstance(m, nn.LeakyReLU):
                x = nn.functional.dropout(x, self.dropout, self.training)
        return x.flatten(1)  # [N, C_last * s0 * s0]


class DCDiscriminator(nn.Module):
    """image [N, C, R, R] (+ one-hot label maps) -> score [N, 1].

    ``forward = head(batch_layers(features(x, c)))``: ``features`` are per-sample penultimate
    features (what feature matching compares, Salimans et al. 2016 §3.1); the optional batch
    layers see the whole mini-batch before the linear head: minibatch standard deviation
    (``mbstd_group``, Karras et al. 2018 §3, on the last s0 x s0 feature map) and minibatch
    discrimination (``mbdisc_kernels`` kernels of dimension ``mbdisc_dim``, Salimans et al. 2016
    §3.2). See :meth:`add_tricks`.
    """

    def __init__(self, channels: int, resolution: int, width: int, max_width: int,
                 batchnorm: bool = True, n_classes: int = 0, *, dropout: float = 0.0,
                 mbstd_group: int = 0, mbdisc_kernels: int = 0, mbdisc_dim: int = 5) -> None:
        super().__init__()
        k, s0 = conv_stages(resolution)
        chans = [min(width * 2 ** i, max_width) for i in range(k)]  # e.g. [64, 128, 256]
        self.n_classes = n_classes
        layers: list[nn.Module] = [nn.Conv2d(channels + n_classes, chans[0], 4, 2, 1),
                                   nn.LeakyReLU(0.2, True)]
        for i in range(k - 1):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(chans[i + 1]))
            layers.append(nn.LeakyReLU(0.2, True))
        self.features = DCFeatures(layers, n_classes)
        self.last_map = (chans[-1], s0, s0)  # shape of the trunk's last feature map
        self.head = nn.Linear(chans[-1] * s0 * s0, 1)
        self.mbstd: MinibatchStdDev | None = None
        self.mbdisc: MinibatchDiscrimination | None = None
        dcgan_init(self)
        self.add_tricks(dropout=dropout, mbstd_group=mbstd_group, mbdisc_kernels=mbdisc_kernels,
                        mbdisc_dim=mbdisc_dim)

    def add_tricks(self, *, dropout: float = 0.0, mbstd_group: int = 0, mbdisc_kernels: int = 0,
                   mbdisc_dim: int = 5) -> None:
        """Switch on D-layer tricks in place (0 leaves a setting as it is); call before training.

        A wider head input gets a new DCGAN-initialised head (spectrally normalised when the old
        one was); the conv trunk is untouched, so modules sharing it stay valid.
        """
        if dropout > 0:
            self.features.dropout = float(dropout)
        if mbstd_group > 0 and (self.mbstd is None or self.mbstd.group_size != mbstd_group):
            self.mbstd = MinibatchStdDev(mbstd_group)
        c, s, _ = self.last_map
        f = (c + (self.mbstd is not None)) * s * s  # per-sample width after mbstd
        self.mbdisc = fit_mbdisc(self.mbdisc, f, mbdisc_kernels, mbdisc_dim, self.head.bias)
        f_head = self.mbdisc.out_features if self.mbdisc is not None else f
        if self.head.in_features != f_head:
            self.head = widened_linear(self.head, f_head, init_std=0.02)

    def batch_layers(self, h: Tensor) -> Tensor:
        """[N, F] per-sample features -> [N, F'] head input, with the batch statistics."""
        if self.mbstd is not None:
            h = self.mbstd(h.view(len(h), *self.last_map)).flatten(1)  # [N, (C + 1) s0 s0]
        if self.mbdisc is not None:
            h = self.mbdisc(h)  # [N, F + B]
        return h

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.head(self.batch_layers(self.features(x, c)))


@MODELS.register("dcgan", description="deep convolutional GAN with the architecture rules of Radford et al. 2016")
class DCGAN(GANFamily):
    """DCGAN (Radford et al. 2016)."""

    image_sizes = STAGED  # strided conv stages (gankit.nn.conv_stages)

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8}

    Params = DCGANParams
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "nonsaturating"},
        "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999)},
    }

    def __init__(self, cfg: Any, info: dict[str, Any], n_classes: int = 0) -> None:
        super().__init__(cfg, info)
        if not info["is_image"]:
            from ..errors import ConfigError

            raise ConfigError(f"model '{cfg.model['name']}' needs images; '{info['name']}' holds "
                              f"points (use the 'gan' model for 2-D and tabular data)")
        c, r = self.sample_shape[0], self.sample_shape[-1]
        self.latent_dim = self.p.latent_dim
        self.G = DCGenerator(self.latent_dim, c, r, self.p.width, self.p.max_width, n_classes)
        # tricks.d_dropout / minibatch_stddev / minibatch_discrimination (gankit.tricks)
        self.D = DCDiscriminator(c, r, self.p.width, self.p.max_width,
                                 batchnorm=not self.p.spectral_norm, n_classes=n_classes,
                                 **d_layer_kwargs(cfg))
        if self.p.spectral_norm:
            spectral_norm_all(self.D)
