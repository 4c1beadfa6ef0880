"""SAGAN: self-attention GAN (Zhang, Goodfellow, Metaxas & Odena 2019, "Self-Attention Generative
Adversarial Networks"; seed 002 §4.4).

Convolutions see a local neighbourhood; a self-attention block (:mod:`gankit.nn.attention`) lets
every position of a feature map draw on every other, so distant parts of an image can be made
consistent. The paper's recipe, used here as the defaults:

- self-attention blocks in both G and D, each ``y = x + gamma * o`` with gamma learned from 0;
- spectral normalisation in G as well as D (the paper's §4.1 finding: it stabilises G too);
- the hinge loss; two time-scale update rule, Adam lr_D 4e-4 and lr_G 1e-4 with betas (0, 0.9),
  one D step per G step (§4.2, TTUR of Heusel et al. 2017);
- class-conditional batch norm in G (:mod:`gankit.nn.cbn`, a one-hot class vector) and a
  projection discriminator (Miyato & Koyama 2018): ``D(x, y) = psi(phi(x)) + <e_y, phi(x)>``.

Architecture: the residual networks of SNGAN (:mod:`gankit.models.sngan`) at this data size,
with conditional BN in G's blocks and one attention block in each network at half the output
resolution (the paper found attention at the larger feature maps (32 and 64 of 128) best; on
28-32 px data the half-resolution maps, 14-16 px, play that role; ``model.attn_res`` moves it).
On unlabelled data (``model.conditional=false`` or no labels) G uses plain batch norm and D has
no projection term.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.sizes import STAGED, ImageSizes
from ..errors import ConfigError
from ..nn import conv_stages, spectral_norm_all
from ..nn.attention import SelfAttention2d
from ..nn.cbn import ConditionalBatchNorm2d
from ..nn.resample import UpConv2d
from ..registry import MODELS
from .base import GANFamily, Params
from .sngan import DBlock, _init


class SAGANParams(Params):
    """``model.*`` of sagan. Widths as SNGAN's CIFAR-10 ResNet (G 256, D 128 channels), which is
    the SAGAN architecture at 32 px; the paper's ImageNet 128 px networks are wider and deeper."""

    latent_dim: int = 128  # z ~ N(0, I) (paper: 128)
    g_width: int = 256  # channels of every G block
    d_width: int = 128  # channels of every D block
    attn_res: int | None = None  # resolution of the attention blocks (None: half the output)
    conditional: bool = True  # class-conditional BN + projection D when the data has labels


def _one_hot(c: Tensor | None, k: int) -> Tensor | None:
    return None if c is None else F.one_hot(c.long(), k).float()


class CondGBlock(nn.Module):
    """Up-sampling residual block of G with (conditional) batch norm: ``[N, cin, s, s] ->
    [N, cout, 2s, 2s]``; SNGAN's block (:class:`gankit.models.sngan.GBlock`) with each BN
    conditioned on ``c`` when ``cond_dim`` > 0."""

    def __init__(self, cin: int, cout: int, cond_dim: int) -> None:
        super().__init__()
        self.cond = cond_dim > 0
        self.bn1 = ConditionalBatchNorm2d(cin, cond_dim) if self.cond else nn.BatchNorm2d(cin)
        self.bn2 = ConditionalBatchNorm2d(cout, cond_dim) if self.cond else nn.BatchNorm2d(cout)
        self.c1 = _init(UpConv2d(cin, cout), math.sqrt(2))
        self.c2 = _init(nn.Conv2d(cout, cout, 3, 1, 1), math.sqrt(2))
        self.sc = _init(nn.Conv2d(cin, cout, 1), 1.0)

    def _bn(self, bn: nn.Module, x: Tensor, c: Tensor | None) -> Tensor:
        return bn(x, c) if self.cond else bn(x)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        h = self.c1(F.relu(self._bn(self.bn1, x, c)))
        h = self.c2(F.relu(self._bn(self.bn2, h, c)))
        return h + F.interpolate(self.sc(x), scale_factor=2.0, mode="nearest")


class SAGANGenerator(nn.Module):
    """``(z [N, latent], c [N] or None) -> image [N, C, R, R]`` in [-1, 1]."""

    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int,
                 num_classes: int, attn_res: int) -> None:
        super().__init__()
        k, s0 = conv_stages(resolution)
        self.s0, self.width, self.num_classes = s0, width, num_classes
        self.project = _init(nn.Linear(latent_dim, width * s0 * s0), 1.0)
        self.blocks = nn.ModuleList(CondGBlock(width, width, num_classes) for _ in range(k))
        sizes = [s0 * 2 ** i for i in range(k + 1)]  # side after the projection, each block
        self.attn_after = sizes.index(attn_res) if attn_res in sizes[:-1] else -1
        self.attn = SelfAttention2d(width) if self.attn_after >= 0 else None
        self.bn = nn.BatchNorm2d(width)
        self.out = _init(nn.Conv2d(width, channels, 3, 1, 1), 1.0)

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        y = _one_hot(c, self.num_classes) if self.num_classes else None
        h = self.project(z).unflatten(1, (self.width, self.s0, self.s0))
        for i, block in enumerate(self.blocks):
            if i == self.attn_after:  # attention on the map this block up-samples
                h = self.attn(h)
            h = block(h, y)
        return self.out(F.relu(self.bn(h))).tanh()


