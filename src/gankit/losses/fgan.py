"""f-GAN losses: variational divergence minimisation (Nowozin, Cseke & Tomioka, NeurIPS 2016).

Deck 003 ("Loss-variant GANs", "f-divergence" slides) and the survey post 004 ([5]) introduce the
family; seed 002 §5 names the loss variants. Any f-divergence ``D_f(P||Q) = E_Q[f(p/q)]`` has the
variational lower bound (Nguyen et al. 2010; the f-GAN paper's VDM objective)::

    D_f(P||Q) >= sup_T  E_P[T(x)] - E_Q[f*(T(x))],     tight at T*(x) = f'(p(x)/q(x)),

where ``f*`` is the convex conjugate. The critic's raw output ``v = V(x)`` is mapped into the
conjugate's domain by the output activation ``T = g_f(v)`` of the paper's Table 2, so

* D maximises ``E_P[g_f(V(x))] - E_Q[f*(g_f(V(x)))]``: ``d_loss`` is minus that bound (its negative
  is the divergence estimate);
* G uses the *alternative* objective the paper adopts in practice, following the original
  GAN's -log D trick: maximise ``E_Q[g_f(V(G(z)))]``, i.e. ``g_loss = -E_Q[g_f(V(G(z)))]``. For
  JS this is exactly the non-saturating ``-log D(G(z))`` loss (up to the constant ``log 2``);
  the saddle-point form ``-E_Q[f*(g_f(V))]`` would be the saturating minimax loss (and is
  unbounded below for KL).

Every composition ``f*(g_f(v))`` is written in closed form with ``softplus``/``exp`` so no
``log`` of a value near 0 and no ``log(2 - e^t)`` near its singularity is ever evaluated:

============  ===================  ===========================  ============================
divergence    g_f(v)               f*(t)                        f*(g_f(v))
============  ===================  ===========================  ============================
kl            v                    exp(t - 1)                   exp(v - 1)
rkl           -exp(-v)             -1 - log(-t)                 v - 1
pearson       v                    t^2/4 + t                    v^2/4 + v
hellinger     1 - exp(-v)          t / (1 - t)                  exp(v) - 1
js            log 2 - softplus(-v) -log(2 - exp(t))             softplus(v) - log 2
tv            tanh(v) / 2          t                            tanh(v) / 2
============  ===================  ===========================  ============================

The generator functions ``f`` are those of the paper's Table 1 (``kl``: u log u, ``rkl``: -log u,
``pearson``: (u-1)^2, ``hellinger``: (sqrt u - 1)^2, ``js``: u log u - (u+1) log((u+1)/2), ``tv``:
|u-1|/2). Note that with this ``f`` the ``js`` bound estimates ``2 JS(P||Q)`` (= KL(P||M) +
KL(Q||M)), i.e. twice the JS divergence with its usual 1/2 prefactor. Pearson's ``t^2/4 + t``
is the conjugate of (u-1)^2 extended to all real u; the sup over u > 0 differs only for t < -2
(where it is -1), so the table's form gives a (slightly looser there) valid lower bound, tight at
``T* = 2 (p/q - 1) >= -2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .adversarial import AdversarialLoss, _register

LOG2 = math.log(2.0)

Fn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class FDivergence:
    """One row of f-GAN Tables 1 and 2.

    ``f``: generator function on u = p/q > 0; ``f_star``: its convex conjugate on ``dom_f*``;
    ``f_prime``: f' (the optimal critic is ``T*(x) = f'(p/q)``); ``activation``: g_f, maps the
    raw critic output into ``dom_f*``; ``conj_act``: ``f*(g_f(v))`` in a numerically safe form;
    ``dom``: the open/closed interval of ``dom_f*`` as (low, high).
    """

    name: str
    f: Fn
    f_star: Fn
    f_prime: Fn
    activation: Fn
    conj_act: Fn
    dom: tuple[float, float]
    title: str


def _xlogx(u: Tensor) -> Tensor:
    return torch.xlogy(u, u)


DIVERGENCES: dict[str, FDivergence] = {
    d.name: d
    for d in (
        FDivergence(
            "kl", _xlogx, lambda t: torch.exp(t - 1), lambda u: 1 + torch.log(u),
            lambda v: v, lambda v: torch.exp(v - 1), (-math.inf, math.inf),
            "Kullback-Leibler KL(P||Q)"),
        FDivergence(
            "rkl", lambda u: -torch.log(u), lambda t: -1 - torch.log(-t), lambda u: -1 / u,
            lambda v: -torch.exp(-v), lambda v: v - 1, (-math.inf, 0.0),
            "reverse Kullback-Leibler KL(Q||P)"),
        FDivergence(
            "pearson", lambda u: (u - 1) ** 2, lambda t: 0.25 * t**2 + t, lambda u: 2 * (u - 1),
            lambda v: v, lambda v: 0.25 * v**2 + v, (-math.inf, math.inf),
            "Pearson chi^2"),
        FDivergence(
            "hellinger", lambda u: (torch.sqrt(u) - 1) ** 2, lambda t: t / (1 - t),
            lambda u: 1 - 1 / torch.sqrt(u),
            lambda v: -torch.expm1(-v), lambda v: torch.expm1(v), (-math.inf, 1.0),
            "squared Hellinger"),
        FDivergence(
            "js", lambda u: _xlogx(u) - (u + 1) * torch.log((u + 1) / 2),
            lambda t: -torch.log(2 - torch.exp(t)), lambda u: torch.log(2 * u / (1 + u)),
            lambda v: LOG2 - F.softplus(-v), lambda v: F.softplus(v) - LOG2, (-math.inf, LOG2),
            "Jensen-Shannon (2 JS with Table 1's f)"),
        FDivergence(
            "tv", lambda u: 0.5 * (u - 1).abs(), lambda t: t,
            lambda u: 0.5 * torch.sign(u - 1),
            lambda v: 0.5 * torch.tanh(v), lambda v: 0.5 * torch.tanh(v), (-0.5, 0.5),
            "total variation"),
    )
}


def variational_bound(div: FDivergence, v_real: Tensor, v_fake: Tensor) -> Tensor:
    """``E_P[g_f(v_real)] - E_Q[f*(g_f(v_fake))]``: the critic's divergence estimate (eq. 4)."""
    return div.activation(v_real).mean() - div.conj_act(v_fake).mean()


def _make(div: FDivergence) -> AdversarialLoss:
    def d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
        # D maximises the lower bound on D_f(P_data || Q_G); minimise its negative
        return -variational_bound(div, d_real, d_fake)

    def g_loss(d_fake: Tensor) -> Tensor:
        # f-GAN's alternative generator objective: maximise E_Q[g_f(V(G(z)))]
        return -div.activation(d_fake).mean()

    return AdversarialLoss(
        f"fgan-{div.name}", d_loss, g_loss, div.name == "js",
        f"f-GAN {div.title}, Nowozin et al. 2016 Tables 1-2; the BIOS 740 GAN lecture f-divergence slides",
    )


for _d in DIVERGENCES.values():
    _register(_make(_d))
