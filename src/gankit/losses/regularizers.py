"""Discriminator regularisers: gradient penalties and weight clipping.

Penalties take ``(D, real, fake, c)`` and return a scalar to be added (times ``lambda_gp``) to the
discriminator loss. They run their own forward pass in float32 outside autocast: double
backpropagation in reduced precision loses the small gradients the penalty is about.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..registry import REGULARIZERS

Penalty = Callable[[Callable[[Tensor], Tensor], Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Regularizer:
    """``fn(critic, real, fake) -> Tensor``; ``critic`` maps a batch to scores ``[N]``."""

    name: str
    fn: Penalty
    description: str


def _grad_norm_sq(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    x = x.detach().float().requires_grad_(True)
    with torch.autocast(x.device.type, enabled=False):
        out = critic(x)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return g.flatten(1).pow(2).sum(1)  # [N]


def _interp(real: Tensor, fake: Tensor) -> Tensor:
    n = min(len(real), len(fake))
    real, fake = real[:n].detach(), fake[:n].detach()
    alpha = torch.rand((n,) + (1,) * (real.dim() - 1), device=real.device)
    return real + alpha * (fake - real)


def wgan_gp(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """E[(||grad D(x_hat)|| - 1)^2] on real/fake interpolates (Gulrajani et al. 2017, eq. 3)."""
    return (_grad_norm_sq(critic, _interp(real, fake)).add(1e-12).sqrt() - 1).pow(2).mean()


def dragan(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """Penalty around perturbed real data, x + 0.5 * std(x) * U[0,1] (Kodali et al. 2017)."""
    real = real.detach()
    noise = 0.5 * real.std() * torch.rand_like(real)
    x = _interp(real, real + noise)
    return (_grad_norm_sq(critic, x).add(1e-12).sqrt() - 1).pow(2).mean()


def r1(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """R1: 0.5 * E||grad D(x_real)||^2 (Mescheder et al. 2018; StyleGAN2 uses gamma/2)."""
    return 0.5 * _grad_norm_sq(critic, real).mean()


for _r in (
    Regularizer("wgan-gp", wgan_gp, "WGAN-GP two-sided penalty on interpolates, Gulrajani et al. 2017"),
    Regularizer("dragan", dragan, "DRAGAN penalty around perturbed real data, Kodali et al. 2017"),
    Regularizer("r1", r1, "R1 penalty on real data, Mescheder et al. 2018"),
):
    REGULARIZERS.register(_r.name, _r, description=_r.description)


@torch.no_grad()
def clip_weights(module: nn.Module, c: float) -> None:
    """WGAN weight clipping to [-c, c] after each critic step (Arjovsky et al. 2017, Alg. 1)."""
    for p in module.parameters():
        p.clamp_(-c, c)
