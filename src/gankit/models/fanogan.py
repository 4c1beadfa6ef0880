"""f-AnoGAN: Schlegl et al. 2019, "f-AnoGAN: Fast unsupervised anomaly detection with generative
adversarial networks" (Medical Image Analysis 54).

Trained on normal images only, in two stages:

1. **A WGAN-GP** (Gulrajani et al. 2017) learns the normal images: the ``wgan-gp`` family's game,
   losses and defaults (Wasserstein critic loss, gradient penalty lambda = 10, Adam 1e-4 with
   betas (0, 0.9), n_critic = 5, a layer-normalised critic without batch norm), on DCGAN-style
   networks (:mod:`gankit.models.dcgan`).
2. **An encoder** ``E`` maps an image to the latent space, trained with G and D frozen so that
   ``G(E(x))`` reconstructs ``x``. f-AnoGAN's "izi_f" training (its §2.2.3): the image ->
   z -> image loss plus a residual in D's feature space,

       L_izi_f(x) = ||x - G(E(x))||^2 / n  +  kappa * ||f(x) - f(G(E(x)))||^2 / n_d

   with ``n`` the number of pixels, ``f`` the critic's penultimate features (``n_d`` of them;
   :meth:`GANFamily.d_features`) and kappa = 1 (the paper's weighting). ``model.kappa = 0`` is
   the plain "izi" encoder training.

The anomaly score of an image (§2.3) is the same quantity, ``A(x) = A_R(x) + kappa A_D(x)``:
:meth:`FAnoGAN.score` returns it per image (higher = more anomalous); ``score(x, map=True)``
returns the residual map ``|x - G(E(x))|`` per pixel (the paper's localisation of anomalies),
and ``score(x, kappa=0.0)`` the residual-only score ``A_R``.

**The stage switch.** Both stages are phases of one run: the WGAN-GP's D and G phases run for
steps ``0 <= t < model.gan_steps`` (``stop``), the encoder phase ``E`` from ``gan_steps`` to
``train.steps`` (``start``). ``gan_steps`` defaults to 3/4 of ``train.steps`` (an encoder step
is one forward/backward of E, G and D, far cheaper than a WGAN-GP step with its 5 critic
updates); it is fixed into the run's config when the model is built, so a resume with more
steps keeps the switch where it was. A run that stops at or before ``gan_steps`` has trained
the WGAN-GP only (its encoder is untrained): ``gankit resume RUN --steps N`` continues into the
encoder stage. In stage 2 only E's optimizer steps; G and D run in eval
mode (G's batch norm uses the running statistics of stage 1, as at test time), so their
weights and buffers stay exactly as stage 1 left them.

Choices of ours (not the paper's): the latent is Gaussian N(0, I) of ``latent_dim`` = 128 (the
size of Gulrajani et al.'s image code) and E's output is linear; E is D's convolutional trunk
without normalisation plus a linear head and is trained with Adam at G's settings
(``optim.lr_g``, ``betas_g``). G keeps no EMA copy: E is trained against, and scores with, the
one G that stage 1 produced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..data.sizes import STAGED
from ..errors import ConfigError, DataError
from ..games.phase import StepContext
from ..nn import downsampling_trunk
from ..registry import MODELS
from .base import Game, GANFamily, Params, Phase, adversarial_phases
from .dcgan import DCDiscriminator, DCGenerator
from .wgan import WGANGP_DATA_SETTINGS, layer_norm_critic, wasserstein_estimate

__all__ = ["FAnoGAN", "FAnoGANParams", "LatentEncoder", "izi_f"]

#: ``model.gan_steps`` when unset: this fraction of ``train.steps`` trains the WGAN-GP.
GAN_FRACTION = 0.75


class FAnoGANParams(Params):
    """``model.*`` keys of f-AnoGAN."""

    latent_dim: int = 128
    width: int = 64  # channels of the highest-resolution stage of G, D and E; doubles per stage
    max_width: int = 512
    kappa: float = 1.0  # weight of the feature residual in the izi_f loss and the score
    gan_steps: int | None = None  # steps of stage 1 (WGAN-GP); None: 3/4 of train.steps


class LatentEncoder(nn.Module):
    """image [N, C, R, R] -> latent [N, latent_dim]: strided 4x4 convolutions with LeakyReLU 0.2
    (D's trunk, no normalisation), then a linear head."""

    def __init__(self, channels: int, resolution: int, latent_dim: int, width: int,
                 max_width: int) -> None:
        super().__init__()
        self.trunk, features = downsampling_trunk(channels, resolution, width, max_width)
        self.head = nn.Linear(features, latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x).flatten(1))


def izi_f(x: Tensor, recon: Tensor, f_x: Tensor, f_recon: Tensor, kappa: float
          ) -> tuple[Tensor, Tensor]:
    """Per-image ``(A_R, A_D)``: the mean squared image residual ``||x - recon||^2 / n`` and the
    mean squared feature residual ``||f_x - f_recon||^2 / n_d``, each ``[N]``; the izi_f loss
    and score is ``A_R + kappa * A_D`` (``kappa`` only checked here)."""
    if kappa < 0:
        raise ConfigError(f"kappa must be >= 0, got {kappa}")
    a_r = (x - recon).pow(2).flatten(1).mean(1)
    a_d = (f_x - f_recon).pow(2).flatten(1).mean(1)
    return a_r, a_d


@contextlib.contextmanager
def _eval_mode(*nets: nn.Module) -> Iterator[None]:
    """The networks in eval mode inside the block (their modes restored afterwards)."""
    modes = [(m, m.training) for n in nets for m in n.modules()]
    for n in nets:
        n.eval()
    try:
        yield
    finally:
        for m, t in modes:
            m.training = t


