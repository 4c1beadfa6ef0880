"""SNGAN: spectral normalisation of every discriminator layer (Miyato et al. 2018; seed 002 §5.3,
seed 000 Box 5).

Each weight W of D is divided by its largest singular value, estimated by one power iteration per
forward pass (the iteration vectors persist between steps), so every layer is 1-Lipschitz and so
is D (seed 002 eq. 15: ``W_SN = W / sigma(W)``). We follow the paper's ResNet setting for CIFAR-10
(appendix tables, adapted from Gulrajani et al. 2017): hinge loss, Adam lr 2e-4,
betas (0, 0.9), n_dis = 5 D steps per G step, latent z ~ N(0, I) of 128 dimensions.

* G: z -> linear -> [256, s0, s0] -> k up-sampling residual blocks (BN, ReLU, nearest x2,
  conv3x3, BN, ReLU, conv3x3; shortcut: x2, conv1x1) -> BN, ReLU, conv3x3 -> tanh.
* D (all conv/linear weights spectrally normalised, no batch norm): an "optimised" first block
  (conv3x3, ReLU, conv3x3, avg-pool; shortcut: avg-pool, conv1x1), further down-sampling blocks
  (ReLU, conv3x3, ReLU, conv3x3, avg-pool; 1x1 shortcut), two blocks at constant resolution,
  ReLU, global sum pooling, linear -> 1.

The number of stages scales with the data: ``k, s0 = conv_stages(resolution)`` gives G's k
up-sampling blocks from ``s0 x s0`` (CIFAR 32: 4 -> 32, k = 3), and D halves the resolution
k - 1 times before its two constant-resolution blocks (CIFAR: 32 -> 8, as in the paper); at least
one block always runs. On points (toy mixtures, tabular data) the networks are the 'gan' MLPs with
spectral normalisation on every layer of D.

Cost and how it is kept down. At the paper's widths the networks are large for 28x28 or 32x32
data: G runs 256-channel 3x3 convolutions at full resolution and each step takes n_dis = 5 D
steps, each with a fresh fake batch (a G forward), so one step costs about 150 times DCGAN's
FLOPs; the time goes to convolutions (``benchmarks/family_speed.py``). That is the paper's
architecture. What is not is computing it naively: a nearest-neighbour x2 up-sampling followed
by a 3x3 convolution is one stride-2 transposed convolution with a 4x4 kernel
(:class:`UpConv2d`), a 3x3 convolution followed by 2x2 average pooling is one stride-2 4x4
convolution (:class:`ConvPool2d`), and 1x1 shortcut convolutions commute with nearest
up-sampling and average pooling, so they run at the lower resolution. Each computes the same
function from the same parameters (3x3 kernels, spectrally normalised as 3x3 kernels in D; same
state-dict keys) with 16 instead of 36 multiply-adds per low-resolution pixel.

The residual blocks live here (single-file policy) until a third model needs them; the two fused
layers are in :mod:`gankit.nn.resample` (BEGAN's decoder uses :class:`UpConv2d` too).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from ..data.sizes import ANY_SIZE, STAGED, ImageSizes
from ..errors import ConfigError
from ..nn import conv_stages, spectral_norm_all
from ..nn.resample import ConvPool2d, UpConv2d
from ..registry import MODELS
from .base import GANFamily, Params
from .gan import MLPDiscriminator, MLPGenerator, mlp_sizes


class SNGANParams(Params):
    """``model.*`` of sngan.

    The widths are the paper's CIFAR-10 ResNet (Miyato et al. 2018, appendix: 256-channel G
    blocks, 128-channel D blocks), kept for 28x28 data, which is about CIFAR's size (per image our
    networks cost about 3/4 of the paper's 32x32 ones). They make sngan the costliest family per
    step: on MNIST-5k, batch 64, a step (5 D steps, each with a fresh fake batch, then the G step)
    is about 1.45 TFLOP, 150x DCGAN's, nearly all convolutions, about 4 img/s on one CPU thread
    (``benchmarks/family_speed.py``). FLOPs scale with the square of the widths:
    ``g_width=128, d_width=64`` costs a quarter (a departure from the paper, for quick CPU runs).
    """

    arch: Literal["auto", "mlp", "resnet"] = "auto"  # auto: mlp for points, resnet for images
    latent_dim: int | None = None  # None: 128 (resnet, Miyato et al.), 2 (points)
    g_width: int = 256  # channels of every G block (CIFAR ResNet: 256)
    d_width: int = 128  # channels of every D block (CIFAR ResNet: 128)
    # mlp sizes (None: as the 'gan' model)
    g_hidden: int | None = None
    g_layers: int | None = None
    d_hidden: int | None = None
    d_layers: int | None = None
    g_batchnorm: bool = True


def _init(conv: nn.Module, gain: float) -> nn.Module:
    # Xavier-uniform as the SNGAN reference code: gain sqrt(2) inside residual branches (ReLU
    # follows), 1 for shortcuts and the linear layers.
    nn.init.xavier_uniform_(conv.weight, gain)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class GBlock(nn.Module):
    """Up-sampling residual block of G: [N, cin, s, s] -> [N, cout, 2s, 2s].

    BN, ReLU, x2, conv3x3 (``c1``, fused with the up-sampling), BN, ReLU, conv3x3; shortcut x2,
    conv1x1 (``sc``, run before the up-sampling, with which it commutes).
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.c1 = _init(UpConv2d(cin, cout), math.sqrt(2))
        self.c2 = _init(nn.Conv2d(cout, cout, 3, 1, 1), math.sqrt(2))
        self.sc = _init(nn.Conv2d(cin, cout, 1), 1.0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c2(F.relu(self.bn2(self.c1(F.relu(self.bn1(x))))))  # [N, cout, 2s, 2s]
        return h + F.interpolate(self.sc(x), scale_factor=2.0, mode="nearest")


class DBlock(nn.Module):
    """Residual block of D: [N, cin, s, s] -> [N, cout, s/2 or s, ...].

    ``first``: the "optimised" input block (no pre-activation on the image; pool before the
    shortcut's 1x1 conv). The shortcut is a learnable 1x1 conv only where the shape changes.
    Down-sampling: ``c2`` and the average pooling after it are one :class:`ConvPool2d`; the 1x1
    shortcut conv and the pooling commute, so the pooling always runs first (as the paper does in
    the first block only; the same function).
    """

    def __init__(self, cin: int, cout: int, down: bool, first: bool = False) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.c1 = _init(nn.Conv2d(cin, cout, 3, 1, 1), math.sqrt(2))
        c2 = ConvPool2d(cout, cout) if down else nn.Conv2d(cout, cout, 3, 1, 1)
        self.c2 = _init(c2, math.sqrt(2))
        self.sc = _init(nn.Conv2d(cin, cout, 1), 1.0) if (cin != cout or down or first) else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.c1(x if self.first else F.relu(x))
        h = self.c2(F.relu(h))  # pooled when down
        s = F.avg_pool2d(x, 2) if self.down else x
        if self.sc is not None:
            s = self.sc(s)
        return h + s


class ResNetGenerator(nn.Module):
    """z [N, latent] -> image [N, C, R, R] in [-1, 1]."""

    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int) -> None:
        super().__init__()
        k, s0 = conv_stages(resolution)
        self.s0, self.width = s0, width
        self.project = _init(nn.Linear(latent_dim, width * s0 * s0), 1.0)
        self.blocks = nn.Sequential(*[GBlock(width, width) for _ in range(k)])
        self.bn = nn.BatchNorm2d(width)
        self.out = _init(nn.Conv2d(width, channels, 3, 1, 1), 1.0)

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z).view(-1, self.width, self.s0, self.s0)  # [N, W, s0, s0]
        h = self.blocks(h)  # [N, W, R, R]
        return self.out(F.relu(self.bn(h))).tanh()


