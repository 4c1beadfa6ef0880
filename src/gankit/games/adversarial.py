"""The adversarial game as a reusable object, parametrised by its players.

:func:`adversarial_phases` turns a :class:`Game` into the D and G phases of one two-player game
with the configured loss, penalty, clipping and phase-level tricks (:mod:`gankit.tricks`). The
players are networks named by the game (``G``, ``D``), so a family can play the game twice
(CycleGAN: ``Game(G="G_AB", D="D_B", tag="B")`` and its mirror), feed D an image condition
(pix2pix: ``real``/``fake`` return the input image as ``c``), add auxiliary terms (ACGAN, SSGAN,
InfoGAN), replace the objective (EBGAN, BEGAN, SphereGAN) or G's loss (unrolled GANs), and keep
every trick. Phases are built from the game's fields; no family patches phases by their names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..losses import AdversarialLoss, clip_weights, d_accuracy, get_loss
from ..registry import REGULARIZERS
from .phase import Phase, StepContext

Terms = dict[str, Tensor]  # weighted loss terms by stat name, e.g. {"loss/D/cls": 0.7 * ce}


@dataclass
class DView:
    """What a D or G step of the game computed, handed to a family's terms.

    ``real_in``/``fake_in`` are D's inputs after the phase-level tricks (DiffAugment, instance
    noise); ``out_real``/``out_fake`` are ``model.d_forward`` of them (every head of D). In the D
    step the fake batch is detached; in the G step it carries G's graph and ``real_in``/
    ``out_real`` are ``None``. ``real``/``c_real`` are the step's real batch and its condition
    (labels, or pix2pix's input image), ``latent`` what the fake was made from (InfoGAN's codes
    live there). ``d_input`` is D's view of any other batch at this step (SGAN's labelled
    examples). ``G``/``D`` are the players' networks.
    """

    ctx: StepContext
    step: int
    fake: Tensor
    c_fake: Any
    fake_in: Tensor
    out_fake: Any
    d_input: Callable[[Tensor], Tensor]
    real_in: Tensor | None = None
    out_real: Any = None
    real: Tensor | None = None
    c_real: Any = None
    latent: Any = None
    G: nn.Module | None = None
    D: nn.Module | None = None


TermsFn = Callable[[DView], "tuple[Terms, dict[str, Tensor]]"]
GLossFn = Callable[[DView], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass
class Game:
    """One adversarial game and how a family extends it.

    Players: ``G`` and ``D`` name the generator and discriminator networks; ``tag`` suffixes the
    phase and statistic names (``""``: ``D``/``G``, ``loss/D``; ``"A"``: ``D_A``/``G_A``,
    ``loss/D_A``), so two games can run side by side. ``real(ctx) -> (x, c)`` is the real batch
    D sees and its condition (default: ``batch["x"]`` and, for conditional families, the labels
    ``batch["y"]``); ``fake(ctx, G) -> (fake, c, latent)`` makes a fake batch with generator
    network ``G`` (default: ``model.generate(G, z, c)`` from fresh latents and the real batch's
    labels). D's condition ``c`` reaches ``model.d_forward(D, x, c)`` and the penalty.

    ``d_terms``/``g_terms`` return ``(terms, stats)``: weighted terms added to that player's loss
    (each also logged under its key) and extra statistics. ``loss`` replaces the configured
    ``loss.name`` objective on D's scores (EBGAN's margin, BEGAN's equilibrium). ``g_loss``
    replaces G's adversarial loss altogether (the unrolled surrogate of Metz et al. 2017); it
    receives the G step's view. ``g_nets`` are the networks the G phase steps (default ``(G,)``;
    InfoGAN's ``("G", "Q")``). ``feature_matching`` makes G minimise feature matching whatever
    ``tricks.feature_matching`` says (SGAN's default, Salimans et al. 2016 §5). ``after_d`` runs
    after every D optimizer step. ``d_scale`` multiplies D's objective (pix2pix halves it,
    Isola et al. 2017 §3.3). ``image_condition`` tells the tricks that ``c`` is an image paired
    with D's input (so DiffAugment, which would augment one without the other, is refused).
    """

    G: str = "G"
    D: str = "D"
    tag: str = ""
    real: Callable[[StepContext], tuple[Tensor, Any]] | None = None
    fake: Callable[[StepContext, nn.Module], tuple[Tensor, Any, Any]] | None = None
    d_terms: TermsFn | None = None
    g_terms: TermsFn | None = None
    loss: AdversarialLoss | None = None
    g_loss: GLossFn | None = None
    g_nets: tuple[str, ...] | None = None
    feature_matching: bool = False
    after_d: Callable[[], None] | None = None
    d_scale: float = 1.0
    image_condition: bool = False

    def name(self, player: str) -> str:
        """A player's phase/statistic name: ``D``, or ``D_<tag>`` in a tagged game."""
        return f"{player}_{self.tag}" if self.tag else player


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


