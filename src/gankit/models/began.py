"""BEGAN: Boundary Equilibrium GAN (Berthelot, Schumm & Metz 2017, arXiv:1703.10717).

Seed context: deck 003 "Loss-variant GANs" table (the BEGAN row: ``L_D = E|x - AE(x)|_1 -
k_t E|x̂ - AE(x̂)|_1``, ``L_G = E|x̂ - AE(x̂)|_1``); survey 004 (EBGAN [10] and BEGAN [11]
"with autoencoders").

The discriminator is an autoencoder and scores a sample by its pixel-wise L1 reconstruction
loss ``L(v) = mean |v - D(v)|`` (paper eq. 1 with eta = 1). The losses (paper §3.4) are::

    L_D = L(x) - k_t L(G(z_D))            L_G = L(G(z_G))
    k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, 1)

``gamma = E[L(G(z))] / E[L(x)]`` is the *diversity ratio* (§3.3): lower values make D focus on
reconstructing real images, giving sharper but less diverse samples; the paper shows 0.3, 0.5
and 0.7, and 0.5, the middle value, is our default. ``lambda_k = 0.001`` and
``k_0 = 0`` as in §3.4. The equilibrium controller ``k_t`` is not a gradient update: it is a
registered buffer of D (so it is checkpointed, resumes exactly and is broadcast from rank 0
under torchrun), updated in the D phase's ``after_step`` hook. The *convergence measure*
``M_global = L(x) + |gamma L(x) - L(G(z))|`` (§3.4.1) is logged as ``began/M`` with ``began/k``.
The k update and M use the L values of the D step: with ``train.reuse_fake`` (default) the G
step reuses that fake batch, so ``z_G = z_D`` and D, G and k are all updated from one forward
pass, the simultaneous update of the paper's equations.

Architecture (§3.5): 3x3 convolutions with ELU, two per resolution; stride-2 convolutions to
down-sample with channels growing linearly (n, 2n, 3n, ...); a fully connected embedding
``h`` (``model.h_dim``, N_h = 64) with no non-linearity; the decoder maps ``h`` to an
``s0 x s0 x n`` map (8x8 at 64x64) and alternates two 3x3 conv + ELU with nearest-neighbour
up-sampling. The generator has the decoder's architecture (separate weights), input
``z ~ U[-1, 1]^{N_z}`` with ``N_z = N_h``. The number of stages adapts to the resolution with
:func:`gankit.nn.conv_stages` (base map >= 8 from 16x16 up). Deviation: G ends in ``tanh`` so
samples honour the toolkit's [-1, 1] image contract. On points (toy mixtures, tabular data)
encoder, decoder and G are small ELU MLPs. Adam with lr 1e-4 (the paper's initial rate; it
halves the rate when M stalls, which we leave to the user) and beta1 = 0.5 as in DCGAN.

``discriminate`` returns ``-L(v)`` per sample, so that, as for every other family, a higher
score means "more real" (``D/real``, ``D/fake`` in the logs); ``began/L_real`` and
``began/L_fake`` are the losses themselves.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

import torch
from pydantic import field_validator
from torch import Tensor, nn

from ..data.sizes import STAGED
from ..losses import AdversarialLoss
from ..nn import conv_stages, mlp, prod
from ..nn.resample import UpConv2d
from ..registry import MODELS
from .base import DView, Game, GANFamily, Params, Phase, Terms, adversarial_phases


class BEGANParams(Params):
    """``model.*`` of began.

    ``width`` (n) defaults to the paper's 64 (§3.5). Its convolutions of n channels run at full
    resolution (the encoder's first three, the decoder's last three), so the autoencoder D costs
    0.38 GFLOP per 28x28 image forward, 30x DCGAN's D, and one step (D on real and fake, then G
    through D) about 0.22 TFLOP at batch 64, 23x DCGAN's; the paper's 64x64 networks cost ~7x
    more per image. That is the architecture, not overhead; ``width=32`` costs a quarter (a
    departure from the paper, for quick CPU runs).
    """

    latent_dim: int | None = None  # N_z; None: N_h for images (paper: N_z = N_h), 2 for points
    h_dim: int = 64  # N_h, the autoencoder's embedding (paper: 64; 128 in some runs)
    width: int = 64  # n: channels of the first conv stage, growing n, 2n, 3n (paper: 64 or 128)
    hidden: int = 128  # MLP width on points
    gamma: float = 0.5  # diversity ratio (the paper shows 0.3, 0.5, 0.7)
    lambda_k: float = 1e-3  # proportional gain of the k_t controller (paper §3.4)
    k_init: float = 0.0  # k_0 (paper §3.4)

    @field_validator("gamma")
    @classmethod
    def _gamma(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError("gamma is a ratio of expected losses: 0 < gamma <= 1")
        return v

    @field_validator("k_init")
    @classmethod
    def _k(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError("k is clipped to [0, 1]")
        return v


def _ae_stages(resolution: int) -> tuple[int, int]:
    # The paper's 64x64 model has an 8x8 base map: keep base maps >= 8 where the image allows.
    return conv_stages(resolution, min_size=8 if resolution >= 16 else 4)


def _conv_elu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    # in-place ELU: its backward needs only its output, and the conv before it keeps its input
    return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.ELU(inplace=True)]


class BEGANDecoder(nn.Module):
    """code [N, d_in] -> image [N, C, R, R]: the BEGAN decoder, also used as the generator.

    fc to an ``n x s0 x s0`` map, then per resolution two 3x3 conv + ELU, nearest-neighbour
    up-sampling between resolutions, and a final 3x3 conv to ``C`` channels (paper §3.5, Fig. 1).
    Each up-sampling and the 3x3 conv after it run as one :class:`~gankit.nn.resample.UpConv2d`
    (the same function and 3x3 parameters, 2.25x fewer multiply-adds, no up-sampled map built);
    the modules keep the names of the unfused layout (the up-sampling's index is skipped), so
    state-dict keys are unchanged.
    """

    def __init__(self, d_in: int, channels: int, resolution: int, width: int,
                 tanh: bool = False) -> None:
        super().__init__()
        k, s0 = _ae_stages(resolution)
        self.width, self.s0 = width, s0
        self.fc = nn.Linear(d_in, width * s0 * s0)
        layers: list[nn.Module | None] = []
        for i in range(k + 1):
            first = UpConv2d(width, width) if i else nn.Conv2d(width, width, 3, 1, 1)
            layers += [first, nn.ELU(inplace=True)] + _conv_elu(width, width)
            if i < k:
                layers.append(None)  # the x2 up-sampling, fused into the next conv
        layers.append(nn.Conv2d(width, channels, 3, 1, 1))
        if tanh:
            layers.append(nn.Tanh())
        self.body = nn.Sequential(OrderedDict((str(j), m) for j, m in enumerate(layers)
                                              if m is not None))

    def forward(self, h: Tensor) -> Tensor:
        x = self.fc(h).view(-1, self.width, self.s0, self.s0)  # [N, n, s0, s0]
        return self.body(x)  # [N, C, R, R]


class BEGANEncoder(nn.Module):
    """image [N, C, R, R] -> embedding h [N, h_dim] (linear, no non-linearity; paper §3.5)."""

    def __init__(self, channels: int, resolution: int, width: int, h_dim: int) -> None:
        super().__init__()
        k, s0 = _ae_stages(resolution)
        chans = [width * (i + 1) for i in range(k + 1)]  # n, 2n, 3n, ...: linear growth
        layers: list[nn.Module] = _conv_elu(channels, chans[0])
        for i in range(k + 1):
            layers += _conv_elu(chans[i], chans[i]) + _conv_elu(chans[i], chans[i])
            if i < k:
                layers += _conv_elu(chans[i], chans[i + 1], stride=2)  # sub-sampling by stride 2
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(chans[-1] * s0 * s0, h_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x).flatten(1))  # [N, h_dim]


class AutoencoderDiscriminator(nn.Module):
    """Autoencoder discriminator of BEGAN and EBGAN: sample [N, *shape] -> reconstruction.

    Images use the BEGAN conv encoder/decoder; points (``shape = (d,)``) two-hidden-layer ELU
    MLPs. ``encode`` gives the embedding ``[N, h_dim]`` (EBGAN's pulling-away term works on it),
    ``decode`` maps it back; ``forward = decode . encode``.
    """

    def __init__(self, shape: tuple[int, ...], h_dim: int, width: int, hidden: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        if len(self.shape) == 3:
            c, r = self.shape[0], self.shape[-1]
            self.encoder: nn.Module = BEGANEncoder(c, r, width, h_dim)
            self.decoder: nn.Module = BEGANDecoder(h_dim, c, r, width)
        else:
            d = prod(self.shape)
            self.encoder = nn.Sequential(nn.Flatten(), mlp(d, hidden, 2, h_dim, nn.ELU()))
            self.decoder = mlp(h_dim, hidden, 2, d, nn.ELU())

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, h: Tensor) -> Tensor:
        return self.decoder(h).view(len(h), *self.shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def per_sample_mean(t: Tensor) -> Tensor:
    """``[N, ...] -> [N]``: mean over every non-batch dimension."""
    return t.reshape(len(t), -1).mean(1)


def l1_recon_loss(D: AutoencoderDiscriminator, v: Tensor) -> Tensor:
    """BEGAN's ``L(v) = |v - D(v)|`` with eta = 1, averaged over pixels: ``[N]`` per sample."""
    return per_sample_mean((v - D(v)).abs())


def began_k_update(k: Tensor, loss_real: Tensor, loss_fake: Tensor, gamma: float,
                   lambda_k: float) -> Tensor:
    """``clip(k + lambda_k (gamma L(x) - L(G(z))), 0, 1)`` (Berthelot et al. 2017, §3.4)."""
    return (k + lambda_k * (gamma * loss_real - loss_fake)).clamp(0.0, 1.0)


def convergence_measure(loss_real: Tensor, loss_fake: Tensor, gamma: float) -> Tensor:
    """``M_global = L(x) + |gamma L(x) - L(G(z))|`` (Berthelot et al. 2017, §3.4.1)."""
    return loss_real + (gamma * loss_real - loss_fake).abs()


class BEGANDiscriminator(AutoencoderDiscriminator):
    """The autoencoder plus BEGAN's equilibrium controller ``k`` as a buffer (checkpointed)."""

    k: Tensor

    def __init__(self, shape: tuple[int, ...], h_dim: int, width: int, hidden: int,
                 k_init: float = 0.0) -> None:
        super().__init__(shape, h_dim, width, hidden)
        self.register_buffer("k", torch.tensor(float(k_init)))  # scalar, float32


@MODELS.register("began", description="boundary equilibrium GAN: autoencoder D, L1 energies, k_t controller (Berthelot et al. 2017)")
class BEGAN(GANFamily):
    """BEGAN (Berthelot, Schumm & Metz 2017); see the module docstring."""

    image_sizes = STAGED  # strided conv stages (gankit.nn.conv_stages)

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8, "model.h_dim": 8}

    Params = BEGANParams
    defaults: ClassVar[dict[str, Any]] = {
        "optim": {"lr_g": 1e-4, "lr_d": 1e-4, "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999)},
    }

    D: BEGANDiscriminator
    scores_follow_loss: ClassVar[bool] = False  # D/real, D/fake are -L(x), -L(G(z))

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        is_image = bool(info["is_image"])
        self.latent_dim = p.latent_dim or (p.h_dim if is_image else 2)
        if is_image:
            c, r = self.sample_shape[0], self.sample_shape[-1]
            self.G: nn.Module = BEGANDecoder(self.latent_dim, c, r, p.width, tanh=True)
        else:
            self.G = nn.Sequential(mlp(self.latent_dim, p.hidden, 2, prod(self.sample_shape), nn.ELU()),
                                   nn.Unflatten(1, self.sample_shape))
        self.D = BEGANDiscriminator(self.sample_shape, p.h_dim, p.width, p.hidden, p.k_init)
        # (gamma L(x) - L(G(z))) of each D micro-batch since the last optimizer step.
        self._balance: list[Tensor] = []

    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> Tensor:
        # z ~ U[-1, 1]^{N_z} (paper §3.5)
        return torch.rand(n, self.latent_dim, generator=generator, device=device) * 2 - 1

    def d_forward(self, D: nn.Module, x: Tensor, c: Tensor | None = None) -> Tensor:
        return l1_recon_loss(D, x)  # [N] reconstruction losses L(v)

    def d_score(self, out: Tensor, n: int) -> Tensor:
        return -out  # [N]; higher = better reconstructed = "more real"

    def update_k(self) -> None:
        """The D phase's ``after_step``: one controller step with the D step's losses."""
        if not self._balance:
            return
        with torch.no_grad():
            bal = torch.stack(self._balance).mean()  # mean over grad-accumulation micro-batches
            self.D.k.copy_((self.D.k + self.p.lambda_k * bal).clamp(0.0, 1.0))
        self._balance.clear()

    def game_loss(self) -> AdversarialLoss:
        """BEGAN's objective on D's scores ``-L(v)`` (§3.4): D minimises
        ``L(x) - k_t L(G(z))``, G minimises ``L(G(z))``."""
        k = self.D.k

        def d_loss(s_real: Tensor, s_fake: Tensor) -> Tensor:
            return (-s_real).mean() - k.detach() * (-s_fake).mean()

        return AdversarialLoss("began", d_loss, lambda s_fake: (-s_fake).mean(), False,
                               "BEGAN equilibrium objective, Berthelot et al. 2017 §3.4",
                               threshold=None)

    def phases(self) -> list[Phase]:
        gamma = self.p.gamma

        def d_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            lr_, lf_ = v.out_real.detach().mean().float(), v.out_fake.detach().mean().float()
            self._balance.append(gamma * lr_ - lf_)  # for the controller step after D's step
            return {}, {"began/L_real": lr_, "began/L_fake": lf_, "began/k": self.D.k.clone(),
                        "began/M": convergence_measure(lr_, lf_, gamma)}

        return adversarial_phases(self, Game(d_terms=d_terms, loss=self.game_loss(),
                                             after_d=self.update_k))