@MODELS.register("fanogan", description="f-AnoGAN anomaly detection: a WGAN-GP on normal images, "
                                        "then an encoder with G and D frozen, izi_f loss with "
                                        "kappa = 1; score = anomaly score per image, residual "
                                        "maps (Schlegl et al. 2019)")
class FAnoGAN(GANFamily):
    """f-AnoGAN (Schlegl et al. 2019): WGAN-GP, then an izi_f encoder (module docstring)."""

    image_sizes = STAGED
    Params = FAnoGANParams
    p: FAnoGANParams
    capabilities: ClassVar[frozenset[str]] = frozenset({"sample", "encode", "decode", "score"})
    data_kinds: ClassVar[tuple[str, ...]] = ("images",)
    ema_networks: ClassVar[tuple[str, ...]] = ()
    g_nets: ClassVar[tuple[str, ...]] = ("G", "E")  # E uses G's optimizer settings
    #: the tiny model of the fast contract test: one WGAN-GP step, then the encoder
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8, "model.latent_dim": 8,
                                      "optim.n_critic": 1, "model.gan_steps": 1}
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "wasserstein", "gp": "wgan-gp", "clip": None},
        "optim": {"name": "adam", "lr_g": 1e-4, "lr_d": 1e-4, "n_critic": 5},
    }
    data_defaults = WGANGP_DATA_SETTINGS

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        steps = int(cfg.train.steps)
        if p.gan_steps is None:
            # fixed into the saved config, so a resume with more steps keeps the switch
            p.gan_steps = max(1, round(GAN_FRACTION * steps))
            cfg.model["gan_steps"] = p.gan_steps
        if p.gan_steps < 1:
            raise ConfigError(f"model.gan_steps must be >= 1, got {p.gan_steps}")
        if p.kappa < 0:
            raise ConfigError(f"model.kappa must be >= 0, got {p.kappa}")
        c, r = self.sample_shape[0], self.sample_shape[-1]
        self.latent_dim = p.latent_dim
        self.G = DCGenerator(p.latent_dim, c, r, p.width, p.max_width)
        self.D = layer_norm_critic(DCDiscriminator(c, r, p.width, p.max_width))
        self.E = LatentEncoder(c, r, p.latent_dim, p.width, p.max_width)

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, "E": self.E}

    # -- training ---------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        """Stage 1: the WGAN-GP phases, stopped at ``gan_steps``; stage 2: the encoder."""
        switch = int(self.p.gan_steps)  # type: ignore[arg-type]
        est = wasserstein_estimate if self.cfg.loss.name == "wasserstein" else None
        stage1 = adversarial_phases(self, Game(d_terms=est))
        for ph in stage1:
            ph.stop = switch
            ph.__post_init__()  # re-validate start < stop
        return [*stage1, Phase("E", "E", self.encoder_step, start=switch)]

    def encoder_step(self, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        """The izi_f loss of a batch of normal images; G and D frozen (not stepped, eval mode)."""
        x = ctx.batch["x"]
        G, D, E = ctx.net("G"), ctx.net("D"), ctx.net("E")
        with _eval_mode(G, D):
            a_r, a_d = self.residuals(x, E, G, D)
        loss = (a_r + self.p.kappa * a_d).mean()
        return loss, {"loss/E": loss.detach(), "E/image_residual": a_r.detach().mean(),
                      "E/feature_residual": a_d.detach().mean()}

    def residuals(self, x: Tensor, E: nn.Module, G: nn.Module, D: nn.Module
                  ) -> tuple[Tensor, Tensor]:
        """Per-image ``(A_R, A_D)`` of ``x`` through ``G(E(x))`` and D's features."""
        recon = G(E(x))
        f_x, f_r = self.d_features(D, x), self.d_features(D, recon)
        return izi_f(x, recon, f_x, f_r, self.p.kappa)

    # -- capabilities -----------------------------------------------------------------------
    def _check_images(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.sample_shape:
            raise DataError(f"model '{self.name}' takes images of shape "
                            f"{list(self.sample_shape)}, got {list(x.shape[1:])}")

    def encode(self, x: Tensor, *, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """The latent code ``E(x)`` ``[N, latent_dim]``."""
        if options:
            raise ConfigError(f"encode takes no options, got {', '.join(sorted(options))}")
        self._check_images(x)
        return self.E(x)

    def decode(self, z: Tensor, *, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """Images ``G(z)`` of latent codes ``[N, latent_dim]``."""
        if options:
            raise ConfigError(f"decode takes no options, got {', '.join(sorted(options))}")
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise DataError(f"latent codes must be [N, {self.latent_dim}], got {list(z.shape)}")
        return self.G(z)

    def score(self, x: Tensor, *, generator: torch.Generator | None = None,
              map: bool = False, kappa: float | None = None, **options: Any) -> Tensor:
        """The anomaly score ``A(x) = A_R(x) + kappa A_D(x)`` per image ``[N]`` (higher = more
        anomalous; ``kappa`` defaults to ``model.kappa``), or with ``map=True`` the residual map
        ``|x - G(E(x))|`` ``[N, C, H, W]``."""
        if options:
            raise ConfigError(f"score takes the options map and kappa, got "
                              f"{', '.join(sorted(options))}")
        self._check_images(x)
        if map:
            return (x - self.G(self.E(x))).abs()
        k = self.p.kappa if kappa is None else float(kappa)
        if k < 0:
            raise ConfigError(f"kappa must be >= 0, got {k}")
        a_r, a_d = self.residuals(x, self.E, self.G, self.D)
        return a_r + k * a_d