class SAGANDiscriminator(nn.Module):
    """``(image [N, C, R, R], c [N] or None) -> score [N, 1]``: SNGAN's residual D with a
    self-attention block and, for labelled data, the projection term ``<e_c, phi(x)>``."""

    def __init__(self, channels: int, resolution: int, width: int, num_classes: int,
                 attn_res: int) -> None:
        super().__init__()
        k, _ = conv_stages(resolution)
        n_down = k - 1
        blocks = [DBlock(channels, width, down=n_down >= 1, first=True)]
        blocks += [DBlock(width, width, down=True) for _ in range(n_down - 1)]
        blocks += [DBlock(width, width, down=False) for _ in range(2)]
        self.blocks = nn.ModuleList(blocks)
        sizes, r = [], resolution  # output side of each block
        for b in blocks:
            r = r // 2 if b.down else r
            sizes.append(r)
        self.attn_after = sizes.index(attn_res) if attn_res in sizes else -1
        self.attn = SelfAttention2d(width) if self.attn_after >= 0 else None
        self.num_classes = num_classes
        self.head = _init(nn.Linear(width, 1), 1.0)
        # the class embedding of the projection, as a bias-free linear map of one-hot labels
        self.embed = _init(nn.Linear(num_classes, width, bias=False), 1.0) if num_classes else None

    def features(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """phi(x) ``[N, width]``: the blocks, ReLU and global sum pooling."""
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attn_after:
                h = self.attn(h)
        return F.relu(h).sum((2, 3))

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        phi = self.features(x)
        out = self.head(phi)  # [N, 1]
        if self.embed is not None and c is not None:
            out = out + (self.embed(_one_hot(c, self.num_classes)) * phi).sum(1, keepdim=True)
        return out


@MODELS.register("sagan", description="self-attention in G and D, spectral norm in both, hinge "
                                      "loss, TTUR lr_D 4e-4 / lr_G 1e-4, conditional BN + "
                                      "projection D (Zhang et al. 2019)")
class SAGAN(GANFamily):
    """SAGAN (Zhang et al. 2019); see the module docstring."""

    Params = SAGANParams
    p: SAGANParams
    data_kinds: ClassVar[tuple[str, ...]] = ("images",)
    tiny: ClassVar[dict[str, Any]] = {"model.g_width": 8, "model.d_width": 8,
                                      "model.latent_dim": 8}
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "hinge", "gp": None, "clip": None},
        "optim": {"name": "adam", "lr_g": 1e-4, "lr_d": 4e-4, "betas_g": (0.0, 0.9),
                  "betas_d": (0.0, 0.9), "n_critic": 1},
    }

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        """Strided residual stages (as SNGAN's) with a map both networks attend at: 16 px up."""
        return ATTENTION_SIZES

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        if not info["is_image"]:
            raise ConfigError(f"sagan's convolutional networks need images; '{info['name']}' "
                              f"holds points")
        c, r = self.sample_shape[0], self.sample_shape[-1]
        if not attention_sizes(r):
            raise ConfigError(f"sagan attends at a feature-map size shared by G and D, which "
                              f"{r} px images lack; use 16 px or more (data.image_size)")
        attn = p.attn_res if p.attn_res is not None else attention_sizes(r)[-1]
        k = self.num_classes if self.conditional else 0
        self.latent_dim = p.latent_dim
        self.G = SAGANGenerator(p.latent_dim, c, r, p.g_width, k, attn)
        self.D = SAGANDiscriminator(c, r, p.d_width, k, attn)
        if self.G.attn is None or self.D.attn is None:
            raise ConfigError(f"model.attn_res={attn} is not a feature-map size of sagan's "
                              f"networks at {r} px; choose one of "
                              f"{attention_sizes(r)}")
        spectral_norm_all(self.G, exclude=(ConditionalBatchNorm2d,))
        spectral_norm_all(self.D)

    @property
    def conditional(self) -> bool:
        """Class-conditional when the data has labels and ``model.conditional`` is on."""
        return bool(self.p.conditional) and self.num_classes >= 2

    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)


def _attends(r: int) -> bool:
    try:
        return STAGED.accepts(r) and bool(attention_sizes(r))
    except ValueError:
        return False


ATTENTION_SIZES = ImageSizes(_attends, "square images of an even size >= 16 (e.g. 32, 64, 128)",
                   STAGED.preferred)


def attention_sizes(r: int) -> list[int]:
    """The feature-map sides at which both sagan networks can attend at output size ``r``: G's
    maps before each up-sampling block, D's maps after its down-sampling blocks."""
    k, s0 = conv_stages(r)
    g = {s0 * 2 ** i for i in range(k)}
    d = {r // 2 ** i for i in range(1, k)} or {r}
    return sorted(g & d)
