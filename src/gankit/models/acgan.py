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

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..data.sizes import STAGED
from ..errors import ConfigError
from ..nn import spectral_norm_all
from ..registry import MODELS
from ..tricks import d_layer_kwargs
from .base import DView, Game, GANFamily, Phase, Terms, adversarial_phases
from .dcgan import DCDiscriminator, DCGANParams, DCGenerator


class ACGANParams(DCGANParams):
    lambda_cls: float = 1.0  # weight of the class cross-entropy L_C in both losses


class ACDiscriminator(nn.Module):
    """image [N, C, R, R] -> (real/fake score [N, 1], class logits [N, K]).

    DCGAN's discriminator (``body``: its ``features`` and real/fake ``head``) with a second linear
    head on the same penultimate features.
    """

    def __init__(self, channels: int, resolution: int, width: int, max_width: int,
                 batchnorm: bool, n_classes: int, **tricks: Any) -> None:
        super().__init__()
        # ``tricks``: the D-layer tricks (dropout, minibatch stddev/discrimination) of the body
        self.body = DCDiscriminator(channels, resolution, width, max_width, batchnorm=batchnorm,
                                    **tricks)
        self.classes = nn.Linear(self.body.head.in_features, n_classes)
        nn.init.normal_(self.classes.weight, 0.0, 0.02)
        nn.init.zeros_(self.classes.bias)

    def features(self, x: Tensor) -> Tensor:
        """Per-sample penultimate features [N, F] (before the batch-statistics layers)."""
        return self.body.features(x).flatten(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body.batch_layers(self.features(x))  # [N, F']: shared by both heads
        return self.body.head(h), self.classes(h)


@MODELS.register("acgan", description="auxiliary classifier GAN: G(z, c), D predicts source and "
                                       "class (Odena et al. 2017)")
class ACGAN(GANFamily):
    """AC-GAN (Odena et al. 2017). Conditional: needs labels, samples by class."""

    image_sizes = STAGED  # strided conv stages (gankit.nn.conv_stages)

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8}

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
        self.D = ACDiscriminator(c, r, p.width, p.max_width, not p.spectral_norm, k,
                                 **d_layer_kwargs(cfg))
        if p.spectral_norm:
            spectral_norm_all(self.D)

    def d_forward(self, D: nn.Module, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return D(x)  # (score [N, 1], class logits [N, K]); D does not see the label

    def d_score(self, out: tuple[Tensor, Tensor], n: int) -> Tensor:
        return out[0].reshape(n)  # [N] real/fake score

    def classify(self, x: Tensor) -> Tensor:
        """D's class logits ``[N, K]``."""
        return self.D(x)[1]

    def phases(self) -> list[Phase]:
        lam = self.p.lambda_cls

        def d_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            # -L_C on both batches: D learns to recognise the class of reals and of fakes
            l_real, l_fake = v.out_real[1], v.out_fake[1]
            cls = F.cross_entropy(l_real, v.c_real) + F.cross_entropy(l_fake, v.c_fake)
            acc = (l_real.detach().argmax(1) == v.c_real).float().mean()
            return {"loss/D/cls": lam * cls}, {"D/cls_acc": acc}

        def g_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            # -L_C on fakes: G wants its class recognised (the adversarial part is the
            # non-saturating stand-in for -(-L_S))
            return {"loss/G/cls": lam * F.cross_entropy(v.out_fake[1], v.c_fake)}, {}

        return adversarial_phases(self, Game(d_terms=d_terms, g_terms=g_terms))
