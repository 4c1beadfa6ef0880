"""The Trainer: the only code that touches optimizers, backward, AMP, accumulation, DDP and EMA.

A model family declares phases (:class:`gankit.models.base.Phase`); each step the Trainer runs
every phase whose ``every`` divides the step, ``repeat`` times, each time over ``grad_accum``
micro-batches. Statistics stay on the device and are synchronised once per ``log_every`` steps.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config
from ..data.base import Dataset
from ..errors import ConfigError, DataError
from ..models.base import ModelFamily, Phase
from . import checkpoint as ckpt
from .distributed import DistInfo, allreduce_grads, barrier, broadcast_state


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


class InMemoryData:
    """Batches as index slices of one tensor on the device (DESIGN.md §4).

    Each epoch is a permutation drawn from ``generator`` (identical on every process); process
    ``rank`` takes its contiguous share of each global batch. The permutation and position are
    checkpointed, so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, ds: Dataset, batch: int, device: torch.device, generator: torch.Generator,
                 dist_info: DistInfo) -> None:
        if batch > len(ds):
            raise DataError(f"batch size {batch} is larger than the dataset ({len(ds)} samples)")
        if batch % dist_info.world:
            raise ConfigError(f"batch size {batch} is not divisible by {dist_info.world} processes")
        self.x = ds.x.to(device)
        self.y = ds.y.to(device) if ds.y is not None else None
        self.n, self.batch = len(ds), batch
        self.local = batch // dist_info.world
        self.offset = dist_info.rank * self.local
        self.gen = generator
        self.device = device
        self.perm: Tensor | None = None
        self.pos = 0

    def next(self) -> tuple[Tensor, Tensor | None]:
        if self.perm is None or self.pos + self.batch > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen).to(self.device)
            self.pos = 0
        idx = self.perm[self.pos + self.offset:self.pos + self.offset + self.local]
        self.pos += self.batch
        return self.x[idx], (self.y[idx] if self.y is not None else None)

    def state_dict(self) -> dict[str, Any]:
        return {"perm": None if self.perm is None else self.perm.cpu(), "pos": self.pos,
                "gen": self.gen.get_state()}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.perm = None if s["perm"] is None else s["perm"].to(self.device)
        self.pos = int(s["pos"])
        self.gen.set_state(s["gen"])


