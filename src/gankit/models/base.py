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
from ..losses import AdversarialLoss, clip_weights, d_accuracy, get_loss
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


def apply_data_defaults(cfg: Any, settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Set each ``cfg.<section>.<key>`` of ``settings`` that no config layer set; return them.

    Data-dependent defaults: a family's ``defaults`` are applied before the data is known, so
    keys whose default depends on it (images vs points) stay out of ``defaults`` and are filled
    here, from ``ModelFamily.__init__`` (a family's ``data_defaults``), where the user's layers left them unset (pydantic's
    ``model_fields_set``: a value given on the command line, in a config file or in
    ``overrides`` always wins, even when it equals the built-in default). The resolved config,
    saved as config.json before training, then records them, so resume/load rebuild the same
    run.
    """
    applied: dict[str, Any] = {}
    for sec, values in settings.items():
        section = getattr(cfg, sec)
        for key, value in values.items():
            if key not in section.model_fields_set:
                setattr(section, key, value)  # validated; marks the key as set (idempotent)
                applied[f"{sec}.{key}"] = value
    return applied


class ModelFamily(nn.Module):
    """Base class of registered models.

    Subclasses set ``Params`` and ``defaults`` (config layers applied under the user's), build
    ``self.G`` and ``self.D`` in ``__init__(cfg, info)`` where ``info`` is
    :meth:`gankit.data.Dataset.describe`. D's output is read through :meth:`d_forward` (all
    heads, one pass) and :meth:`d_score` (the real/fake score). Training is the adversarial game
    of :func:`adversarial_phases`; a family adds auxiliary terms, its own objective or networks
    by overriding :meth:`phases` to return ``adversarial_phases(self, Game(...))``, so every
    trick keeps working (writing phases from scratch is possible, but phase-level tricks are then
    refused unless the phases apply them).

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
    # Config defaults that depend on the kind of data, {"images"|"points": {section: {key:
    # value}}}: applied when the model is built to the keys no config layer set (the user's
    # values win), and recorded in the saved config (apply_data_defaults).
    data_defaults: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}
    # D's logged scores (D/real, D/fake) are the scores of the configured loss.name; False for a
    # family that plays its own objective (EBGAN's energies), so the doctor does not read them
    # as logits.
    scores_follow_loss: ClassVar[bool] = True
    # May install_tricks() add D-layer tricks to self.D in place? None: only when the family
    # keeps the default phases (its own phases might use D's parts, e.g. features + head).
    d_tricks_in_place: ClassVar[bool | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "discriminate" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: override d_forward()/d_score(), not discriminate(): "
                            f"adversarial_phases calls those two")
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
        kind = "images" if info.get("is_image") else "points"
        apply_data_defaults(cfg, self.data_defaults.get(kind, {}))
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

    def d_forward(self, D: nn.Module, x: Tensor, c: Tensor | None = None) -> Any:
        """D's full output for a batch: ``D(x[, c])``. A family whose D has several heads
        (ACGAN's classifier, SSGAN's rotation head, InfoGAN's Q) returns them all from one pass;
        :meth:`d_score` picks the real/fake score and its :class:`Game` terms use the rest."""
        return D(x, c) if self.conditional else D(x)

    def d_score(self, out: Any, n: int) -> Tensor:
        """The real/fake score ``[n]`` in :meth:`d_forward`'s output ``out`` (for ``n`` samples);
        by default the output itself, PatchGAN-style maps averaged."""
        return out.reshape(n, -1).mean(1)

    def discriminate(self, D: nn.Module, x: Tensor, c: Tensor | None = None) -> Tensor:
        """D's real/fake score ``[N]`` of a batch (override :meth:`d_forward`/:meth:`d_score`)."""
        return self.d_score(self.d_forward(D, x, c), len(x))

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
    D = getattr(D, "body", D)  # a DCGAN discriminator inside a multi-head one (ACGAN, SSGAN)
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



Terms = dict[str, Tensor]  # weighted loss terms by stat name, e.g. {"loss/D/cls": 0.7 * ce}


@dataclass
class DView:
    """What a D or G step of :func:`adversarial_phases` computed, handed to a family's terms.

    ``real_in``/``fake_in`` are D's inputs after the phase-level tricks (DiffAugment, instance
    noise); ``out_real``/``out_fake`` are :meth:`ModelFamily.d_forward` of them (every head of
    D). In the D step the fake batch is detached; in the G step it carries G's graph and
    ``real_in``/``out_real`` are ``None``. ``d_input`` is D's view of any other batch at this step
    (e.g. SGAN's labelled examples).
    """

    ctx: StepContext
    step: int
    fake: Tensor
    c_fake: Tensor | None
    fake_in: Tensor
    out_fake: Any
    d_input: Callable[[Tensor], Tensor]
    real_in: Tensor | None = None
    out_real: Any = None


TermsFn = Callable[[DView], "tuple[Terms, dict[str, Tensor]]"]


@dataclass
class Game:
    """How a family extends the adversarial game of :func:`adversarial_phases`.

    ``d_terms``/``g_terms`` return ``(terms, stats)``: weighted terms added to that player's loss
    (each also logged under its key) and extra statistics. ``loss`` replaces the configured
    ``loss.name`` objective on D's scores (EBGAN's margin, BEGAN's equilibrium). ``g_nets`` are
    the optimizers the G phase steps (InfoGAN's ``("G", "Q")``: the G loss also trains Q).
    ``feature_matching`` makes G minimise feature matching whatever ``tricks.feature_matching``
    says (SGAN's default, Salimans et al. 2016 §5). ``after_d`` runs after every D optimizer step.
    """

    d_terms: TermsFn | None = None
    g_terms: TermsFn | None = None
    loss: AdversarialLoss | None = None
    g_nets: tuple[str, ...] = ("G",)
    feature_matching: bool = False
    after_d: Callable[[], None] | None = None


def _add_terms(total: Tensor, terms: Terms, stats: dict[str, Tensor]) -> Tensor:
    for k, v in terms.items():
        stats[k] = v.detach()
        total = total + v
    return total


def _family_terms(fn: TermsFn | None, view: DView, total: Tensor, stats: dict[str, Tensor],
                  side: str) -> Tensor:
    """``total`` plus a family's terms; the plain adversarial part is logged as
    ``loss/<side>/adv`` when there are any."""
    if fn is None:
        return total
    terms, extra = fn(view)
    stats.update(extra)
    if terms:
        stats[f"loss/{side}/adv"] = total.detach()
    return _add_terms(total, terms, stats)


def adversarial_phases(model: ModelFamily, game: Game | None = None) -> list[Phase]:
    """The adversarial game with the configured loss, penalty, clipping and tricks.

    D minimises ``loss.d_loss`` (+ ``lambda_gp`` x penalty), G minimises ``loss.g_loss``. A lazy
    penalty (``gp_every = k > 1``) becomes its own phase every k steps with weight x k (StyleGAN2).
    A family adds its own terms (auxiliary classifiers, rotation or information losses), replaces
    the objective or adds networks to the G phase through ``game`` (:class:`Game`), and so keeps
    every trick below.

    The phase-level ``tricks.*`` (:mod:`gankit.tricks`) enter here: D sees every batch, real or
    fake, through ``Tricks.d_input`` (DiffAugment, then instance noise), in the D step, the G step
    and the penalty (whose critic is D after that transform, as in StyleGAN2-ADA); label
    smoothing replaces D's loss, feature matching G's; historical averaging and orthogonal
    regularisation add penalties; ``d_every`` and D freezing gate the D step; consensus
    optimisation replaces the D and G phases by one joint phase over both players' full losses.
    """
    from ..tricks import Tricks, consensus_surrogate

    game = game or Game()
    lc = model.cfg.loss
    loss = game.loss or get_loss(lc.name)
    reg = REGULARIZERS.get(lc.gp) if lc.gp else None
    tk = Tricks(model, loss, feature_matching=game.feature_matching)
    tc = tk.tc
    nets = model.networks()

    def critic(D: nn.Module, c: Tensor | None, step: int) -> Callable[[Tensor], Tensor]:
        return lambda x: model.discriminate(D, tk.d_input(x, step), c)

    def penalty(ctx: StepContext, fake: Tensor, step: int, stats: dict[str, Tensor]) -> Tensor:
        assert reg is not None
        pen = reg.fn(critic(ctx.D, ctx.c, step), ctx.real, fake)
        stats[f"loss/D/{reg.name}"] = pen.detach()
        return pen

    def d_stats(d_real: Tensor, d_fake: Tensor) -> dict[str, Tensor]:
        stats = {"D/real": d_real.detach().mean(), "D/fake": d_fake.detach().mean()}
        if loss.threshold is not None:
            acc = d_accuracy(d_real, d_fake, loss.threshold)
            tk.observe_accuracy(acc)
            stats["D/acc"] = acc
        return stats

    def d_view(ctx: StepContext, fake: Tensor, c_fake: Tensor | None) -> DView:
        """D's inputs and full outputs for a real and a fake batch (the fake one as given)."""
        step = ctx.tr.step
        real_in, fake_in = tk.d_input(ctx.real, step), tk.d_input(fake, step)
        out_real = model.d_forward(ctx.D, real_in, ctx.c)
        out_fake = model.d_forward(ctx.D, fake_in, c_fake)
        return DView(ctx, step, fake, c_fake, fake_in, out_fake, lambda x: tk.d_input(x, step),
                     real_in, out_real)

    def d_loss_of(v: DView, stats: dict[str, Tensor]) -> Tensor:
        """D's game loss (its family terms included) for a view; fills ``stats``."""
        d_real = model.d_score(v.out_real, len(v.real_in))  # type: ignore[arg-type]
        d_fake = model.d_score(v.out_fake, len(v.fake_in))
        stats.update(d_stats(d_real, d_fake))
        loss_d = _family_terms(game.d_terms, v, tk.d_loss(d_real, d_fake), stats, "D")
        stats["loss/D"] = loss_d.detach()
        return loss_d

    def d_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        step = ctx.tr.step
        fake, c_fake = ctx.fake_for_d()  # outside no_grad: G's graph may be kept for the G step
        stats: dict[str, Tensor] = {}
        if tk.d_frozen(step):
            # Measure D (so it can thaw) but give it no gradient at all: its optimizer then skips
            # every parameter, moments and step count included (see tricks.AccuracyMonitor).
            with torch.no_grad():
                v = d_view(ctx, fake.detach(), c_fake)
                d_real = model.d_score(v.out_real, len(fake))
                d_fake = model.d_score(v.out_fake, len(fake))
                stats.update(d_stats(d_real, d_fake))
                stats["loss/D"] = tk.d_loss(d_real, d_fake)
            return torch.zeros((), device=fake.device, requires_grad=True), \
                {**stats, **tk.frozen_flag(True)}
        loss_d = d_loss_of(d_view(ctx, fake.detach(), c_fake), stats)
        stats.update(tk.frozen_flag(False))
        if reg is not None and lc.gp_every == 1:
            loss_d = loss_d + lc.lambda_gp * penalty(ctx, fake, step, stats)
        return _add_terms(loss_d, tk.d_penalties(ctx.D), stats), stats

    def g_loss_of(ctx: StepContext, fake: Tensor, c_fake: Tensor | None,
                  out_fake: Any = None, fake_in: Tensor | None = None
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        """G's game loss (its family terms included); ``out_fake`` is D's output on
        ``fake_in`` when the caller has it already (consensus)."""
        step = ctx.tr.step
        loss_g, fake_in, out_fake = tk.g_loss(ctx, fake, c_fake, step, fake_in, out_fake)
        stats: dict[str, Tensor] = {}
        if game.g_terms is not None:
            if out_fake is None:  # feature matching did not need D's outputs; the terms do
                fake_in = tk.d_input(fake, step)
                out_fake = model.d_forward(ctx.D, fake_in, c_fake)
            assert fake_in is not None
            v = DView(ctx, step, fake, c_fake, fake_in, out_fake, lambda x: tk.d_input(x, step))
            loss_g = _family_terms(game.g_terms, v, loss_g, stats, "G")
        stats["loss/G"] = loss_g.detach()
        return loss_g, stats

    def g_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        fake, c_fake = ctx.fake_for_g()
        loss_g, stats = g_loss_of(ctx, fake, c_fake)
        return _add_terms(loss_g, tk.g_penalties(ctx.G), stats), stats

    g_params = lambda: [p for k in game.g_nets for p in _trainable(nets[k])]

    def gd_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        # Consensus optimisation (Mescheder et al. 2017): one fake batch with G's graph, both
        # players' full losses (family terms included), and the surrogate whose gradient is each
        # player's grad L_i + gamma grad 1/2 ||v||^2. Penalties stay outside the game's field v.
        step = ctx.tr.step
        fake, c_fake = ctx.fake_for_g()
        stats: dict[str, Tensor] = {}
        v = d_view(ctx, fake, c_fake)
        loss_d = d_loss_of(v, stats)
        loss_g, g_stats = g_loss_of(ctx, fake, c_fake, v.out_fake, v.fake_in)
        stats.update(g_stats)
        total, cons = consensus_surrogate([(loss_g, g_params()),
                                           (loss_d, _trainable(ctx.D))], tc.consensus)
        stats["loss/consensus"] = cons.detach()
        if reg is not None and lc.gp_every == 1:
            total = total + lc.lambda_gp * penalty(ctx, fake.detach(), step, stats)
        total = _add_terms(total, tk.d_penalties(ctx.D), stats)
        return _add_terms(total, tk.g_penalties(ctx.G), stats), stats

    clip = float(lc.clip) if lc.clip is not None else None

    def after_d() -> None:
        if clip is not None:
            clip_weights(model.D, clip)
        if game.after_d is not None:
            game.after_d()
        tk.after_step("D", model.D)

    def after_g() -> None:
        tk.after_step("G", model.G)

    def after_gd() -> None:
        after_d()
        after_g()

    g_opt: str | tuple[str, ...] = game.g_nets[0] if len(game.g_nets) == 1 else game.g_nets
    if tc.consensus > 0:
        phases = [Phase("GD", (*game.g_nets, "D"), gd_step, after_step=after_gd,
                        applies_tricks=True)]
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
        phases.append(Phase("G", g_opt, g_step, uses_fake=True, after_step=after_g,
                            applies_tricks=True))
    return phases
