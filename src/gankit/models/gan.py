"""The original GAN: multilayer perceptrons for G and D (Goodfellow et al. 2014; seed 000 §3.3).

Works on points (toy mixtures, tabular data) and on flattened images. Both generator losses of the
paper are available: ``loss.name=minimax`` (saturating, eq. 1) and ``loss.name=nonsaturating``
(the default, §3 of the paper). The default sizes on 2-D points follow the mode-collapse
benchmarks of VEEGAN/PacGAN (G: 4 x 400 ReLU + BN, D: 3 x 200, 2-D latent); on images a
two-hidden-layer MLP of 512 units.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..nn import prod, spectral_norm_all
from ..registry import MODELS
from .base import ModelFamily, Params


class GANParams(Params):
    latent_dim: int | None = None  # None: 2 for points, 100 for images
    g_hidden: int | None = None  # None: 400 for points, 512 for images
    g_layers: int | None = None  # None: 4 for points, 2 for images
    d_hidden: int | None = None  # None: 200 for points, 512 for images
    d_layers: int | None = None  # None: 3 for points, 2 for images
    g_batchnorm: bool = True
    d_dropout: float = 0.0  # Goodfellow et al. used dropout in D
    spectral_norm: bool = False


def mlp(n_in: int, hidden: int, layers: int, n_out: int, act: nn.Module, *,
        batchnorm: bool = False, dropout: float = 0.0) -> nn.Sequential:
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


class MLPGenerator(nn.Module):
    """z [N, latent] (+ one-hot c) -> sample [N, *shape]; tanh output for images."""

    def __init__(self, latent_dim: int, shape: tuple[int, ...], hidden: int, layers: int,
                 batchnorm: bool, n_classes: int = 0) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.n_classes = n_classes
        self.net = mlp(latent_dim + n_classes, hidden, layers, prod(shape), nn.ReLU(),
                       batchnorm=batchnorm)
        self.out = nn.Tanh() if len(shape) == 3 else nn.Identity()

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        if self.n_classes:
            z = torch.cat([z, nn.functional.one_hot(c, self.n_classes).to(z.dtype)], 1)
        return self.out(self.net(z)).view(len(z), *self.shape)


class MLPDiscriminator(nn.Module):
    """sample [N, *shape] (+ one-hot c) -> score [N, 1]."""

    def __init__(self, shape: tuple[int, ...], hidden: int, layers: int, dropout: float,
                 n_classes: int = 0) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.net = mlp(prod(shape) + n_classes, hidden, layers, 1, nn.LeakyReLU(0.2),
                       dropout=dropout)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        h = x.flatten(1)
        if self.n_classes:
            h = torch.cat([h, nn.functional.one_hot(c, self.n_classes).to(h.dtype)], 1)
        return self.net(h)


def mlp_sizes(p: GANParams, is_image: bool) -> dict[str, int]:
    auto = {"latent_dim": 100, "g_hidden": 512, "g_layers": 2, "d_hidden": 512, "d_layers": 2} if is_image \
        else {"latent_dim": 2, "g_hidden": 400, "g_layers": 4, "d_hidden": 200, "d_layers": 3}
    return {k: getattr(p, k) if getattr(p, k) is not None else v for k, v in auto.items()}


@MODELS.register("gan", description="original MLP GAN, minimax or non-saturating loss (Goodfellow et al. 2014)")
class GAN(ModelFamily):
    """The original GAN (Goodfellow et al. 2014)."""

    Params = GANParams
    defaults: ClassVar[dict[str, Any]] = {"loss": {"name": "nonsaturating"}}

    def __init__(self, cfg: Any, info: dict[str, Any], n_classes: int = 0) -> None:
        super().__init__(cfg, info)
        s = mlp_sizes(self.p, info["is_image"])
        self.latent_dim = s["latent_dim"]
        self.G = MLPGenerator(self.latent_dim, self.sample_shape, s["g_hidden"], s["g_layers"],
                              self.p.g_batchnorm, n_classes)
        self.D = MLPDiscriminator(self.sample_shape, s["d_hidden"], s["d_layers"],
                                  self.p.d_dropout, n_classes)
        if self.p.spectral_norm:
            spectral_norm_all(self.D)
