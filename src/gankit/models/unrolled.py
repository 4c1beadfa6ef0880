"""Unrolled GAN (Metz, Poole, Pfau & Sohl-Dickstein 2017, ICLR; arXiv:1611.02163).

Seed context: deck 003 "Techniques to Mitigate Mode Collapse" (4. Unrolled GANs: "allows the
generator to anticipate discriminator updates, preventing it from getting stuck in mode
collapse"); seed 000 §3.5 (mode dropping and mode collapse).

The generator's loss is evaluated against a *surrogate* discriminator: a copy of D advanced K
optimisation steps on the current batch (paper §2)::

    theta_D^0 = theta_D,   theta_D^{k+1} = theta_D^k - eta * step(d/dtheta_D^k L_D(theta_G, theta_D^k))
    L_G^K(theta_G) = g_loss(D(G(z); theta_D^K))

Backpropagating through the K updates (``model.unroll_backprop=true``, the paper's method)
adds the term ``dL/dtheta_D^K * dtheta_D^K/dtheta_G``, through which G sees how D would react
to it: a generator that piles onto one mode is penalised because D would quickly move away from
that mode. ``unroll_backprop=false`` is the cheaper variant that treats ``theta_D^K`` as a
constant (only D's "look-ahead" values, no second-order term). K = 0 is the plain GAN.

Implementation: the unrolling is functional (``torch.func.functional_call`` on a dictionary of
D's parameters), so the real D is never modified: the unrolled copies are dropped after the G
loss, and the real D is only updated by the normal D phase through the Trainer's optimizer.
The update rule is ``model.unroll_optimizer``: ``adam`` (default) takes exactly the steps the
real D's Adam would take, warm-started from that optimizer's moments and step count and using
its lr, betas, eps and weight decay, as the reference implementation does (it unrolls the D
optimizer's own update ops); ``sgd`` takes plain gradient steps. ``model.unroll_lr`` overrides
the rate. Each unrolled step uses the real batch and the fake batch of the last D step (the
reference code uses the same batch for D's update and the unrolled surrogate). Buffers (batch
norm running statistics) are passed to ``functional_call`` as clones, so the unrolled steps use
batch statistics like the real D step but never touch the real D's running averages.
Penalties (``loss.gp``) and clipping act on the real D only; the surrogate uses ``loss.d_loss``.

Networks. On points (the paper's Appendix A, "2D Gaussian training details", and §3.1/Fig. 1):
G is an MLP with 2 hidden layers of 128 ReLU units on a 256-d Gaussian latent; D has 1 hidden
layer of 128 ReLU units; weights orthogonal with gain 0.8; the paper compares K = 0, 1, 5, 10
(K = 5 and 10 recover all 8 modes). On images the DCGAN networks of :mod:`gankit.models.dcgan`.
The paper's 2-D runs use the saddle (minimax) objective; we default to the non-saturating
generator loss (``--set loss.name=minimax`` for the paper's), any registered loss works.

Optimiser and batch by data (:data:`UNROLLED_DATA_SETTINGS`, applied to the keys the user's
config leaves unset). Images: Adam lr 1e-4, beta1 0.5 (Appendix A's optimiser), batch as
configured. Points: Adam lr 1e-3 for G and D, beta1 0.5, batch 512. Appendix A's lr 1e-4
goes with training for tens of thousands of alternating steps (the authors' notebook,
poolio/unrolled_gan: batch 512, 25,000 iterations, lr 1e-3 for G and 1e-4 for D). At lr 1e-4
a run of a few thousand steps never leaves the start: five unrolled Adam steps of 1e-4 barely
move D, so the unrolled G gets nearly the plain GAN's gradient, and G is still one cloud (measured, ring8, batch 100, 2,000 steps: K = 5 covers 2.3/8 modes with 0.4 % of
samples within 3 sigma, K = 0 collapses too). With lr 1e-3 on both (D at the notebook's 1e-4
is outrun by a G at 1e-3: 0 modes, measured) and batch 512, K = 5 covers all 8 ring8 modes in
2,000 steps (6-13 % of samples within 3 sigma; 19-33 % at 4,000 steps, 3 seeds) where K = 0
collapses to 0-1 mode; on grid25 at 4,000 steps K = 5 covers 17.7/25 modes, K = 0 3.0/25
(``benchmarks/points_check.py`` reruns these numbers). The batch matters for precision: ring8,
seed 0, gave 7.5 % within 3 sigma after 5,000 steps at batch 100, 19 % / 33 % after 4,000
steps at batch 256 / 512.
Cost: each G step runs K extra D forward/backward passes (double backward with backprop).
Under torchrun each process unrolls on its own share of the batch. With ``train.amp=fp16`` the
surrogate's gradients are not loss-scaled and may underflow: prefer bf16. Phase-level
``tricks.*`` are refused (the surrogate would not see them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call

from ..data.sizes import STAGED
from ..errors import ConfigError
from ..losses import get_loss
from ..nn import mlp, prod
from ..registry import MODELS
from ..tricks import PHASE_TRICKS, active, tricks_config
from .base import DView, Game, GANFamily, Params, Phase, adversarial_phases
from .dcgan import DCDiscriminator, DCGenerator
from .gan import MLPGenerator

if TYPE_CHECKING:
    from ..games.phase import StepContext


class UnrolledParams(Params):
    unroll_steps: int = Field(5, ge=0)  # K (paper: 5 and 10 on the 2-D mixtures)
    unroll_backprop: bool = True  # differentiate through the K updates (paper); false: stop-gradient
    unroll_optimizer: Literal["adam", "sgd"] = "adam"
    unroll_lr: float | None = None  # None: the D optimizer's learning rate
    latent_dim: int | None = None  # None: 256 for points (paper), 100 for images
    # points (the paper's 2-D mixture setting)
    g_hidden: int = 128
    g_layers: int = 2
    d_hidden: int = 128
    d_layers: int = 1
    # images (DCGAN)
    width: int = 64
    max_width: int = 512
    d_batchnorm: bool = True


class PointDiscriminator(nn.Module):
    """sample [N, *shape] -> score [N, 1]: an MLP with ReLU hidden units (2-D mixture setting)."""

    def __init__(self, shape: tuple[int, ...], hidden: int, layers: int) -> None:
        super().__init__()
        self.net = mlp(prod(shape), hidden, layers, 1, nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


def orthogonal_init(module: nn.Module, gain: float = 0.8) -> None:
    """Orthogonal weights with gain 0.8 and zero biases (the paper's 2-D mixture setting)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain)
            nn.init.zeros_(m.bias)


@dataclass
class UnrollOptimizer:
    """A differentiable copy of D's update rule, optionally warm-started from its state.

    ``state`` maps parameter names to ``(exp_avg, exp_avg_sq, step)`` of a ``torch.optim.Adam``;
    missing names start from zero moments at step 0.
    """

    kind: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    state: dict[str, tuple[Tensor, Tensor, float]] = field(default_factory=dict)


def unroll(D: nn.Module, d_loss: Callable[[dict[str, Tensor], dict[str, Tensor]], Tensor],
           steps: int, opt: UnrollOptimizer, backprop: bool = True,
           ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """D's parameters and buffers after ``steps`` functional optimisation steps on ``d_loss``.

    ``d_loss(params, buffers)`` is the discriminator loss evaluated with
    ``functional_call(D, (params, buffers), ...)``. With ``backprop`` the returned parameters
    keep the graph of every update (``create_graph=True``), so a loss on them differentiates
    through the unrolling (Metz et al. 2017 §2); without, they are constants. D itself is
    never modified; buffers are cloned so batch-norm statistics of D stay untouched.
    """
    params = {n: p.detach() for n, p in D.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in D.named_buffers()}
    b1, b2 = opt.betas
    m: dict[str, Tensor] = {}
    v: dict[str, Tensor] = {}
    t0: dict[str, float] = {}
    for n, p in params.items():
        ea, eas, st = opt.state.get(n, (torch.zeros_like(p), torch.zeros_like(p), 0.0))
        m[n], v[n], t0[n] = ea.detach(), eas.detach(), float(st)
    for k in range(steps):
        if k == 0 or not backprop:
            # theta_D^0 is a constant w.r.t. G; leaves that require grad so autograd.grad works
            params = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        loss = d_loss(params, buffers)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=backprop,
                                    allow_unused=True)
        new: dict[str, Tensor] = {}
        for (n, p), g in zip(params.items(), grads):
            if g is None:
                g = torch.zeros_like(p)
            if opt.weight_decay:
                g = g + opt.weight_decay * p
            if opt.kind == "sgd":
                p = p - opt.lr * g
            else:
                # torch.optim.Adam's update (no amsgrad), written out so it is differentiable
                t = t0[n] + k + 1
                m[n] = b1 * m[n] + (1 - b1) * g
                v[n] = b2 * v[n] + (1 - b2) * g * g
                bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
                # clamp: d sqrt(v)/dv is infinite at v = 0 (a parameter with zero gradient so
                # far), which would turn the double backward into NaN
                denom = v[n].clamp_min(1e-30).sqrt() / bc2 ** 0.5 + opt.eps
                p = p - (opt.lr / bc1) * m[n] / denom
            new[n] = p if backprop else p.detach()
        params = new
        if not backprop:
            m = {n: x.detach() for n, x in m.items()}
            v = {n: x.detach() for n, x in v.items()}
    return params, buffers


# Learning rates and batch by kind of data (module docstring): Appendix A's lr on images; on
# points the rate and batch that reproduce the paper's 2-D result in a few thousand steps.
UNROLLED_DATA_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "images": {"optim": {"lr_g": 1e-4, "lr_d": 1e-4}},
    "points": {"optim": {"lr_g": 1e-3, "lr_d": 1e-3}, "train": {"batch_size": 512}},
}


