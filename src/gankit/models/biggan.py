"""BigGAN (Brock, Donahue & Simonyan 2019, "Large Scale GAN Training for High Fidelity Natural
Image Synthesis"; seed 002 §4.5).

BigGAN scales up the SAGAN recipe (:mod:`gankit.models.sagan`: residual G and D, spectral norm
in both, hinge loss, projection discriminator, self-attention) and adds what made the scale
work, each a default here:

- a **shared class embedding** (one table for all of G's layers, 128-d) instead of a gain/bias
  table per conditional BN layer;
- **hierarchical latents**: z is split into one chunk per resolution; the first chunk feeds the
  linear projection to the 4x4 map, each later chunk is concatenated with the shared embedding
  and mapped by linear layers to the gain and bias of its block's conditional BN;
- **orthogonal regularisation** of G, beta = 1e-4 (``tricks.orthogonal_reg``, the relaxed form
  ``||W W^T * (1 - I)||_F^2`` of §3.1), which makes G amenable to the truncation trick;
- **two D steps per G step**, Adam with lr_G 5e-5, lr_D 2e-4, betas (0, 0.999) (the paper's
  ImageNet setting, Appendix C);
- an **exponential moving average** of G's weights for sampling (``train.ema``; the paper
  decays at 0.9999 from step 20k of a 100k+ step run; for short CPU runs the Trainer's 0.999);
- orthogonal initialisation of every layer;
- the **truncation trick**: sample z from a truncated normal (entries with ``|z| > t`` redrawn;
  ``gankit sample --truncation t``); ``gankit truncation RUN`` sweeps t and measures the
  fidelity/variety trade-off (precision up, recall down as t falls; Fig. 2 and Fig. 17).

Architecture at this data size: the CIFAR-10 networks of the paper's Appendix B (G: linear ->
4x4, three up-sampling residual blocks at 4ch channels; D: residual blocks at 4ch with a
projection head) with ch = 64 (``model.g_width``/``model.d_width`` = 256), the number of blocks
following the resolution as in SNGAN; one self-attention block at half the output resolution
(the 128 px networks attend at 64 x 64; ``model.attn_res``, 0 for none).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn import conv_stages, spectral_norm_all
from ..nn.attention import SelfAttention2d
from ..nn.cbn import ConditionalBatchNorm2d
from ..registry import MODELS
from .base import GANFamily, Params
from .sagan import ATTENTION_SIZES, CondGBlock, SAGANDiscriminator, attention_sizes


class BigGANParams(Params):
    """``model.*`` of biggan (the paper's CIFAR-10 widths, ch = 64, as 4ch = 256)."""

    latent_dim: int = 128  # z, split into one chunk per resolution (paper CIFAR: 128)
    embed_dim: int = 128  # the shared class embedding (paper: 128)
    g_width: int = 256  # channels of G's blocks (4 ch)
    d_width: int = 256  # channels of D's blocks (4 ch)
    attn_res: int | None = None  # self-attention map side (None: half the output; 0: none)
    conditional: bool = True  # class-conditional when the data has labels


def split_latent(latent_dim: int, parts: int) -> list[int]:
    """Chunk sizes of a hierarchical z: ``parts`` near-equal chunks, the first taking the
    remainder (z of 128 over 4 resolutions -> [32, 32, 32, 32]; 120 over 6 -> 20 each)."""
    if latent_dim < parts:
        raise ConfigError(f"model.latent_dim={latent_dim} cannot be split over {parts} "
                          f"resolutions (one chunk each); use at least {parts}")
    base = latent_dim // parts
    return [latent_dim - base * (parts - 1)] + [base] * (parts - 1)


class BigGANGenerator(nn.Module):
    """``(z [N, latent], c [N] or None) -> image [N, C, R, R]`` in [-1, 1] (module docstring)."""

    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int,
                 num_classes: int, embed_dim: int, attn_res: int) -> None:
        super().__init__()
        k, s0 = conv_stages(resolution)
        self.s0, self.width = s0, width
        self.chunks = split_latent(latent_dim, k + 1)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        cond = (embed_dim if num_classes else 0) + self.chunks[1]
        self.project = nn.Linear(self.chunks[0], width * s0 * s0)
        self.blocks = nn.ModuleList(CondGBlock(width, width, cond) for _ in range(k))
        sizes = [s0 * 2 ** i for i in range(k)]  # the map each block up-samples
        self.attn_after = sizes.index(attn_res) if attn_res in sizes else -1
        self.attn = SelfAttention2d(width) if self.attn_after >= 0 else None
        self.bn = nn.BatchNorm2d(width)
        self.out = nn.Conv2d(width, channels, 3, 1, 1)

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        zs = torch.split(z, self.chunks, dim=1)
        e = self.embed(c.long()) if self.embed is not None and c is not None else None
        h = self.project(zs[0]).unflatten(1, (self.width, self.s0, self.s0))
        for i, block in enumerate(self.blocks):
            if i == self.attn_after:
                h = self.attn(h)
            cond = zs[i + 1] if e is None else torch.cat([e, zs[i + 1]], 1)
            h = block(h, cond)
        return self.out(F.relu(self.bn(h))).tanh()


