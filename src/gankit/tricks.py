"""Stabilisation tricks as config switches (``tricks.*``), combinable, for any family whose
training uses :func:`gankit.games.adversarial.adversarial_phases` — every built-in family does: those
with auxiliary heads or their own objective (SGAN, ACGAN, InfoGAN, SSGAN, BEGAN, EBGAN,
SphereGAN) extend that game through :class:`gankit.games.adversarial.Game` instead of writing their
own phases. The exception is ``unrolled``: its G loss runs against a functional copy of D
unrolled on D's plain loss, which the tricks would not reach, so it refuses them.

The seeds collect them as best practices: seed 000/001 §3.5 "Improving GANs" and Box 4 (feature
matching, minibatch discrimination, one-sided label smoothing, update schedules), deck 003
("Dropout in Discriminator", "If the discriminator gets too strong, freeze it temporarily",
"Data Augmentation", instance noise and consensus optimisation in its convergence figure,
BigGAN's orthogonal regularisation, ProGAN's minibatch standard deviation), chapter 002 §4.4-4.5.

===========================  ===================================================================
``tricks.`` key              what it does (source)
===========================  ===================================================================
``label_smoothing`` s        D's real target 1 - s in the BCE loss (Salimans et al. 2016 §3.4)
``instance_noise`` s0        N(0, s^2) added to every D input, s annealed linearly to 0 over
                             ``instance_noise_anneal`` steps (Sønderby et al. 2017; Arjovsky &
                             Bottou 2017 §3)
``feature_matching``         G minimises ||E f(x) - E f(G(z))||^2 of D's penultimate features
                             (Salimans et al. 2016 §3.1)
``minibatch_discrimination`` B kernels of learned L1 batch similarity before D's head
                             (Salimans et al. 2016 §3.2; :mod:`gankit.nn.minibatch`)
``minibatch_stddev`` G       group std appended as a feature before D's head (Karras et al. 2018
                             §3)
``historical_averaging`` l   + l ||theta - mean of past theta||^2 for D and G (Salimans et al.
                             2016 §3.3)
``d_dropout`` p              dropout after D's activations (Goodfellow et al. 2014 §5)
``d_every`` k                the D phase runs on every k-th step only
``freeze_d_when_acc_above``  skip D's update while its running accuracy exceeds a (deck 003)
``diffaugment``              DiffAugment policies on real and fake D inputs (Zhao et al. 2020)
``orthogonal_reg`` b         + b ||W W^T (1 - I)||_F^2 over G's weights (Brock et al. 2019 §3.1)
``consensus`` g              both players also minimise g/2 ||v||^2, v = the game's gradient
                             field (Mescheder et al. 2017); one joint "GD" phase
===========================  ===================================================================

TTUR (``optim.lr_g``/``optim.lr_d``), k D steps per G step (``optim.n_critic``) and the EMA of G
(``train.ema``) are ordinary config keys elsewhere.

State that must survive a resume (historical averages, D's running accuracy) is kept as buffers
of a :class:`TricksState` submodule of the family; the Trainer checkpoints a family's own
buffers (``family.safetensors``), so a resumed run continues bit-for-bit on CPU. Random draws
(instance noise, DiffAugment) use the global torch RNG, which checkpoints carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError
from .nn.augment import diff_augment, parse_policy

if TYPE_CHECKING:
    from .config import Config, TricksConfig
    from .losses.adversarial import AdversarialLoss

# Tricks that act through the phases (need adversarial_phases or a family that opts in) and those
# that are layers of the discriminator (need a DCGAN/MLP discriminator built with them).
PHASE_TRICKS = ("label_smoothing", "instance_noise", "feature_matching", "historical_averaging",
                "d_every", "freeze_d_when_acc_above", "diffaugment", "orthogonal_reg", "consensus")
D_LAYER_TRICKS = ("d_dropout", "minibatch_stddev", "minibatch_discrimination")


def active(tc: TricksConfig, names: Sequence[str] = PHASE_TRICKS + D_LAYER_TRICKS) -> list[str]:
    """The keys among ``names`` set away from their (off) defaults."""
    defaults = type(tc)()
    return [k for k in names if getattr(tc, k) != getattr(defaults, k)]


def tricks_config(cfg: Any) -> TricksConfig:
    """``cfg.tricks`` (every config has the section; all tricks are off by default)."""
    return cfg.tricks


def d_layer_kwargs(cfg: Config) -> dict[str, Any]:
    """Constructor keywords of :class:`~gankit.models.dcgan.DCDiscriminator` and
    :class:`~gankit.models.gan.MLPDiscriminator` for the configured D layers."""
    tc = tricks_config(cfg)
    return {"dropout": tc.d_dropout, "mbstd_group": tc.minibatch_stddev,
            "mbdisc_kernels": tc.minibatch_discrimination,
            "mbdisc_dim": tc.minibatch_discrimination_dim}


# --- config checks ------------------------------------------------------------------------------
def check_config(cfg: Config) -> None:
    """Cross-section rules of the tricks, checked when the config is resolved."""
    tc = cfg.tricks
    if tc.label_smoothing > 0:
        from .losses import get_loss

        check_label_smoothing(get_loss(cfg.loss.name))
    if tc.consensus > 0:
        clash = [k for k, bad in (("optim.n_critic", cfg.optim.n_critic > 1),
                                  ("tricks.d_every", tc.d_every > 1),
                                  ("tricks.freeze_d_when_acc_above",
                                   tc.freeze_d_when_acc_above is not None)) if bad]
        if clash:
            raise ConfigError(f"tricks.consensus updates G and D together in one phase; it cannot "
                              f"be combined with {', '.join(clash)}")
    if tc.consensus > 0 and cfg.train.amp == "fp16":
        raise ConfigError("tricks.consensus differentiates through unscaled gradients, which "
                          "underflow in fp16; use train.amp=bf16 or none")
    if tc.freeze_d_when_acc_above is not None and cfg.train.amp == "fp16":
        raise ConfigError("tricks.freeze_d_when_acc_above cannot be used with train.amp=fp16: a "
                          "skipped D step has no gradients, which fp16 loss scaling rejects "
                          "(use bf16)")


def check_label_smoothing(loss: AdversarialLoss) -> None:
    """Label smoothing is defined for D's binary cross-entropy (the probabilistic losses)."""
    r, f = torch.tensor([1.5, -0.5]), torch.tensor([0.3, -2.0])
    if not loss.probabilistic or not torch.allclose(loss.d_loss(r, f),
                                                    smoothed_bce_d_loss(r, f, 0.0)):
        raise ConfigError(f"tricks.label_smoothing smooths D's cross-entropy targets and needs a "
                          f"probabilistic loss (minimax, nonsaturating); loss.name is "
                          f"'{loss.name}'")


