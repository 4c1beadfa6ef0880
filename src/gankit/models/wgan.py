"""Wasserstein GANs: WGAN with weight clipping and WGAN-GP with a gradient penalty.

Seed 000 §3.6 (the Wasserstein/earth-mover distance and its Kantorovich-Rubinstein dual, eq. 9:
``D_W(P, Q) = max_w E_P[D_w(x)] - E_Q[D_w(G(z))]`` over 1-Lipschitz critics), seed 002 §5.1
(eqs. 12-13), deck 003 ("Loss-variant GANs" table: WGAN, WGAN-GP rows).

* ``wgan`` — Arjovsky, Chintala & Bottou 2017, Algorithm 1: critic loss
  ``E[D(fake)] - E[D(real)]``, no sigmoid, weights clipped to [-c, c] with c = 0.01 after every
  critic step, RMSProp with lr 5e-5 (the paper reports momentum-based Adam as unstable),
  n_critic = 5 critic steps per generator step. On images the networks are DCGAN's and the critic
  keeps its batch norm, as in the paper's DCGAN experiments. (Their code's extra schedule
  of 100 critic steps for the first 25 and every 500th generator step is not used.)
* ``wgan-gp`` — Gulrajani et al. 2017, Algorithm 1: the Lipschitz constraint becomes the penalty
  ``lambda E[(||grad D(x_hat)|| - 1)^2]`` on real/fake interpolates, Adam with lr 1e-4,
  n_critic = 5. The penalty is per sample, so the critic has no batch norm (§4, "No critic batch
  normalization"); layer norm (``GroupNorm`` with one group: normalise over C, H, W per sample,
  as their code's Layernorm) is the default. The penalty weight and Adam's betas depend on the
  data (:data:`WGANGP_DATA_SETTINGS`, applied to the keys the user's config leaves unset):

  - images: lambda = 10 and betas (0, 0.9), Algorithm 1's defaults (§4 "Penalty coefficient";
    their image code uses beta1 0.5: set ``optim.betas_g``/``betas_d`` to reproduce it);
  - points (ring8, grid25, tabular data): lambda = 0.1 and betas (0.5, 0.9), the settings of
    their released toy code (``gan_toy.py`` of igul222/improved_wgan_training: ``LAMBDA = .1``
    "Smaller lambda makes things faster for toy tasks", ``CRITIC_ITERS = 5``, Adam 1e-4,
    beta1 0.5, beta2 0.9), which trains the generator on the 8-Gaussian / 25-Gaussian /
    Swiss-roll data of the paper's Fig. 1 (the figure itself holds G fixed). Why it matters:
    the critic's loss ``E[D(fake)] - E[D(real)]`` is in the data's units, the penalty is not.
    On ring8 (radius 1, modes 0.01 wide) the W1 term is ~0.1-0.2; at lambda = 10 the penalty
    pins ``||grad D||`` to 1 on every real-fake interpolate (mean penalty 0.009, measured), so D
    can neither flatten over modes G already holds nor steepen where mass is missing: the
    logged ``E[D(real)] - E[D(fake)]`` is negative in 9 of the first 10 logs (mean -0.19: D
    lags G) and G drifts as a cloud (2.7/8 modes, 0.2 % of samples within 3 sigma after 2,000
    steps at batch 100, 3 seeds). At lambda = 0.1 the penalty is a soft regulariser (mean 0.47:
    slopes far from 1), the estimate stays positive (+0.19) and G settles on the modes:
    7.7/8 modes, 30 % within 3 sigma (same setting; ``benchmarks/points_check.py``). Images
    keep the paper's lambda = 10.

Both log ``wasserstein/estimate = E[D(real)] - E[D(fake)]`` from the critic step: the critic's
estimate of W1 (up to the Lipschitz constant), the quantity the WGAN paper shows correlating with
sample quality (its "meaningful loss metric").

The module also holds :class:`LossVariantGAN`, the network pair shared by the loss-variant
families (``wgan``, ``wgan-gp``, ``lsgan``, ``dragan``, ``fgan``, ``spheregan``): the MLPs of
``gan.py`` for points (toy mixtures such as ring8/grid25, tabular data) and DCGAN's networks for
images.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from ..data.sizes import ANY_SIZE, STAGED, ImageSizes
from ..errors import ConfigError
from ..registry import MODELS
from .base import DView, Game, GANFamily, Params, Phase, Terms, adversarial_phases
from .dcgan import DCDiscriminator, DCGenerator
from .gan import MLPDiscriminator, MLPGenerator, mlp_sizes


class PairParams(Params):
    """Network hyper-parameters of :class:`LossVariantGAN` (``model.*`` keys)."""

    arch: Literal["auto", "mlp", "conv"] = "auto"  # auto: mlp for points, conv (DCGAN) for images
    latent_dim: int | None = None  # None: 2 for points (mlp), 100 otherwise
    # mlp sizes (None: as the 'gan' model: G 4 x 400 + BN, D 3 x 200 on points)
    g_hidden: int | None = None
    g_layers: int | None = None
    d_hidden: int | None = None
    d_layers: int | None = None
    g_batchnorm: bool = True
    # conv sizes (as the 'dcgan' model)
    width: int = 64
    max_width: int = 512
    d_norm: Literal["batchnorm", "layernorm", "none"] = "batchnorm"  # conv critic's normalisation


def layer_norm_critic(D: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` of ``D`` by per-sample layer norm (``GroupNorm(1, C)``).

    Batch norm couples the samples of a batch, so a per-sample gradient penalty no longer
    constrains the function it is meant to (Gulrajani et al. 2017 §4). ``GroupNorm`` with one group
    normalises each sample over (C, H, W) with a per-channel affine, the "Layernorm" of their code.
    """
    for name, m in list(D.named_children()):
        if isinstance(m, nn.BatchNorm2d):
            setattr(D, name, nn.GroupNorm(1, m.num_features))
        else:
            layer_norm_critic(m)
    return D


