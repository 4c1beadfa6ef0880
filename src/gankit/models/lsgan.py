"""Least squares GAN (Mao et al. 2017; deck 003 "Least Squares GAN (LSGAN)" slide; seed 002 §5,
"Improved GAN objectives").

The sigmoid cross-entropy of the original GAN saturates for fakes that D already classifies
correctly but that still lie far from the data, so they give G almost no gradient. LSGAN codes the
targets with a least squares loss (paper eq. 2 with the 0-1 coding a = 0 for fake, b = 1 for real,
c = 1 for what G wants D to believe)::

    min_D 1/2 E_x[(D(x) - 1)^2] + 1/2 E_z[D(G(z))^2],      min_G 1/2 E_z[(D(G(z)) - 1)^2]

which penalises samples by their distance from the decision boundary. Codes with b - c = 1 and
b - a = 2 (eq. 8: a = -1, b = 1, c = 0) make G minimise the Pearson chi^2 divergence between
p_d + p_g and 2 p_g (paper §3.2; the deck: "LSGAN minimizes the Pearson chi^2 divergence"); the
0-1 coding here is the paper's eq. 9 and the registered ``lsgan`` loss. D's output is linear (no
sigmoid). Optimiser: Adam, lr 2e-4, beta1 0.5, as in the paper's experiments. Networks: DCGAN's
on images (batch norm in both), the 'gan' MLPs on points.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..registry import MODELS
from .wgan import LossVariantGAN


@MODELS.register("lsgan", description="least squares GAN, a=0 b=1 c=1, Adam 2e-4 beta1 0.5 "
                                      "(Mao et al. 2017)")
class LSGAN(LossVariantGAN):
    """LSGAN (Mao et al. 2017): the ``lsgan`` loss on DCGAN/MLP networks."""

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8}

    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "lsgan"},
        "optim": {"name": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999),
                  "betas_d": (0.5, 0.999), "n_critic": 1},
    }