@MODELS.register("unrolled", description="unrolled GAN: G's loss against D unrolled K optimizer steps (Metz et al. 2017)")
class UnrolledGAN(GANFamily):
    """Unrolled GAN (Metz et al. 2017); see the module docstring.

    ``optim.lr_g``/``lr_d`` and, on points, ``train.batch_size`` default by data
    (:data:`UNROLLED_DATA_SETTINGS`); set them to override.
    """

    image_sizes = STAGED  # strided conv stages (gankit.nn.conv_stages)

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8, "model.unroll_steps": 2}

    Params = UnrolledParams
    # lr_g, lr_d (and the batch on points) are not here: they depend on the data
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "nonsaturating"},
        "optim": {"betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999)},
    }

    data_defaults = UNROLLED_DATA_SETTINGS

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        if info["is_image"]:
            c, r = self.sample_shape[0], self.sample_shape[-1]
            self.latent_dim = p.latent_dim or 100
            self.G: nn.Module = DCGenerator(self.latent_dim, c, r, p.width, p.max_width)
            self.D: nn.Module = DCDiscriminator(c, r, p.width, p.max_width,
                                                batchnorm=p.d_batchnorm)
        else:
            self.latent_dim = p.latent_dim or 256
            self.G = MLPGenerator(self.latent_dim, self.sample_shape, p.g_hidden, p.g_layers,
                                  batchnorm=False)
            self.D = PointDiscriminator(self.sample_shape, p.d_hidden, p.d_layers)
            orthogonal_init(self.G)
            orthogonal_init(self.D)
        self.loss = get_loss(cfg.loss.name)
        want = active(tricks_config(cfg), PHASE_TRICKS)
        if want:
            # The surrogate replays D's plain loss.d_loss and G's loss is our own: a trick that
            # changes either would be silently half-applied, so refuse it.
            raise ConfigError(f"model 'unrolled' unrolls D's plain loss.d_loss and does not "
                              f"support {', '.join('tricks.' + k for k in want)}")

    # -- the unrolled generator loss -----------------------------------------------------
    def surrogate_optimizer(self, ctx: StepContext | None = None) -> UnrollOptimizer:
        """The surrogate's update rule; Adam is warm-started from the Trainer's D optimizer.

        Reads (never steps) ``ctx.tr.opts["D"]``: its hyper-parameters and moments, so the K
        unrolled steps are those the real D would take next (Metz et al.'s reference code
        unrolls the D optimizer's own update). Without a Trainer (or with a non-Adam D
        optimizer) Adam starts from zero moments with ``optim.lr_d``/``betas_d``.
        """
        o = self.cfg.optim
        uo = UnrollOptimizer(self.p.unroll_optimizer, o.lr_d, tuple(o.betas_d), 1e-8,
                             o.weight_decay)
        torch_opt = getattr(getattr(ctx, "tr", None), "opts", {}).get("D")
        if isinstance(torch_opt, torch.optim.Adam) and len(torch_opt.param_groups) == 1:
            grp = torch_opt.param_groups[0]
            uo.lr, uo.betas, uo.eps = float(grp["lr"]), tuple(grp["betas"]), float(grp["eps"])
            uo.weight_decay = float(grp["weight_decay"])
            if uo.kind == "adam":
                for n, prm in self.D.named_parameters():
                    st = torch_opt.state.get(prm)
                    if st and "exp_avg" in st:
                        uo.state[n] = (st["exp_avg"], st["exp_avg_sq"], float(st["step"]))
        if self.p.unroll_lr is not None:
            uo.lr = self.p.unroll_lr
        return uo

    def unrolled_g_loss(self, D: nn.Module, real: Tensor, fake: Tensor,
                        opt: UnrollOptimizer | None = None, steps: int | None = None,
                        backprop: bool | None = None) -> tuple[Tensor, Tensor]:
        """``(g_loss, d_loss_at_K)``: G's loss against D unrolled ``steps`` (default
        ``model.unroll_steps``) updates on ``(real, fake)``; ``fake`` carries G's graph.

        With ``steps = 0`` this is exactly ``loss.g_loss(discriminate(D, fake))``.
        """
        steps = self.p.unroll_steps if steps is None else steps
        backprop = self.p.unroll_backprop if backprop is None else backprop
        if steps == 0:
            return self.loss.g_loss(self.discriminate(D, fake)), fake.new_zeros(())
        opt = opt or self.surrogate_optimizer()
        fake_d = fake if backprop else fake.detach()  # the stop-gradient variant: no d theta_D^K / d G

        def score(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(D, (params, buffers), (x,)).reshape(len(x), -1).mean(1)  # [N]

        def d_loss(params: dict[str, Tensor], buffers: dict[str, Tensor]) -> Tensor:
            return self.loss.d_loss(score(params, buffers, real), score(params, buffers, fake_d))

        params, buffers = unroll(D, d_loss, steps, opt, backprop)
        loss_g = self.loss.g_loss(score(params, buffers, fake))
        with torch.no_grad():
            d_loss_k = d_loss(params, buffers)
        return loss_g, d_loss_k

    def phases(self) -> list[Phase]:
        def g_loss(v: DView) -> tuple[Tensor, dict[str, Tensor]]:
            # the step's real batch is the one the last D step used: the K unrolled steps
            # replay D's update on it (Metz et al. 2017, eq. 4-5)
            assert v.real is not None and v.D is not None
            loss_g, d_loss_k = self.unrolled_g_loss(v.D, v.real, v.fake,
                                                    self.surrogate_optimizer(v.ctx))
            stats = {"unrolled/loss_D_K": d_loss_k} if self.p.unroll_steps else {}
            return loss_g, stats

        return adversarial_phases(self, Game(g_loss=g_loss))
