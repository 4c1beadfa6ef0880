"""DBN: the deep belief network of Hinton, Osindero & Teh 2006, "A Fast Learning Algorithm for
Deep Belief Nets", trained greedily layer by layer (deck 003 "Deep belief networks"; seed 000 §2).

A DBN with L layers of hidden units h_1 .. h_L over binary visible units v = h_0 is a directed
sigmoid belief net from h_{L-1} down to v, p(h_{l-1} | h_l) = prod_i sigmoid(b_l + W_l^T h_l),
with an RBM (h_{L-1}, h_L) on top: p(v, h_1, .., h_{L-1}) = p_top(h_{L-1}) prod_{l<L}
p(h_{l-1} | h_l). Greedy training (Hinton et al. 2006 §4): RBM 1 (``rbm1``) is trained on the
data; it is then frozen and RBM 2 is trained on the hidden activities of RBM 1 driven by the
data (binary samples of p(h_1 | v), ``model.propagate=sample``, or the probabilities themselves,
``mean``), and so on; each added layer improves a variational lower bound on log p(v) when
initialised from the layer below (§4 of the paper). In gankit each layer is a phase of one run:
layer l trains during its own steps (``model.layer_steps``, a step count per layer except the
top one, which trains until the end; by default ``train.steps`` is split evenly, and the split
is written into the saved config so a resumed run keeps it) and is never stepped again after
its stage. Each RBM is the one of :mod:`gankit.models.rbm`: CD-k or PCD-k by a free-energy loss
stepped by the Trainer's SGD, the persistent chains and data sums registered buffers.

Defaults: two hidden layers of 500 units (the first two layers of the paper's 500-500-2000
MNIST network, whose top layer also saw the labels; gankit's DBN is unsupervised), CD-1,
minibatches of 100, SGD with lr 0.05, momentum 0.9 and weight cost 2e-4, as the RBM.

Sampling (Hinton et al. 2006 §5): ``steps`` sweeps of block Gibbs sampling in the top RBM,
started at the base rates of its training data, then one top-down pass through the directed
layers; the visible means p(v | h_1) are returned as images (``mean=False``: binary draws).

Log-likelihood. p(v) is intractable (the sum over every hidden layer's states). ``log_prob``
gives the variational lower bound of Salakhutdinov & Murray 2008 §5 with the recognition
distribution q(h_1..h_{L-1} | v) = prod_l p_l(h_l | h_{l-1}) of the up-pass:

    log p(v) >= E_q[ sum_{l<L} log p(h_{l-1} | h_l) + log p_top(h_{L-1})
                     - sum_{l<L} log q(h_l | h_{l-1}) ],   log p_top(h) = -F_L(h) - log Z_L,

with log Z_L of the top RBM by AIS (its cached estimate, as :class:`~gankit.models.rbm.RBM`;
exact when enumerable). ``k`` samples of q give the importance-weighted form
log (1/k) sum_j p(v, h^j) / q(h^j | v) (Burda et al. 2016), a tighter bound with the same
expectation argument (``k=1``: a one-sample estimate of the bound above). Everything is in nats
on the fixed binarisation of :mod:`gankit.likelihood`. Because log Z_L is itself an AIS
estimate, the number is an estimate of a lower bound; ``likelihood()`` says
``kind="lower-bound"``. A deep Boltzmann machine (Salakhutdinov & Hinton 2009) is not
implemented.
"""

from __future__ import annotations

import math
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
from .rbm import (
    AIS_RUNS,
    AIS_STEPS,
    EXACT_MAX_UNITS,
    AISResult,
    BernoulliRBM,
    LogZCache,
    bernoulli,
    check_sizes,
    exact_log_z,
    int_option,
    rbm_loss,
    refuse_gan_keys,
    weight_decay_groups,
)

__all__ = ["DBN"]

