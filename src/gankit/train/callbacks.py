"""Built-in callbacks: metrics log and progress bar, sample grids, loss curves."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .trainer import Callback

if TYPE_CHECKING:
    from .trainer import Trainer


class MetricsLogger(Callback):
    """Every ``log_every`` steps: one JSON line in ``metrics.jsonl`` and a live progress bar.

    Statistics were gathered on the device; this is the only place they are synchronised.
    """

    def __init__(self, run_dir: Path | None, log_every: int, total: int, progress: bool,
                 tensorboard: bool = False) -> None:
        self.path = run_dir / "metrics.jsonl" if run_dir is not None else None
        self.every, self.total, self.show = log_every, total, progress
        self.history: list[dict[str, Any]] = []
        self.tb = None
        self._tb_wanted = tensorboard and run_dir is not None
        self.run_dir = run_dir

    def on_train_start(self, tr: Trainer) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.t0, self.s0 = time.perf_counter(), tr.step
        self.t_last, self.s_last = self.t0, tr.step
        if self.path is not None and self.path.exists():
            # Resuming: drop lines logged after the checkpoint we resumed from.
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= tr.step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
            disable=not self.show, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.total, completed=tr.step,
                                           speed="", losses="")
        if self._tb_wanted:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from ..errors import ConfigError

                raise ConfigError("train.tensorboard needs the extra: pip install 'gankit[tensorboard]'") from None
            self.tb = SummaryWriter(str(self.run_dir / "tb"))

    def on_step_end(self, tr: Trainer) -> None:
        if tr.step % self.every and tr.step != self.total:
            self.progress.update(self.task, completed=tr.step)
            return
        stats = tr.pop_stats()
        now = time.perf_counter()
        it_s = (tr.step - self.s_last) / max(now - self.t_last, 1e-9)
        self.t_last, self.s_last = now, tr.step
        rec = {"step": tr.step, "time": round(now - self.t0, 3), "it_s": round(it_s, 3),
               **{k: round(v, 6) if math.isfinite(v) else str(v) for k, v in stats.items()}}
        tr.last_log = rec
        self.history.append(rec)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in stats.items():
                self.tb.add_scalar(k, v, tr.step)
        shown = "  ".join(f"{k.split('/', 1)[-1] if k.startswith('loss/') else k}={v:.3f}"
                          for k, v in stats.items() if k in ("loss/D", "loss/G", "D/real", "D/fake"))
        self.progress.update(self.task, completed=tr.step, speed=f"{it_s:.1f} it/s", losses=shown)

    def on_train_end(self, tr: Trainer) -> None:
        self.progress.stop()
        if self.tb is not None:
            self.tb.close()


class SampleGrids(Callback):
    """Every ``sample_every`` steps: a grid from a fixed z (and fixed labels) in ``samples/``.

    Sampling uses its own generator and G in eval mode, so it never changes the training RNG
    stream or batch-norm statistics (resumed runs stay bit-identical).
    """

    def __init__(self, run_dir: Path, every: int, n: int = 64) -> None:
        self.dir = run_dir / "samples"
        self.every, self.n = every, n

    def on_train_start(self, tr: Trainer) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        g = torch.Generator(tr.device).manual_seed(tr.cfg.train.seed + 12345)
        self.z = tr.model.sample_latent(self.n, g, tr.device)
        k = tr.model.num_classes
        self.c = (torch.arange(self.n, device=tr.device) % k) if tr.model.conditional else None
        self.real = tr.data.x[: 2000]

    def on_step_end(self, tr: Trainer) -> None:
        if tr.step % self.every == 0 or tr.step == tr.cfg.train.steps:
            self.write(tr)

    @torch.no_grad()
    def write(self, tr: Trainer) -> Path:
        G = tr.G_sample
        was = G.training
        G.eval()
        try:
            fake = tr.model.generate(G, self.z, self.c).float().cpu()
        finally:
            G.train(was)
        path = self.dir / f"step_{tr.step:08d}.png"
        save_samples(fake, path, self.real.float().cpu(), nrow=8 if tr.model.conditional else None)
        return path

    def on_train_end(self, tr: Trainer) -> None:
        plot_curves(self.dir.parent)


def save_samples(fake: torch.Tensor, path: Path, real: torch.Tensor | None = None,
                 nrow: int | None = None) -> Path:
    """A PNG of samples: an image grid, or a scatter over the real points for 2-D data."""
    from ..data.images import plot_points, save_grid

    if fake.dim() == 4:
        return save_grid(fake.clamp(-1, 1), path, nrow=nrow)
    if fake.shape[1] == 2:
        return plot_points(fake, real, path, title=path.stem)
    # Other tabular data: the first two coordinates.
    return plot_points(fake[:, :2], None if real is None else real[:, :2], path, title=path.stem)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]


def plot_curves(run_dir: Path) -> Path | None:
    """``curves.png``: losses and D outputs against steps, from ``metrics.jsonl``."""
    rows = read_metrics(run_dir)
    if len(rows) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in rows for k in r if k not in ("step", "time", "it_s")})
    groups = [("losses", [k for k in keys if k.startswith("loss/")]),
              ("discriminator", [k for k in keys if k.startswith("D/")]),
              ("evaluation", [k for k in keys if k.startswith("eval/")])]
    groups = [g for g in groups if g[1]]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 3.5), squeeze=False)
    for ax, (title, ks) in zip(axes[0], groups):
        for k in ks:
            pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
            if pts:
                ax.plot(*zip(*pts), label=k, marker="o" if title == "evaluation" else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(run_dir) / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


class Evaluator(Callback):
    """Evaluation during training (``train.eval_every``) with the best checkpoint kept.

    Every ``eval_every`` steps: ``eval_n`` samples from the sampling generator (G_ema when on,
    fixed seed, eval mode) are compared with up to ``eval_n`` training images by
    :func:`gankit.metrics.evaluate.evaluate_sets`; the results go to ``metrics.jsonl`` as
    ``eval/<key>`` and, when ``best_metric`` improves, G/G_ema weights are copied atomically to
    ``best/`` with ``best/best.json``. Real features are computed once (and cached on disk).
    """

    def __init__(self, run_dir: Path | None, data: Any) -> None:
        self.run_dir = run_dir
        self.ds = data

    def on_train_start(self, tr: Trainer) -> None:
        from ..metrics.evaluate import _subsample

        t = tr.cfg.train
        self.every, self.n = t.eval_every, t.eval_n
        self.real = _subsample(self.ds.x, self.n, t.seed)
        self.best_key = t.best_metric
        self.best: float | None = None
        if self.run_dir is not None and (self.run_dir / "best" / "best.json").exists():
            b = json.loads((self.run_dir / "best" / "best.json").read_text())
            self.best_key, self.best = b["metric"], b["value"]

    def on_step_end(self, tr: Trainer) -> None:
        if tr.step % self.every == 0 or tr.step == tr.cfg.train.steps:
            self.evaluate(tr)

    @torch.no_grad()
    def evaluate(self, tr: Trainer) -> dict[str, float]:
        from ..metrics.evaluate import better, evaluate_sets

        t = tr.cfg.train
        G = tr.G_sample
        was = G.training
        G.eval()
        try:
            gen = torch.Generator(tr.device).manual_seed(t.seed + 999)
            k = tr.model.num_classes
            fakes = []
            for i in range(0, self.n, 500):
                m = min(500, self.n - i)
                c = (torch.arange(i, i + m, device=tr.device) % k) if tr.model.conditional else None
                fakes.append(tr.model.generate(G, tr.model.sample_latent(m, gen, tr.device), c)
                             .float().cpu())
        finally:
            G.train(was)
        key = {"dataset": self.ds.name, "split": "train", "seed": t.seed,
               "image_size": tr.cfg.data.image_size}
        res = evaluate_sets(self.real, torch.cat(fakes), metrics=t.eval_metrics,
                            features=t.eval_features, dataset=self.ds.name, info=self.ds.info,
                            real_key=key if self.run_dir is not None else None, seed=t.seed)
        vals = res["results"]
        rec = {"step": tr.step, **{f"eval/{k}": float(v) for k, v in vals.items()}}
        tr.last_eval = rec
        if self.run_dir is None:
            return vals
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.best_key is None:
            self.best_key = next(iter(vals))
        if self.best_key not in vals:
            from ..errors import ConfigError

            raise ConfigError(f"train.best_metric '{self.best_key}' is not among the evaluated "
                              f"results {sorted(vals)}")
        if better(self.best_key, vals[self.best_key], self.best):
            self.best = float(vals[self.best_key])
            self._save_best(tr, res)
        return vals

    def _save_best(self, tr: Trainer, res: dict[str, Any]) -> None:
        import os
        import shutil

        from safetensors.torch import save_file

        from .checkpoint import fsync_path, state_for_safetensors

        assert self.run_dir is not None
        tmp = self.run_dir / ".tmp-best"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(state_for_safetensors(tr.model.G), tmp / "G.safetensors")
        if tr.ema is not None:
            save_file(state_for_safetensors(tr.ema.G_ema), tmp / "G_ema.safetensors")
        (tmp / "best.json").write_text(json.dumps(
            {"metric": self.best_key, "value": self.best, "step": tr.step, **res}, indent=2))
        for f in tmp.iterdir():
            fsync_path(f)
        final = self.run_dir / "best"
        old = self.run_dir / ".old-best"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
