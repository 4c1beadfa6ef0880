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

from ..errors import ConfigError
from ..nn import mlp, prod, spectral_norm_all
from ..nn.minibatch import MinibatchDiscrimination, MinibatchStdDev, fit_mbdisc, widened_linear
from ..registry import MODELS
from ..tricks import d_layer_kwargs
from .base import GANFamily, Params


class GANParams(Params):
    latent_dim: int | None = None  # None: 2 for points, 100 for images
    g_hidden: int | None = None  # None: 400 for points, 512 for images
    g_layers: int | None = None  # None: 4 for points, 2 for images
    d_hidden: int | None = None  # None: 200 for points, 512 for images
    d_layers: int | None = None  # None: 3 for points, 2 for images
    g_batchnorm: bool = True
    d_dropout: float = 0.0  # Goodfellow et al. used dropout in D
    spectral_norm: bool = False


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
        return self.out(self.net(z)).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    """sample [N, *shape] (+ one-hot c) -> score [N, 1].

    ``forward = net[-1](batch_layers(features(x, c)))``: ``features`` are the per-sample
    activations of the last hidden layer (what feature matching compares, Salimans et al. 2016
    §3.1); the optional batch layers, minibatch standard deviation (Karras et al. 2018 §3) and
    minibatch discrimination (Salimans et al. 2016 §3.2), see the whole mini-batch before the
    output layer. ``dropout`` builds Dropout layers into ``net`` (Goodfellow et al. 2014);
    :meth:`add_tricks` can add it to a discriminator built without.
    """

    def __init__(self, shape: tuple[int, ...], hidden: int, layers: int, dropout: float,
                 n_classes: int = 0, *, mbstd_group: int = 0, mbdisc_kernels: int = 0,
                 mbdisc_dim: int = 5) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.in_width = prod(shape) + n_classes
        self.net = mlp(self.in_width, hidden, layers, 1, nn.LeakyReLU(0.2),
                       dropout=dropout)
        self.dropout = 0.0  # functional dropout added by add_tricks (when net has none)
        self.mbstd: MinibatchStdDev | None = None
        self.mbdisc: MinibatchDiscrimination | None = None
        self.add_tricks(mbstd_group=mbstd_group, mbdisc_kernels=mbdisc_kernels,
                        mbdisc_dim=mbdisc_dim)

    def add_tricks(self, *, dropout: float = 0.0, mbstd_group: int = 0, mbdisc_kernels: int = 0,
                   mbdisc_dim: int = 5) -> None:
        """Switch on D-layer tricks in place (0 leaves a setting as it is); call before training.

        Dropout: the rate of ``net``'s Dropout layers when it has them, else dropout after every
        hidden activation. A wider input to the output layer gets a new output layer (spectrally
        normalised when the old one was).
        """
        if dropout > 0:
            drops = [m for m in self.net if isinstance(m, nn.Dropout)]
            for m in drops:
                m.p = float(dropout)
            if not drops:
                self.dropout = float(dropout)
        if mbstd_group > 0 and (self.mbstd is None or self.mbstd.group_size != mbstd_group):
            self.mbstd = MinibatchStdDev(mbstd_group)
        out = self.net[-1]
        ref = out.bias if out.bias is not None else next(out.parameters())
        f = self.hidden_features + (self.mbstd is not None)  # per-sample width after mbstd
        self.mbdisc = fit_mbdisc(self.mbdisc, f, mbdisc_kernels, mbdisc_dim, ref)
        f_out = self.mbdisc.out_features if self.mbdisc is not None else f
        if out.in_features != f_out:
            self.net[-1] = widened_linear(out, f_out)

    @property
    def hidden_features(self) -> int:
        """Width of the per-sample features (the last hidden layer, or the input)."""
        lin = [m for m in self.net if isinstance(m, nn.Linear)]
        return lin[-2].out_features if len(lin) > 1 else self.in_width

    @property
    def drop_rate(self) -> float:
        """The effective dropout rate after D's activations."""
        drops = [m.p for m in self.net if isinstance(m, nn.Dropout)]
        return drops[0] if drops else self.dropout

    def features(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """[N, *shape] (+ label) -> [N, hidden] activations of the last hidden layer."""
        h = x.flatten(1)
        if self.n_classes:
            h = torch.cat([h, nn.functional.one_hot(c, self.n_classes).to(h.dtype)], 1)
        for m in self.net[:-1]:
            h = m(h)
            if self.dropout > 0 and isinstance(m, nn.LeakyReLU):
                h = nn.functional.dropout(h, self.dropout, self.training)
        return h

    def batch_layers(self, h: Tensor) -> Tensor:
        """[N, F] per-sample features -> [N, F'] input of the output layer."""
        if self.mbstd is not None:
            h = self.mbstd(h)  # [N, F + 1]
        if self.mbdisc is not None:
            h = self.mbdisc(h)  # [N, F' + B]
        return h

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.net[-1](self.batch_layers(self.features(x, c)))


def mlp_sizes(p: GANParams, is_image: bool) -> dict[str, int]:
    auto = {"latent_dim": 100, "g_hidden": 512, "g_layers": 2, "d_hidden": 512, "d_layers": 2} if is_image \
        else {"latent_dim": 2, "g_hidden": 400, "g_layers": 4, "d_hidden": 200, "d_layers": 3}
    return {k: getattr(p, k) if getattr(p, k) is not None else v for k, v in auto.items()}


@MODELS.register("gan", description="original MLP GAN, minimax or non-saturating loss (Goodfellow et al. 2014)")
class GAN(GANFamily):
    """The original GAN (Goodfellow et al. 2014)."""

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.g_hidden": 16, "model.d_hidden": 16}

    Params = GANParams
    defaults: ClassVar[dict[str, Any]] = {"loss": {"name": "nonsaturating"}}

    def __init__(self, cfg: Any, info: dict[str, Any], n_classes: int = 0) -> None:
        super().__init__(cfg, info)
        s = mlp_sizes(self.p, info["is_image"])
        self.latent_dim = s["latent_dim"]
        self.G = MLPGenerator(self.latent_dim, self.sample_shape, s["g_hidden"], s["g_layers"],
                              self.p.g_batchnorm, n_classes)
        kw = d_layer_kwargs(cfg)  # tricks.d_dropout / minibatch_stddev / ..._discrimination
        drop = kw.pop("dropout")
        if drop > 0 and self.p.d_dropout > 0 and drop != self.p.d_dropout:
            raise ConfigError(f"model.d_dropout={self.p.d_dropout} and tricks.d_dropout={drop} "
                              f"both set D's dropout; set one")
        self.D = MLPDiscriminator(self.sample_shape, s["d_hidden"], s["d_layers"],
                                  drop or self.p.d_dropout, n_classes, **kw)
        if self.p.spectral_norm:
            spectral_norm_all(self.D)