class LossVariantGAN(GANFamily):
    """A G/D pair for loss-variant families: MLPs on points, DCGAN networks on images.

    Subclasses set ``Params`` (a :class:`PairParams`), ``defaults`` (loss and optimiser) and, if
    needed, ``phases``. ``self.arch`` is the resolved architecture ("mlp" or "conv").
    """

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        """Strided conv stages for images (any size with the MLP architecture)."""
        return STAGED if cfg.model.get("arch", "auto") in ('auto', 'conv') else ANY_SIZE

    Params = PairParams
    p: PairParams

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        self.arch = p.arch if p.arch != "auto" else ("conv" if info["is_image"] else "mlp")
        if self.arch == "conv":
            if not info["is_image"]:
                raise ConfigError(f"model '{cfg.model['name']}' with arch=conv needs images; "
                                  f"'{info['name']}' holds points (use model.arch=mlp)")
            c, r = self.sample_shape[0], self.sample_shape[-1]
            self.latent_dim = p.latent_dim or 100
            self.G = DCGenerator(self.latent_dim, c, r, p.width, p.max_width)
            self.D = DCDiscriminator(c, r, p.width, p.max_width, batchnorm=p.d_norm != "none")
            if p.d_norm == "layernorm":
                layer_norm_critic(self.D)
        else:
            s = mlp_sizes(p, info["is_image"])  # type: ignore[arg-type]
            self.latent_dim = s["latent_dim"]
            self.G = MLPGenerator(self.latent_dim, self.sample_shape, s["g_hidden"],
                                  s["g_layers"], p.g_batchnorm)
            # the MLP critic has no normalisation layers, so every penalty/clipping applies as is
            self.D = MLPDiscriminator(self.sample_shape, s["d_hidden"], s["d_layers"], 0.0)


def wasserstein_estimate(v: DView) -> tuple[Terms, dict[str, Tensor]]:
    """D-step statistic ``wasserstein/estimate = E[D(real)] - E[D(fake)]`` (no loss term).

    It reuses the critic outputs of the D step (the scores it already computed), so it costs no
    extra forward pass.
    """
    n = len(v.fake_in)
    est = v.out_real.detach().reshape(n, -1).mean() - v.out_fake.detach().reshape(n, -1).mean()
    return {}, {"wasserstein/estimate": est}


class _WassersteinFamily(LossVariantGAN):
    # phases() is adversarial_phases plus a logged statistic, so D-layer tricks still apply
    d_tricks_in_place: ClassVar[bool | None] = True

    def phases(self) -> list[Phase]:
        est = wasserstein_estimate if self.cfg.loss.name == "wasserstein" else None
        return adversarial_phases(self, Game(d_terms=est))


@MODELS.register("wgan", description="Wasserstein GAN, weight clipping c=0.01, RMSProp 5e-5, "
                                     "5 critic steps (Arjovsky et al. 2017)")
class WGAN(_WassersteinFamily):
    """WGAN (Arjovsky et al. 2017): Wasserstein critic with weight clipping."""

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8, "optim.n_critic": 1}

    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "wasserstein", "clip": 0.01, "gp": None},
        "optim": {"name": "rmsprop", "lr_g": 5e-5, "lr_d": 5e-5, "n_critic": 5},
    }


class WGANGPParams(PairParams):
    # batch norm is not offered: it would invalidate the per-sample penalty (Gulrajani et al. §4)
    d_norm: Literal["layernorm", "none"] = "layernorm"  # type: ignore[assignment]


# Penalty weight and Adam betas of wgan-gp by kind of data (module docstring): Algorithm 1 for
# images, the released toy code (gan_toy.py) for points.
WGANGP_DATA_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "images": {"loss": {"lambda_gp": 10.0},
               "optim": {"betas_g": (0.0, 0.9), "betas_d": (0.0, 0.9)}},
    "points": {"loss": {"lambda_gp": 0.1},
               "optim": {"betas_g": (0.5, 0.9), "betas_d": (0.5, 0.9)}},
}


@MODELS.register("wgan-gp", description="WGAN with gradient penalty: lambda=10, Adam 1e-4 "
                                        "(0, 0.9) on images, lambda=0.1, (0.5, 0.9) on points "
                                        "(toy code); 5 critic steps, no critic batch norm "
                                        "(Gulrajani et al. 2017)")
class WGANGP(_WassersteinFamily):
    """WGAN-GP (Gulrajani et al. 2017): Wasserstein critic with a gradient penalty.

    ``loss.lambda_gp`` and ``optim.betas_g``/``betas_d`` default by data
    (:data:`WGANGP_DATA_SETTINGS`); set them to override.
    """

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8, "optim.n_critic": 1}

    Params = WGANGPParams
    # lambda_gp and the betas are not here: they depend on the data (WGANGP_DATA_SETTINGS)
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "wasserstein", "gp": "wgan-gp", "clip": None},
        "optim": {"name": "adam", "lr_g": 1e-4, "lr_d": 1e-4, "n_critic": 5},
    }
    data_defaults = WGANGP_DATA_SETTINGS
