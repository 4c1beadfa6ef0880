"""EBGAN: Energy-based GAN (Zhao, Mathieu & LeCun 2017, ICLR; arXiv:1609.03126).

Seed context: survey 004 ("EBGAN [10] and BEGAN [11] with autoencoders"); deck 003 "Energy-based
Models" (an energy assigns low values to the data manifold, high values elsewhere).

The discriminator is an energy function: an autoencoder whose energy is its reconstruction
error, ``D(x) = ||Dec(Enc(x)) - x||^2`` averaged over elements (a per-sample MSE, so the scale
does not depend on the resolution). With a margin ``m`` (paper eq. 1-2)::

    L_D = D(x) + [m - D(G(z))]^+          L_G = D(G(z)) + lambda_PT * PT(S)

``D`` pulls the energy of real data down and pushes fakes up until they reach ``m``; fakes whose
energy is already ``>= m`` give D no gradient. ``PT`` is the *pulling-away term* (the paper's
"repelling regularizer"), a
repeller on the encoder embeddings ``S = Enc(G(z))`` of the fake batch that discourages mode
collapse::

    PT(S) = 1 / (N (N - 1)) * sum_{i != j} cos^2(S_i, S_j)

with ``lambda_PT = 0.1`` as in the paper (``model.pull_away=false`` gives plain EBGAN).

The margin. The paper's appendix "Tips for setting a good energy margin value" asks for a
balance between the two terms of ``L_D``: the fake term lies in ``[0, m]``, so ``m`` should be on
the scale the real term can reach; it suggests training D alone on the data and using the loss it
converges to as the starting point of a search, notes that too large an ``m`` makes training
unstable and too small an ``m`` drops modes, and reports success with decaying ``m`` towards 0.
The paper's own values (MNIST 10, CelebA 20, LSUN 80, on its summed-energy scale) do not carry
over to our per-element MSE. Following the tip, we trained the autoencoder alone on [-1, 1]
images: from about 0.7-0.9 untrained it reaches 0.04-0.05 within a few hundred Adam steps
(digits, MNIST-5k) and keeps falling slowly, so we default to ``m = 0.1``, a little above what D
can reach on real data. Watch ``ebgan/E_real`` (and ``ebgan/in_margin``) and adjust.

Networks: the autoencoder is the one of :mod:`gankit.models.began` (ELU convs; the EBGAN paper
used strided conv/deconv autoencoders with batch norm and leaky ReLU); the generator follows
DCGAN on images as in the paper (``model.width`` as the DCGAN ``ngf``), an MLP on points.
Adam lr 2e-4, beta1 0.5 (DCGAN's settings, which the paper's generators follow).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..data.sizes import STAGED
from ..losses import AdversarialLoss
from ..registry import MODELS
from .base import DView, Game, GANFamily, Params, Phase, Terms, adversarial_phases
from .began import AutoencoderDiscriminator, per_sample_mean
from .dcgan import DCGenerator
from .gan import MLPGenerator


class EBGANParams(Params):
    """``model.*`` of ebgan.

    ``width`` is G's DCGAN ``ngf`` and the ``n`` of D, BEGAN's ELU autoencoder. That autoencoder
    is what a step costs: 0.38 GFLOP per 28x28 image forward against G's 0.015, so a step is
    about 0.2 TFLOP at batch 64, 21x DCGAN's. A strided conv/deconv autoencoder like the EBGAN
    paper's (module docstring) would cost roughly 15x less at this size; ``width=32`` costs a
    quarter.
    """

    latent_dim: int | None = None  # None: 100 for images (DCGAN), 2 for points
    width: int = 64  # G: DCGAN ngf (doubling per stage); D: BEGAN-style n, 2n, 3n
    max_width: int = 512
    h_dim: int = 64  # autoencoder embedding (the pulling-away term's space)
    hidden: int = 128  # MLP width on points
    g_hidden: int = 400  # generator MLP on points (as the 'gan' model)
    g_layers: int = 4
    margin: float = 0.1  # m, on the per-element MSE scale (see the module docstring)
    pull_away: bool = True  # EBGAN-PT
    lambda_pt: float = 0.1  # the paper's value


def mse_energy(D: AutoencoderDiscriminator, x: Tensor) -> tuple[Tensor, Tensor]:
    """Energy ``||Dec(Enc(x)) - x||^2`` per sample (element mean) ``[N]`` and the embedding
    ``Enc(x) [N, h_dim]`` (one pass serves both the energy and the pulling-away term)."""
    h = D.encode(x)
    return per_sample_mean((D.decode(h) - x).pow(2)), h


def margin_loss(e_real: Tensor, e_fake: Tensor, margin: float) -> Tensor:
    """EBGAN's discriminator loss ``mean D(x) + mean [m - D(G(z))]^+`` (Zhao et al. 2017 eq. 1)."""
    return e_real.mean() + F.relu(margin - e_fake).mean()


