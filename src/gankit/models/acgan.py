"""Auxiliary classifier GAN: D also predicts the class (survey 004 "Changes in the Architecture").

Odena, Olah & Shlens 2017 ("Conditional Image Synthesis with Auxiliary Classifier GANs"): G gets
the class label with the noise, ``x_fake = G(z, c)``; D sees only the image and has two outputs,
a real/fake score and K class logits. With the source and class log-likelihoods

    L_S = E log P(S=real | x_real) + E log P(S=fake | x_fake)
    L_C = E log P(C=c | x_real)    + E log P(C=c | x_fake)

D maximises ``L_S + L_C`` and G maximises ``L_C - L_S`` (paper eq. 2-3). Here ``L_S`` is the
configured adversarial loss (``loss.name``, default the non-saturating form of Goodfellow et
al. 2014 §3, so G minimises ``-log D(G(z, c))`` rather than ``log(1 - D(G(z, c)))``) and ``L_C``
enters both losses as a cross-entropy weighted by ``model.lambda_cls``. Unlike the CGAN's D, this D
is not given the label: it must recognise the class, which pushes G towards class-recognisable
images. Networks are DCGAN's (Radford et al. 2016 rules, Adam 2e-4, beta1 0.5, as in the paper);
fake batches use the labels of the real batch and ``sample(labels=...)`` picks classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..losses import clip_weights, get_loss
from ..nn import spectral_norm_all
from ..registry import MODELS
from .base import ModelFamily, Phase, adversarial_phases, d_game_stats, with_gradient_penalty
from .dcgan import DCDiscriminator, DCGANParams, DCGenerator

if TYPE_CHECKING:
    from ..train.trainer import StepContext


class ACGANParams(DCGANParams):
    lambda_cls: float = 1.0  # weight of the class cross-entropy L_C in both losses


class ACDiscriminator(nn.Module):
    """image [N, C, R, R] -> (real/fake score [N, 1], class logits [N, K]).

    DCGAN's discriminator (``body``: its ``features`` and real/fake ``head``) with a second linear
    head on the same penultimate features.
    """

    def __init__(self, channels: int, resolution: int, width: int, max_width: int,
                 batchnorm: bool, n_classes: int) -> None:
        super().__init__()
        self.body = DCDiscriminator(channels, resolution, width, max_width, batchnorm=batchnorm)
        self.classes = nn.Linear(self.body.head.in_features, n_classes)
        nn.init.normal_(self.classes.weight, 0.0, 0.02)
        nn.init.zeros_(self.classes.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body.features(x).flatten(1)  # [N, F]: shared by both heads
        return self.body.head(h), self.classes(h)


@MODELS.register("acgan", description="auxiliary classifier GAN: G(z, c), D predicts source and "
                                       "class (Odena et al. 2017)")
class ACGAN(ModelFamily):
    """AC-GAN (Odena et al. 2017). Conditional: needs labels, samples by class."""

    Params = ACGANParams
    needs_labels = True
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "nonsaturating"},
        "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999)},
    }

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        if not info["is_image"]:
            raise ConfigError(f"model 'acgan' needs images; '{info['name']}' holds points "
                              f"(use 'cgan' with model.arch=mlp for points)")
        p, k = self.p, self.num_classes
        c, r = self.sample_shape[0], self.sample_shape[-1]
        self.latent_dim = p.latent_dim
        self.G = DCGenerator(self.latent_dim, c, r, p.width, p.max_width, n_classes=k)
        self.D = ACDiscriminator(c, r, p.width, p.max_width, not p.spectral_norm, k)
        if p.spectral_norm:
            spectral_norm_all(self.D)

    def discriminate(self, D: nn.Module, x: Tensor, c: Tensor | None = None) -> Tensor:
        return D(x)[0].reshape(len(x))  # [N] real/fake score; D does not see the label

    def classify(self, x: Tensor) -> Tensor:
        """D's class logits ``[N, K]``."""
        return self.D(x)[1]

    def phases(self) -> list[Phase]:
        lc, lam = self.cfg.loss, self.p.lambda_cls
        adv = get_loss(lc.name)

        def d_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            fake, c_fake = ctx.fake_for_d()
            s_real, l_real = ctx.D(ctx.real)  # [N, 1], [N, K]
            s_fake, l_fake = ctx.D(fake.detach())
            s_real, s_fake = s_real.reshape(-1), s_fake.reshape(-1)
            loss_s = adv.d_loss(s_real, s_fake)  # -L_S
            loss_c = F.cross_entropy(l_real, ctx.c) + F.cross_entropy(l_fake, c_fake)  # -L_C
            loss = loss_s + lam * loss_c
            stats = {"loss/D": loss.detach(), "loss/D/src": loss_s.detach(),
                     "loss/D/cls": loss_c.detach(),
                     "D/cls_acc": (l_real.detach().argmax(1) == ctx.c).float().mean(),
                     **d_game_stats(s_real, s_fake)}
            loss = with_gradient_penalty(self, ctx, fake, loss, stats)
            return loss, stats

        def g_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            fake, c_fake = ctx.fake_for_g()
            s_fake, l_fake = ctx.D(fake)
            loss_s = adv.g_loss(s_fake.reshape(-1))  # non-saturating stand-in for -(-L_S)
            loss_c = F.cross_entropy(l_fake, c_fake)  # -L_C on fakes: G wants its class seen
            loss = loss_s + lam * loss_c
            return loss, {"loss/G": loss.detach(), "loss/G/src": loss_s.detach(),
                          "loss/G/cls": loss_c.detach()}

        after = None
        if lc.clip is not None:
            clip = float(lc.clip)
            after = lambda: clip_weights(self.D, clip)
        phases = [Phase("D", "D", d_step, repeat=self.cfg.optim.n_critic, makes_fake=True,
                        after_step=after)]
        phases += [ph for ph in adversarial_phases(self) if ph.name == "D_reg"]  # lazy penalty
        phases.append(Phase("G", "G", g_step, uses_fake=True))
        return phases
