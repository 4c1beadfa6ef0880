"""Self-supervised GAN: D also predicts the rotation of its input (chapter 002 §5.2, eq. 14).

Chen, Zhai, Ritter, Lucic & Houlsby 2019 ("Self-Supervised GANs via Auxiliary Rotation Loss"):
to counter discriminator forgetting, D gets a second head ``Q_D`` that classifies the rotation
``r`` in R = {0, 90, 180, 270} degrees of a rotated image ``x^r``:

    L_G = -V(G, D) - alpha * E_{x ~ P_G}    E_{r ~ R} log Q_D(R = r | x^r)
    L_D =  V(G, D) - beta  * E_{x ~ P_data} E_{r ~ R} log Q_D(R = r | x^r)

Only upright images go to the real/fake head; the rotation loss is a 4-way cross-entropy over all
four rotations of every image of the batch (4N images). D learns the rotation task on real data
only, G is rewarded for fakes whose rotation D can tell. ``alpha=0.2, beta=1`` are the paper's
values (also the defaults of ``SSGAN`` in compare_gan, the authors' code). ``V`` is the configured
adversarial loss: non-saturating by default (compare_gan's default loss); ``loss.name=hinge`` with
``model.spectral_norm=true`` gives the SNGAN-style variant used by Mimicry's reproduction.
Networks are DCGAN's with a 4-unit rotation head on D's penultimate features.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.sizes import STAGED
from ..errors import ConfigError
from ..nn import spectral_norm_all
from ..registry import MODELS
from ..tricks import d_layer_kwargs
from .base import DView, Game, GANFamily, Phase, Terms, adversarial_phases
from .dcgan import DCDiscriminator, DCGANParams, DCGenerator

N_ROT = 4  # 0, 90, 180, 270 degrees


class SSGANParams(DCGANParams):
    alpha: float = 0.2  # weight of the rotation loss on fakes in G's loss
    beta: float = 1.0  # weight of the rotation loss on real images in D's loss


def rotate4(x: Tensor) -> tuple[Tensor, Tensor]:
    """All four rotations of a batch: ``[N, C, H, W]`` -> (``[4N, C, H, W]``, labels ``[4N]``).

    Block ``k`` (rows ``k*N .. (k+1)*N - 1``) is ``x`` rotated by ``k * 90`` degrees
    counter-clockwise in the (H, W) plane (``torch.rot90(x, k, dims=(2, 3))``) with label ``k``.
    """
    xs = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(N_ROT)])
    labels = torch.arange(N_ROT, device=x.device).repeat_interleave(len(x))
    return xs, labels


class SSDiscriminator(nn.Module):
    """image [N, C, R, R] -> (real/fake score [N, 1], rotation logits [N, 4]).

    DCGAN's discriminator (``body``: ``features`` + real/fake ``head``) with a rotation head on the
    same penultimate features.
    """

    def __init__(self, channels: int, resolution: int, width: int, max_width: int,
                 batchnorm: bool, **tricks: Any) -> None:
        super().__init__()
        # ``tricks``: the D-layer tricks (dropout, minibatch stddev/discrimination) of the body
        self.body = DCDiscriminator(channels, resolution, width, max_width, batchnorm=batchnorm,
                                    **tricks)
        self.rotation = nn.Linear(self.body.head.in_features, N_ROT)
        nn.init.normal_(self.rotation.weight, 0.0, 0.02)
        nn.init.zeros_(self.rotation.bias)

    def features(self, x: Tensor) -> Tensor:
        """Per-sample penultimate features [N, F] (before the batch-statistics layers)."""
        return self.body.features(x).flatten(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body.batch_layers(self.features(x))  # [N, F']
        return self.body.head(h), self.rotation(h)


@MODELS.register("ssgan", description="self-supervised GAN with an auxiliary rotation loss "
                                       "(Chen et al. 2019)")
class SSGAN(GANFamily):
    """SS-GAN (Chen et al. 2019); chapter 002 §5.2. Unsupervised: labels are not used."""

    image_sizes = STAGED  # strided conv stages (gankit.nn.conv_stages)

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8}

    Params = SSGANParams
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "nonsaturating"},
        "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999)},
    }

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        if not info["is_image"]:
            raise ConfigError(f"model 'ssgan' needs images; '{info['name']}' holds points")
        c, h, w = self.sample_shape
        if h != w:
            raise ConfigError(f"ssgan rotates images by 90 degrees and needs square ones, got "
                              f"{h}x{w} (use data.image_size)")
        p = self.p
        self.latent_dim = p.latent_dim
        self.G = DCGenerator(self.latent_dim, c, w, p.width, p.max_width)
        self.D = SSDiscriminator(c, w, p.width, p.max_width, not p.spectral_norm,
                                 **d_layer_kwargs(cfg))
        if p.spectral_norm:
            spectral_norm_all(self.D)

    def d_forward(self, D: nn.Module, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return D(x)  # (score [N, 1], rotation logits [N, 4])

    def d_score(self, out: tuple[Tensor, Tensor], n: int) -> Tensor:
        return out[0].reshape(n)  # [N] real/fake score of upright images

    def rotation_loss(self, D: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean 4-way cross-entropy of D's rotation head over the 4N rotations of ``x``, and the
        rotation accuracy."""
        xr, r = rotate4(x)  # [4N, C, H, W], [4N]
        logits = D(xr)[1]  # [4N, 4]
        return F.cross_entropy(logits, r), (logits.detach().argmax(1) == r).float().mean()

    def phases(self) -> list[Phase]:
        p = self.p

        def d_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            assert v.real_in is not None
            rot, acc = self.rotation_loss(v.D, v.real_in)  # real images only (eq. 14)
            return {"loss/D/rot": p.beta * rot}, {"D/rot_acc": acc}

        def g_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            rot, acc = self.rotation_loss(v.D, v.fake_in)
            return {"loss/G/rot": p.alpha * rot}, {"G/rot_acc": acc}

        return adversarial_phases(self, Game(d_terms=d_terms, g_terms=g_terms))
