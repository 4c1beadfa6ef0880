"""What every model family provides: networks, latent sampling and its training phases.

Networks never compute losses or step optimizers (the StyleGAN2-ADA ``networks.py``/``loss.py``
split). A family declares its training as :class:`Phase` objects; the Trainer runs them, and is
the only code that touches optimizers, backward, AMP, accumulation, DDP and EMA.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from ..errors import ConfigError
from ..losses import clip_weights, d_accuracy, get_loss
from ..registry import REGULARIZERS

if TYPE_CHECKING:
    from ..config import Config
    from ..train.trainer import StepContext

LossFn = Callable[["StepContext"], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass
class Phase:
    """One optimisation phase of a training step.

    ``opt`` names the optimizer (and so the network) it updates, or a tuple of them for a
    phase whose loss updates several networks at once (InfoGAN's mutual-information term,
    consensus optimisation). The phase runs when
    ``step % every == 0``, ``repeat`` times in a row (k D steps per G step, Goodfellow et al.
    2014 Alg. 1). ``makes_fake``/``uses_fake`` let the Trainer hand the last D step's fake batch
    to the G step instead of running G twice. ``after_step`` runs after the optimizer step
    (e.g. weight clipping). ``applies_tricks`` marks phases whose loss applies the configured
    phase-level ``tricks.*`` (those of :func:`adversarial_phases` do); a family whose phases
    include none of them is refused when such a trick is set, instead of silently ignoring it.
    """

    name: str
    opt: str | tuple[str, ...]
    loss_fn: LossFn
    every: int = 1
    repeat: int = 1
    makes_fake: bool = False
    uses_fake: bool = False
    after_step: Callable[[], None] | None = None
    applies_tricks: bool = False  # its loss applies the phase-level tricks.* (gankit.tricks)

    @property
    def opts(self) -> tuple[str, ...]:
        return (self.opt,) if isinstance(self.opt, str) else tuple(self.opt)


class Params(BaseModel):
    """Base of every family's hyper-parameters (``model.*`` config keys)."""

    model_config = ConfigDict(extra="forbid")