# --- the tricks as plain functions -------------------------------------------------------------
def smoothed_bce_d_loss(d_real: Tensor, d_fake: Tensor, smoothing: float) -> Tensor:
    """D's BCE with real target ``t = 1 - smoothing`` and fake target 0 (one-sided smoothing).

    ``-[t log s(l) + (1 - t) log(1 - s(l))] = t softplus(-l) + (1 - t) softplus(l)`` on logits
    ``l``; fakes keep target 0 because smoothing them would reward G's samples where the data
    has no mass (Salimans et al. 2016 §3.4). ``smoothing = 0`` is the ordinary D loss.
    """
    t = 1.0 - smoothing
    real = t * F.softplus(-d_real) + (1.0 - t) * F.softplus(d_real)
    return real.mean() + F.softplus(d_fake).mean()


def instance_noise_sigma(step: int, sigma0: float, anneal: int) -> float:
    """``sigma0 * max(0, 1 - step / anneal)``; constant ``sigma0`` when ``anneal == 0``.

    Noise makes the real and fake distributions overlap, so D's optimum is smooth and its
    gradients informative (Arjovsky & Bottou 2017 §3; Sønderby et al. 2017 §3.1); it is annealed
    away because it also blurs what G must learn.
    """
    if anneal <= 0:
        return float(sigma0)
    return float(sigma0) * max(0.0, 1.0 - step / anneal)


def feature_matching_loss(f_real: Tensor, f_fake: Tensor) -> Tensor:
    """``||mean_i f(x_i) - mean_j f(G(z_j))||^2`` over ``[N, F]`` features (Salimans et al. §3.1).

    The real features are treated as constants: G is trained to match D's statistics, not to move
    them.
    """
    return (f_real.detach().mean(0) - f_fake.mean(0)).pow(2).sum()


_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d)


def _filters(m: nn.Module) -> Tensor:
    """A layer's raw weight as ``[filters, fan_in]`` (the pre-normalisation one if parametrized)."""
    w = m.parametrizations.weight.original if nn.utils.parametrize.is_parametrized(m, "weight") \
        else m.weight
    if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        w = w.transpose(0, 1)  # [in, out, k, k] -> output filters first
    return w.flatten(1)


