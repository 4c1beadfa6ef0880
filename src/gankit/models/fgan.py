"""f-GAN: GANs for any f-divergence by variational divergence minimisation (Nowozin, Cseke &
Tomioka 2016; deck 003 "f-divergence" and "Loss-variant GANs" slides; survey post 004 [5]).

The critic estimates a variational lower bound of ``D_f(P_data || Q_G)`` and the generator
minimises it; ``model.divergence`` picks f among the paper's KL, reverse KL, Pearson chi^2,
squared Hellinger, Jensen-Shannon and total variation (the ``fgan-*`` losses of
:mod:`gankit.losses.fgan`, which hold the output activations and conjugates of the paper's
Table 2 and the "alternative" generator objective the paper uses in practice).

The default divergence is ``js``: it is the divergence the original GAN minimises (deck 003: "GAN
is equivalent to minimizing Jensen-Shannon divergence"), so ``fgan`` with defaults is the
baseline against which the other divergences are compared, and its terms are bounded log-sigmoids
(``softplus``), while KL's conjugate ``exp(v - 1)`` and Pearson's quadratic can blow up when the
critic runs ahead. Networks: the 'gan' MLPs on points, DCGAN's on images (the paper uses DCGAN on
LSUN); Adam, lr 2e-4, beta1 0.5 (the DCGAN setting).

``model.divergence`` and ``loss.name`` are kept in agreement: when the divergence is given, the
resolved ``loss.name`` becomes ``fgan-<divergence>``; when it is not, it is read from
``loss.name`` (default ``fgan-js``). Any non-f-GAN loss is a configuration error.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

from ..errors import ConfigError
from ..registry import MODELS
from .wgan import LossVariantGAN, PairParams

Divergence = Literal["kl", "rkl", "pearson", "hellinger", "js", "tv"]


class FGANParams(PairParams):
    divergence: Divergence | None = None  # None: from loss.name (default fgan-js)


@MODELS.register("fgan", description="f-GAN, variational divergence minimisation: KL, reverse KL, "
                                     "Pearson, Hellinger, JS (default), TV (Nowozin et al. 2016)")
class FGAN(LossVariantGAN):
    """f-GAN (Nowozin et al. 2016) with the divergence chosen by ``model.divergence``."""

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8}

    Params = FGANParams
    p: FGANParams
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "fgan-js"},
        "optim": {"name": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999),
                  "betas_d": (0.5, 0.999), "n_critic": 1},
    }

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        name = cfg.loss.name
        if not name.startswith("fgan-"):
            raise ConfigError(f"model 'fgan' trains with an f-GAN loss; got loss.name='{name}'. "
                              f"Choose the divergence with model.divergence "
                              f"(kl, rkl, pearson, hellinger, js, tv)")
        div = self.p.divergence or name.removeprefix("fgan-")
        if div not in get_args(Divergence):
            raise ConfigError(f"unknown f-GAN divergence '{div}' in loss.name='{name}'")
        self.divergence: str = div
        # The resolved config (saved as config.json before training) names both consistently.
        cfg.loss.name = f"fgan-{div}"
        cfg.model["divergence"] = div
