"""RBM: the Bernoulli-Bernoulli restricted Boltzmann machine, trained by contrastive divergence
(Hinton 2002, "Training Products of Experts by Minimizing Contrastive Divergence") or persistent
contrastive divergence (Tieleman 2008, "Training Restricted Boltzmann Machines using
Approximations to the Likelihood Gradient"), its log-likelihood estimated by annealed importance
sampling (Salakhutdinov & Murray 2008, "On the Quantitative Analysis of Deep Belief Networks";
deck 003 "Boltzmann machines", seed 000 §2 energy-based models).

The model. Binary visible units v in {0, 1}^D (the image's pixels) and hidden units
h in {0, 1}^H with the energy E(v, h) = -b.v - c.h - v^T W^T h (``W`` [H, D], visible bias
``b``, hidden bias ``c``) and p(v, h) = exp(-E(v, h)) / Z. The hidden units are conditionally
independent given v and vice versa:

    p(h_j = 1 | v) = sigmoid(c_j + W_j . v),     p(v_i = 1 | h) = sigmoid(b_i + W^T_i . h),

and summing h out gives the free energy F(v) = -b.v - sum_j softplus(c_j + W_j . v), with
p(v) = exp(-F(v)) / Z.

Training. The log-likelihood gradient is d log p(v)/d theta = -dF(v)/d theta + E_model[dF/d theta]
(for W: <v h^T>_data - <v h^T>_model, h replaced by its conditional mean). One "grad" phase
minimises the free-energy difference

    loss = mean F(v_data) - mean F(v_neg),   v_neg detached,

whose gradient is exactly the CD/PCD update with the sign flipped, so the Trainer's optimizer
(SGD with momentum, weight decay on W only) steps it like any other loss. The negatives are
k steps of block Gibbs sampling (``model.k``) started at the data (CD-k, Hinton 2002) or at a
persistent chain carried from one update to the next (PCD-k, Tieleman 2008, ``model.method=pcd``;
``model.chains`` fantasy particles, default one per batch example). The chain is a registered
buffer of the network, so it is checkpointed and a resumed run continues it bit for bit.
Training images are dynamically binarised (a fresh Bernoulli((x + 1) / 2) draw per step);
the per-pixel sums of the binarised training data are accumulated in buffers to give the
base-rate model of AIS and the starting distribution of the samplers.

Defaults: 500 hidden units (the MNIST RBM of Salakhutdinov & Murray 2008, which reports
-86.34 nats with CD-25 on the full binarised MNIST), CD-1, minibatches of 100, weights from
N(0, 0.01^2) and zero biases, SGD with lr 0.05, momentum 0.9 and weight cost 2e-4 on W only,
within the ranges of Hinton's "A Practical Guide to Training Restricted Boltzmann Machines"
(2010, §§5, 8-10; the Guide starts the momentum at 0.5). Measured on MNIST-5k (500 units,
2,000 updates): PCD-1 at lr 0.05 reached about -99 nats by a short AIS, at lr 0.01 -178.

Log-likelihood. ``log_prob(x) = -F(v) - log Z`` of the fixed binarisation v of x
(:func:`gankit.likelihood.fixed_binarize`), with log Z estimated by annealed importance sampling
(Neal 2001; Salakhutdinov & Murray 2008 §3-4): ``runs`` independent runs (M = 100) from the
base-rate model p_A (no weights, visible biases the logits of the training data's pixel means,
Z_A in closed form) through the intermediate distributions

    f_k(v) = exp((1 - beta_k) b_A.v + beta_k b.v) prod_j (1 + exp(beta_k (c_j + W_j . v))),

beta_0 = 0 < beta_1 < ... < beta_K = 1 (K = 14,500 by default: 500 uniform steps on [0, 0.5],
4,000 on [0.5, 0.9] and 10,000 on [0.9, 1], the paper's schedule; other K keep the proportions),
each followed by one Gibbs sweep that leaves f_k invariant. Z_B / Z_A is the mean importance
weight; its standard error is given by the delta method (sd(w) / (sqrt(M) mean(w)) nats) with
the paper's log(Z_hat +- 3 sigma_hat) interval. AIS tends to *over*-estimate log p when the run
is too short (it under-estimates Z), so the estimate is stochastic: ``likelihood()`` says
``kind="estimate"``. The estimate is cached per weights and options, and it uses its own seed
(``ais_seed``), so it does not depend on how the test set is batched. Small models (at most
:data:`EXACT_MAX_UNITS` units in one layer) have the exact log Z (:meth:`RBM.exact_log_z`):
the smaller layer is enumerated and the other summed out analytically; ``log_prob`` then uses
it by default (``exact=False`` forces AIS) and ``likelihood()`` says ``kind="exact"``.

Pseudo-likelihood and scikit-learn. scikit-learn's ``BernoulliRBM.score_samples`` returns a
*pseudo*-likelihood, not a likelihood: for each sample it flips ONE pixel i, drawn uniformly
from ``check_random_state(random_state)`` (with an integer random_state, the same indices at
every call: ``RandomState(seed).randint(0, D, N)``), and returns
D * log sigmoid(F(v with v_i flipped) - F(v)) = D * log p(v_i | v_-i), an unbiased one-term
estimate of the full pseudo-log-likelihood sum_i log p(v_i | v_-i) (Besag 1975).
:meth:`BernoulliRBM.pseudo_log_likelihood` computes both: the full sum, or scikit-learn's
estimate for given indices, equal to scikit-learn's on identical weights.

Sampling. ``sample(n, steps=K)`` runs n chains of K block Gibbs sweeps (default 200: enough to
leave the start on a trained 500-unit MNIST RBM at an affordable cost for ``gankit eval``'s 5,000
samples; raise it for the long chains of the paper) from the base-rate model, and returns the
last visible conditional means p(v | h) as images in [-1, 1] (``mean=False``: binary draws).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..games.phase import Phase, StepContext
from ..likelihood import dynamic_binarize, fixed_binarize
from ..nn import prod
from ..registry import MODELS
from .base import ModelFamily, ParamGroup, Params
from .base import refuse_gan_keys as base_refuse_gan_keys

__all__ = ["AIS_RUNS", "AIS_STEPS", "EXACT_MAX_UNITS", "RBM", "AISResult", "BernoulliRBM",
           "ais_betas", "annealed_importance_sampling", "check_sizes", "refuse_gan_keys"]

#: The AIS schedule of Salakhutdinov & Murray 2008: 14,500 intermediate distributions, 100 runs.
AIS_STEPS = 14_500
AIS_RUNS = 100
#: Exact enumeration of log Z: the smaller layer has at most this many units (2^20 states).
EXACT_MAX_UNITS = 20
#: States of the enumerated layer per chunk (memory: chunk x other-layer floats).
_ENUM_CHUNK = 4096


# --- the network --------------------------------------------------------------------------------
def bernoulli(p: Tensor, generator: torch.Generator | None) -> Tensor:
    """Binary draws ``u < p`` with ``u ~ U[0, 1)`` from ``generator`` (3x faster on the CPU than
    ``torch.bernoulli``, which the Gibbs chains call thousands of times)."""
    return (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).to(p.dtype)


class BernoulliRBM(nn.Module):
    """A Bernoulli-Bernoulli RBM: weights ``W [H, D]``, visible bias ``b [D]``, hidden bias
    ``c [H]``; buffers: the persistent Gibbs chain ``chain [P, D]`` (PCD) and the per-unit sums
    ``data_sum [D]`` / count ``data_count`` of the binary training data seen (float64).

    Visible inputs are ``[N, D]`` in {0, 1} (or probabilities for a free energy of means)."""

    def __init__(self, visible: int, hidden: int, chains: int = 0, init_std: float = 0.01
                 ) -> None:
        super().__init__()
        self.visible, self.hidden = int(visible), int(hidden)
        self.W = nn.Parameter(torch.randn(hidden, visible) * init_std)
        self.b = nn.Parameter(torch.zeros(visible))
        self.c = nn.Parameter(torch.zeros(hidden))
        # the fantasy particles of PCD start as fair coin flips (the model's own distribution at
        # initialisation is close to uniform: small weights, zero biases)
        self.register_buffer("chain", torch.bernoulli(torch.full((chains, visible), 0.5)))
        self.register_buffer("data_sum", torch.zeros(visible, dtype=torch.float64))
        self.register_buffer("data_count", torch.zeros((), dtype=torch.float64))

    # -- conditionals and energies ----------------------------------------------------------
    def hidden_logits(self, v: Tensor) -> Tensor:
        """c + W v, ``[N, H]``."""
        return F.linear(v, self.W, self.c)

    def visible_logits(self, h: Tensor) -> Tensor:
        """b + W^T h, ``[N, D]``."""
        return F.linear(h, self.W.t(), self.b)

    def free_energy(self, v: Tensor) -> Tensor:
        """F(v) = -b.v - sum_j softplus(c_j + W_j . v), ``[N]``: p(v) = exp(-F(v)) / Z."""
        return -(v @ self.b) - F.softplus(self.hidden_logits(v)).sum(-1)

    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """E(v, h) = -b.v - c.h - h^T W v, ``[N]``."""
        return -(v @ self.b) - (h @ self.c) - (F.linear(v, self.W) * h).sum(-1)

    def sample_h(self, v: Tensor, generator: torch.Generator | None) -> Tensor:
        return bernoulli(torch.sigmoid(self.hidden_logits(v)), generator)

    def sample_v(self, h: Tensor, generator: torch.Generator | None) -> Tensor:
        return bernoulli(torch.sigmoid(self.visible_logits(h)), generator)

    def gibbs(self, v: Tensor, steps: int, generator: torch.Generator | None) -> Tensor:
        """``steps`` block Gibbs sweeps v -> h ~ p(h|v) -> v ~ p(v|h); binary ``[N, D]``."""
        for _ in range(steps):
            v = self.sample_v(self.sample_h(v, generator), generator)
        return v

    # -- the training data's marginals ------------------------------------------------------
    @torch.no_grad()
    def observe(self, v: Tensor) -> None:
        """Add a batch of training data ``[N, D]`` to the per-unit sums."""
        self.data_sum.add_(v.detach().sum(0).to(torch.float64))
        self.data_count.add_(len(v))

    def base_logits(self) -> Tensor:
        """Logits ``[D]`` of the smoothed per-unit means of the training data seen,
        (sum + 1) / (count + 2) (zeros before any data): the visible biases of the base-rate
        model of AIS (Salakhutdinov & Murray 2008 §4.1) and the start of the samplers."""
        p = (self.data_sum + 1) / (self.data_count + 2)
        return torch.logit(p).to(self.W.dtype)

    # -- pseudo-likelihood ------------------------------------------------------------------
    @torch.no_grad()
    def flipped_free_energies(self, v: Tensor) -> Tensor:
        """F(v with unit i flipped) for every i, ``[N, D]``: flipping v_i adds
        s_i = 1 - 2 v_i to it, so b.v gains s_i b_i and the hidden logits gain s_i W[:, i]."""
        s = 1 - 2 * v  # [N, D]
        x = self.hidden_logits(v)  # [N, H]
        out = []
        for i in range(0, len(v), 16):  # [16, D, H] at a time
            xi = x[i:i + 16, None, :] + s[i:i + 16, :, None] * self.W.t()[None]
            out.append(-(v[i:i + 16] @ self.b)[:, None] - s[i:i + 16] * self.b
                       - F.softplus(xi).sum(-1))
        return torch.cat(out)

    @torch.no_grad()
    def pseudo_log_likelihood(self, v: Tensor, index: Tensor | None = None) -> Tensor:
        """The pseudo-log-likelihood ``[N]`` of binary ``v [N, D]`` (Besag 1975):
        sum_i log p(v_i | v_-i) with p(v_i | v_-i) = sigmoid(F(v^(i)) - F(v)) (v^(i): unit i
        flipped). With ``index [N]``: scikit-learn's one-term estimate
        D * log p(v_index | v_-index) (``BernoulliRBM.score_samples``, whose expectation over a
        uniform index is the full sum)."""
        f = self.free_energy(v)
        if index is None:
            return F.logsigmoid(self.flipped_free_energies(v) - f[:, None]).sum(-1)
        rows = torch.arange(len(v), device=v.device)
        flipped = v.clone()
        flipped[rows, index] = 1 - flipped[rows, index]
        return v.shape[1] * F.logsigmoid(self.free_energy(flipped) - f)


# --- the partition function ---------------------------------------------------------------------
def _states(n: int, start: int, stop: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Binary states ``start..stop-1`` of ``n`` units as rows ``[stop - start, n]``."""
    idx = torch.arange(start, stop, device=device)
    return ((idx[:, None] >> torch.arange(n, device=device)) & 1).to(dtype)