def orthogonal_penalty(module: nn.Module) -> Tensor:
    """``sum_W ||W W^T * (1 - I)||_F^2`` over the conv/linear weights of ``module``.

    BigGAN's relaxed orthogonal regularisation (Brock et al. 2019 §3.1): only the inner products
    between different filters are pushed to 0, not their norms, so it does not fight the weight
    scale. ``W W^T`` may be huge for a wide projection layer (``filters > fan_in``); since
    ``||W W^T||_F = ||W^T W||_F`` and the removed diagonal holds the squared row norms, the penalty
    is computed from the smaller Gram matrix: ``||W^T W||_F^2 - sum_i ||w_i||^4``.
    """
    total: Tensor | None = None
    for m in module.modules():
        if not isinstance(m, _WEIGHTED):
            continue
        w = _filters(m).float()  # [filters, fan_in]
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        pen = gram.pow(2).sum() - w.pow(2).sum(1).pow(2).sum()
        total = pen if total is None else total + pen
    if total is None:
        raise ConfigError("tricks.orthogonal_reg: the generator has no linear/conv weights")
    return total


def consensus_surrogate(players: Sequence[tuple[Tensor, Sequence[Tensor]]],
                        gamma: float) -> tuple[Tensor, Tensor]:
    """A scalar whose gradient is each player's consensus update (Mescheder et al. 2017, Alg. 2).

    ``players`` are ``(loss_i, params_i)``: every player minimises its own loss ``L_i`` over its
    own parameters. With the game's vector field ``v = (grad_{params_i} L_i)_i`` and
    ``R = 1/2 ||v||^2``, player i follows ``grad_{params_i} (L_i + gamma R)``. One backward of
    ``sum_i <stop_grad(grad L_i), params_i> + gamma R`` gives exactly these gradients, which a
    plain sum of the losses would not (it would add ``grad_G L_D`` to G's update). Returns
    ``(surrogate, R)``; needs double backpropagation through both networks.
    """
    lin: Tensor | None = None
    reg: Tensor | None = None
    for loss, params in players:
        params = list(params)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        for p, g in zip(params, grads):
            if g is None:
                continue
            term = (g.detach() * p).sum()
            lin = term if lin is None else lin + term
            sq = g.pow(2).sum()
            reg = sq if reg is None else reg + sq
    if lin is None or reg is None:
        raise ValueError("consensus: no player's loss depends on its parameters")
    reg = 0.5 * reg
    return lin + gamma * reg, reg