def _trainable(net: nn.Module) -> list[Tensor]:
    return [p for p in net.parameters() if p.requires_grad]


def adversarial_phases(model: Any, game: Game | None = None) -> list[Phase]:
    """The phases of ``game`` (default: ``Game()``, G against D) for ``model``.

    D minimises ``loss.d_loss`` (+ ``lambda_gp`` x penalty), G minimises ``loss.g_loss``. A lazy
    penalty (``gp_every = k > 1``) becomes its own phase every k steps with weight x k
    (StyleGAN2). The phase-level ``tricks.*`` (:mod:`gankit.tricks`) enter here: D sees every
    batch, real or fake, through ``Tricks.d_input`` (DiffAugment, then instance noise), in the D
    step, the G step and the penalty (whose critic is D after that transform, as in
    StyleGAN2-ADA); label smoothing replaces D's loss, feature matching G's; historical averaging
    and orthogonal regularisation add penalties; ``d_every`` and D freezing gate the D step;
    consensus optimisation replaces the D and G phases by one joint phase over both players'
    full losses. The D phase draws a fresh batch for each of its ``n_critic`` repetitions; the G
    step sees the last one, the batch its fake was made with.
    """
    from ..tricks import Tricks, consensus_surrogate

    game = game or Game()
    Gn, Dn = game.G, game.D
    d_name, g_name = game.name("D"), game.name("G")
    lc = model.cfg.loss
    loss = game.loss or get_loss(lc.name)
    reg = REGULARIZERS.get(lc.gp) if lc.gp else None
    tk = Tricks(model, loss, G=Gn, D=Dn, feature_matching=game.feature_matching,
                image_condition=game.image_condition)
    tc = tk.tc
    g_nets = game.g_nets or (Gn,)
    stash_key = game.tag

    def real_of(ctx: StepContext) -> tuple[Tensor, Any]:
        if game.real is not None:
            return game.real(ctx)
        return ctx.batch["x"], (ctx.batch.get("y") if model.conditional else None)

    def make_fake(ctx: StepContext, G: nn.Module) -> tuple[Tensor, Any, Any]:
        if game.fake is not None:
            return game.fake(ctx, G)
        _, c = real_of(ctx)
        z = model.sample_latent(ctx.n, ctx.generator, ctx.device)
        return model.generate(G, z, c), c, z

    def fake_for_d(ctx: StepContext) -> tuple[Tensor, Any, Any]:
        """A fake batch for a D step; built with G's graph when the next G step reuses it."""
        G = ctx.net(Gn)
        if ctx.keep_fake:
            with ctx.grad_for(Gn):
                out = make_fake(ctx, G)
            ctx.stash[(stash_key, ctx.micro)] = out
            return out
        with torch.no_grad():
            return make_fake(ctx, G)

    def fake_for_g(ctx: StepContext) -> tuple[Tensor, Any, Any]:
        """The stashed fake of the last D step, or a fresh one (with G's graph)."""
        out = ctx.stash.pop((stash_key, ctx.micro), None)
        return out if out is not None else make_fake(ctx, ctx.net(Gn))

    def critic(D: nn.Module, c: Any, step: int) -> Callable[[Tensor], Tensor]:
        return lambda x: model.discriminate(D, tk.d_input(x, step), c)

    def penalty(ctx: StepContext, real: Tensor, c: Any, fake: Tensor,
                stats: dict[str, Tensor]) -> Tensor:
        assert reg is not None
        pen = reg.fn(critic(ctx.net(Dn), c, ctx.step), real, fake)
        stats[f"loss/{d_name}/{reg.name}"] = pen.detach()
        return pen

    def d_stats(d_real: Tensor, d_fake: Tensor) -> dict[str, Tensor]:
        stats = {f"{d_name}/real": d_real.detach().mean(), f"{d_name}/fake": d_fake.detach().mean()}
        if loss.threshold is not None:
            acc = d_accuracy(d_real, d_fake, loss.threshold)
            tk.observe_accuracy(acc)
            stats[f"{d_name}/acc"] = acc
        return stats

    def d_view(ctx: StepContext, real: Tensor, c_real: Any, fake: Tensor, c_fake: Any,
               latent: Any) -> DView:
        """D's inputs and full outputs for a real and a fake batch (the fake one as given)."""
        step, D = ctx.step, ctx.net(Dn)
        real_in, fake_in = tk.d_input(real, step), tk.d_input(fake, step)
        out_real = model.d_forward(D, real_in, c_real)
        out_fake = model.d_forward(D, fake_in, c_fake)
        return DView(ctx, step, fake, c_fake, fake_in, out_fake, lambda x: tk.d_input(x, step),
                     real_in, out_real, real, c_real, latent, ctx.net(Gn), D)

    def d_loss_of(v: DView, stats: dict[str, Tensor]) -> Tensor:
        """D's game loss (its family terms included) for a view; fills ``stats``."""
        d_real = model.d_score(v.out_real, len(v.real_in))  # type: ignore[arg-type]
        d_fake = model.d_score(v.out_fake, len(v.fake_in))
        stats.update(d_stats(d_real, d_fake))
        adv = tk.d_loss(d_real, d_fake)
        if game.d_scale != 1.0:
            adv = game.d_scale * adv
        loss_d = _family_terms(game.d_terms, v, adv, stats, d_name)
        stats[f"loss/{d_name}"] = loss_d.detach()
        return loss_d

    def d_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        real, c_real = real_of(ctx)
        fake, c_fake, latent = fake_for_d(ctx)  # outside no_grad: G's graph may be kept
        stats: dict[str, Tensor] = {}
        if tk.d_frozen(ctx.step):
            # Measure D (so it can thaw) but give it no gradient at all: its optimizer then skips
            # every parameter, moments and step count included (see tricks.AccuracyMonitor).
            with torch.no_grad():
                v = d_view(ctx, real, c_real, fake.detach(), c_fake, latent)
                d_real = model.d_score(v.out_real, len(real))
                d_fake = model.d_score(v.out_fake, len(fake))
                stats.update(d_stats(d_real, d_fake))
                stats[f"loss/{d_name}"] = tk.d_loss(d_real, d_fake)
            return torch.zeros((), device=fake.device, requires_grad=True), \
                {**stats, **tk.frozen_flag(True)}
        loss_d = d_loss_of(d_view(ctx, real, c_real, fake.detach(), c_fake, latent), stats)
        stats.update(tk.frozen_flag(False))
        if reg is not None and lc.gp_every == 1:
            loss_d = loss_d + lc.lambda_gp * penalty(ctx, real, c_real, fake, stats)
        return _add_terms(loss_d, tk.d_penalties(ctx.net(Dn), f"loss/{d_name}"), stats), stats

    def g_loss_of(ctx: StepContext, fake: Tensor, c_fake: Any, latent: Any,
                  out_fake: Any = None, fake_in: Tensor | None = None
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        """G's game loss (its family terms included); ``out_fake`` is D's output on
        ``fake_in`` when the caller has it already (consensus)."""
        step, D = ctx.step, ctx.net(Dn)
        real, c_real = real_of(ctx)
        stats: dict[str, Tensor] = {}

        def view(fake_in: Tensor | None, out_fake: Any) -> DView:
            if out_fake is None:  # G's loss did not need D's outputs; the terms do
                fake_in = tk.d_input(fake, step)
                out_fake = model.d_forward(D, fake_in, c_fake)
            assert fake_in is not None
            return DView(ctx, step, fake, c_fake, fake_in, out_fake,
                         lambda x: tk.d_input(x, step), real=real, c_real=c_real, latent=latent,
                         G=ctx.net(Gn), D=D)

        if game.g_loss is not None:
            loss_g, extra = game.g_loss(DView(ctx, step, fake, c_fake, fake, None,
                                              lambda x: tk.d_input(x, step), real=real,
                                              c_real=c_real, latent=latent, G=ctx.net(Gn), D=D))
            stats.update(extra)
        else:
            loss_g, fake_in, out_fake = tk.g_loss(D, real, c_real, fake, c_fake, step, fake_in,
                                                  out_fake)
        if game.g_terms is not None:
            loss_g = _family_terms(game.g_terms, view(fake_in, out_fake), loss_g, stats, g_name)
        stats[f"loss/{g_name}"] = loss_g.detach()
        return loss_g, stats

    def g_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        fake, c_fake, latent = fake_for_g(ctx)
        loss_g, stats = g_loss_of(ctx, fake, c_fake, latent)
        return _add_terms(loss_g, tk.g_penalties(ctx.net(Gn), f"loss/{g_name}"), stats), stats

    def g_params(ctx: StepContext) -> list[Tensor]:
        return [p for k in g_nets for p in _trainable(ctx.net(k))]

    def gd_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        # Consensus optimisation (Mescheder et al. 2017): one fake batch with G's graph, both
        # players' full losses (family terms included), and the surrogate whose gradient is each
        # player's grad L_i + gamma grad 1/2 ||v||^2. Penalties stay outside the game's field v.
        real, c_real = real_of(ctx)
        fake, c_fake, latent = make_fake(ctx, ctx.net(Gn))
        stats: dict[str, Tensor] = {}
        v = d_view(ctx, real, c_real, fake, c_fake, latent)
        loss_d = d_loss_of(v, stats)
        loss_g, g_stats = g_loss_of(ctx, fake, c_fake, latent, v.out_fake, v.fake_in)
        stats.update(g_stats)
        total, cons = consensus_surrogate([(loss_g, g_params(ctx)),
                                           (loss_d, _trainable(ctx.net(Dn)))], tc.consensus)
        stats[f"loss/consensus{'_' + game.tag if game.tag else ''}"] = cons.detach()
        if reg is not None and lc.gp_every == 1:
            total = total + lc.lambda_gp * penalty(ctx, real, c_real, fake.detach(), stats)
        total = _add_terms(total, tk.d_penalties(ctx.net(Dn), f"loss/{d_name}"), stats)
        return _add_terms(total, tk.g_penalties(ctx.net(Gn), f"loss/{g_name}"), stats), stats

    clip = float(lc.clip) if lc.clip is not None else None
    D_net, G_net = getattr(model, Dn), getattr(model, Gn)

    def after_d() -> None:
        if clip is not None:
            clip_weights(D_net, clip)
        if game.after_d is not None:
            game.after_d()
        tk.after_step(Dn, D_net)

    def after_g() -> None:
        tk.after_step(Gn, G_net)

    def after_gd() -> None:
        after_d()
        after_g()

    g_opt: str | tuple[str, ...] = g_nets[0] if len(g_nets) == 1 else tuple(g_nets)
    if tc.consensus > 0:
        phases = [Phase(game.name("GD"), (*g_nets, Dn), gd_step, after_step=after_gd,
                        applies_tricks=True)]
    else:
        phases = [Phase(d_name, Dn, d_step, every=tc.d_every, repeat=model.cfg.optim.n_critic,
                        fresh=True, makes_fake=True, fake_key=stash_key, after_step=after_d,
                        applies_tricks=True)]
    if reg is not None and lc.gp_every > 1:
        k = lc.gp_every

        def d_reg(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            real, c_real = real_of(ctx)
            with torch.no_grad():
                fake, _, _ = make_fake(ctx, ctx.net(Gn))
            stats: dict[str, Tensor] = {}
            return lc.lambda_gp * k * penalty(ctx, real, c_real, fake, stats), stats

        phases.append(Phase(f"{d_name}_reg", Dn, d_reg, every=k, lazy_reg=True))
    if tc.consensus == 0:
        phases.append(Phase(g_name, g_opt, g_step, uses_fake=True, fake_key=stash_key,
                            after_step=after_g, applies_tricks=True))
    return phases
