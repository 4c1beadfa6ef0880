"""The live GAN doctor: a Trainer callback that watches a run and diagnoses its failure modes.

Cost model (the doctor is on by default, so it must be cheap; DESIGN.md §4):

* **every step**: after each phase, the L2 norm of each updated network's gradient with
  ``torch._foreach_norm`` (one fused kernel per network), added to the Trainer's on-device
  statistics. Nothing is synchronised: the norms are averaged and read with the losses, once per
  ``train.log_every`` steps, by the MetricsLogger's single sync, and land in ``metrics.jsonl`` as
  ``grad/<net>``.
* **every log step**: the rules of :mod:`gankit.doctor.rules` run over the window of logged
  records (host-side arithmetic on a few dozen numbers).
* **every ``train.doctor_every`` steps**: a *probe* draws a small batch from the sampling
  generator (its own ``torch.Generator`` and fixed latents, eval mode, restoring train mode, so
  the training RNG stream and batch-norm statistics are untouched and resumed runs stay
  bit-identical) and measures sample diversity, the class/mode histogram, precision/recall and,
  every few probes, memorisation. Its record (``doctor/*`` keys) is appended to ``probes.jsonl``
  in the run directory, beside ``metrics.jsonl``, whose rows stay one per log interval.

Divergence is detected without a per-step host sync: the logged values are means over the log
interval, so a single NaN/Inf step makes the mean non-finite and the log record shows it. Each
checkpoint step gets one extra ``isfinite`` check of the statistics not yet logged and of the
weights (one sync, dwarfed by writing the checkpoint), so a diverged state is never
checkpointed. On divergence the doctor asks the Trainer to roll back to the last good
checkpoint with its learning rates multiplied by ``train.doctor_lr_factor``, at most
``train.doctor_max_rollbacks`` times, then stops the run with :class:`TrainingDiverged`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import GankitError
from ..rundir import RunDir
from ..train import checkpoint as ckpt
from ..train.trainer import Callback
from .rules import Diagnosis, RunInfo, Tracker, make

if TYPE_CHECKING:
    from ..data.base import Dataset
    from ..models.base import Phase
    from ..train.trainer import Trainer

#: class predictions below this softmax confidence are not counted in the digit histogram
CLASS_CONFIDENCE = 0.8
#: memorisation is checked on every this-many-th probe (and on the last one)
MEM_EVERY_PROBES = 4


class TrainingDiverged(GankitError):
    """Training diverged and the doctor could not (or may no longer) roll it back."""


def rule_info(tr: Trainer) -> RunInfo:
    follows = bool(getattr(tr.model, "scores_follow_loss", True))
    return RunInfo.from_config(tr.cfg.to_dict(), follows)


class Probe:
    """Periodic sample statistics of the sampling generator (see the module docstring).

    ``kind`` decides what is measured beyond diversity: ``toy`` (ring8/grid25: nearest-mode
    histogram within half the distance between modes, precision/recall on the raw points),
    ``digits`` (lenet-mnist class histogram of confident predictions, precision/recall and
    memorisation on LeNet features), ``images`` and ``points`` (diversity only; memorisation in
    pixel space when the data has a held-out split).
    """

    def __init__(self, tr: Trainer, data: Dataset, n: int) -> None:
        t = tr.cfg.train
        self.n = n
        self.seed = t.seed + 4242  # fixed: probes compare like with like
        sel = torch.randperm(len(data), generator=torch.Generator().manual_seed(t.seed + 4243))[:n]
        self.real = data.x[sel].float().cpu()  # [n, ...]
        self.div_real = mean_pairwise_distance(self.real)
        info = data.info or {}
        # What the data's metadata says the probes can measure (gankit.data.dataset_meta)
        self.kind = info.get("probe") or ("images" if data.is_image else "points")
        if self.kind == "toy" and "centers" not in info:
            self.kind = "points"
        if self.kind == "digits" and not (data.is_image and data.channels == 1):
            self.kind = "images"
        self.data = data
        self.count = 0
        self._lenet: Any = None
        self._real_feats: np.ndarray | None = None
        self._mem_ref: tuple[np.ndarray, np.ndarray, str] | None = None
        if self.kind == "toy":
            self.centers = np.asarray(info["centers"], dtype=np.float64)  # [K, 2]
            dc = np.linalg.norm(self.centers[:, None] - self.centers[None], axis=2)
            np.fill_diagonal(dc, np.inf)
            self.radius = 0.5 * float(dc.min())  # a sample belongs to the mode it is this near
            self.names = [f"{i} ({c[0]:+.2f},{c[1]:+.2f})" for i, c in enumerate(self.centers)]

    # -- features ---------------------------------------------------------------------------
    def lenet(self) -> Any:
        if self._lenet is None:
            from ..registry import FEATURES

            self._lenet = FEATURES.get("lenet-mnist")()
        return self._lenet

    def real_feats(self) -> np.ndarray:
        if self._real_feats is None:
            self._real_feats = self.lenet().features(self.real) if self.kind == "digits" \
                else self.real.flatten(1).double().numpy()
        return self._real_feats

    def mem_reference(self) -> tuple[np.ndarray, np.ndarray, str] | None:
        """(train features, held-out features, space) for memorisation, computed once."""
        if self._mem_ref is None:
            ds = self.data
            if self.kind not in ("digits", "images") or ds.x_test is None:
                return None
            g = torch.Generator().manual_seed(4244)
            tr_x = ds.x[torch.randperm(len(ds.x), generator=g)[:2000]].float().cpu()
            ho_x = ds.x_test
            abnormal = ds.info.get("anomaly_test")  # an anomaly task's test set mixes in
            if abnormal is not None:  # anomalies: held-out means held-out *normal* data
                ho_x = ho_x[~torch.as_tensor(abnormal, dtype=torch.bool)]
            ho_x = ho_x[:1000].float().cpu()
            if self.kind == "digits":
                ext = self.lenet()
                self._mem_ref = (ext.features(tr_x), ext.features(ho_x), "lenet-mnist")
            else:
                self._mem_ref = (tr_x.flatten(1).double().numpy(),
                                 ho_x.flatten(1).double().numpy(), "pixels")
        return self._mem_ref

    # -- one probe --------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, tr: Trainer, final: bool = False) -> dict[str, Any] | None:
        """Sample, measure, return a ``doctor/*`` record (``None`` if the samples are not finite)."""
        from ..metrics.memorization import memorization_report
        from ..metrics.prdc import precision_recall

        t0 = time.perf_counter()
        # the one sampling routine: EMA copies, eval mode (BN running statistics used, never
        # updated), its own generator, so training is untouched
        fake = tr.model.draw(self.n, self.seed, nets=tr.sampling_nets())
        if not bool(torch.isfinite(fake).all()):
            return None
        self.count += 1
        rec: dict[str, Any] = {"step": tr.step}
        div_fake = mean_pairwise_distance(fake)
        rec["doctor/div_ratio"] = round(div_fake / max(self.div_real, 1e-12), 6)
        rec["doctor/div_fake"] = round(div_fake, 6)
        rec["doctor/div_real"] = round(self.div_real, 6)
        feats: np.ndarray | None = None
        if self.kind == "toy":
            x = fake.double().numpy()
            d = np.linalg.norm(x[:, None] - self.centers[None], axis=2)  # [n, K]
            nearest, near = d.argmin(1), d.min(1) <= self.radius
            self._histogram(rec, np.bincount(nearest[near], minlength=len(self.centers)),
                            float(near.mean()), self.names)
            feats = x
        elif self.kind == "digits":
            feats, logits = self.lenet().features_and_logits(fake)
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            conf = p.max(1) >= CLASS_CONFIDENCE
            self._histogram(rec, np.bincount(p.argmax(1)[conf], minlength=10), float(conf.mean()),
                            [str(i) for i in range(10)])
        if feats is not None:
            prec, recall = precision_recall(self.real_feats(), feats, k=3)
            rec["doctor/precision"], rec["doctor/recall"] = round(prec, 4), round(recall, 4)
        if (self.count % MEM_EVERY_PROBES == 0 or final) and self.mem_reference() is not None:
            tr_f, ho_f, space = self.mem_reference()  # type: ignore[misc]
            ff = feats if (space == "lenet-mnist" and feats is not None) else \
                self.lenet().features(fake) if space == "lenet-mnist" else \
                fake.flatten(1).double().numpy()
            m = memorization_report(ff, tr_f, ho_f)
            rec |= {"doctor/mem_z_u": round(m["z_u"], 4),
                    "doctor/mem_frac_near": round(m["frac_closer_than_heldout_q"], 4),
                    "doctor/mem_median_ratio": round(m["median_ratio"], 4),
                    "doctor/mem_n": m["n_samples"], "doctor/mem_space": space}
        rec["doctor/seconds"] = round(time.perf_counter() - t0, 4)
        return rec

    @staticmethod
    def _histogram(rec: dict[str, Any], counts: np.ndarray, assigned: float,
                   names: list[str]) -> None:
        from .rules import LOST_SHARE

        k = len(counts)
        total = int(counts.sum())
        # lost: fewer samples than a fraction of the fair share among the assignable ones
        lost = [names[i] for i in range(k) if counts[i] < LOST_SHARE * total / k] if total \
            else list(names)
        rec |= {"doctor/classes": k, "doctor/hist": [int(c) for c in counts],
                "doctor/assigned_frac": round(assigned, 4), "doctor/covered": k - len(lost),
                "doctor/lost": lost}


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean Euclidean distance between the rows of ``x`` flattened ``[n, D]`` (float64)."""
    f = x.flatten(1).double()
    return float(torch.pdist(f).mean()) if len(f) > 1 else 0.0


class Doctor(Callback):
    """Diagnoses GAN failure modes while training (``train.doctor``, on by default).

    Follows the rules of :mod:`gankit.doctor.rules` (the seeds' failure modes: mode collapse,
    vanishing gradients, the Helvetica scenario, oscillation, divergence, memorisation). Each
    diagnosis is printed as one line when it is first raised or changes state, and appended to
    ``diagnostics.jsonl`` in the run directory (critical ones on stderr), whatever the progress
    display shows (``show`` is kept for callers and no longer hides them). Divergence triggers
    an automatic rollback.

    It hears every log record through ``on_log`` (the :class:`~gankit.train.callbacks.MetricsLogger`
    logs them), never pops the statistics itself, logs its probes and diagnoses through
    ``Trainer.log`` and asks for rollbacks with ``Trainer.request_rollback``.
    """

    def __init__(self, run_dir: Path | None, data: Dataset, total: int, show: bool = True,
                 n_probe: int | None = None) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.data = data
        self.total = total
        self.show = show
        self.n_probe = n_probe
        self.events: list[Diagnosis] = []
        self.rollbacks = 0

    # -- setup --------------------------------------------------------------------------------
    def on_train_start(self, tr: Trainer) -> None:
        t = tr.cfg.train
        self.every, self.factor, self.max_rollbacks = t.doctor_every, t.doctor_lr_factor, \
            t.doctor_max_rollbacks
        self.log_every, self.ckpt_every = t.log_every, t.ckpt_every
        self.info = rule_info(tr)
        self.tracker = Tracker(self.info)
        self.rundir = RunDir(self.run_dir) if self.run_dir is not None else None
        # Resuming: the Trainer has cut metrics/probes back to the checkpoint; prime the window
        # with the earlier records, so that the rules see the same history as in an
        # uninterrupted run.
        if self.rundir is not None:
            for stream in ("metrics", "probes"):
                for rec in self.rundir.read(stream):
                    if rec.get("step", 0) <= tr.step:
                        self.tracker.add(rec)
        if tr.step > 0 and self.rundir is not None:
            # Diagnoses of the undone steps will be re-derived; actions (rollbacks) are history
            # and count against the limit. The active set is restored without printing it again.
            past = self.rundir.read("diagnostics")
            self.rundir.truncate("diagnostics", tr.step, keep=lambda e: e.get("state") == "action")
            self.rollbacks = sum(e.get("title") == "rollback" for e in past)
            self.tracker.update()
        # Parameters per optimizer, listed once; their .grad tensors are read after each phase.
        self.params = {k: [p for g in o.param_groups for p in g["params"]]
                       for k, o in tr.opts.items()}
        n = self.n_probe or (512 if self.data.x.dim() == 2 else 256)
        # sample probes need a model that samples (translators are watched through their logs)
        self.probe = Probe(tr, self.data, min(n, len(self.data))) \
            if "sample" in tr.model.capabilities else None
        self._fresh = False
        self._tr = tr
        # Rollback needs a checkpoint to return to and a single process (a rank-0 callback
        # cannot make the other ranks roll back).
        self.can_rollback = self.run_dir is not None and not tr.dist.enabled
        if self.can_rollback and not (self.run_dir / "checkpoints" / "latest").exists():
            # A safety net for divergence before the first periodic checkpoint (an absurd
            # learning rate diverges within a few steps). Writing it reads, never draws, RNG
            # state, so the run stays bit-identical to one without the doctor.
            tr.save_checkpoint()

    # -- every phase: gradient norms on the device ----------------------------------------------
    def on_phase_end(self, tr: Trainer, phase: Phase) -> None:
        for k in phase.opts:
            grads = [p.grad for p in self.params[k] if p.grad is not None]
            if not grads:
                continue
            # one fused per-tensor norm kernel, then the norm of norms: [] on the device
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            if self.info.fp16:  # skipped fp16 steps have inf gradients by design
                norm = torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))
            key = f"grad/{k}" if phase.name == k else f"grad/{phase.name}/{k}"
            tr.accumulate({key: norm})  # averaged and synced with the losses at log steps

    # -- every step: only cheap checks; work at log, checkpoint and probe steps -------------------
    def on_log(self, tr: Trainer, stream: str, rec: dict[str, Any]) -> None:
        """A training log record: into the window, and an immediate divergence check."""
        if stream != "metrics":
            return
        self.tracker.add(dict(rec))
        self._fresh = True
        d = self._check(("divergence",))
        if d is not None:
            self._diverged(tr, d)

    def on_step_end(self, tr: Trainer) -> None:
        step = tr.step
        if self.can_rollback and (step % self.ckpt_every == 0 or step == self.total):
            # A checkpoint follows this step: the statistics not yet logged and the weights must
            # be finite before it is written (one sync per checkpoint).
            d = self._nonfinite_now(tr)
            if d is not None:
                self._diverged(tr, d)
                return
        if self.probe is not None and (step % self.every == 0 or step == self.total):
            rec = self.probe.run(tr, final=step == self.total)
            if rec is not None:
                rec = tr.log({k: v for k, v in rec.items() if k != "step"}, "probes")
                self.tracker.add(rec)
                self._fresh = True
        if self._fresh:
            self._fresh = False
            self._emit([e for e in self.tracker.update() if e.diagnosis != "divergence"])

    def on_rollback(self, tr: Trainer, step: int) -> None:
        # The diverged stretch is undone: its records left metrics.jsonl and probes.jsonl
        # (the Trainer cut them) and leave the window (the account stays in diagnostics.jsonl);
        # a new divergence raises afresh.
        self.tracker.truncate(step)
        self.tracker.active.pop("divergence", None)
        self._fresh = False

    def _check(self, names: tuple[str, ...]) -> Diagnosis | None:
        for e in self.tracker.update(only=names):
            if e.diagnosis == "divergence" and e.state != "resolved":
                return e
        return None

    def _nonfinite_now(self, tr: Trainer) -> Diagnosis | None:
        """One sync: are the pending statistics and all weights finite?"""
        keys = list(tr.stats)  # empty right after a log step: then only the weights count
        vals = [tr.stats[k] / tr.counts[k] for k in keys]
        params = [p for net in tr.nets.values() for p in net.parameters()]
        norms = torch._foreach_norm(params) if params else []
        if not vals and not norms:  # nothing pending and no parameters (a model fitted by EM)
            return None
        allv = torch.stack([v.reshape(()).float() for v in [*vals, *norms]])
        if bool(torch.isfinite(allv).all()):
            return None
        host = allv.tolist()
        bad = [k for k, v in zip(keys, host[:len(keys)]) if not math.isfinite(v)]
        if self.info.fp16:
            bad = [k for k in bad if not k.startswith("grad/")]
        nets_bad = sorted({k for k, net in tr.nets.items()
                           if not all(torch.isfinite(p).all() for p in net.parameters())})
        if not bad and not nets_bad:
            return None
        rec = {"step": tr.step, **{k: str(v) for k, v in zip(keys, host) if k in bad}}
        ev = {"nonfinite": bad + [f"weights of {n}" for n in nets_bad],
              "values": {k: rec[k] for k in bad}, "checked_at": "checkpoint step",
              "lr_g": self.info.lr_g, "lr_d": self.info.lr_d, "optimizer": self.info.optimizer}
        d = make("divergence", "critical", f"non-finite {', '.join(ev['nonfinite'])} before the "
                 f"checkpoint of step {tr.step}", ev, tr.step)
        return d

    # -- divergence: rollback or stop ----------------------------------------------------------
    def _diverged(self, tr: Trainer, d: Diagnosis) -> None:
        step = tr.step
        self._emit([d])
        why = None
        if self.run_dir is None:
            why = "the run is not saved (no checkpoint to return to)"
        elif tr.dist.enabled:
            why = "automatic rollback is not supported with several processes"
        elif self.rollbacks >= self.max_rollbacks:
            why = f"{self.rollbacks} rollback(s) did not help (train.doctor_max_rollbacks)"
        if why is not None:
            latest = ""
            if self.run_dir is not None and (self.run_dir / "checkpoints" / "latest").exists():
                latest = f"; the last good checkpoint is {ckpt.latest_checkpoint(self.run_dir)}"
            msg = (f"training diverged at step {step} ({d.summary}) and was stopped: {why}{latest}."
                   f" Lower the learning rates (optim.lr_g, optim.lr_d; now "
                   f"{self._lrs(tr)}) or see `gankit doctor` for remedies.")
            stop = Diagnosis("divergence", "critical", "training stopped", msg,
                             {"rollbacks": self.rollbacks, "reason": why, **d.evidence},
                             d.explanation, d.remedies, d.seed_ref, step, "action")
            self._emit([stop])
            raise TrainingDiverged(msg)
        assert self.run_dir is not None
        folder = ckpt.latest_checkpoint(self.run_dir)
        to_step = int(ckpt.read_state(folder)["step"])
        self.rollbacks += 1
        old = self._lrs(tr)
        new = {k: [v * self.factor for v in vs] for k, vs in old.items()}
        act = Diagnosis(
            "divergence", "critical", "rollback",
            f"rollback {self.rollbacks}/{self.max_rollbacks}: step {step} -> checkpoint "
            f"{folder.name}, learning rates x{self.factor:g} "
            + ", ".join(f"lr_{k} {_fmt_lrs(old[k])} -> {_fmt_lrs(new[k])}" for k in old),
            {"from_step": step, "to_step": to_step, "checkpoint": folder.name,
             "lr_before": old, "lr_after": new, "factor": self.factor,
             "rollback": self.rollbacks, "max_rollbacks": self.max_rollbacks,
             "trigger": d.summary},
            d.explanation, d.remedies, d.seed_ref, step, "action")
        self._emit([act])
        tr.request_rollback(self.factor)  # the Trainer acts on it before any checkpoint

    @staticmethod
    def _lrs(tr: Trainer) -> dict[str, list[float]]:
        return {k: [float(g["lr"]) for g in o.param_groups] for k, o in tr.opts.items()}

    # -- output --------------------------------------------------------------------------------
    def _emit(self, events: list[Diagnosis]) -> None:
        if not events:
            return
        self.events.extend(events)
        for e in events:
            rec = e.to_json()
            self._tr.log({k: v for k, v in rec.items() if k != "step"} | {"step": rec["step"]},
                         "diagnostics")
        for e in events:
            # Always printed, whatever the progress display (--no-progress only hides the bar):
            # critical findings and actions go to stderr, the others to stdout.
            print_event(e)

    def on_train_end(self, tr: Trainer) -> None:
        if self.tracker.active:
            from rich import get_console
            from rich.markup import escape

            names = ", ".join(f"{d.title} ({d.severity})" for d in self.tracker.active.values())
            get_console().print(f"[bold]doctor[/bold]: still active at step {tr.step}: "
                                f"{escape(names)} - details: gankit doctor "
                                f"{escape(str(self.run_dir or 'RUN'))}")


def _fmt_lrs(v: list[float]) -> str:
    return "/".join(f"{x:.3g}" for x in v)


STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def print_event(e: Diagnosis) -> None:
    """One console line per event (through rich's console, so it prints above a live progress
    bar): critical findings and actions (rollback, stop) on stderr, the others on stdout."""
    from rich import get_console
    from rich.console import Console
    from rich.markup import escape

    from .citations import plain_citations

    con = Console(stderr=True) if e.severity == "critical" or e.state == "action" \
        else get_console()

    if e.state == "resolved":
        style, mark = "green", "resolved"
    else:
        style, mark = STYLE.get(e.severity, "white"), e.severity
    con.print(f"[dim]step {e.step}[/dim] [{style}]doctor {mark}[/{style}] "
              f"[bold]{escape(e.title)}[/bold]: {escape(e.summary)}"
              + (f" [dim]({escape(plain_citations(e.seed_ref.split(';')[0]))})[/dim]"
                 if e.state in ("raised", "changed") else ""),
              soft_wrap=True, highlight=False)