class StepContext:
    """What a phase's loss function sees: the networks, a real batch, noise and fakes.

    ``real``/``c`` are drawn lazily, so a phase that only needs fakes draws no data.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.tr = trainer
        self.model: ModelFamily = trainer.model
        self.G: nn.Module = trainer.model.G
        self.D: nn.Module = trainer.model.D
        self.step = 0
        self.micro = 0
        self.keep_fake = False
        self.stash: dict[int, tuple[Tensor, Tensor | None, Tensor]] = {}
        self.last_z: Tensor | None = None
        self._batch: tuple[Tensor, Tensor | None] | None = None

    def _reset(self, micro: int, keep: bool) -> None:
        self.micro, self.keep_fake, self._batch = micro, keep, None

    def batch(self) -> tuple[Tensor, Tensor | None]:
        if self._batch is None:
            self._batch = self.tr.data.next()
        return self._batch

    @property
    def real(self) -> Tensor:
        return self.batch()[0]

    @property
    def c(self) -> Tensor | None:
        return self.batch()[1] if self.model.conditional else None

    @property
    def n(self) -> int:
        return self.tr.data.local

    def z(self, n: int) -> Tensor:
        return self.model.sample_latent(n, self.tr.noise_gen, self.tr.device)

    def fake_for_d(self) -> tuple[Tensor, Tensor | None]:
        """A fake batch for a D step; built with G's graph when the next G step will reuse it.

        The latent it came from is ``ctx.last_z`` (InfoGAN reads its codes there).
        """
        c = self.c
        z = self.last_z = self.z(self.n)
        if self.keep_fake:
            with self.tr.grad_for(self.G):
                fake = self.model.generate(self.G, z, c)
            self.stash[self.micro] = (fake, c, z)
            return fake, c
        with torch.no_grad():
            return self.model.generate(self.G, z, c), c

    def fake_for_g(self) -> tuple[Tensor, Tensor | None]:
        """The stashed fake of the last D step, or a fresh one (with G's graph); see ``last_z``."""
        if self.micro in self.stash:
            fake, c, self.last_z = self.stash.pop(self.micro)
            return fake, c
        c = self.c
        z = self.last_z = self.z(self.n)
        return self.model.generate(self.G, z, c), c


class EMA:
    """Exponential moving average of G's weights (Karras et al. 2018; Yazici et al. 2019).

    Warm-up: the decay used at step t is ``min(decay, (1 + t) / (10 + t))`` so early averages are
    not dominated by the random initialisation. Buffers (BN statistics) are copied.
    """

    def __init__(self, G: nn.Module, decay: float, start: int) -> None:
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        self.decay, self.start = decay, start

    @torch.no_grad()
    def update(self, G: nn.Module, step: int) -> None:
        src = list(G.parameters())
        dst = list(self.G_ema.parameters())
        if step < self.start:
            torch._foreach_copy_(dst, src)
        else:
            t = step - self.start
            beta = min(self.decay, (1 + t) / (10 + t))
            torch._foreach_lerp_(dst, src, 1.0 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)


def family_buffers(model: ModelFamily) -> dict[str, Tensor]:
    """Buffers of the family module outside its networks (e.g. BEGAN's k_t, running averages)."""
    nets = tuple(f"{k}." for k in model.networks())
    return {k: b for k, b in model.named_buffers() if not k.startswith(nets)}


class FamilyBuffers(nn.Module):
    """A state-dict view of :func:`family_buffers` so they checkpoint like a network."""

    def __init__(self, model: ModelFamily) -> None:
        super().__init__()
        self._model = [model]  # a list: not registered as a submodule

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:  # type: ignore[override]
        return dict(family_buffers(self._model[0]))

    def load_state_dict(self, sd: dict[str, Tensor], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        own = family_buffers(self._model[0])
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

    def on_checkpoint(self, tr: Trainer) -> None: ...

    def on_train_end(self, tr: Trainer) -> None: ...


def make_optimizer(cfg: Config, params: list[nn.Parameter], net: str) -> torch.optim.Optimizer:
    """Optimizer of network ``net``: G* networks use the G settings, all others the D settings."""
    o = cfg.optim
    is_g = net.startswith("G")
    lr = o.lr_g if is_g else o.lr_d
    betas = o.betas_g if is_g else o.betas_d
    if o.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=o.weight_decay,
                                foreach=True)
    if o.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=o.weight_decay, foreach=True)
    return torch.optim.SGD(params, lr=lr, momentum=betas[0], weight_decay=o.weight_decay,
                           foreach=True)


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
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.model = model.to(self.device)
        if t.channels_last and data.is_image:
            self.model.to(memory_format=torch.channels_last)
        # One seed drives everything: global RNG (dropout, penalties' interpolation), the noise
        # generator (per rank) and the data order (identical on all ranks).
        torch.manual_seed(t.seed + 7919 * self.dist.rank)
        self.noise_gen = torch.Generator(self.device).manual_seed(t.seed + 1 + 1000 * self.dist.rank)
        micro = t.batch_size // cfg.optim.grad_accum
        if micro * cfg.optim.grad_accum != t.batch_size:
            raise ConfigError(f"train.batch_size {t.batch_size} is not divisible by "
                              f"optim.grad_accum {cfg.optim.grad_accum}")
        self.data = InMemoryData(data, micro, self.device, torch.Generator().manual_seed(t.seed + 2),
                                 self.dist)
        if self.dist.enabled:
            for net in self.model.networks().values():
                broadcast_state(net)
        self.nets = self.model.networks()
        self.opts = {k: make_optimizer(cfg, [p for p in net.parameters() if p.requires_grad], k)
                     for k, net in self.nets.items()}
        self.phases: list[Phase] = self.model.phases()
        for ph in self.phases:
            for k in ph.opts:
                if k not in self.opts:
                    raise ValueError(f"phase {ph.name} names unknown optimizer {k}")
        self.ema = EMA(self.model.G, t.ema_decay, t.ema_start) if t.ema else None
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp)
        self.amp_dtype = amp
        self.scalers = {k: torch.amp.GradScaler(self.device.type) for k in self.opts} \
            if t.amp == "fp16" else {}
        self.ctx = StepContext(self)
        self.callbacks = callbacks or []
        self.step = 0
        self.stats: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self._stop = False
        self._phase_cbs: list[Callback] = []
        self.last_log: dict[str, float] = {}
        # Set by a callback (the doctor, on divergence) to the factor for the learning rates;
        # fit() then rolls back before the step could be checkpointed.
        self.rollback_request: float | None = None

    # -- helpers ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def grad_for(self, net: nn.Module):
        flags = [p.requires_grad for p in net.parameters()]
        net.requires_grad_(True)
        try:
            yield
        finally:
            for p, f in zip(net.parameters(), flags):
                p.requires_grad_(f)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def G_sample(self) -> nn.Module:
        """The generator used for samples: G_ema when EMA is on."""
        return self.ema.G_ema if self.ema is not None else self.model.G

    def _accumulate(self, stats: dict[str, Tensor]) -> None:
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

    # -- the step ---------------------------------------------------------------------------
    def _run_phase(self, ph: Phase, keep_last: bool) -> None:
        keys = ph.opts
        accum = self.cfg.optim.grad_accum
        scaler = self.scalers.get(keys[0])  # fp16 only: the phase's first optimizer's scaler
        for k, other in self.nets.items():
            other.requires_grad_(k in keys)
        for r in range(ph.repeat):
            for k in keys:
                self.opts[k].zero_grad(set_to_none=True)
            for micro in range(accum):
                self.ctx._reset(micro, keep_last and r == ph.repeat - 1)
                with self.autocast():
                    loss, stats = ph.loss_fn(self.ctx)
                if accum > 1:
                    loss = loss / accum
                (scaler.scale(loss) if scaler else loss).backward()
                self._accumulate(stats)
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
        self.ctx.step = self.step
        active = [ph for ph in self.phases if self.step % ph.every == 0]
        reuse = self.cfg.train.reuse_fake
        for i, ph in enumerate(active):
            keep = reuse and ph.makes_fake and any(q.uses_fake for q in active[i + 1:])
            self._run_phase(ph, keep)
        self.ctx.stash.clear()
        if self.dist.enabled:
            for net in self.nets.values():
                broadcast_state(net, buffers_only=True)
        if self.ema is not None:
            self.ema.update(self.model.G, self.step)
        self.step += 1

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, steps: int | None = None) -> None:
        """Train until ``steps`` (default ``train.steps``) generator steps have been taken."""
        total = steps if steps is not None else self.cfg.train.steps
        cbs = [c for c in self.callbacks if self.dist.is_main or c.all_ranks]
        self._phase_cbs = [c for c in cbs if type(c).on_phase_end is not Callback.on_phase_end]
        for cb in cbs:
            cb.on_train_start(self)
        old = self._install_sigint()
        try:
            self.model.train()
            while self.step < total:
                self.train_step()
                for cb in cbs:
                    cb.on_step_end(self)
                    if self.rollback_request is not None:
                        break  # the step is undone: later callbacks must not sample/eval it
                if self.rollback_request is not None:  # before checkpointing: never save NaNs
                    self.rollback(self.rollback_request)
                    continue
                if self.run_dir is not None and (
                        self.step % self.cfg.train.ckpt_every == 0 or self.step == total):
                    self.save_checkpoint()
                    for cb in cbs:
                        cb.on_checkpoint(self)
                if self._stop:
                    if self.run_dir is not None and self.step % self.cfg.train.ckpt_every:
                        self.save_checkpoint()
                    raise KeyboardInterrupt
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
            for cb in cbs:
                cb.on_train_end(self)

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
        whatever rates the checkpoint saved. Statistics gathered since the last log are dropped
        (they belong to the undone steps). Returns the checkpoint folder.
        """
        if self.run_dir is None:
            raise ckpt.CheckpointError("rollback needs a run directory with a checkpoint")
        folder = ckpt.latest_checkpoint(self.run_dir)
        lrs = {k: [g["lr"] for g in o.param_groups] for k, o in self.opts.items()}
        self.load_checkpoint(folder)
        for k, o in self.opts.items():
            for g, lr in zip(o.param_groups, lrs[k]):
                g["lr"] = lr * factor
        self.stats, self.counts = {}, {}
        self.ctx.stash.clear()
        self.rollback_request = None
        return folder

    # -- checkpoints ------------------------------------------------------------------------
    def rng_state(self) -> dict[str, Any]:
        s: dict[str, Any] = {"torch": torch.get_rng_state(), "noise": self.noise_gen.get_state(),
                             "data": self.data.state_dict()}
        if self.device.type == "cuda":
            s["cuda"] = torch.cuda.get_rng_state(self.device)
        return s

    def save_checkpoint(self) -> Path | None:
        assert self.run_dir is not None
        folder = ckpt.tmp_dir(self.run_dir, self.step)
        if self.dist.is_main and folder.exists():
            shutil.rmtree(folder)
        barrier()
        ckpt.write_rank_state(folder, self.dist.rank, self.rng_state())
        barrier()
        final = None
        if self.dist.is_main:
            nets: dict[str, nn.Module] = dict(self.nets)
            if self.ema is not None:
                nets["G_ema"] = self.ema.G_ema
            if family_buffers(self.model):
                nets["family"] = FamilyBuffers(self.model)
            optim = {"opts": {k: o.state_dict() for k, o in self.opts.items()},
                     "scalers": {k: s.state_dict() for k, s in self.scalers.items()}}
            state = {"step": self.step, "world": self.dist.world, "time": time.time()}
            ckpt.write_checkpoint(folder, nets, optim, state)
            final = ckpt.publish(self.run_dir, folder, self.step, self.cfg.train.keep_ckpts)
        barrier()
        return final

    def load_checkpoint(self, folder: Path) -> None:
        state = ckpt.load_pt(folder / "optim.pt")
        meta = json.loads((folder / "state.json").read_text())
        if meta.get("world", 1) != self.dist.world:
            raise ckpt.CheckpointError(
                f"{folder} was written by {meta.get('world')} process(es); resume with the same "
                f"number (now {self.dist.world})")
        for k, net in self.nets.items():
            ckpt.load_into(net, folder / f"{k}.safetensors")
        if self.ema is not None:
            ckpt.load_into(self.ema.G_ema, folder / "G_ema.safetensors")
        if family_buffers(self.model):
            ckpt.load_into(FamilyBuffers(self.model), folder / "family.safetensors")
        for k, o in self.opts.items():
            o.load_state_dict(state["opts"][k])
        for k, s in self.scalers.items():
            s.load_state_dict(state["scalers"][k])
        rng = ckpt.load_pt(folder / f"rng_{self.dist.rank}.pt")
        torch.set_rng_state(rng["torch"])
        self.noise_gen.set_state(rng["noise"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.data.load_state_dict(rng["data"])
        self.step = int(meta["step"])
