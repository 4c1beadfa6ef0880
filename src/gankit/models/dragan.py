"""DRAGAN: a gradient penalty around the real data (Kodali et al. 2017, "On Convergence and
Stability of GANs"; deck 003 "Loss-variant GANs" table, DRAGAN row).

Kodali et al. view GAN training as regret minimisation and attribute mode collapse to sharp
gradients of D around real samples (spurious local equilibria). DRAGAN keeps the ordinary
(non-saturating) GAN loss and adds, to D's loss,
``lambda E_{x_hat}[(||grad D(x_hat)|| - 1)^2]`` at points ``x_hat`` drawn around the data:
``x + alpha * delta`` with ``delta = 0.5 * std(x) * U[0, 1]`` as in their code (the
``dragan`` regulariser); lambda = 10. Unlike WGAN-GP's interpolates, the penalty looks only at the
data manifold's neighbourhood.

Networks: DCGAN's on images, the 'gan' MLPs on points. The critic uses per-sample layer norm
instead of batch norm because the penalty is computed per sample (Lucic et al. 2018 do the same
for DRAGAN and WGAN-GP); set ``model.d_norm=batchnorm`` for the plain DCGAN critic. Optimiser:
Adam, lr 2e-4, beta1 0.5 (the DCGAN setting their image experiments build on).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from ..registry import MODELS
from .wgan import LossVariantGAN, PairParams


class DRAGANParams(PairParams):
    d_norm: Literal["batchnorm", "layernorm", "none"] = "layernorm"


@MODELS.register("dragan", description="non-saturating GAN + DRAGAN penalty lambda=10 around "
                                       "perturbed real data (Kodali et al. 2017)")
class DRAGAN(LossVariantGAN):
    """DRAGAN (Kodali et al. 2017): non-saturating loss plus the DRAGAN gradient penalty."""

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8}

    Params = DRAGANParams
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "nonsaturating", "gp": "dragan", "lambda_gp": 10.0, "clip": None},
        "optim": {"name": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999),
                  "betas_d": (0.5, 0.999), "n_critic": 1},
    }