def orthogonal_init(module: nn.Module) -> None:
    """Orthogonal initialisation of every conv/linear weight (Saxe et al. 2014; BigGAN's
    choice), biases at zero; conditional BN maps keep their zero start."""
    cbn = {id(m) for c in module.modules() if isinstance(c, ConditionalBatchNorm2d)
           for m in c.modules()}
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in cbn:
            nn.init.orthogonal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@MODELS.register("biggan", description="shared class embedding, hierarchical z into conditional "
                                       "BN, orthogonal regularisation 1e-4, 2 D steps, G EMA, "
                                       "truncation (Brock et al. 2019)")
class BigGAN(GANFamily):
    """BigGAN (Brock et al. 2019); see the module docstring."""

    Params = BigGANParams
    p: BigGANParams
    data_kinds: ClassVar[tuple[str, ...]] = ("images",)
    tiny: ClassVar[dict[str, Any]] = {"model.g_width": 8, "model.d_width": 8,
                                      "model.latent_dim": 12, "model.embed_dim": 4,
                                      "optim.n_critic": 1}
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "hinge", "gp": None, "clip": None},
        "optim": {"name": "adam", "lr_g": 5e-5, "lr_d": 2e-4, "betas_g": (0.0, 0.999),
                  "betas_d": (0.0, 0.999), "n_critic": 2},
        "tricks": {"orthogonal_reg": 1e-4},
    }

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> Any:
        """As SAGAN's: residual stages with a map both networks can attend at."""
        return ATTENTION_SIZES

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        if not info["is_image"]:
            raise ConfigError(f"biggan's convolutional networks need images; '{info['name']}' "
                              f"holds points")
        c, r = self.sample_shape[0], self.sample_shape[-1]
        attn = p.attn_res if p.attn_res is not None else attention_sizes(r)[-1]
        if attn and attn not in attention_sizes(r):
            raise ConfigError(f"model.attn_res={attn} is not a feature-map size of biggan's "
                              f"networks at {r} px; choose one of {attention_sizes(r)} (0: none)")
        k = self.num_classes if self.conditional else 0
        self.latent_dim = p.latent_dim
        self.G = BigGANGenerator(p.latent_dim, c, r, p.g_width, k, p.embed_dim, attn)
        self.D = SAGANDiscriminator(c, r, p.d_width, k, attn)
        orthogonal_init(self.G)
        orthogonal_init(self.D)
        spectral_norm_all(self.G, exclude=(ConditionalBatchNorm2d,))
        spectral_norm_all(self.D)

    @property
    def conditional(self) -> bool:
        """Class-conditional when the data has labels and ``model.conditional`` is on."""
        return bool(self.p.conditional) and self.num_classes >= 2