def pulling_away(s: Tensor) -> Tensor:
    """Pulling-away term ``1/(N(N-1)) sum_{i != j} cos^2(s_i, s_j)`` of ``s [N, d]`` (Zhao et al.)."""
    n = len(s)
    if n < 2:
        return s.new_zeros(())
    u = F.normalize(s.flatten(1), dim=1, eps=1e-8)  # [N, d], unit rows
    cos2 = (u @ u.t()).pow(2)  # [N, N]
    off = cos2.sum() - cos2.diagonal().sum()  # exclude i == j explicitly (not assumed exactly 1)
    return off / (n * (n - 1))


@MODELS.register("ebgan", description="energy-based GAN: autoencoder D, margin loss, pulling-away term (Zhao et al. 2017)")
class EBGAN(GANFamily):
    """EBGAN (Zhao, Mathieu & LeCun 2017); see the module docstring."""

    image_sizes = STAGED  # strided conv stages (gankit.nn.conv_stages)

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8, "model.h_dim": 8}

    Params = EBGANParams
    defaults: ClassVar[dict[str, Any]] = {
        "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999)},
    }

    D: AutoencoderDiscriminator
    scores_follow_loss: ClassVar[bool] = False  # D/real, D/fake are the energies, negated

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        if info["is_image"]:
            c, r = self.sample_shape[0], self.sample_shape[-1]
            self.latent_dim = p.latent_dim or 100
            self.G: nn.Module = DCGenerator(self.latent_dim, c, r, p.width, p.max_width)
        else:
            self.latent_dim = p.latent_dim or 2
            self.G = MLPGenerator(self.latent_dim, self.sample_shape, p.g_hidden, p.g_layers,
                                  batchnorm=True)
        self.D = AutoencoderDiscriminator(self.sample_shape, p.h_dim, p.width, p.hidden)

    def d_forward(self, D: nn.Module, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return mse_energy(D, x)  # (energy [N], embedding [N, h_dim])

    def d_score(self, out: tuple[Tensor, Tensor], n: int) -> Tensor:
        return -out[0]  # [N]; low energy = "more real", so higher is more real

    def game_loss(self) -> AdversarialLoss:
        """EBGAN's objective on D's scores ``-E(x)``: the margin loss for D (eq. 1), the energy of
        the fakes for G (eq. 2)."""
        m = self.p.margin
        return AdversarialLoss("ebgan", lambda s_real, s_fake: margin_loss(-s_real, -s_fake, m),
                               lambda s_fake: (-s_fake).mean(), False,
                               "EBGAN margin loss, Zhao et al. 2017 eq. 1-2", threshold=None)

    def phases(self) -> list[Phase]:
        p = self.p

        def d_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            e_real, e_fake = v.out_real[0].detach(), v.out_fake[0].detach()
            return {}, {"ebgan/E_real": e_real.mean(), "ebgan/E_fake": e_fake.mean(),
                        # share of fakes still inside the margin (those D still pushes up)
                        "ebgan/in_margin": (e_fake < p.margin).float().mean()}

        def g_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            stats = {"loss/G/energy": v.out_fake[0].detach().mean()}
            if not p.pull_away:
                return {}, stats
            pt = pulling_away(v.out_fake[1])
            stats["ebgan/pt"] = pt.detach()  # unweighted
            return {"loss/G/pt": p.lambda_pt * pt}, stats

        return adversarial_phases(self, Game(d_terms=d_terms, g_terms=g_terms,
                                             loss=self.game_loss()))


__all__ = ["EBGAN", "margin_loss", "mse_energy", "pulling_away"]
