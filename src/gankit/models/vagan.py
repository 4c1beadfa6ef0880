"""VA-GAN: visual feature attribution with a Wasserstein GAN.

Baumgartner, Koch, Tezcan, Ang & Konukoglu 2018, "Visual Feature Attribution using Wasserstein
GANs" (CVPR). A classifier's saliency shows the features it *needed* to separate the classes,
which may be a subset of what differs (one discriminative square is enough); VA-GAN instead
asks for everything that makes a patient image a patient image. A map generator ``M`` (a
U-Net) produces an additive map for each patient image ``x``; ``y = x + M(x)`` must look
healthy to a WGAN-GP critic ``D`` that compares it with real healthy images, while an L1 term
keeps the map small, so ``M`` changes exactly the disease effect and nothing else (paper eqs.
3-5):

    L_D = E[D(x_p + M(x_p))] - E[D(x_h)] + lambda_gp E[(||grad D(x_hat)|| - 1)^2]
    L_M = -E[D(x_p + M(x_p))] + lambda_l1 mean|M(x_p)|

with ``x_h`` a batch of healthy images (class 0) and ``x_p`` one of patient images (class 1),
drawn as two streams of the ``classes`` data source, and ``x_hat`` random interpolates of
``x_h`` and ``y`` (Gulrajani et al. 2017). The paper's settings are the defaults:
``lambda_l1`` = 100 (``model.lambda_l1``, the mean absolute map over pixels and batch),
``lambda_gp`` = 10, Adam with lr 1e-3 and betas (0, 0.9), batch 32, and the WGAN critic
schedule: 5 critic steps per map-generator step (``optim.n_critic``), 100 for each of the
first 25 generator steps and for every 100th one (``model.critic_burst``, ``burst_first``,
``burst_every``; a :class:`~gankit.games.phase.Burst` of the critic phase).

Networks: ``M`` is the pix2pix U-Net of :mod:`gankit.nn.unet` without dropout (the authors use
a U-Net with batch norm; here the norm is instance norm by default, ``model.norm``, so the map
of an image does not depend on the other images of its batch) whose tanh output keeps the map
in [-1, 1], the range of the images. ``D`` is a fully convolutional critic without batch norm
(the per-sample gradient penalty forbids it, Gulrajani et al. §4): the PatchGAN stack of
:mod:`gankit.nn.patchgan` with no normalisation, its logit map averaged to one score per
image, as the authors' critic ends in global average pooling.

``attribute(x)`` returns ``M(x)``, the map that turns ``x`` healthy; the disease effect map the
paper shows is its negation ``-M(x) = x - y``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from ..data.sizes import ImageSizes, powers_of_two
from ..errors import ConfigError, DataError
from ..games.phase import Burst
from ..losses.regularizers import wgan_gp
from ..nn.patchgan import PatchDiscriminator
from ..nn.unet import UNetGenerator
from ..registry import MODELS
from .base import GANFamily, Params, Phase, StepContext


class VAGANParams(Params):
    width: int = Field(16, ge=1)  # base width of M and D (the authors' U-Net and critic: 16)
    max_width: int = Field(128, ge=1)  # cap on the channels of M's deeper blocks
    n_layers: int = Field(3, ge=0)  # critic depth: stride-2 conv blocks (3: 70x70 receptive field)
    norm: Literal["instance", "batch", "none"] = "instance"  # M's normalisation
    lambda_l1: float = Field(100.0, ge=0.0)  # weight of mean|M(x)| (paper: 100)
    critic_burst: int = Field(100, ge=1)  # critic steps at burst steps (paper: 100)
    burst_first: int = Field(25, ge=0)  # the first generator steps are burst steps (paper: 25)
    burst_every: int = Field(100, ge=0)  # and every N-th one (paper: 100; 0: never)
    healthy: int = Field(0, ge=0)  # class index of the healthy images
    patient: int = Field(1, ge=0)  # class index of the patient images

    @model_validator(mode="after")
    def _classes(self) -> VAGANParams:
        if self.healthy == self.patient:
            raise ValueError(f"healthy and patient must be different classes, both are "
                             f"{self.healthy}")
        return self


def min_resolution(n_layers: int) -> int:
    """The smallest power-of-two side: the critic's ``n_layers`` stride-2 convs and two 4x4
    stride-1 convs need ``R >= 3 * 2**n`` (as pix2pix's PatchGAN), the U-Net at least 4."""
    return max(4, 2 ** (n_layers + 2))


def critic_score(D: nn.Module, x: Tensor) -> Tensor:
    """One critic score per image ``[N]``: the mean of the critic's logit map (the global
    average pooling that ends the authors' critic)."""
    return D(x).flatten(1).mean(1)


def l1_map(m: Tensor) -> Tensor:
    """The L1 term of the map generator: ``mean |M(x)|`` over pixels, channels and batch."""
    return m.abs().mean()


@MODELS.register("vagan", description="visual attribution: a U-Net map M makes patients look "
                                       "healthy to a WGAN-GP critic, L1 on M (lambda 100), 5 "
                                       "critic steps (100 early and every 100th) "
                                       "(Baumgartner et al. 2018)")
class VAGAN(GANFamily):
    """VA-GAN (Baumgartner et al. 2018): attribution maps of a class effect; see the module
    docstring."""

    Params = VAGANParams
    p: VAGANParams
    capabilities: ClassVar[frozenset[str]] = frozenset({"attribute"})
    data_source: ClassVar[str] = "classes"
    data_kinds: ClassVar[tuple[str, ...]] = ("images",)
    ema_networks: ClassVar[tuple[str, ...]] = ()
    g_nets: ClassVar[tuple[str, ...]] = ("M",)
    d_tricks_in_place: ClassVar[bool | None] = False
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "wasserstein", "gp": "wgan-gp", "lambda_gp": 10.0, "clip": None},
        "optim": {"name": "adam", "lr_g": 1e-3, "lr_d": 1e-3, "betas_g": (0.0, 0.9),
                  "betas_d": (0.0, 0.9), "n_critic": 5},
        "train": {"batch_size": 32, "ema": False},
    }
    # Width 4, a 16x16-patch critic, one critic step and a burst of 2 at steps 0 and 3, 6, ...
    tiny: ClassVar[dict[str, Any]] = {"model.width": 4, "model.n_layers": 1,
                                      "optim.n_critic": 1, "model.critic_burst": 2,
                                      "model.burst_first": 1, "model.burst_every": 3}

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)  # refuses data that is not images
        p = self.p
        name = info.get("name", "the data")
        if self.num_classes < 2:
            raise ConfigError(f"vagan learns the difference between healthy and patient images; "
                              f"'{name}' has no class labels (use class sub-folders, e.g. "
                              f"0_healthy/ and 1_patient/, or an .npz with y)")
        bad = [k for k in (p.healthy, p.patient) if k >= self.num_classes]
        if bad:
            raise ConfigError(f"vagan: class {bad[0]} is not among the {self.num_classes} classes "
                              f"of '{name}' (set model.healthy / model.patient)")
        c, h, w = (int(s) for s in info["shape"])
        lo = min_resolution(p.n_layers)
        if h != w or h < lo or h & (h - 1):
            raise ConfigError(f"vagan needs square images whose side is a power of two >= {lo}; "
                              f"'{name}' is {h}x{w}: add --set data.image_size="
                              f"{max(lo, 1 << max(h, w).bit_length() - 1)}")
        self.resolution = h
        self.M = UNetGenerator(c, c, h, p.width, p.max_width, norm=p.norm, dropout=0.0,
                               n_dropout=0)
        self.D = PatchDiscriminator(c, p.width, p.n_layers, norm="none")

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        return powers_of_two(min_resolution(int(cfg.model.get("n_layers", 3))))

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        super().validate_config(cfg)
        if cfg.loss.name != "wasserstein" or cfg.loss.gp != "wgan-gp" or cfg.loss.clip is not None:
            raise ConfigError("vagan trains with the WGAN-GP critic of its paper: loss.name="
                              "wasserstein, loss.gp=wgan-gp, no loss.clip")

    def networks(self) -> dict[str, nn.Module]:
        return {"M": self.M, "D": self.D}

    def source_options(self) -> dict[str, Any]:
        return {"streams": {"healthy": [self.p.healthy], "patient": [self.p.patient]}}

    def burst(self) -> Burst:
        """The critic's burst schedule (``model.critic_burst`` steps at the first
        ``burst_first`` generator steps and every ``burst_every``-th)."""
        p = self.p
        return Burst(p.critic_burst, p.burst_first, p.burst_every or None)

    # -- training -------------------------------------------------------------------------------
    def critic_loss(self, D: nn.Module, healthy: Tensor, y: Tensor
                    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``L_D`` for real healthy images and (detached) maps applied to patients ``y``."""
        d_h, d_y = critic_score(D, healthy), critic_score(D, y)
        est = d_h.mean() - d_y.mean()  # the critic's estimate of W1(healthy, x + M(x))
        gp = wgan_gp(lambda v: critic_score(D, v), healthy, y)
        loss = -est + self.cfg.loss.lambda_gp * gp
        return loss, {"loss/D": loss.detach(), "loss/D/gp": gp.detach(),
                      "wasserstein/estimate": est.detach(), "D/real": d_h.detach().mean(),
                      "D/fake": d_y.detach().mean()}

    def map_loss(self, D: nn.Module, patient: Tensor, m: Tensor
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """``L_M`` for patient images and their maps ``m = M(patient)``."""
        adv = -critic_score(D, patient + m).mean()
        l1 = l1_map(m)
        loss = adv + self.p.lambda_l1 * l1
        return loss, {"loss/M": loss.detach(), "loss/M/adv": adv.detach(), "M/l1": l1.detach()}

    def phases(self) -> list[Phase]:
        def d_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            b = ctx.batch
            with torch.no_grad():
                y = b["patient"] + ctx.net("M")(b["patient"])  # [N, C, H, W]
            return self.critic_loss(ctx.net("D"), b["healthy"], y)

        def m_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            patient = ctx.batch["patient"]
            return self.map_loss(ctx.net("D"), patient, ctx.net("M")(patient))

        # Each critic step draws new batches (fresh); the M step then uses the last of them.
        return [Phase("D", "D", d_step, repeat=self.cfg.optim.n_critic, fresh=True,
                      burst=self.burst()),
                Phase("M", "M", m_step)]

    # -- attribution ----------------------------------------------------------------------------
    def attribute(self, x: Tensor, *, generator: torch.Generator | None = None,
                  **options: Any) -> Tensor:
        """The map ``M(x)`` ``[N, C, H, W]`` that makes images ``x`` (in [-1, 1]) look healthy;
        ``-M(x)`` is the disease effect."""
        if options:
            raise ConfigError(f"vagan attribute takes no options, got "
                              f"{', '.join(sorted(options))}")
        c, r = int(self.sample_shape[0]), self.resolution
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, r, r):
            raise DataError(f"vagan attributes images [N, {c}, {r}, {r}] (the training size), "
                            f"got shape {tuple(x.shape)}")
        return self.M(x)