@torch.no_grad()
def exact_log_z(rbm: BernoulliRBM) -> float:
    """log Z by enumerating the smaller layer (at most :data:`EXACT_MAX_UNITS` units) and summing
    the other out analytically, in float64: over h, log Z = logsumexp_h [c.h + sum_i
    softplus(b_i + W^T_i h)]; over v, logsumexp_v [-F(v)]."""
    W, b, c = (t.detach().to(torch.float64) for t in (rbm.W, rbm.b, rbm.c))
    H, D = W.shape
    n = min(H, D)
    if n > EXACT_MAX_UNITS:
        raise ConfigError(f"exact log Z enumerates 2^{n} states; it needs a layer of at most "
                          f"{EXACT_MAX_UNITS} units (use AIS: exact=False).")
    parts = []
    for s in range(0, 2 ** n, _ENUM_CHUNK):
        st = _states(n, s, min(2 ** n, s + _ENUM_CHUNK), W.device, torch.float64)
        if H <= D:  # st are hidden states
            parts.append(st @ c + F.softplus(st @ W + b).sum(-1))
        else:  # st are visible states
            parts.append(st @ b + F.softplus(st @ W.t() + c).sum(-1))
    return float(torch.logsumexp(torch.cat(parts), 0))


def ais_betas(steps: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The K + 1 inverse temperatures 0 = beta_0 < ... < beta_K = 1 of Salakhutdinov & Murray
    2008: uniform spacing on [0, 0.5], [0.5, 0.9] and [0.9, 1] with 500, 4,000 and 10,000 steps
    for K = 14,500; other K keep these proportions (at least one step per segment)."""
    if steps < 3:
        raise ConfigError(f"AIS needs at least 3 intermediate distributions, got steps={steps}.")
    n1 = max(1, round(steps * 500 / 14_500))
    n2 = max(1, round(steps * 4000 / 14_500))
    n3 = steps - n1 - n2
    return torch.cat([torch.linspace(0.0, 0.5, n1 + 1, dtype=dtype)[:-1],
                      torch.linspace(0.5, 0.9, n2 + 1, dtype=dtype)[:-1],
                      torch.linspace(0.9, 1.0, n3 + 1, dtype=dtype)])


@dataclass(frozen=True)
class AISResult:
    """An AIS estimate of log Z: the estimate, its standard error (delta method), the paper's
    log(Z_hat - 3 sigma_hat) and log(Z_hat + 3 sigma_hat) (``-inf`` when the first is <= 0),
    the log partition function of the base-rate model, and the runs' log importance weights."""

    log_z: float
    se: float
    log_z_lo: float
    log_z_hi: float
    log_z_base: float
    log_weights: Tensor
    steps: int
    runs: int


@torch.no_grad()
def annealed_importance_sampling(rbm: BernoulliRBM, steps: int = AIS_STEPS, runs: int = AIS_RUNS,
                                 generator: torch.Generator | None = None,
                                 base_logits: Tensor | None = None) -> AISResult:
    """Estimate log Z of ``rbm`` by AIS from a base-rate model (Salakhutdinov & Murray 2008,
    Algorithm 2; see the module docstring).

    v_0 ~ p_A exactly; for k = 1..K: log w += log f_k(v_{k-1}) - log f_{k-1}(v_{k-1}), then
    v_k ~ T_k(v_{k-1}) by one Gibbs sweep at beta_k: h ~ sigmoid(beta_k (c + W v)),
    v ~ sigmoid((1 - beta_k) b_A + beta_k (b + W^T h)). Z_A = 2^H prod_i (1 + exp(b_A_i)).
    The hidden logits are computed once per step in the model's dtype and the weight increments
    accumulated in float64 (the same logits enter f_k and f_{k-1}, so the weights stay those of
    an exact AIS run of the model at that precision).
    """
    if isinstance(runs, bool) or int(runs) != runs or runs < 2:
        raise ConfigError(f"AIS needs at least 2 runs, got runs={runs!r}.")
    if isinstance(steps, bool) or int(steps) != steps:
        raise ConfigError(f"AIS steps must be an integer, got {steps!r}.")
    runs, steps = int(runs), int(steps)
    W, b, c = rbm.W, rbm.b, rbm.c
    H, D = W.shape
    bA = base_logits if base_logits is not None else rbm.base_logits()
    bA = bA.to(W.device, W.dtype)
    betas = ais_betas(steps).tolist()
    log_z_base = H * math.log(2.0) + float(F.softplus(bA.double()).sum())
    db = (b - bA).double()  # the visible term of log f_beta is b_A.v + beta (b - b_A).v
    v = bernoulli(torch.sigmoid(bA).expand(runs, D), generator)
    lw = torch.zeros(runs, dtype=torch.float64, device=W.device)
    for k in range(1, steps + 1):
        x = F.linear(v, W, c)  # [M, H] hidden logits at v_{k-1}
        xd = x.double()
        b1, b0 = betas[k], betas[k - 1]
        lw += (b1 - b0) * (v.double() @ db) + (F.softplus(b1 * xd) - F.softplus(b0 * xd)).sum(-1)
        if k < steps:  # the last transition would not change the weights
            h = bernoulli(torch.sigmoid(b1 * x), generator)
            v = bernoulli(torch.sigmoid((1 - b1) * bA + b1 * F.linear(h, W.t(), b)), generator)
    log_mean_w = float(torch.logsumexp(lw, 0)) - math.log(runs)
    w = torch.exp(lw - lw.max())
    ratio = float(w.std() / (math.sqrt(runs) * w.mean()))  # sd(Z_hat) / Z_hat
    log_z = log_z_base + log_mean_w
    lo = log_z + math.log(1 - 3 * ratio) if 3 * ratio < 1 else -math.inf
    return AISResult(log_z, ratio, lo, log_z + math.log(1 + 3 * ratio), log_z_base, lw.cpu(),
                     steps, runs)


# --- shared config checks (the DBN uses them too) ----------------------------------------------
def refuse_gan_keys(cfg: Any) -> None:
    """:func:`gankit.models.base.refuse_gan_keys` with the RBM's optimizer named (SGD)."""
    base_refuse_gan_keys(cfg, "optim.lr, optim.betas[0] = the momentum of SGD")


def check_sizes(k: int, chains: int | None, init_std: float) -> None:
    if k < 1:
        raise ConfigError(f"model.k (Gibbs steps per negative sample) must be >= 1, got {k}.")
    if chains is not None and chains < 1:
        raise ConfigError(f"model.chains (PCD's persistent chains) must be >= 1, got {chains}.")
    if not init_std >= 0:
        raise ConfigError(f"model.init_std must be >= 0, got {init_std}.")


def int_option(name: str, value: Any, low: int) -> int:
    """A sampling/evaluation option that must be an integer >= ``low`` (one-line error)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value \
            or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def rbm_loss(rbm: BernoulliRBM, v: Tensor, method: str, k: int,
             generator: torch.Generator | None) -> tuple[Tensor, dict[str, Tensor]]:
    """The CD-k / PCD-k loss of ``rbm`` on binary data ``v [N, D]``: mean F(v) - mean F(v_neg)
    with the negatives detached (its gradient is minus the CD/PCD update), and statistics:
    the free-energy gap, the mean-field reconstruction error (Hinton 2010 §5) and the
    negatives' mean activity. Updates the data sums and, for PCD, the persistent chain."""
    with torch.no_grad():
        rbm.observe(v)
        if method == "pcd":
            neg = rbm.gibbs(rbm.chain, k, generator)
            rbm.chain.copy_(neg)
        else:
            neg = rbm.gibbs(v, k, generator)
    loss = rbm.free_energy(v).mean() - rbm.free_energy(neg).mean()
    with torch.no_grad():
        recon = torch.sigmoid(rbm.visible_logits(torch.sigmoid(rbm.hidden_logits(v))))
        err = (recon - v).pow(2).sum(-1).mean()
    return loss, {"loss/cd": loss.detach(), "rbm/recon": err, "rbm/neg_mean": neg.mean()}


def weight_decay_groups(net: nn.Module) -> list[ParamGroup]:
    """Weight cost on the weights only, not on the biases (Hinton 2010 §10)."""
    w = [p for n, p in net.named_parameters() if p.requires_grad and n.endswith("W")]
    rest = [p for n, p in net.named_parameters() if p.requires_grad and not n.endswith("W")]
    return [ParamGroup(w, name="W"), ParamGroup(rest, weight_decay=0.0, name="biases")]


class LogZCache:
    """AIS estimates of log Z keyed by the weights' bytes and the options, so evaluating a test
    set in batches runs AIS once (and a changed model never reuses a stale estimate)."""

    def __init__(self) -> None:
        self.items: dict[tuple[Any, ...], AISResult] = {}

    @staticmethod
    def key(rbm: BernoulliRBM, *extra: Any) -> tuple[Any, ...]:
        h = hashlib.sha1()
        for t in (rbm.W, rbm.b, rbm.c, rbm.data_sum, rbm.data_count):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return (h.hexdigest(), *extra)

    def get(self, rbm: BernoulliRBM, steps: int, runs: int, seed: int) -> AISResult:
        key = self.key(rbm, steps, runs, seed)
        if key not in self.items:
            g = torch.Generator(rbm.W.device).manual_seed(seed)
            self.items = {key: annealed_importance_sampling(rbm, steps, runs, g)}
        return self.items[key]


# --- the family ---------------------------------------------------------------------------------
class RBMParams(Params):
    hidden: int = 500  # Salakhutdinov & Murray 2008's MNIST RBM
    method: Literal["cd", "pcd"] = "cd"  # contrastive divergence / persistent CD
    k: int = 1  # Gibbs sweeps per negative sample: CD-1 (Hinton 2002); the paper's CD-25 is k=25
    chains: int | None = None  # PCD's fantasy particles (None: train.batch_size)
    init_std: float = 0.01  # W ~ N(0, 0.01^2) (Hinton 2010 §8)


@MODELS.register("rbm", description="restricted Boltzmann machine (Hinton 2002 CD-k; Tieleman "
                                    "2008 PCD); Gibbs sampling, AIS log-likelihood "
                                    "(Salakhutdinov & Murray 2008)")
class RBM(ModelFamily):
    """A Bernoulli-Bernoulli RBM on binarised images: network ``rbm``, one ``CD`` phase
    (CD-k or PCD-k); samples by Gibbs sampling, log-likelihood by AIS (module docstring)."""

    sampling_network: ClassVar[bool] = False  # Gibbs chains
    Params = RBMParams
    defaults: ClassVar[dict[str, Any]] = {
        # SGD with momentum and weight cost (Hinton 2010 §§5, 9, 10); momentum = betas[0]
        "optim": {"name": "sgd", "lr": 0.05, "betas": (0.9, 0.999), "weight_decay": 2e-4},
        "train": {"batch_size": 100},
    }
    capabilities: ClassVar[frozenset[str]] = frozenset({"sample", "log_prob", "encode", "decode"})
    data_kinds: ClassVar[tuple[str, ...]] = ("images",)
    # No EMA: the negatives (PCD's chain above all) belong to the current weights.
    ema_networks: ClassVar[tuple[str, ...]] = ()
    adversarial: ClassVar[bool] = False
    tiny: ClassVar[dict[str, Any]] = {"model.hidden": 12, "model.method": "pcd", "model.k": 2}
    tiny_data: ClassVar[str] = "images"

    rbm: BernoulliRBM

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        check_sizes(p.k, p.chains, p.init_std)
        chains = (p.chains or cfg.train.batch_size) if p.method == "pcd" else 0
        self.rbm = BernoulliRBM(prod(self.sample_shape), p.hidden, chains, p.init_std)
        self._logz = LogZCache()

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        super().validate_config(cfg)
        refuse_gan_keys(cfg)

    # -- declarations -----------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"rbm": self.rbm}

    def phases(self) -> list[Phase]:
        return [Phase("CD", "rbm", self.cd_loss)]

    def param_groups(self, name: str, net: nn.Module) -> list[ParamGroup]:
        return weight_decay_groups(net)

    def cd_loss(self, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        """CD-k / PCD-k on a dynamically binarised batch (:func:`rbm_loss`)."""
        v = dynamic_binarize(ctx.batch["x"], ctx.generator).flatten(1)
        return rbm_loss(ctx.net("rbm"), v, self.p.method, self.p.k, ctx.generator)

    # -- data -------------------------------------------------------------------------------
    def visible(self, x: Tensor) -> Tensor:
        """Images ``x`` in [-1, 1] -> their fixed binarisation as visible vectors ``[N, D]``."""
        if tuple(x.shape[1:]) != self.sample_shape:
            shape = ", ".join(map(str, self.sample_shape))
            raise ConfigError(f"x must have shape [N, {shape}] like the training data, got "
                              f"{list(x.shape)}.")
        return fixed_binarize(x.to(self.device)).flatten(1)

    def enumerable(self) -> bool:
        """Whether log Z can be computed exactly (a layer of at most EXACT_MAX_UNITS units)."""
        return min(self.rbm.visible, self.rbm.hidden) <= EXACT_MAX_UNITS

    def likelihood(self) -> dict[str, str]:
        """Of the fixed binarisation; exact when log Z can be enumerated, else an AIS estimate."""
        return {"space": "binary", "kind": "exact" if self.enumerable() else "estimate"}

    # -- the partition function -------------------------------------------------------------
    def log_partition(self, steps: int = AIS_STEPS, runs: int = AIS_RUNS, seed: int = 0
                      ) -> AISResult:
        """The AIS estimate of log Z (cached per weights and options)."""
        steps = int_option("steps", steps, 3)
        runs = int_option("runs", runs, 2)
        return self._logz.get(self.rbm, steps, runs, int(seed))

    def exact_log_z(self) -> float:
        """log Z by enumeration (a layer of at most :data:`EXACT_MAX_UNITS` units)."""
        return exact_log_z(self.rbm)

    # -- capabilities -----------------------------------------------------------------------
    def log_prob(self, x: Tensor, *, generator: torch.Generator | None = None,
                 steps: int = AIS_STEPS, runs: int = AIS_RUNS, ais_seed: int = 0,
                 exact: bool | None = None, **options: Any) -> Tensor:
        """log p(v) = -F(v) - log Z in nats ``[N]`` of the fixed binarisation v of ``x``, with
        log Z by AIS (``steps`` intermediate distributions, ``runs`` runs, its own
        ``ais_seed``) or by enumeration (``exact=True``; by default when a layer has at most
        :data:`EXACT_MAX_UNITS` units, as :meth:`likelihood` declares). ``generator`` is not
        used: the estimate must not depend on the batching of x."""
        if options:
            raise ConfigError(f"model '{self.name}' has no log_prob option(s) "
                              f"{', '.join(sorted(options))} (it takes steps, runs, ais_seed, "
                              f"exact).")
        v = self.visible(x)
        use_exact = self.enumerable() if exact is None else bool(exact)
        log_z = (self.exact_log_z() if use_exact
                 else self.log_partition(steps, runs, ais_seed).log_z)
        with torch.no_grad():
            return -self.rbm.free_energy(v) - log_z

    def gibbs_chain(self, n: int, steps: int, generator: torch.Generator | None
                    ) -> tuple[Tensor, Tensor]:
        """``n`` chains of ``steps`` sweeps from the base-rate model; (last binary v, last
        visible means p(v | h)), each ``[n, D]``."""
        rbm = self.rbm
        with torch.no_grad():
            v = bernoulli(torch.sigmoid(rbm.base_logits()).expand(n, rbm.visible), generator)
            mean = v
            for _ in range(steps):
                mean = torch.sigmoid(rbm.visible_logits(rbm.sample_h(v, generator)))
                v = bernoulli(mean, generator)
        return v, mean

    def sample(self, n: int, *, generator: torch.Generator | None = None, cond: Any = None,
               steps: int = 200, mean: bool = True, **options: Any) -> Tensor:
        """``n`` images in [-1, 1] from ``steps`` Gibbs sweeps started at the base-rate model:
        the last visible means (``mean=False``: the last binary state)."""
        if options:
            raise ConfigError(f"model '{self.name}' has no sampling option(s) "
                              f"{', '.join(sorted(options))} (it takes steps, mean).")
        steps = int_option("steps", steps, 1)
        v, m = self.gibbs_chain(n, steps, generator)
        out = m if mean else v
        return (out * 2 - 1).view(n, *self.sample_shape)

    def encode(self, x: Tensor, *, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """The hidden units' conditional means p(h = 1 | v) ``[N, H]`` of the fixed
        binarisation of ``x``."""
        if options:
            raise ConfigError(f"model '{self.name}' has no encode option(s) "
                              f"{', '.join(sorted(options))}.")
        with torch.no_grad():
            return torch.sigmoid(self.rbm.hidden_logits(self.visible(x)))

    def decode(self, z: Tensor, *, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """Hidden states (or means) ``z [N, H]`` -> the visible means p(v = 1 | h) as images in
        [-1, 1]."""
        if options:
            raise ConfigError(f"model '{self.name}' has no decode option(s) "
                              f"{', '.join(sorted(options))}.")
        if z.dim() != 2 or z.shape[1] != self.rbm.hidden:
            raise ConfigError(f"codes must have shape [N, {self.rbm.hidden}], got "
                              f"{list(z.shape)}.")
        with torch.no_grad():
            m = torch.sigmoid(self.rbm.visible_logits(z.to(self.device, self.rbm.W.dtype)))
        return (m * 2 - 1).view(len(z), *self.sample_shape)
