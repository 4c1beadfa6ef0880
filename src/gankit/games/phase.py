"""Phases and the step context: the contract between a model family and the Trainer.

A family declares its training as :class:`Phase` objects; the Trainer runs them and is the only
code that touches optimizers, backward, AMP, accumulation, data parallelism, EMA and checkpoints
(StyleGAN2-ADA's ``loss.py``/``training_loop.py`` split, Lightning's ``configure_optimizers``).
A phase's loss function sees one :class:`StepContext`: the step, the networks by name, one batch
per micro-batch shared by all phases of the step, a noise generator and a place to hand a fake
batch from one phase to the next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

Batch = dict[str, Tensor]
Stats = dict[str, Tensor]
LossFn = Callable[["StepContext"], "tuple[Tensor | None, Stats]"]

#: ``grad``: the loss is back-propagated and the phase's optimizers step. ``closed_form``: the
#: loss function updates its networks itself, without gradients (EM's M-step, a controller), and
#: returns ``(None, stats)``; no optimizer is involved.
PHASE_KINDS = ("grad", "closed_form")


@dataclass(frozen=True)
class Burst:
    """Step-dependent repetitions of a phase: ``repeat`` times instead of the phase's own count
    at steps ``t < first`` and at every step with ``t % period == 0`` (``period=None``: never
    after the first steps).

    The critic schedule of the WGAN authors' code, kept by VA-GAN (Baumgartner et al. 2018):
    100 critic iterations for each of the first 25 generator iterations and for every 100th one
    (WGAN's code: every 500th), 5 otherwise, so the critic is near its optimum early and is
    re-tuned now and then. ``t`` is the training step, one generator step each.
    """

    repeat: int
    first: int = 0
    period: int | None = None

    def __post_init__(self) -> None:
        if self.repeat < 1 or self.first < 0 or (self.period is not None and self.period < 1):
            raise ValueError(f"burst: repeat and period must be >= 1 and first >= 0, got "
                             f"repeat={self.repeat}, first={self.first}, period={self.period}")

    def at(self, step: int) -> bool:
        """Whether ``step`` is a burst step."""
        return step < self.first or (self.period is not None and step % self.period == 0)


@dataclass
class Phase:
    """One update of a training step.

    ``opt`` names the network(s) whose optimizers the phase steps (a tuple when one loss updates
    several, e.g. InfoGAN's G and Q); a ``closed_form`` phase names none. The phase is active at
    step ``t`` when ``start <= t < stop`` and ``(t - start) % every == 0``; it then runs
    ``repeat`` times in a row (k D steps per G step, Goodfellow et al. 2014 Alg. 1), each time
    over ``optim.grad_accum`` micro-batches; a :class:`Burst` (``burst``) raises the count at
    some steps (:meth:`repeats`). With ``fresh`` every repetition after the first
    draws a new batch (Alg. 1 samples a new minibatch for each of the k D steps); otherwise the
    phase sees the step's batch, shared with the step's other phases, so a G step sees the real
    batch its fake was made from.

    ``makes_fake``/``uses_fake`` pair a D step that can build its fake batch with G's graph and a
    later G step of the same game (``fake_key``) that reuses it instead of running G again (the
    classic DCGAN loop). ``after_step`` runs after every optimizer step (weight clipping,
    controllers). ``lazy_reg`` marks a regulariser that runs every ``every`` steps on its own
    (StyleGAN2's lazy R1): the Trainer then gives its networks' Adam the lr/beta correction
    ``c = every / (every + 1)`` (Karras et al. 2020, Appendix B). ``applies_tricks`` marks phases
    whose loss applies the configured phase-level ``tricks.*``.
    """

    name: str
    opt: str | tuple[str, ...]
    loss_fn: LossFn
    every: int = 1
    repeat: int = 1
    start: int = 0
    stop: int | None = None
    kind: str = "grad"
    fresh: bool = False
    makes_fake: bool = False
    uses_fake: bool = False
    fake_key: str = ""
    after_step: Callable[[], None] | None = None
    applies_tricks: bool = False
    lazy_reg: bool = False
    burst: Burst | None = None

    def __post_init__(self) -> None:
        if self.every < 1 or self.repeat < 1 or self.start < 0:
            raise ValueError(f"phase {self.name}: every and repeat must be >= 1, start >= 0")
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(f"phase {self.name}: stop ({self.stop}) must exceed start "
                             f"({self.start})")
        if self.kind not in PHASE_KINDS:
            raise ValueError(f"phase {self.name}: kind must be one of {PHASE_KINDS}")
        if self.kind == "closed_form" and self.opts:
            raise ValueError(f"phase {self.name}: a closed-form phase steps no optimizer")
        if self.kind == "grad" and not self.opts:
            raise ValueError(f"phase {self.name}: a gradient phase names the networks it updates")

    @property
    def opts(self) -> tuple[str, ...]:
        return (self.opt,) if isinstance(self.opt, str) else tuple(self.opt)

    def repeats(self, step: int) -> int:
        """How many times the phase runs at ``step`` (when active): ``repeat``, or the burst's
        count at its steps."""
        if self.burst is not None and self.burst.at(step):
            return self.burst.repeat
        return self.repeat

    def active(self, step: int) -> bool:
        """Whether the phase runs at ``step``."""
        return (step >= self.start and (self.stop is None or step < self.stop)
                and (step - self.start) % self.every == 0)


class StepContext:
    """What a phase's loss function sees.

    ``batch`` is the step's batch for the current micro-batch (a dict such as ``{"x", "y"}``,
    ``{"a", "b"}`` or one entry per class stream, as the family's data source yields), drawn on
    first use and shared by every phase of the step; :meth:`fresh_batch` replaces it by a new
    draw. ``nets`` holds the trained and frozen networks by name. ``stash`` carries values from
    one phase to a later one within the step (the fake batch the G step reuses); it is cleared
    at the end of every step.
    """

    def __init__(self, trainer: Any) -> None:
        self.tr = trainer
        self.model: Any = trainer.model  # the ModelFamily
        self.nets: dict[str, nn.Module] = {**trainer.frozen, **trainer.nets}
        self.step = 0
        self.micro = 0
        self.keep_fake = False
        self.stash: dict[Any, Any] = {}
        self._batches: dict[int, Batch] = {}

    # -- networks ---------------------------------------------------------------------------
    def net(self, name: str) -> nn.Module:
        try:
            return self.nets[name]
        except KeyError:
            raise KeyError(f"no network '{name}'; networks: {', '.join(self.nets)}") from None

    @property
    def G(self) -> nn.Module:
        return self.net("G")

    @property
    def D(self) -> nn.Module:
        return self.net("D")

    @contextlib.contextmanager
    def grad_for(self, *names: str) -> Iterator[None]:
        """Let the named networks record gradients inside the block (e.g. G while a D step
        builds a fake batch that the G step will back-propagate through)."""
        with self.tr.grad_for(*(self.net(n) for n in names)):
            yield

    # -- data -------------------------------------------------------------------------------
    @property
    def batch(self) -> Batch:
        b = self._batches.get(self.micro)
        if b is None:
            b = self._batches[self.micro] = self.tr.source.draw()
        return b

    def fresh_batch(self) -> Batch:
        """Draw a new batch; it replaces the step's batch for this micro-batch."""
        self._batches.pop(self.micro, None)
        return self.batch

    @property
    def real(self) -> Tensor:
        return self.batch["x"]

    @property
    def c(self) -> Tensor | None:
        return self.batch.get("y") if self.model.conditional else None

    @property
    def n(self) -> int:
        """Samples per micro-batch on this process."""
        return self.tr.source.local

    @property
    def device(self) -> torch.device:
        return self.tr.device

    @property
    def generator(self) -> torch.Generator:
        """The training noise generator (per process, checkpointed)."""
        return self.tr.noise_gen

    def z(self, n: int) -> Tensor:
        return self.model.sample_latent(n, self.generator, self.device)

    # -- the Trainer's side -----------------------------------------------------------------
    def begin_step(self, step: int) -> None:
        self.step = step
        self._batches = {}

    def enter(self, micro: int, keep_fake: bool, fresh: bool) -> None:
        """Before a phase's loss on micro-batch ``micro``: ``fresh`` drops the step's batch."""
        self.micro, self.keep_fake = micro, keep_fake
        if fresh:
            self._batches.pop(micro, None)

    def end_step(self) -> None:
        self.stash.clear()
        self._batches = {}
