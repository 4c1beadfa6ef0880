"""SphereGAN: an IPM on the hypersphere with geometric moment matching (Park & Kwon, CVPR 2019,
"Sphere Generative Adversarial Network Based on Geometric Moment Matching"; seed 002 §5.4, eq. 16).

D ends in a *geometric block*: a dense layer to a point ``p`` in R^n followed by the inverse
stereographic projection onto the unit sphere S^n in R^{n+1}::

    Pi^-1(p) = ( 2 p / (|p|^2 + 1),  (|p|^2 - 1) / (|p|^2 + 1) ).

Samples are compared through the geodesic distance of their projections to the north pole
N = (0, ..., 0, 1), ``d_s(N, q) = arccos(q . N)`` in [0, pi], and its moments r = 1..R. The
objective (seed 002 eq. 16, from the paper) is::

    min_G max_D  sum_r E_x[d_s^r(N, D(x))] - sum_r E_z[d_s^r(N, D(G(z)))],

so D pushes real samples away from the north pole and fakes towards it, and G pulls its samples'
moments up to the data's. The family plays it as the adversarial game over D's score
``s(x) = sum_r d^r(x)`` (so every phase-level trick applies):
``d_loss = E_z[s(fake)] - E_x[s(real)]`` and ``g_loss = -E_z[s(fake)]``.
All distances are bounded by pi, which is the paper's point: no Lipschitz constraint (no weight
clipping, gradient penalty or spectral norm) is needed, and none is applied — the family rejects
``loss.gp`` and ``loss.clip``. R = 3 moments, Adam lr 1e-4, betas (0, 0.9), one D step per G step;
D uses layer norm (the paper's SNGAN-style networks with layer norm in D); the sphere has
n = 1024 dimensions on images as in the paper (32 on points).

Numerics: the angle is computed as ``atan2(|q[:n]|, q[n])`` rather than ``arccos(q[n])``, whose
derivative is infinite at the poles; for a stereographic point both equal
``2 atan(1/|p|)``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..losses import AdversarialLoss
from ..registry import MODELS
from .base import DView, Game, Phase, Terms, adversarial_phases
from .wgan import LossVariantGAN, PairParams


def inverse_stereographic(p: Tensor) -> Tensor:
    """Inverse stereographic projection from the north pole: p [N, n] -> q [N, n+1] on S^n."""
    sq = p.pow(2).sum(1, keepdim=True)  # [N, 1]
    return torch.cat([2 * p, sq - 1], 1) / (sq + 1)


def north_pole_distance(q: Tensor) -> Tensor:
    """Geodesic distance on S^n from q [N, n+1] to N = (0, ..., 0, 1): arccos(q_n) in [0, pi]."""
    return torch.atan2(torch.linalg.vector_norm(q[:, :-1], dim=1), q[:, -1])  # [N]


def geodesic_moments(q: Tensor, moments: int) -> Tensor:
    """``[d, d^2, ..., d^R]`` of the north-pole distances of q [N, n+1]: [N, R]."""
    d = north_pole_distance(q)
    return torch.stack([d.pow(r) for r in range(1, moments + 1)], 1)


def sphere_d_loss(s_real: Tensor, s_fake: Tensor) -> Tensor:
    """D maximises sum_r E[d^r(real)] - E[d^r(fake)] (eq. 16); minimise the negative. ``s`` are
    the per-sample moment sums ``sum_r d^r`` [N]."""
    return s_fake.mean() - s_real.mean()


def sphere_g_loss(s_fake: Tensor) -> Tensor:
    """G minimises eq. 16; only the fake term depends on G."""
    return -s_fake.mean()


#: Eq. 16 on D's scores ``sum_r d^r``; no accuracy (the scores are distances, all >= 0)
SPHERE_LOSS = AdversarialLoss("sphere", sphere_d_loss, sphere_g_loss, False,
                              "SphereGAN geodesic moment matching, Park & Kwon 2019 eq. 16",
                              threshold=None)


class SphereCritic(nn.Module):
    """x -> trunk -> p in R^n -> inverse stereographic projection -> q on S^n, [N, n+1]."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: Tensor) -> Tensor:
        return inverse_stereographic(self.trunk(x).flatten(1))


class SphereGANParams(PairParams):
    d_norm: Literal["batchnorm", "layernorm", "none"] = "layernorm"
    sphere_dim: int | None = None  # n of S^n; None: 1024 on images (the paper), 32 on points
    moments: int = 3  # R


@MODELS.register("spheregan", description="SphereGAN, geodesic moments (R=3) on a hypersphere, "
                                          "no Lipschitz constraint (Park & Kwon 2019)")
class SphereGAN(LossVariantGAN):
    """SphereGAN (Park & Kwon 2019): D maps onto S^n; geodesic moments of north-pole distances."""

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8, "model.sphere_dim": 16}

    Params = SphereGANParams
    p: SphereGANParams
    defaults: ClassVar[dict[str, Any]] = {
        # Eq. 16 is an IPM (E_P[s] - E_Q[s] over the moment score s), the Wasserstein form; the
        # phases below compute it, loss.name only records it.
        "loss": {"name": "wasserstein", "gp": None, "clip": None},
        "optim": {"name": "adam", "lr_g": 1e-4, "lr_d": 1e-4, "betas_g": (0.0, 0.9),
                  "betas_d": (0.0, 0.9), "n_critic": 1},
    }

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        lc = cfg.loss
        if lc.gp is not None or lc.clip is not None or lc.name != "wasserstein":
            raise ConfigError("spheregan uses its own bounded objective without any Lipschitz "
                              "constraint (Park & Kwon 2019): leave loss.name, loss.gp and "
                              "loss.clip at their defaults")
        if self.p.moments < 1:
            raise ConfigError("model.moments must be >= 1")
        n = self.p.sphere_dim or (1024 if self.arch == "conv" else 32)
        # Geometric block: swap the trunk's scalar output layer for a dense layer to R^n (PyTorch's
        # default init). The first points cluster at one spot of the sphere; Adam's
        # per-parameter scaling makes up for the small initial gradients of the angle there.
        trunk = self.D
        if self.arch == "conv":
            trunk.head = nn.Linear(trunk.head.in_features, n)  # type: ignore[union-attr]
        else:
            last = trunk.net[-1]  # type: ignore[index]
            trunk.net[-1] = nn.Linear(last.in_features, n)  # type: ignore[index]
        self.D = SphereCritic(trunk)
        self.sphere_dim = n

    def d_forward(self, D: nn.Module, x: Tensor, c: Tensor | None = None) -> Tensor:
        """[N, R] geodesic moments of D's sphere points for a batch x."""
        return geodesic_moments(D(x), self.p.moments)

    def d_score(self, out: Tensor, n: int) -> Tensor:
        """A scalar realness score per sample, ``sum_r d_s^r(N, D(x))``: [N]."""
        return out.sum(1)

    def phases(self) -> list[Phase]:
        def d_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            return {}, {"sphere/dist_real": v.out_real.detach()[:, 0].mean(),  # in [0, pi]
                        "sphere/dist_fake": v.out_fake.detach()[:, 0].mean()}

        return adversarial_phases(self, Game(d_terms=d_terms, loss=SPHERE_LOSS))
