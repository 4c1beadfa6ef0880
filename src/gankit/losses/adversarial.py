"""Adversarial losses as (d_loss, g_loss) pairs over discriminator outputs.

Every discriminator here outputs an unbounded score (a logit for the probabilistic losses), so the
sigmoid is folded into ``softplus`` for numerical stability:
``-log D(x) = softplus(-l)`` and ``-log(1 - D(x)) = softplus(l)`` with ``D = sigmoid(l)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import LOSSES


@dataclass(frozen=True)
class AdversarialLoss:
    """A registered adversarial objective.

    ``d_loss(d_real, d_fake)`` and ``g_loss(d_fake)`` return scalar means to be minimised.
    ``probabilistic`` says whether ``sigmoid(score)`` is a probability D(x) (for diagnostics).
    ``threshold`` is the score between D's "fake" and "real" answers, for D's accuracy (the
    doctor, ``tricks.freeze_d_when_acc_above``): 0 for logits, hinge and Wasserstein scores, 0.5
    for the least-squares targets 0/1; ``None`` where the score has no such point (energies).
    """

    name: str
    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]
    probabilistic: bool
    description: str
    threshold: float | None = 0.0


def _register(loss: AdversarialLoss) -> AdversarialLoss:
    return LOSSES.register(loss.name, loss, description=loss.description)


def _d_bce(d_real: Tensor, d_fake: Tensor) -> Tensor:
    # max_D E log D(x) + E log(1 - D(G(z)))  ==  min softplus(-l_real) + softplus(l_fake)
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


_register(AdversarialLoss(
    "minimax",
    _d_bce,
    # min_G E log(1 - D(G(z))) = -softplus(l_fake): saturates when D confidently rejects fakes
    lambda d_fake: -F.softplus(d_fake).mean(),
    True,
    "original minimax (saturating) loss, Goodfellow et al. 2014 eq. 1; Wenzel (2023) §3.3",
))

_register(AdversarialLoss(
    "nonsaturating",
    _d_bce,
    # max_G E log D(G(z)): same fixed point, strong gradients early (Goodfellow et al. 2014 §3)
    lambda d_fake: F.softplus(-d_fake).mean(),
    True,
    "non-saturating generator loss -log D(G(z)), Goodfellow et al. 2014 §3; Wenzel (2023) §3.4",
))

_register(AdversarialLoss(
    "lsgan",
    lambda d_real, d_fake: 0.5 * ((d_real - 1).pow(2).mean() + d_fake.pow(2).mean()),
    lambda d_fake: 0.5 * (d_fake - 1).pow(2).mean(),
    False,
    "least squares (a=0, b=c=1), Mao et al. 2017; Cohen & Giryes (2022) §5",
    threshold=0.5,  # halfway between the fake target 0 and the real target 1
))

_register(AdversarialLoss(
    "wasserstein",
    lambda d_real, d_fake: d_fake.mean() - d_real.mean(),
    lambda d_fake: -d_fake.mean(),
    False,
    "Wasserstein critic loss (needs clipping or a gradient penalty), Arjovsky et al. 2017; Wenzel (2023) §3.6",
))

_register(AdversarialLoss(
    "hinge",
    lambda d_real, d_fake: F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean(),
    lambda d_fake: -d_fake.mean(),
    False,
    "hinge loss, Lim & Ye 2017 / Miyato et al. 2018 (SNGAN)",
))


def get_loss(name: str) -> AdversarialLoss:
    return LOSSES.get(name)


@torch.no_grad()
def d_accuracy(d_real: Tensor, d_fake: Tensor, threshold: float = 0.0) -> Tensor:
    """Fraction of real and fake samples D classifies correctly (logit 0 = probability 0.5)."""
    return 0.5 * ((d_real > threshold).float().mean() + (d_fake <= threshold).float().mean())
