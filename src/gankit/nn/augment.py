"""Differentiable augmentation of discriminator inputs (DiffAugment).

Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training": augmenting only
the real images teaches G to produce augmented images, augmenting only D's training batches
unbalances the game. DiffAugment applies the *same family* of random, differentiable transforms
``T`` to real and fake images wherever D sees them (D step, G step, penalties), so D learns
``D(T(x))`` and G's gradient flows back through ``T``. Seed 003 ("Data Augmentation: ... prevents
the discriminator from memorizing training data") and seed 000 §3.5 motivate it.

Policies (comma-separated in ``tricks.diffaugment``), as in the paper:

- ``color``: random brightness (+U[-0.5, 0.5]), saturation (x U[0, 2] around the channel mean)
  and contrast (x U[0.5, 1.5] around the image mean);
- ``translation``: shift by up to 1/8 of the image size, zero padded (0 is mid-grey in [-1, 1]);
- ``cutout``: zero a random square of half the image size.

Random parameters are drawn per sample from the global torch RNG, which the Trainer
checkpoints, so a resumed run draws the same augmentations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Augment = Callable[[Tensor], Tensor]


def _rand(x: Tensor) -> Tensor:
    """One U[0, 1) number per sample, shaped to broadcast over ``[N, C, H, W]``."""
    return torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype)


def brightness(x: Tensor) -> Tensor:
    return x + (_rand(x) - 0.5)


def saturation(x: Tensor) -> Tensor:
    mean = x.mean(1, keepdim=True)  # [N, 1, H, W]; a no-op on one channel
    return (x - mean) * (_rand(x) * 2) + mean


def contrast(x: Tensor) -> Tensor:
    mean = x.mean((1, 2, 3), keepdim=True)  # [N, 1, 1, 1]
    return (x - mean) * (_rand(x) + 0.5) + mean


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image by an integer offset in ``[-ratio*size, ratio*size]`` per axis."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    # Gather from a 1-pixel zero-padded copy; out-of-range sources clamp onto the zero border.
    iy = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)  # [N, H, 1]
    ix = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)  # [N, 1, W]
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # [N, H+2, W+2, C]
    out = padded[torch.arange(n, device=x.device).view(n, 1, 1), iy, ix]  # [N, H, W, C]
    return out.permute(0, 3, 1, 2)


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero a square of ``ratio`` x the image size at a random centre (clipped at the border)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) - (cy - ch // 2)  # [N, H, 1]
    xs = torch.arange(w, device=x.device).view(1, 1, w) - (cx - cw // 2)  # [N, 1, W]
    inside = (ys >= 0) & (ys < ch) & (xs >= 0) & (xs < cw)  # [N, H, W]
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES: dict[str, list[Augment]] = {
    "color": [brightness, saturation, contrast],
    "translation": [translation],
    "cutout": [cutout],
}


def parse_policy(policy: str | Sequence[str] | None) -> list[str]:
    """``"color,translation"`` -> ``["color", "translation"]``; unknown names raise ValueError."""
    from ..registry import did_you_mean

    if not policy:
        return []
    names = [p.strip() for p in policy.split(",")] if isinstance(policy, str) else list(policy)
    names = [p for p in names if p]
    for p in names:
        if p not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy '{p}'{did_you_mean(p, list(POLICIES))}; "
                             f"choose from {', '.join(POLICIES)}")
    return names


def diff_augment(x: Tensor, policy: str | Sequence[str]) -> Tensor:
    """Apply the policies to a batch of images ``[N, C, H, W]``; differentiable in ``x``."""
    if x.dim() != 4:
        raise ValueError(f"DiffAugment needs images [N, C, H, W], got shape {tuple(x.shape)}")
    for name in parse_policy(policy):
        for fn in POLICIES[name]:
            x = fn(x)
    return x
