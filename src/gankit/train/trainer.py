"""The Trainer: the only code that touches optimizers, backward, AMP, accumulation, DDP and EMA.

A model family declares its networks, optimizer specs, data source and phases
(:mod:`gankit.models.base`); each step the Trainer sets the scheduled learning rates, runs every
active phase ``repeat`` times (its burst count at burst steps) over ``grad_accum`` micro-batches that share one batch per step,
updates the EMA copies and checkpoints. Statistics stay on the device and are synchronised once
per ``log_every`` steps. Callbacks see the run through an explicit API: they log records with
:meth:`Trainer.log` (which writes the run directory's streams and tells the other callbacks) and
ask for a rollback with :meth:`Trainer.request_rollback`.

The Trainer keeps its own copy of torch's global RNG state (dropout, penalty interpolation and
augmentation draw from it): :meth:`Trainer.fit` swaps it in with ``torch.random.fork_rng`` and
out again, so training never reseeds the caller's global generator, and the state travels in
every checkpoint, so a resumed run continues bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config
from ..data.base import Dataset
from ..data.sources import build_source
from ..errors import ConfigError
from ..games.phase import Phase, StepContext
from ..models.base import ModelFamily
from ..rundir import RunDir
from . import checkpoint as ckpt
from .distributed import DistInfo, allreduce_grads, barrier, broadcast_state
from .optim import Schedule, build_optimizer, check_net_overrides, resolve_spec


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: '{name}' is not a device (auto, cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available")
    return dev


class EMA:
    """Exponential moving averages of some networks' weights (Karras et al. 2018; Yazici et al.
    2019), one frozen copy per network, ``copies[name]``.

    Warm-up: the decay used at step t is ``min(decay, (1 + t) / (10 + t))`` so early averages are
    not dominated by the random initialisation. Buffers (BN statistics) are copied.
    """

    def __init__(self, nets: dict[str, nn.Module], decay: float, start: int) -> None:
        self.copies = {k: copy.deepcopy(n).eval().requires_grad_(False) for k, n in nets.items()}
        self.decay, self.start = decay, start

    @property
    def G_ema(self) -> nn.Module:
        return self.copies["G"]

    @torch.no_grad()
    def update(self, nets: dict[str, nn.Module], step: int) -> None:
        t = step - self.start
        beta = min(self.decay, (1 + t) / (10 + t)) if t >= 0 else 0.0
        for k, avg in self.copies.items():
            src, dst = list(nets[k].parameters()), list(avg.parameters())
            if beta == 0.0:
                torch._foreach_copy_(dst, src)
            else:
                torch._foreach_lerp_(dst, src, 1.0 - beta)
            for b_ema, b in zip(avg.buffers(), nets[k].buffers()):
                b_ema.copy_(b)


class FamilyBuffers(nn.Module):
    """A state-dict view of :meth:`ModelFamily.family_buffers` so they checkpoint like a network."""

    def __init__(self, model: ModelFamily) -> None:
        super().__init__()
        self._model = [model]  # a list: not registered as a submodule

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:  # type: ignore[override]
        return dict(self._model[0].family_buffers())

    def load_state_dict(self, sd: dict[str, Tensor], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        own = self._model[0].family_buffers()
        if set(sd) != set(own):
            raise RuntimeError(f"family buffers differ: saved {sorted(sd)}, model {sorted(own)}")
        with torch.no_grad():
            for k, v in sd.items():
                own[k].copy_(v)


class Callback:
    """Hooks called by the Trainer (rank 0 only unless ``all_ranks``)."""

    all_ranks = False

    def on_train_start(self, tr: Trainer) -> None: ...

    def on_step_end(self, tr: Trainer) -> None: ...

    def on_phase_end(self, tr: Trainer, phase: Phase) -> None:
        """After a phase's optimizer step(s), before its gradients are cleared: the place to
        read gradient norms (keep them on the device; sync only when logging)."""

    def on_log(self, tr: Trainer, stream: str, rec: dict[str, Any]) -> None:
        """A record was logged (by any callback) to ``stream`` (metrics, eval, probes,
        diagnostics)."""

    def on_image(self, tr: Trainer, tag: str, path: Path) -> None:
        """An image (a PNG file, e.g. a sample grid) was written for ``tag``."""

    def on_rollback(self, tr: Trainer, step: int) -> None:
        """The run went back to the checkpoint of ``step``; records after it are gone."""

    def on_checkpoint(self, tr: Trainer) -> None: ...

    def on_train_end(self, tr: Trainer) -> None: ...


class Trainer:
    """Runs a model family's phases over a dataset; checkpoints, resumes, logs.

    Parameters are the resolved :class:`Config`, a built :class:`ModelFamily`, the
    :class:`Dataset`, the run directory (``None``: nothing written) and callbacks.
    """

    def __init__(self, cfg: Config, model: ModelFamily, data: Dataset, run_dir: Path | None,
                 callbacks: list[Callback] | None = None, dist_info: DistInfo | None = None) -> None:
        self.cfg = cfg
        self.dist = dist_info or DistInfo()
        t = cfg.train
        self.device = pick_device(t.device)
        from ..threads import apply_threads

        # CPU threads from the available CPUs, shared among this machine's processes
        self.threads = apply_threads(t.threads, self.dist.world if self.dist.enabled else 1)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.rundir = RunDir(run_dir) if run_dir is not None else None
        self.model = model.to(self.device)
        if t.channels_last and data.is_image:
            self.model.to(memory_format=torch.channels_last)
        # One seed drives everything: the Trainer's global-RNG state (dropout, penalties'
        # interpolation), the noise generator (per rank) and the data order (same on all ranks).
        with self._forked():
            torch.manual_seed(t.seed + 7919 * self.dist.rank)
            self._rng = self._global_rng()
        self.noise_gen = torch.Generator(self.device).manual_seed(t.seed + 1 + 1000 * self.dist.rank)
        micro = t.batch_size // cfg.optim.grad_accum
        if micro * cfg.optim.grad_accum != t.batch_size:
            raise ConfigError(f"train.batch_size {t.batch_size} is not divisible by "
                              f"optim.grad_accum {cfg.optim.grad_accum}")
        self.source = build_source(model.data_source, data, micro, self.device, t.seed + 2,
                                   self.dist.rank, self.dist.world,
                                   **model.source_options())
        # Networks: trained (optimised, checkpointed) and frozen (never optimised, saved once).
        nets = model.networks()
        frozen = dict(model.frozen_networks())
        for k in t.freeze:
            if k not in nets:
                raise ConfigError(f"train.freeze: model '{model.name}' has no trained network "
                                  f"'{k}'; its networks: {', '.join(nets)}")
            frozen[k] = nets.pop(k)
        for k, net in {**nets, **frozen}.items():
            if getattr(model, k, None) is not net:
                raise TypeError(f"{type(model).__name__}: network '{k}' must also be the "
                                f"family's attribute '{k}'")
        self.nets: dict[str, nn.Module] = nets
        self.frozen: dict[str, nn.Module] = frozen
        for net in frozen.values():
            net.eval().requires_grad_(False)
        if self.dist.enabled:
            for net in (*nets.values(), *frozen.values()):
                broadcast_state(net)
        # Phases, then one optimizer (and schedule) per trained network.
        self.phases: list[Phase] = [ph for ph in model.phases()
                                    if ph.kind != "grad" or any(k in nets for k in ph.opts)]
        for ph in self.phases:
            for k in ph.opts:
                if k not in nets and k not in frozen:
                    raise ValueError(f"phase {ph.name} names unknown network {k}")
        check_net_overrides(model, list(nets))
        lazy = {k: ph.every for ph in self.phases if ph.lazy_reg and ph.every > 1 for k in ph.opts}
        self.opts: dict[str, torch.optim.Optimizer] = {}
        self.schedules: dict[str, Schedule] = {}
        for k, net in nets.items():
            spec = resolve_spec(model, k, lazy.get(k, 1))
            self.opts[k] = build_optimizer(model, k, net, spec)
            self.schedules[k] = Schedule(self.opts[k], spec, t.steps)
        ema_names = [k for k in model.ema_networks if k in nets]
        self.ema = EMA({k: nets[k] for k in ema_names}, t.ema_decay, t.ema_start) \
            if t.ema and ema_names else None
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp)
        self.scalers = {k: torch.amp.GradScaler(self.device.type) for k in self.opts} \
            if t.amp == "fp16" else {}
        if t.compile:
            self._compile()
        self.ctx = StepContext(self)
        self.callbacks = callbacks or []
        self.step = 0
        self.stats: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self._stop = False
        self._cbs: list[Callback] = []
        self._phase_cbs: list[Callback] = []
        self._rollback: float | None = None
        self._live = False
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk
        # Time spent training (wall and this process's CPU seconds), summed over resumes: it
        # travels in every checkpoint; train.max_seconds stops the run when it is spent.
        self.seconds: dict[str, float] = {"wall": 0.0, "cpu": 0.0}
        self._clock0: tuple[float, float, dict[str, float]] | None = None
        self.stopped_by: str | None = None  # "budget" when train.max_seconds ended the run

    @property
    def run_dir(self) -> Path | None:
        return self.rundir.path if self.rundir is not None else None

    # -- RNG ----------------------------------------------------------------------------------
    def _forked(self) -> contextlib.AbstractContextManager[None]:
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    def _global_rng(self) -> dict[str, Tensor]:
        s = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            s["cuda"] = torch.cuda.get_rng_state(self.device)
        return s

    def _set_global_rng(self, s: dict[str, Tensor]) -> None:
        torch.set_rng_state(s["torch"])
        if "cuda" in s and self.device.type == "cuda":
            torch.cuda.set_rng_state(s["cuda"], self.device)

    @contextlib.contextmanager
    def rng_scope(self) -> Iterator[None]:
        """Run the block on the Trainer's global-RNG state (restoring the caller's afterwards)."""
        if self._live:
            yield
            return
        with self._forked():
            self._set_global_rng(self._rng)
            self._live = True
            try:
                yield
            finally:
                self._live = False
                self._rng = self._global_rng()

    # -- helpers ------------------------------------------------------------------------------
    def _compile(self) -> None:
        """``train.compile``: compile every trained network's forward with ``torch.compile``
        (state dicts keep their keys). Refused for objectives that differentiate through
        gradients, which compiled graphs do not support (double backward)."""
        lc, tc = self.cfg.loss, self.cfg.tricks
        if lc.gp or tc.consensus > 0 or getattr(self.model, "double_backward", False):
            raise ConfigError("train.compile cannot be used with gradient penalties, consensus "
                              "optimisation or unrolling: compiled graphs have no double backward")
        for net in self.nets.values():
            net.compile()

    @contextlib.contextmanager
    def grad_for(self, *nets: nn.Module) -> Iterator[None]:
        flags = [[p.requires_grad for p in n.parameters()] for n in nets]
        for n in nets:
            n.requires_grad_(True)
        try:
            yield
        finally:
            for n, fl in zip(nets, flags):
                for p, f in zip(n.parameters(), fl):
                    p.requires_grad_(f)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def data(self) -> Any:
        """The data source (``source.tensors()`` are the training tensors on the device)."""
        return self.source

    def sampling_nets(self) -> dict[str, nn.Module]:
        """The networks sampling should use: the EMA copies of the networks that have one."""
        return dict(self.ema.copies) if self.ema is not None else {}

    @property
    def G_sample(self) -> nn.Module:
        """The generator used for samples: G_ema when EMA is on."""
        G = self.nets["G"] if "G" in self.nets else self.frozen["G"]
        return self.sampling_nets().get("G", G)

    def accumulate(self, stats: dict[str, Tensor]) -> None:
        """Add statistics (device tensors) to the running means read at the next log step."""
        for k, v in stats.items():
            v = v.detach().float()
            if k in self.stats:
                self.stats[k] += v
                self.counts[k] += 1
            else:
                self.stats[k] = v.clone()
                self.counts[k] = 1

    def pop_stats(self) -> dict[str, float]:
        """Average the statistics gathered since the last call (one host sync)."""
        if not self.stats:
            return {}
        keys = list(self.stats)
        vals = torch.stack([self.stats[k] / self.counts[k] for k in keys]).tolist()
        self.stats, self.counts = {}, {}
        return dict(zip(keys, vals))

    # -- the callbacks' API -------------------------------------------------------------------
    def log(self, rec: dict[str, Any], stream: str = "metrics") -> dict[str, Any]:
        """Log a record (``step`` is added) to ``stream``: appended to the run directory's
        stream file on the main process and handed to every callback's ``on_log``."""
        rec = {"step": self.step, **rec}
        self.records[stream] = rec
        if self.rundir is not None and self.dist.is_main:
            self.rundir.append(stream, rec)
        for cb in self._cbs:
            cb.on_log(self, stream, rec)
        return rec

    def log_image(self, tag: str, path: Path) -> None:
        """Tell every callback (``on_image``) that the PNG ``path`` was written for ``tag``."""
        for cb in self._cbs:
            cb.on_image(self, tag, path)

    @property
    def last_log(self) -> dict[str, Any]:
        return self.records.get("metrics", {})

    def request_rollback(self, factor: float) -> None:
        """Ask to return to the latest checkpoint with every learning rate x ``factor``; the
        Trainer does it right after the current step's callbacks, before any checkpoint."""
        if not 0 < factor <= 1:
            raise ValueError(f"rollback factor must be in (0, 1], got {factor}")
        self._rollback = factor

    # -- the step -----------------------------------------------------------------------------
    def _run_phase(self, ph: Phase, keep_last: bool) -> None:
        ctx = self.ctx
        accum = self.cfg.optim.grad_accum
        repeat = ph.repeats(self.step)
        if ph.kind == "closed_form":
            for r in range(repeat):
                for micro in range(accum):
                    ctx.enter(micro, False, ph.fresh and r > 0)
                    with torch.no_grad():
                        _, stats = ph.loss_fn(ctx)
                    self.accumulate(stats)
                if ph.after_step is not None:
                    ph.after_step()
            for cb in self._phase_cbs:
                cb.on_phase_end(self, ph)
            return
        keys = [k for k in ph.opts if k in self.opts]
        scaler = self.scalers.get(keys[0])  # fp16 only: the phase's first optimizer's scaler
        for k, net in self.nets.items():
            net.requires_grad_(k in keys)
        for r in range(repeat):
            for k in keys:
                self.opts[k].zero_grad(set_to_none=True)
            for micro in range(accum):
                ctx.enter(micro, keep_last and r == repeat - 1, ph.fresh and r > 0)
                with self.autocast():
                    loss, stats = ph.loss_fn(ctx)
                if accum > 1:
                    loss = loss / accum
                (scaler.scale(loss) if scaler else loss).backward()
                self.accumulate(stats)
            for k in keys:
                if self.dist.enabled:
                    allreduce_grads(self.nets[k])
                if scaler:
                    scaler.step(self.opts[k])
                else:
                    self.opts[k].step()
            if scaler:
                scaler.update()
            if ph.after_step is not None:
                ph.after_step()
        for cb in self._phase_cbs:
            cb.on_phase_end(self, ph)

    def train_step(self) -> None:
        """One training step: scheduled learning rates, every active phase, EMA."""
        with self.rng_scope():
            step = self.step
            for s in self.schedules.values():
                s.apply(step)
            self.ctx.begin_step(step)
            active = [ph for ph in self.phases if ph.active(step)]
            reuse = self.cfg.train.reuse_fake
            for i, ph in enumerate(active):
                keep = reuse and ph.makes_fake and any(
                    q.uses_fake and q.fake_key == ph.fake_key for q in active[i + 1:])
                self._run_phase(ph, keep)
            self.ctx.end_step()
            if self.dist.enabled:
                for net in self.nets.values():
                    broadcast_state(net, buffers_only=True)
            if self.ema is not None:
                self.ema.update(self.nets, step)
            self.step += 1

    # -- the loop -----------------------------------------------------------------------------
    def elapsed(self) -> dict[str, float]:
        """Seconds trained so far (``wall``, ``cpu``), this call of :meth:`fit` included."""
        if self._clock0 is None:
            return dict(self.seconds)
        w0, c0, base = self._clock0
        return {"wall": base["wall"] + time.perf_counter() - w0,
                "cpu": base["cpu"] + time.process_time() - c0}

    def _budget_spent(self) -> bool:
        """Whether ``train.max_seconds`` of ``train.budget_kind`` time have been trained. Under
        DDP the processes agree at log steps only (as for Ctrl-C), so they stop together."""
        t = self.cfg.train
        if t.max_seconds is None:
            return False
        spent = self.elapsed()[t.budget_kind] >= t.max_seconds
        if not self.dist.enabled:
            return spent
        if self.step % t.log_every:
            return False
        import torch.distributed as dist

        flag = torch.tensor([1.0 if spent else 0.0],
                            device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def fit(self, steps: int | None = None) -> None:
        """Train until ``steps`` (default ``train.steps``) steps have been taken, or until the
        time budget ``train.max_seconds`` is spent (then ``stopped_by`` is ``"budget"`` and the
        last step is checkpointed). The budget counts everything the loop does (steps,
        callbacks, checkpoints), not the set-up before it."""
        total = steps if steps is not None else self.cfg.train.steps
        self.stopped_by = None
        cbs = self._cbs = [c for c in self.callbacks if self.dist.is_main or c.all_ranks]
        self._phase_cbs = [c for c in cbs if type(c).on_phase_end is not Callback.on_phase_end]
        if self.rundir is not None and self.dist.is_main:
            # Resuming: records logged after the checkpoint belong to undone steps.
            for stream in ("metrics", "probes"):
                self.rundir.truncate(stream, self.step)
            if self.frozen and not self.rundir.frozen.exists():
                self.save_frozen()
        with self.rng_scope():
            for cb in cbs:
                cb.on_train_start(self)
            old = self._install_sigint()
            self._clock0 = (time.perf_counter(), time.process_time(), dict(self.seconds))
            try:
                self.model.train()
                for net in self.frozen.values():
                    net.eval()
                if self._budget_spent():  # a resumed run whose budget was already spent
                    self.stopped_by = "budget"
                while self.step < total and self.stopped_by is None:
                    self.train_step()
                    for cb in cbs:
                        cb.on_step_end(self)
                        if self._rollback is not None:
                            break  # the step is undone: later callbacks must not see it
                    if self._rollback is not None:  # before checkpointing: never save NaNs
                        self.rollback(self._rollback)
                        continue
                    if self._budget_spent():
                        self.stopped_by = "budget"
                    if self.rundir is not None and (
                            self.step % self.cfg.train.ckpt_every == 0 or self.step == total
                            or self.stopped_by is not None):
                        self.save_checkpoint()
                        for cb in cbs:
                            cb.on_checkpoint(self)
                    if self._stop_requested():
                        if self.rundir is not None and self.step % self.cfg.train.ckpt_every:
                            self.save_checkpoint()
                        raise KeyboardInterrupt
            finally:
                self.seconds = self.elapsed()
                self._clock0 = None
                if old is not None:
                    signal.signal(signal.SIGINT, old)
                for cb in cbs:
                    cb.on_train_end(self)

    def _stop_requested(self) -> bool:
        """Ctrl-C seen by this process, or (under DDP) by any: every process must stop after
        the same step, or they would wait on different collectives. Under DDP the flags are
        exchanged at log steps only (``train.log_every``), so a GPU step has no extra host
        sync; all processes see the same steps, so they agree where to stop."""
        if not self.dist.enabled:
            return self._stop
        if self.step % self.cfg.train.log_every:
            return False
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self._stop else 0.0],
                            device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self._stop = bool(flag.item())
        return self._stop

    def _install_sigint(self) -> Callable | None:
        """First Ctrl-C: finish the step, checkpoint, stop. Second Ctrl-C: stop at once."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum: int, frame: Any) -> None:
            if self._stop:
                raise KeyboardInterrupt
            self._stop = True

        return signal.signal(signal.SIGINT, handler)

    def rollback(self, factor: float) -> Path:
        """Return to the latest checkpoint with every learning rate multiplied by ``factor``.

        The new rates are the current ones (which include earlier rollbacks) times ``factor``,
        whatever rates the checkpoint saved. Statistics gathered since the last log and the
        records logged after the checkpoint are dropped (they belong to the undone steps);
        callbacks hear of it through ``on_rollback``. Returns the checkpoint folder.
        """
        if self.rundir is None:
            raise ckpt.CheckpointError("rollback needs a run directory with a checkpoint")
        folder = ckpt.latest_checkpoint(self.rundir.path)
        bases = {k: list(s.base) for k, s in self.schedules.items()}
        self.load_checkpoint(folder)
        for k, s in self.schedules.items():
            s.base = [b * factor for b in bases[k]]
            s.apply(self.step)
        self.stats, self.counts = {}, {}
        self.ctx.end_step()
        self._rollback = None
        if self.dist.is_main:
            for stream in ("metrics", "probes"):
                self.rundir.truncate(stream, self.step)
        for cb in self._cbs:
            cb.on_rollback(self, self.step)
        return folder

    # -- checkpoints --------------------------------------------------------------------------
    def rng_state(self) -> dict[str, Any]:
        s: dict[str, Any] = {"global": self._global_rng() if self._live else self._rng,
                             "noise": self.noise_gen.get_state(),
                             "data": self.source.state_dict()}
        return s

    def checkpoint_modules(self) -> dict[str, nn.Module]:
        """What a checkpoint holds: trained networks, EMA copies, family buffers."""
        mods: dict[str, nn.Module] = dict(self.nets)
        if self.ema is not None:
            mods |= {f"{k}_ema": m for k, m in self.ema.copies.items()}
        if self.model.family_buffers():
            mods["family"] = FamilyBuffers(self.model)
        return mods

    def save_frozen(self) -> None:
        """Write the frozen networks once (they never change)."""
        assert self.rundir is not None
        ckpt.write_weights(self.rundir.frozen, self.frozen)

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (every rank its RNG state, rank 0 the rest).

        A failed write (a full disk, a folder made read-only) removes the partial folder and is
        a one-line :class:`CheckpointError`; the checkpoints already published stay intact.
        ``world`` (the number of processes) is recorded in ``state.json``.
        """
        import shutil

        assert self.rundir is not None
        run_dir = self.rundir.path
        folder = ckpt.tmp_dir(run_dir, self.step)
        try:
            if self.dist.is_main and folder.exists():
                shutil.rmtree(folder)
            barrier()
            ckpt.write_rank_state(folder, self.dist.rank, self.rng_state())
            barrier()
            final = None
            if self.dist.is_main:
                optim = {"opts": {k: o.state_dict() for k, o in self.opts.items()},
                         "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
                         "schedules": {k: s.state_dict() for k, s in self.schedules.items()}}
                state = {"step": self.step, "world": self.dist.world, "time": time.time(),
                         "seconds": self.elapsed(),  # time trained (train.max_seconds)
                         "format": 2}  # 2: with manifest.json (checksums)
                ckpt.write_checkpoint(folder, self.checkpoint_modules(), optim, state)
                final = ckpt.publish(run_dir, folder, self.step, self.cfg.train.keep_ckpts)
        except OSError as e:
            shutil.rmtree(folder, ignore_errors=True)
            prev = (f"the checkpoint of step {self.saved_step} is intact"
                    if self.saved_step is not None else "no checkpoint was written before")
            raise ckpt.CheckpointError(
                f"could not write the checkpoint of step {self.step} in {run_dir} "
                f"({e.strerror or e}); {prev}") from None
        barrier()
        self.saved_step = self.step
        return final

    def load_checkpoint(self, folder: Path) -> None:
        """Restore everything a checkpoint holds.

        Resuming with the number of processes that wrote it (``state.json``'s ``world``)
        continues bit for bit on CPU. With another number it continues correctly from the
        same weights, EMA copies, optimizer and schedule state, step and data position (the
        global batches are the same; each process takes another share of them), but not bit
        for bit: a process that has no saved RNG state of its own draws its latents, dropout
        and penalty noise from a generator seeded by (seed, rank, step), and gradients are
        averaged over a different number of shares.
        """
        state = ckpt.load_pt(folder / "optim.pt")
        meta = ckpt.read_state(folder)
        saved_world = int(meta.get("world", 1))
        for k, m in self.checkpoint_modules().items():
            ckpt.load_into(m, folder / f"{k}.safetensors")
        if self.frozen and self.rundir is not None and self.rundir.frozen.exists():
            for k, net in self.frozen.items():
                ckpt.load_into(net, self.rundir.frozen / f"{k}.safetensors")
        for k, o in self.opts.items():
            if k not in state["opts"]:
                raise ckpt.CheckpointError(f"{folder} has no optimizer state for network {k}")
            o.load_state_dict(state["opts"][k])
        for k, s in self.scalers.items():
            s.load_state_dict(state["scalers"][k])
        for k, s in self.schedules.items():
            if k in state.get("schedules", {}):
                s.load_state_dict(state["schedules"][k])
        same = saved_world == self.dist.world
        rng = ckpt.load_pt(folder / f"rng_{self.dist.rank if same else 0}.pt")
        if not same:  # the data position is global; the latent/dropout generators are per rank
            with self._forked():
                torch.manual_seed(self.cfg.train.seed + 7919 * self.dist.rank + 104729 * meta["step"])
                rng["global"] = self._global_rng()
            self.noise_gen.manual_seed(self.cfg.train.seed + 1 + 1000 * self.dist.rank
                                       + 104729 * meta["step"])
            rng["noise"] = self.noise_gen.get_state()
        if "global" not in rng:  # a checkpoint of gankit 0.1's first core: torch/cuda states
            rng["global"] = {k: rng[k] for k in ("torch", "cuda") if k in rng}
        self._rng = rng["global"]
        if self._live:
            self._set_global_rng(self._rng)
        self.noise_gen.set_state(rng["noise"])
        self.source.load_state_dict(rng["data"])
        self.step = int(meta["step"])
        self.saved_step = self.step
        if self._clock0 is None:  # a rollback inside fit keeps counting: that time was spent
            saved = meta.get("seconds", {})
            self.seconds = {k: float(saved.get(k, 0.0)) for k in ("wall", "cpu")}