#: Rows (k samples x images) per chunk of the importance-weighted bound.
IW_CHUNK_ROWS = 8192


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log prod_i Bernoulli(x_i; sigmoid(logits_i)) over the last dimension, ``x`` in {0, 1}."""
    return (x * logits - F.softplus(logits)).sum(-1)


class DBNParams(Params):
    layers: tuple[int, ...] = (500, 500)  # hidden units per layer, bottom up
    method: Literal["cd", "pcd"] = "cd"
    k: int = 1  # Gibbs sweeps per negative sample of every layer
    chains: int | None = None  # PCD's fantasy particles per layer (None: train.batch_size)
    init_std: float = 0.01
    # training steps of each layer but the top one (None: train.steps split evenly)
    layer_steps: tuple[int, ...] | None = None
    propagate: Literal["sample", "mean"] = "sample"  # what a layer passes up as data


@MODELS.register("dbn", description="deep belief network by greedy layer-wise RBM training "
                                    "(Hinton, Osindero & Teh 2006); variational bound with AIS "
                                    "(Salakhutdinov & Murray 2008)")
class DBN(ModelFamily):
    """A deep belief network: RBMs ``rbm1`` .. ``rbmL``, one phase per layer in turn (module
    docstring); samples by Gibbs sampling in the top RBM and a top-down pass."""

    sampling_network: ClassVar[bool] = False  # Gibbs chains in the top RBM
    Params = DBNParams
    defaults: ClassVar[dict[str, Any]] = {
        "optim": {"name": "sgd", "lr": 0.05, "betas": (0.9, 0.999), "weight_decay": 2e-4},
        "train": {"batch_size": 100},
    }
    capabilities: ClassVar[frozenset[str]] = frozenset({"sample", "log_prob", "encode"})
    data_kinds: ClassVar[tuple[str, ...]] = ("images",)
    ema_networks: ClassVar[tuple[str, ...]] = ()
    adversarial: ClassVar[bool] = False
    tiny: ClassVar[dict[str, Any]] = {"model.layers": [10, 6], "model.layer_steps": [2],
                                      "model.method": "pcd"}
    tiny_data: ClassVar[str] = "images"

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        check_sizes(p.k, p.chains, p.init_std)
        if not p.layers or any(n < 1 for n in p.layers):
            raise ConfigError(f"model.layers must list one or more layer sizes >= 1, got "
                              f"{p.layers}.")
        L = len(p.layers)
        steps = p.layer_steps
        if steps is None:  # an even split, recorded in the saved config (resume keeps it)
            share = cfg.train.steps // L
            steps = [share] * (L - 1)
            cfg.model["layer_steps"] = steps
        if len(steps) != L - 1 or any(s < 1 for s in steps):
            raise ConfigError(f"model.layer_steps gives the training steps of each layer but the "
                              f"top one: {L - 1} integers >= 1 for {L} layers, got {steps}.")
        if sum(steps) >= cfg.train.steps:
            raise ConfigError(f"model.layer_steps {steps} leave no step for the top layer "
                              f"(train.steps = {cfg.train.steps}).")
        self.layer_steps = list(steps)
        sizes = [prod(self.sample_shape), *p.layers]
        chains = (p.chains or cfg.train.batch_size) if p.method == "pcd" else 0
        self.names = [f"rbm{i + 1}" for i in range(L)]
        for i, name in enumerate(self.names):
            setattr(self, name, BernoulliRBM(sizes[i], sizes[i + 1], chains, p.init_std))
        self._logz = LogZCache()

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        super().validate_config(cfg)
        refuse_gan_keys(cfg)

    # -- declarations -----------------------------------------------------------------------
    @property
    def rbms(self) -> list[BernoulliRBM]:
        return [getattr(self, n) for n in self.names]

    def networks(self) -> dict[str, nn.Module]:
        return {n: getattr(self, n) for n in self.names}

    def phases(self) -> list[Phase]:
        bounds = [0]
        for s in self.layer_steps:
            bounds.append(bounds[-1] + s)
        out = []
        for i, name in enumerate(self.names):
            stop = bounds[i + 1] if i + 1 < len(bounds) else None
            out.append(Phase(f"layer{i + 1}", name, self._layer_loss(i), start=bounds[i],
                             stop=stop))
        return out

    def param_groups(self, name: str, net: nn.Module) -> list[ParamGroup]:
        return weight_decay_groups(net)

    def _layer_loss(self, i: int) -> Any:
        def loss(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            """CD-k / PCD-k of layer i + 1 on the frozen layers' activities of a dynamically
            binarised batch."""
            v = dynamic_binarize(ctx.batch["x"], ctx.generator).flatten(1)
            with torch.no_grad():
                for name in self.names[:i]:
                    v = self.up(ctx.net(name), v, ctx.generator)
            loss, stats = rbm_loss(ctx.net(self.names[i]), v, self.p.method, self.p.k,
                                   ctx.generator)
            return loss, {f"{k}/{i + 1}" if k.startswith("rbm/") else k: s
                          for k, s in stats.items()}
        return loss

    def up(self, rbm: BernoulliRBM, v: Tensor, generator: torch.Generator | None) -> Tensor:
        """A layer's data for the one above: p(h | v), or a binary draw of it."""
        p = torch.sigmoid(rbm.hidden_logits(v))
        return bernoulli(p, generator) if self.p.propagate == "sample" else p

    # -- data -------------------------------------------------------------------------------
    def visible(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.sample_shape:
            shape = ", ".join(map(str, self.sample_shape))
            raise ConfigError(f"x must have shape [N, {shape}] like the training data, got "
                              f"{list(x.shape)}.")
        return fixed_binarize(x.to(self.device)).flatten(1)

    def likelihood(self) -> dict[str, str]:
        """Of the fixed binarisation; a variational lower bound (top log Z by AIS)."""
        return {"space": "binary", "kind": "lower-bound"}

    # -- the top RBM's partition function ---------------------------------------------------
    def top_log_z(self, steps: int = AIS_STEPS, runs: int = AIS_RUNS, seed: int = 0,
                  exact: bool | None = None) -> float:
        """log Z of the top RBM: exact when a layer of it has at most EXACT_MAX_UNITS units
        (or ``exact=True``), else the AIS estimate from its data's base rates (cached)."""
        top = self.rbms[-1]
        enumerable = min(top.visible, top.hidden) <= EXACT_MAX_UNITS
        if (enumerable if exact is None else exact):
            return exact_log_z(top)
        return self.top_log_partition(steps, runs, seed).log_z

    def top_log_partition(self, steps: int = AIS_STEPS, runs: int = AIS_RUNS, seed: int = 0
                          ) -> AISResult:
        """The AIS estimate of the top RBM's log Z with its standard error (cached)."""
        steps, runs = int_option("steps", steps, 3), int_option("runs", runs, 2)
        return self._logz.get(self.rbms[-1], steps, runs, int(seed))

    # -- capabilities -----------------------------------------------------------------------
    def log_weights(self, v: Tensor, k: int, log_z: float, generator: torch.Generator | None
                    ) -> Tensor:
        """log p(v, h) - log q(h | v) for ``k`` up-pass samples h of each ``v [N, D]``,
        ``[k, N]``."""
        n = len(v)
        x = v.unsqueeze(0).expand(k, *v.shape).flatten(0, 1)  # [k N, D]
        lw = torch.zeros(len(x), dtype=torch.float64, device=v.device)
        for rbm in self.rbms[:-1]:
            logits = rbm.hidden_logits(x)
            h = bernoulli(torch.sigmoid(logits), generator)
            lw -= bernoulli_log_prob(h, logits).double()  # log q(h_l | h_{l-1})
            lw += bernoulli_log_prob(x, rbm.visible_logits(h)).double()  # log p(h_{l-1} | h_l)
            x = h
        lw += -self.rbms[-1].free_energy(x).double() - log_z  # log p_top(h_{L-1})
        return lw.view(k, n)

    def log_prob(self, x: Tensor, *, generator: torch.Generator | None = None, k: int = 1,
                 steps: int = AIS_STEPS, runs: int = AIS_RUNS, ais_seed: int = 0,
                 exact: bool | None = None, **options: Any) -> Tensor:
        """The variational lower bound on log p(v) ``[N]`` in nats of the fixed binarisation v
        of ``x`` (module docstring): ``k`` up-pass samples from ``generator`` (k = 1: the
        bound's one-sample estimate; k > 1: the importance-weighted bound), log Z of the top
        RBM by AIS (``steps``, ``runs``, ``ais_seed``) or exactly (``exact``)."""
        if options:
            raise ConfigError(f"model '{self.name}' has no log_prob option(s) "
                              f"{', '.join(sorted(options))} (it takes k, steps, runs, ais_seed, "
                              f"exact).")
        k = int_option("k", k, 1)
        v = self.visible(x)
        log_z = self.top_log_z(steps, runs, ais_seed, exact)
        with torch.no_grad():
            total = torch.full((len(v),), -math.inf, dtype=torch.float64, device=v.device)
            chunk = max(1, IW_CHUNK_ROWS // len(v))
            for j in range(0, k, chunk):
                lw = self.log_weights(v, min(chunk, k - j), log_z, generator)
                total = torch.logaddexp(total, torch.logsumexp(lw, 0))
        return (total - math.log(k)).to(v.dtype)

    def sample(self, n: int, *, generator: torch.Generator | None = None, cond: Any = None,
               steps: int = 200, mean: bool = True, **options: Any) -> Tensor:
        """``n`` images in [-1, 1]: ``steps`` Gibbs sweeps in the top RBM from its data's base
        rates, then a top-down pass (visible means; ``mean=False``: binary draws)."""
        if options:
            raise ConfigError(f"model '{self.name}' has no sampling option(s) "
                              f"{', '.join(sorted(options))} (it takes steps, mean).")
        steps = int_option("steps", steps, 1)
        top = self.rbms[-1]
        with torch.no_grad():
            h = bernoulli(torch.sigmoid(top.base_logits()).expand(n, top.visible), generator)
            h = top.gibbs(h, steps - 1, generator)
            m = torch.sigmoid(top.visible_logits(top.sample_h(h, generator)))  # the last sweep
            h = bernoulli(m, generator)
            for rbm in reversed(self.rbms[:-1]):
                m = torch.sigmoid(rbm.visible_logits(h))
                h = bernoulli(m, generator)
        out = m if mean else h
        return (out * 2 - 1).view(n, *self.sample_shape)

    def encode(self, x: Tensor, *, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """The top layer's features ``[N, layers[-1]]``: the mean-field up-pass of the fixed
        binarisation of ``x`` (each layer's conditional means fed to the next)."""
        if options:
            raise ConfigError(f"model '{self.name}' has no encode option(s) "
                              f"{', '.join(sorted(options))}.")
        h = self.visible(x)
        with torch.no_grad():
            for rbm in self.rbms:
                h = torch.sigmoid(rbm.hidden_logits(h))
        return h