class ModelFamily(nn.Module):
    """Base class of registered models.

    Subclasses set ``Params`` and ``defaults`` (config layers applied under the user's), build
    ``self.G`` and ``self.D`` in ``__init__(cfg, info)`` where ``info`` is
    :meth:`gankit.data.Dataset.describe`, and may override :meth:`phases`.

    Stabilisation tricks (``tricks.*``, :mod:`gankit.tricks`): the phase-level ones are applied
    by :func:`adversarial_phases`. The D-layer ones (dropout, minibatch stddev, minibatch
    discrimination) are layers of the DCGAN/MLP discriminators: a family may build its D with
    them (``**gankit.tricks.d_layer_kwargs(cfg)``); otherwise, right after the subclass's
    ``__init__``, :meth:`install_tricks` adds them in place to a DCGAN/MLP ``self.D`` when the
    family trains with the default phases (or sets ``d_tricks_in_place = True``), and refuses
    the config otherwise.
    """

    Params: ClassVar[type[Params]] = Params
    defaults: ClassVar[dict[str, Any]] = {}
    needs_labels: ClassVar[bool] = False
    # May install_tricks() add D-layer tricks to self.D in place? None: only when the family
    # keeps the default phases (its own phases might use D's parts, e.g. features + head).
    d_tricks_in_place: ClassVar[bool | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Run install_tricks() once, after the most derived __init__ has built G and D.
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: ModelFamily, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            if type(self) is cls:
                self.install_tricks()

        cls.__init__ = __init__  # type: ignore[method-assign]
        # Refuse phase-level tricks that the most derived phases() would silently ignore.
        phases = cls.phases

        @functools.wraps(phases)
        def checked_phases(self: ModelFamily) -> list[Phase]:
            out = phases(self)
            if type(self) is cls:
                _check_phase_tricks(self, out)
            return out

        # True while the family trains with the default phases (adversarial_phases as such)
        default = phases is ModelFamily.phases or getattr(phases, "default", False)
        checked_phases.default = default  # type: ignore[attr-defined]
        cls.phases = checked_phases  # type: ignore[method-assign]

    G: nn.Module
    D: nn.Module

    def __init__(self, cfg: Config, info: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.info = info
        self.p = self.Params(**{k: v for k, v in cfg.model.items() if k != "name"})
        self.sample_shape: tuple[int, ...] = tuple(info["shape"])
        self.num_classes: int = int(info.get("num_classes", 0))
        self.latent_dim: int = 0
        if self.needs_labels and self.num_classes < 2:
            raise ConfigError(
                f"model '{cfg.model['name']}' is conditional and needs labelled data; "
                f"'{info['name']}' has no class labels (use class sub-folders or an .npz with y)"
            )

    @property
    def conditional(self) -> bool:
        return self.needs_labels

    def networks(self) -> dict[str, nn.Module]:
        """Trainable networks by optimizer key."""
        return {"G": self.G, "D": self.D}

    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def generate(self, G: nn.Module, z: Tensor, c: Tensor | None = None) -> Tensor:
        return G(z, c) if self.conditional else G(z)

    def discriminate(self, D: nn.Module, x: Tensor, c: Tensor | None = None) -> Tensor:
        out = D(x, c) if self.conditional else D(x)
        return out.reshape(len(x), -1).mean(1)  # [N]; PatchGAN-style maps are averaged

    def d_features(self, D: nn.Module, x: Tensor, c: Tensor | None = None) -> Tensor:
        """D's penultimate per-sample features ``[N, F]`` (for feature matching, Salimans et al.
        2016 §3.1): ``D.features(x[, c])`` flattened. Override for other discriminators."""
        fn = getattr(D, "features", None)
        if not callable(fn):
            raise ConfigError(f"{type(D).__name__} has no features(x) method giving its "
                              f"penultimate features; override ModelFamily.d_features")
        out = fn(x, c) if self.conditional else fn(x)
        return out.reshape(len(x), -1)

    def install_tricks(self, modify: bool = True) -> None:
        """Check the configured D-layer tricks against ``self.D`` and add missing ones in place.

        Called automatically after the subclass's ``__init__`` (idempotent). ``modify=False``
        (used when the phases are built, after the optimizers) only checks: layers added then
        would not be trained.
        """
        from ..tricks import d_layer_kwargs

        kw = d_layer_kwargs(self.cfg)
        D = getattr(self, "D", None)
        have = _d_layer_settings(D)
        missing = [key for key, off in (
            ("d_dropout", kw["dropout"] == 0 or have.get("dropout") == kw["dropout"]),
            ("minibatch_stddev", kw["mbstd_group"] == 0
             or have.get("mbstd_group") == kw["mbstd_group"]),
            ("minibatch_discrimination", kw["mbdisc_kernels"] == 0
             or have.get("mbdisc") == (kw["mbdisc_kernels"], kw["mbdisc_dim"]))) if not off]
        if not missing:
            return  # none configured, or D was built with them
        in_place = self.d_tricks_in_place
        if in_place is None:
            in_place = getattr(type(self).phases, "default", False)
        can_add = callable(getattr(D, "add_tricks", None))
        if not (modify and in_place and can_add):
            why = ("they are layers of gankit's DCGAN/MLP discriminators, and this model's "
                   "discriminator is not one" if not can_add else
                   "this family trains with its own phases and builds its discriminator without "
                   "them" if not in_place else
                   "they must be set when the model is built, before its optimizers exist")
            raise ConfigError(f"model '{self.cfg.model['name']}' cannot apply "
                              f"{', '.join('tricks.' + k for k in missing)}: {why}")
        D.add_tricks(**kw)  # type: ignore[union-attr]

    def phases(self) -> list[Phase]:
        return adversarial_phases(self)


def _d_layer_settings(D: Any) -> dict[str, Any]:
    """The D-layer tricks a DCGAN/MLP discriminator already has."""
    if D is None:
        return {}
    out: dict[str, Any] = {}
    drop = getattr(D, "drop_rate", None)  # MLP: Dropout layers or functional dropout
    if drop is None:
        drop = getattr(getattr(D, "features", None), "dropout", None)  # DCGAN's trunk
    if drop:
        out["dropout"] = drop
    mbstd = getattr(D, "mbstd", None)
    if mbstd is not None:
        out["mbstd_group"] = mbstd.group_size
    mbdisc = getattr(D, "mbdisc", None)
    if mbdisc is not None:
        out["mbdisc"] = (mbdisc.kernels, mbdisc.kernel_dim)
    return out


def _trainable(net: nn.Module) -> list[Tensor]:
    return [p for p in net.parameters() if p.requires_grad]


def _check_phase_tricks(model: ModelFamily, phases: list[Phase]) -> None:
    """Refuse phase-level tricks that a family's own phases would silently ignore."""
    from ..tricks import PHASE_TRICKS, active, tricks_config

    want = active(tricks_config(model.cfg), PHASE_TRICKS)
    if want and not any(ph.applies_tricks for ph in phases):
        raise ConfigError(f"model '{model.cfg.model['name']}' trains with its own phases, which do "
                          f"not apply {', '.join('tricks.' + k for k in want)}")


def d_game_stats(d_real: Tensor, d_fake: Tensor) -> dict[str, Tensor]:
    """The statistics every D step logs (the doctor reads them): mean scores and accuracy."""
    return {"D/real": d_real.detach().mean(), "D/fake": d_fake.detach().mean(),
            "D/acc": d_accuracy(d_real, d_fake)}


def with_gradient_penalty(model: ModelFamily, ctx: StepContext, fake: Tensor, loss: Tensor,
                          stats: dict[str, Tensor]) -> Tensor:
    """``loss`` plus the configured non-lazy penalty (``loss.gp``, ``lambda_gp``), logged in
    ``stats`` as ``loss/D/<name>``; for families that write their own D step. The lazy form
    (``gp_every > 1``) is the ``D_reg`` phase of :func:`adversarial_phases`."""
    lc = model.cfg.loss
    if lc.gp is None or lc.gp_every != 1:
        return loss
    reg = REGULARIZERS.get(lc.gp)
    pen = reg.fn(lambda x: model.discriminate(ctx.D, x, ctx.c), ctx.real, fake)
    stats[f"loss/D/{reg.name}"] = pen.detach()
    return loss + lc.lambda_gp * pen


def adversarial_phases(model: ModelFamily) -> list[Phase]:
    """The adversarial game with the configured loss, penalty, clipping and tricks.

    D minimises ``loss.d_loss`` (+ ``lambda_gp`` x penalty), G minimises ``loss.g_loss``. A lazy
    penalty (``gp_every = k > 1``) becomes its own phase every k steps with weight x k (StyleGAN2).

    The phase-level ``tricks.*`` (:mod:`gankit.tricks`) enter here: D sees every batch, real or
    fake, through ``Tricks.d_input`` (DiffAugment, then instance noise), in the D step, the G step
    and the penalty (whose critic is D after that transform, as in StyleGAN2-ADA); label
    smoothing replaces D's loss, feature matching G's; historical averaging and orthogonal
    regularisation add penalties; ``d_every`` and D freezing gate the D step; consensus
    optimisation replaces the D and G phases by one joint phase "GD".
    """
    from ..tricks import Tricks, consensus_surrogate

    lc = model.cfg.loss
    loss = get_loss(lc.name)
    reg = REGULARIZERS.get(lc.gp) if lc.gp else None
    tk = Tricks(model, loss)
    tc = tk.tc

    def critic(D: nn.Module, c: Tensor | None, step: int) -> Callable[[Tensor], Tensor]:
        return lambda x: model.discriminate(D, tk.d_input(x, step), c)

    def penalty(ctx: StepContext, fake: Tensor, step: int, stats: dict[str, Tensor]) -> Tensor:
        assert reg is not None
        pen = reg.fn(critic(ctx.D, ctx.c, step), ctx.real, fake)
        stats[f"loss/D/{reg.name}"] = pen.detach()
        return pen

    def add_terms(total: Tensor, terms: dict[str, Tensor], stats: dict[str, Tensor]) -> Tensor:
        for k, v in terms.items():
            stats[k] = v.detach()
            total = total + v
        return total

    def d_stats(loss_d: Tensor, d_real: Tensor, d_fake: Tensor) -> dict[str, Tensor]:
        acc = d_accuracy(d_real, d_fake)
        tk.observe_accuracy(acc)
        return {"loss/D": loss_d.detach(), "D/real": d_real.detach().mean(),
                "D/fake": d_fake.detach().mean(), "D/acc": acc}

    def d_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        step = ctx.tr.step
        fake, c_fake = ctx.fake_for_d()  # outside no_grad: G's graph may be kept for the G step
        if tk.d_frozen(step):
            # Measure D (so it can thaw) but give it no gradient at all: its optimizer then skips
            # every parameter, moments and step count included (see tricks.AccuracyMonitor).
            with torch.no_grad():
                d_real = model.discriminate(ctx.D, tk.d_input(ctx.real, step), ctx.c)
                d_fake = model.discriminate(ctx.D, tk.d_input(fake, step), c_fake)
                stats = d_stats(tk.d_loss(d_real, d_fake), d_real, d_fake)
            return torch.zeros((), device=d_real.device, requires_grad=True), \
                {**stats, **tk.frozen_flag(True)}
        d_real = model.discriminate(ctx.D, tk.d_input(ctx.real, step), ctx.c)
        d_fake = model.discriminate(ctx.D, tk.d_input(fake.detach(), step), c_fake)
        loss_d = tk.d_loss(d_real, d_fake)
        stats = {**d_stats(loss_d, d_real, d_fake), **tk.frozen_flag(False)}
        if reg is not None and lc.gp_every == 1:
            loss_d = loss_d + lc.lambda_gp * penalty(ctx, fake, step, stats)
        return add_terms(loss_d, tk.d_penalties(ctx.D), stats), stats

    def g_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        step = ctx.tr.step
        fake, c_fake = ctx.fake_for_g()
        loss_g = tk.g_loss(ctx, fake, c_fake, step)
        stats = {"loss/G": loss_g.detach()}
        return add_terms(loss_g, tk.g_penalties(ctx.G), stats), stats

    def gd_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        # Consensus optimisation (Mescheder et al. 2017): one fake batch with G's graph, both
        # players' game losses, and the surrogate whose gradient is each player's
        # grad L_i + gamma grad 1/2 ||v||^2. Penalties stay outside the game's vector field v.
        step = ctx.tr.step
        fake, c_fake = ctx.fake_for_g()
        d_real = model.discriminate(ctx.D, tk.d_input(ctx.real, step), ctx.c)
        d_fake = model.discriminate(ctx.D, tk.d_input(fake, step), c_fake)
        loss_d = tk.d_loss(d_real, d_fake)
        loss_g = tk.g_loss(ctx, fake, c_fake, step, d_fake=d_fake)
        stats = {**d_stats(loss_d, d_real, d_fake), "loss/G": loss_g.detach()}
        total, cons = consensus_surrogate([(loss_g, _trainable(ctx.G)),
                                           (loss_d, _trainable(ctx.D))], tc.consensus)
        stats["loss/consensus"] = cons.detach()
        if reg is not None and lc.gp_every == 1:
            total = total + lc.lambda_gp * penalty(ctx, fake.detach(), step, stats)
        total = add_terms(total, tk.d_penalties(ctx.D), stats)
        return add_terms(total, tk.g_penalties(ctx.G), stats), stats

    clip = float(lc.clip) if lc.clip is not None else None

    def after_d() -> None:
        if clip is not None:
            clip_weights(model.D, clip)
        tk.after_step("D", model.D)

    def after_g() -> None:
        tk.after_step("G", model.G)

    def after_gd() -> None:
        after_d()
        after_g()

    if tc.consensus > 0:
        phases = [Phase("GD", ("G", "D"), gd_step, after_step=after_gd, applies_tricks=True)]
    else:
        phases = [Phase("D", "D", d_step, every=tc.d_every, repeat=model.cfg.optim.n_critic,
                        makes_fake=True, after_step=after_d, applies_tricks=True)]
    if reg is not None and lc.gp_every > 1:
        k = lc.gp_every

        def d_reg(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            step = ctx.tr.step
            with torch.no_grad():
                fake, _ = ctx.fake_for_d()
            stats: dict[str, Tensor] = {}
            return lc.lambda_gp * k * penalty(ctx, fake, step, stats), stats

        phases.append(Phase("D_reg", "D", d_reg, every=k))
    if tc.consensus == 0:
        phases.append(Phase("G", "G", g_step, uses_fake=True, after_step=after_g,
                            applies_tricks=True))
    return phases
