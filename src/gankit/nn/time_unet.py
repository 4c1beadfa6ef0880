"""Noise-level-conditioned networks of the diffusion and score families: a small U-Net with a
sinusoidal time embedding for images and a residual MLP with the same embedding for points.

The U-Net follows the description in Ho et al. 2020 ("Denoising Diffusion Probabilistic Models",
§4 and Appendix B): a PixelCNN++-style U-Net whose residual blocks use group normalisation and
receive the Transformer sinusoidal embedding of the timestep (Vaswani et al. 2017) through a
learned projection, with self-attention at a low resolution. Ours is smaller (a width and a
number of levels to choose) so it trains on a CPU. The score models (Song & Ermon 2019) use the
same networks conditioned on ``log sigma`` instead of ``t``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TimeMLP", "TimeUNet", "group_norm", "sinusoidal_embedding", "unet_accepts"]


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """The Transformer's sinusoidal embedding of (possibly fractional) positions ``t [N]``:
    ``[sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ...]`` with ``w_k = max_period^(-k/h)``,
    ``h = dim // 2``; ``[N, dim]`` (an odd ``dim`` gets a trailing zero)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / max(half, 1))
    args = t.float()[:, None] * freqs[None]  # [N, half]
    emb = torch.cat([torch.sin(args), torch.cos(args)], 1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def group_norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    """Group normalisation (Wu & He 2018) with the largest group count <= ``groups`` that
    divides ``channels``."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class ResBlock(nn.Module):
    """GN-SiLU-conv, plus the projected time embedding, GN-SiLU-dropout-conv; a 1x1 skip when
    the channel count changes. ``[N, C_in, H, W] -> [N, C_out, H, W]``."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).chunk(3, 1)  # [N, C, HW] each
        a = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), -1)  # [N, HW, HW]
        return x + self.out((v @ a.transpose(1, 2)).view(n, c, h, w))


def unet_accepts(size: int, levels: int) -> bool:
    """Whether a ``size`` x ``size`` image halves cleanly ``levels - 1`` times."""
    return size >= 2 ** (levels - 1) and size % 2 ** (levels - 1) == 0


class TimeUNet(nn.Module):
    """A small U-Net ``(x [N, C, H, W], t [N]) -> [N, C, H, W]``.

    ``levels`` resolutions with ``width * mults[i]`` channels (mults 1, 2, 2, 2, ...), one
    residual block per level on the way down and one (fed the skip) on the way up, strided-conv
    downsampling and nearest-neighbour upsampling + conv, a middle of two residual blocks around
    optional self-attention at the lowest resolution. ``t`` is scaled by ``t_scale`` before the
    sinusoidal embedding. The last conv starts at zero, so the untrained network outputs 0.
    """

    def __init__(self, channels: int, width: int = 32, levels: int = 3, attention: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError("levels must be >= 1")
        self.width = width
        emb_dim = 4 * width
        self.emb = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        chans = [width * (1 if i == 0 else 2) for i in range(levels)]
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = width
        for i, ch in enumerate(chans):
            self.down.append(ResBlock(c, ch, emb_dim, dropout))
            c = ch
            if i < levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid1 = ResBlock(c, c, emb_dim, dropout)
        self.attn = Attention(c) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb_dim, dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(levels)):
            self.up.append(ResBlock(c + chans[i], chans[i], emb_dim, dropout))
            c = chans[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(c, chans[i - 1], 3, padding=1))
                c = chans[i - 1]
        self.norm_out = group_norm(c)
        self.conv_out = nn.Conv2d(c, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.emb(sinusoidal_embedding(t, self.width))  # [N, 4 width]
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for j, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], 1), emb)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class TimeMLP(nn.Module):
    """``(x [N, D], t [N]) -> [N, D]`` for points: a linear input layer, ``depth`` residual
    blocks ``h + W2 SiLU(W1 SiLU(h) + A emb)`` and a linear output (zero at start)."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.emb = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"w1": nn.Linear(hidden, hidden), "a": nn.Linear(hidden, hidden),
                           "w2": nn.Linear(hidden, hidden)}) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.emb(sinusoidal_embedding(t, self.hidden))
        h = self.inp(x)
        for b in self.blocks:
            h = h + b["w2"](F.silu(b["w1"](F.silu(h)) + b["a"](emb)))
        return self.out(F.silu(h))