# --- state kept across steps (checkpointed as family buffers) -----------------------------------
class HistoricalAverage(nn.Module):
    """Running mean of a network's parameters over all past steps, as buffers.

    ``avg_i`` starts at the initial ``theta_i`` (count 1) and after every optimizer step becomes
    the mean of all values seen, ``avg += (theta - avg) / count``. The penalty
    ``sum_i ||theta_i - avg_i||^2`` is zero at the mean (Salimans et al. 2016 §3.3).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        params = list(net.parameters())
        self.n = len(params)
        for i, p in enumerate(params):
            self.register_buffer(f"avg_{i}", p.detach().clone())
        self.register_buffer("count", torch.ones((), device=params[0].device if params else None))

    def averages(self) -> list[Tensor]:
        return [getattr(self, f"avg_{i}") for i in range(self.n)]

    def _params(self, net: nn.Module) -> list[Tensor]:
        params = list(net.parameters())
        if len(params) != self.n:
            raise RuntimeError(f"historical averaging: the network now has {len(params)} "
                               f"parameters, {self.n} when the averages were made")
        return params

    def penalty(self, net: nn.Module) -> Tensor:
        return sum(((p - a).pow(2).sum() for p, a in zip(self._params(net), self.averages())),
                   torch.zeros((), device=self.count.device))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        self.count += 1
        w = self.count.reciprocal()  # 0-dim device tensor: no host sync
        for p, a in zip(self._params(net), self.averages()):
            a.lerp_(p.detach(), w)


class AccuracyMonitor(nn.Module):
    """D's running accuracy and the frozen/not-frozen decision, for ``freeze_d_when_acc_above``.

    Why not mask the loss: a D loss multiplied by 0 (or replaced by ``torch.where``) still hands
    the optimizer zero gradients, and Adam/RMSprop step anyway: the moments decay, the weights move
    by ``lr * m / sqrt(v)`` from the stored momentum, the bias-correction step advances and weight
    decay applies. A frozen D must get *no* gradient (``grad is None``), so its optimizer skips
    every parameter; that requires a decision on the host. Reading D's accuracy on the host every
    step would sync the device every step, so the decision is taken every ``check_every`` steps
    (default ``train.log_every``, when statistics are synchronised anyway) and held in between.

    The accuracy is an exponential moving average (``decay``) of D's batch accuracy on device; it
    keeps being measured while D is frozen, so D thaws when G catches up. Decisions are taken on
    steps divisible by ``check_every`` on which the D phase runs (with ``tricks.d_every = k``,
    steps divisible by both). Both the average and the held decision are buffers, so a resumed
    run decides exactly as the uninterrupted one.
    """

    def __init__(self, threshold: float, check_every: int, decay: float,
                 device: torch.device | None = None) -> None:
        super().__init__()
        self.threshold, self.check_every, self.decay = threshold, check_every, decay
        self.register_buffer("acc", torch.full((), 0.5, device=device))  # chance level
        self.register_buffer("frozen", torch.zeros((), device=device))
        self._host: bool | None = None  # cached ``frozen``; None: read once (after a load)
        self._checked: int | None = None  # the step of the last decision

    def is_frozen(self, step: int) -> bool:
        """The decision for ``step`` (re-taken on steps divisible by ``check_every``)."""
        if step % self.check_every == 0 and self._checked != step:
            self._checked = step
            self._host = bool(self.acc > self.threshold)  # the one host sync per check
            self.frozen.fill_(float(self._host))
        elif self._host is None:
            self._host = bool(self.frozen)
        return self._host

    @torch.no_grad()
    def observe(self, acc: Tensor) -> None:
        self.acc.lerp_(acc.to(self.acc.dtype), 1.0 - self.decay)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host, self._checked = None, None


class TricksState(nn.Module):
    """Container of the trick state, registered on the family as ``tricks_state``: historical
    averages and D-freezing monitors, keyed by network name (two games keep two of each)."""

    def __init__(self) -> None:
        super().__init__()
        self.hist = nn.ModuleDict()  # network name -> HistoricalAverage
        self.monitors = nn.ModuleDict()  # discriminator name -> AccuracyMonitor


# --- what the adversarial game uses -------------------------------------------------------------
class Tricks:
    """The configured tricks of one adversarial game, as the pieces its phases need.

    Built by :func:`gankit.games.adversarial.adversarial_phases` for the players ``G`` and ``D``
    (network names of ``model``). A family should extend that game
    (:class:`~gankit.games.adversarial.Game`) rather than write its own phases; one that must can
    still opt in by building a ``Tricks`` and using :meth:`d_input`, :meth:`d_loss`,
    :meth:`g_loss`, :meth:`d_penalties`, :meth:`g_penalties` and :meth:`after_step` (and tagging
    its phases ``applies_tricks=True``).
    """

    def __init__(self, model: Any, loss: AdversarialLoss, *, G: str = "G", D: str = "D",
                 feature_matching: bool = False, image_condition: bool = False) -> None:
        cfg = model.cfg
        self.model = model
        self.G, self.D = G, D
        self.tc = tc = tricks_config(cfg)
        self.loss = loss
        g_net, d_net = getattr(model, G), getattr(model, D)
        # G minimises feature matching: switched on by the config or by the family (SGAN)
        self.feature_matching = bool(tc.feature_matching or feature_matching)
        if D == "D":
            model.install_tricks(modify=False)  # D layers set after the model was built: refuse
        if tc.label_smoothing > 0:
            check_label_smoothing(loss)
        self.policy = parse_policy(tc.diffaugment)
        if self.policy and len(model.sample_shape) != 3:
            raise ConfigError(f"tricks.diffaugment augments images; the data has shape "
                              f"{list(model.sample_shape)}")
        if self.policy and image_condition:
            raise ConfigError("tricks.diffaugment would augment D's image without its input "
                              "image and break the pair it judges; it is not available for "
                              "image-conditioned games")
        if self.feature_matching and not getattr(model, "has_d_features", lambda _: True)(D):
            raise ConfigError("tricks.feature_matching needs D's penultimate features: give "
                              "the discriminator a features(x) method (the DCGAN/MLP "
                              "discriminators have one) or override d_features")
        dev = next(g_net.parameters()).device
        self.monitor: AccuracyMonitor | None = None
        self.hist: dict[str, HistoricalAverage] = {}
        if tc.historical_averaging > 0 or tc.freeze_d_when_acc_above is not None:
            state = getattr(model, "tricks_state", None)
            if not isinstance(state, TricksState):
                state = TricksState()
                model.tricks_state = state  # family buffers: checkpointed in family.safetensors
            if tc.historical_averaging > 0:
                for k, net in ((G, g_net), (D, d_net)):
                    if k not in state.hist:
                        state.hist[k] = HistoricalAverage(net).to(dev)
                    self.hist[k] = state.hist[k]  # type: ignore[assignment]
            if tc.freeze_d_when_acc_above is not None:
                if loss.threshold is None:
                    raise ConfigError(f"tricks.freeze_d_when_acc_above needs D's accuracy, and "
                                      f"the '{loss.name}' objective's scores have no real/fake "
                                      f"threshold")
                if torch.distributed.is_available() and torch.distributed.is_initialized() \
                        and torch.distributed.get_world_size() > 1:
                    raise ConfigError("tricks.freeze_d_when_acc_above is single-process only: "
                                      "the gradient all-reduce would hand a frozen D zero "
                                      "gradients, which its optimizer still steps with")
                if D not in state.monitors:
                    state.monitors[D] = AccuracyMonitor(
                        tc.freeze_d_when_acc_above,
                        tc.freeze_d_check_every or cfg.train.log_every, tc.freeze_d_decay, dev)
                self.monitor = state.monitors[D]  # type: ignore[assignment]
                self._one = torch.ones((), device=dev)
                self._zero = torch.zeros((), device=dev)

    # D's view of a batch: augmentation, then instance noise ------------------------------------
    def noise_sigma(self, step: int) -> float:
        return instance_noise_sigma(step, self.tc.instance_noise, self.tc.instance_noise_anneal)

    def d_input(self, x: Tensor, step: int) -> Tensor:
        """What D sees of a (real or fake) batch at ``step``; ``x`` itself when no trick is on."""
        if self.policy:
            x = diff_augment(x, self.policy)
        sigma = self.noise_sigma(step)
        if sigma > 0:
            x = x + sigma * torch.randn_like(x)
        return x

    # losses --------------------------------------------------------------------------------------
    def d_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        if self.tc.label_smoothing > 0:
            return smoothed_bce_d_loss(d_real, d_fake, self.tc.label_smoothing)
        return self.loss.d_loss(d_real, d_fake)

    def g_loss(self, D: nn.Module, real: Tensor, c_real: Any, fake: Tensor, c_fake: Any,
               step: int, fake_in: Tensor | None = None, out_fake: Any = None
               ) -> tuple[Tensor, Tensor | None, Any]:
        """G's adversarial loss against ``D``, or feature matching on D's penultimate features
        (against the step's real batch ``real``).

        Returns ``(loss, fake_in, out_fake)``: D's view of the fakes and D's full output on it
        (``None`` under feature matching, which does not run D's heads). ``fake_in``/``out_fake``
        may be given when the caller has them already.
        """
        m = self.model
        if self.feature_matching:
            with torch.no_grad():
                f_real = m.d_features(D, self.d_input(real, step), c_real)
            if fake_in is None:
                fake_in = self.d_input(fake, step)
            f_fake = m.d_features(D, fake_in, c_fake)
            return feature_matching_loss(f_real, f_fake), fake_in, out_fake
        if out_fake is None:
            fake_in = self.d_input(fake, step)
            out_fake = m.d_forward(D, fake_in, c_fake)
        return self.loss.g_loss(m.d_score(out_fake, len(fake))), fake_in, out_fake

    def d_penalties(self, D: nn.Module, prefix: str = "loss/D") -> dict[str, Tensor]:
        """Weighted extra terms of D's loss, by stat name."""
        out = {}
        if self.D in self.hist:
            out[f"{prefix}/hist"] = self.tc.historical_averaging * self.hist[self.D].penalty(D)
        return out

    def g_penalties(self, G: nn.Module, prefix: str = "loss/G") -> dict[str, Tensor]:
        """Weighted extra terms of G's loss, by stat name."""
        out = {}
        if self.G in self.hist:
            out[f"{prefix}/hist"] = self.tc.historical_averaging * self.hist[self.G].penalty(G)
        if self.tc.orthogonal_reg > 0:
            out[f"{prefix}/ortho"] = self.tc.orthogonal_reg * orthogonal_penalty(G)
        return out

    # D freezing ----------------------------------------------------------------------------------
    def d_frozen(self, step: int) -> bool:
        return self.monitor is not None and self.monitor.is_frozen(step)

    def observe_accuracy(self, acc: Tensor) -> None:
        if self.monitor is not None:
            self.monitor.observe(acc)

    def frozen_flag(self, frozen: bool) -> dict[str, Tensor]:
        if self.monitor is None:
            return {}
        return {"D/frozen": self._one if frozen else self._zero}

    # after an optimizer step ---------------------------------------------------------------------
    def after_step(self, key: str, net: nn.Module) -> None:
        """Fold the new weights of network ``key`` into its historical average."""
        if key in self.hist and not (key == self.D and self.d_frozen_now):
            self.hist[key].update(net)

    @property
    def d_frozen_now(self) -> bool:
        """The decision currently held (no sync)."""
        return self.monitor is not None and bool(self.monitor._host)