class ResNetDiscriminator(nn.Module):
    """image [N, C, R, R] -> score [N, 1] (spectral norm is added by the family)."""

    def __init__(self, channels: int, resolution: int, width: int) -> None:
        super().__init__()
        k, _ = conv_stages(resolution)
        n_down = k - 1
        blocks = [DBlock(channels, width, down=n_down >= 1, first=True)]
        blocks += [DBlock(width, width, down=True) for _ in range(n_down - 1)]
        blocks += [DBlock(width, width, down=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.head = _init(nn.Linear(width, 1), 1.0)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.blocks(x))  # [N, W, r, r]
        return self.head(h.sum((2, 3)))  # global sum pooling -> [N, W] -> [N, 1]


@MODELS.register("sngan", description="spectrally normalised D, hinge loss, ResNet G/D, Adam 2e-4 "
                                      "(0, 0.9), 5 D steps (Miyato et al. 2018)")
class SNGAN(GANFamily):
    """SNGAN (Miyato et al. 2018): ResNet networks, spectral norm on every D layer, hinge loss."""

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        """Strided conv stages for images (any size with the MLP architecture)."""
        return STAGED if cfg.model.get("arch", "auto") in ('auto', 'resnet') else ANY_SIZE

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.g_width": 8, "model.d_width": 8, "optim.n_critic": 1}

    Params = SNGANParams
    p: SNGANParams
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "hinge", "gp": None, "clip": None},
        "optim": {"name": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.0, 0.9),
                  "betas_d": (0.0, 0.9), "n_critic": 5},
    }

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        arch = p.arch if p.arch != "auto" else ("resnet" if info["is_image"] else "mlp")
        if arch == "resnet":
            if not info["is_image"]:
                raise ConfigError(f"sngan with arch=resnet needs images; '{info['name']}' holds "
                                  f"points (use model.arch=mlp)")
            c, r = self.sample_shape[0], self.sample_shape[-1]
            self.latent_dim = p.latent_dim or 128
            self.G = ResNetGenerator(self.latent_dim, c, r, p.g_width)
            self.D = ResNetDiscriminator(c, r, p.d_width)
        else:
            s = mlp_sizes(p, info["is_image"])  # type: ignore[arg-type]
            self.latent_dim = s["latent_dim"]
            self.G = MLPGenerator(self.latent_dim, self.sample_shape, s["g_hidden"],
                                  s["g_layers"], p.g_batchnorm)
            self.D = MLPDiscriminator(self.sample_shape, s["d_hidden"], s["d_layers"], 0.0)
        self.arch = arch
        spectral_norm_all(self.D)
