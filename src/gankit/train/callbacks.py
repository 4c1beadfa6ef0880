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
    """Every ``log_every`` steps: one JSON line in ``metrics.jsonl``; and what the run prints.

    Statistics were gathered on the device; this is the only place they are synchronised. With
    ``progress`` on it prints a start-up summary (device, dtype, data, image size, parameters,
    steps, run directory, threads), then a live progress bar on a terminal, or plain flushed
    lines (at least one per 10% of the run) when stdout is not one (``gankit.train.console``).
    ``console`` replaces rich's global console (tests record with one of a given width).
    """

    def __init__(self, run_dir: Path | None, log_every: int, total: int, progress: bool,
                 data: Any = None, console: Any = None) -> None:
        self.every, self.total, self.show = log_every, total, progress
        self.history: list[dict[str, Any]] = []
        self.run_dir = run_dir
        self.data = data
        self.console = console
        self.lines: Any = None

    def on_train_start(self, tr: Trainer) -> None:
        from rich import get_console

        from .console import PlainLines, make_progress, print_summary, startup_summary

        self.t0, self.s0 = time.perf_counter(), tr.step
        self.t_last, self.s_last = self.t0, tr.step
        con = self.console or get_console()
        plain = not (con.is_terminal or con.is_jupyter)  # nohup, a scheduler, a pipe
        if self.show:
            print_summary(startup_summary(tr, self.data, self.total), con, plain)
        self.lines = PlainLines(con.file, self.total, tr.step) if self.show and plain else None
        self.shown = ""
        self.progress = make_progress(con, disable=not self.show or plain)
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.total, completed=tr.step,
                                           speed="", losses="")

    def on_rollback(self, tr: Trainer, step: int) -> None:
        self.history = [r for r in self.history if r["step"] <= step]
        self.t_last, self.s_last = time.perf_counter(), step

    def on_step_end(self, tr: Trainer) -> None:
        if tr.step % self.every and tr.step != self.total:
            self.progress.update(self.task, completed=tr.step)
            if self.lines is not None:
                self.lines.update(tr.step, self.shown, False)
            return
        stats = tr.pop_stats()
        now = time.perf_counter()
        it_s = (tr.step - self.s_last) / max(now - self.t_last, 1e-9)
        self.t_last, self.s_last = now, tr.step
        rec = tr.log({"time": round(now - self.t0, 3), "it_s": round(it_s, 3),
                      **{k: round(v, 6) if math.isfinite(v) else str(v)
                         for k, v in stats.items()}})
        self.history.append(rec)
        shown = sorted((k for k in stats if k.count("/") <= 1 and (
            k.startswith("loss/") or k in ("D/real", "D/fake"))),
            key=lambda k: not k.startswith("loss/"))  # losses first: a narrow bar cuts the end
        self.shown = "  ".join(
            f"{k.split('/', 1)[-1] if k.startswith('loss/') else k}={stats[k]:.3f}"
            for k in shown)
        self.progress.update(self.task, completed=tr.step, speed=f"{it_s:.1f} it/s",
                             losses=self.shown)
        if self.lines is not None:
            self.lines.update(tr.step, self.shown, True)

    def on_train_end(self, tr: Trainer) -> None:
        self.progress.stop()


class SampleGrids(Callback):
    """Every ``sample_every`` steps: the family's preview grid in ``samples/``: samples from a
    fixed seed (and fixed labels), or translations of fixed held-out inputs.

    Previews run through :meth:`ModelFamily.preview` with the EMA copies, in eval mode and with
    their own generator, so they never change the training RNG stream or batch-norm statistics
    (resumed runs stay bit-identical).
    """

    def __init__(self, run_dir: Path, every: int, data: Any, n: int = 64) -> None:
        self.dir = run_dir / "samples"
        self.every, self.n, self.ds = every, n, data

    def on_train_start(self, tr: Trainer) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # the scatter of 2-D samples shows real points under them; image grids need none
        self.real = None if self.ds.is_image or self.ds.is_volume else self.ds.x[:2000]

    def on_step_end(self, tr: Trainer) -> None:
        if tr.step % self.every == 0 or tr.step == tr.cfg.train.steps:
            self.write(tr)

    def write(self, tr: Trainer) -> Path:
        fake, nrow = tr.model.preview(self.ds, self.n, tr.cfg.train.seed + 12345,
                                      nets=tr.sampling_nets())
        path = self.dir / f"step_{tr.step:08d}.png"
        save_samples(fake, path, None if self.real is None else self.real.float().cpu(),
                     nrow=nrow)
        tr.log_image("samples", path)  # to the trackers (gankit.tracking)
        return path

    def on_train_end(self, tr: Trainer) -> None:
        plot_curves(self.dir.parent)


def save_samples(fake: torch.Tensor, path: Path, real: torch.Tensor | None = None,
                 nrow: int | None = None) -> Path:
    """A PNG of samples: an image grid (3-D volumes ``[N, C, D, H, W]`` by their middle slice),
    or a scatter over the real points for 2-D data."""
    from ..data.images import plot_points, save_grid

    if fake.dim() == 5:
        fake = fake[:, :, fake.shape[2] // 2]  # [N, C, H, W]: the middle slice of each volume
    if fake.dim() == 4:
        return save_grid(fake.clamp(-1, 1), path, nrow=nrow)
    if fake.shape[1] == 2:
        return plot_points(fake, real, path, title=path.stem)
    # Other tabular data: the first two coordinates.
    return plot_points(fake[:, :2], None if real is None else real[:, :2], path, title=path.stem)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (a torn last line is skipped)."""
    from ..rundir import RunDir

    return RunDir(run_dir).read("metrics")


def plot_curves(run_dir: Path) -> Path | None:
    """``curves.png``: losses and D outputs against steps, from ``metrics.jsonl``."""
    rows = read_metrics(run_dir)
    if len(rows) < 2:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = sorted({k for r in rows for k in r if k not in ("step", "time", "it_s")})
    groups = [("losses", [k for k in keys if k.startswith("loss/")]),
              ("discriminator", [k for k in keys if k.startswith("D/")]),
              ("evaluation", [k for k in keys if k.startswith("eval/")])]
    groups = [g for g in groups if g[1]]
    # A Figure of its own (no pyplot): nothing global is touched, no backend is switched.
    fig = Figure(figsize=(6 * len(groups), 3.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(groups), squeeze=False)
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
    import io

    from ..rundir import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    atomic_write_bytes(out, buf.getvalue())
    return out


class Evaluator(Callback):
    """Evaluation during training (``train.eval_every``) with the best weights kept.

    Every ``eval_every`` steps the model is evaluated by :func:`evaluate_model`: ``eval_n``
    samples drawn from a fixed seed with the EMA copies (generative models) against up to
    ``eval_n`` training samples, or translations of the held-out inputs against their targets
    (translators). The results go to ``metrics.jsonl`` as ``eval/<key>`` records and, when
    ``best_metric`` improves, every network (and EMA copy) is copied atomically to ``best/``
    with ``best/best.json``. Real features are computed once (and cached on disk).
    """

    def __init__(self, run_dir: Path | None, data: Any) -> None:
        self.run_dir = run_dir
        self.ds = data

    def on_train_start(self, tr: Trainer) -> None:
        from ..rundir import RunDir

        t = tr.cfg.train
        self.every, self.n = t.eval_every, t.eval_n
        self.best_key = t.best_metric
        self.best: float | None = None
        self.rundir = RunDir(self.run_dir) if self.run_dir is not None else None
        if self.rundir is not None and (self.rundir.best / "best.json").exists():
            b = json.loads((self.rundir.best / "best.json").read_text())
            self.best_key, self.best = b["metric"], b["value"]

    def on_step_end(self, tr: Trainer) -> None:
        if tr.step % self.every == 0 or tr.step == tr.cfg.train.steps:
            self.evaluate(tr)

    def evaluate(self, tr: Trainer) -> dict[str, float]:
        from ..metrics.evaluate import better

        t = tr.cfg.train
        res = evaluate_model(tr.model, self.ds, n=self.n, seed=t.seed + 999,
                             metrics=t.eval_metrics, features=t.eval_features,
                             nets=tr.sampling_nets(), cache=self.run_dir is not None,
                             image_size=tr.cfg.data.image_size)
        vals = res["results"]
        tr.log({f"eval/{k}": float(v) for k, v in vals.items()}, "eval")
        if self.rundir is None:
            return vals
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
        from ..rundir import atomic_write_json
        from .checkpoint import write_weights

        assert self.rundir is not None
        mods = {k: m for k, m in tr.checkpoint_modules().items() if k != "family"}
        write_weights(self.rundir.best, mods)
        atomic_write_json(self.rundir.best / "best.json",
                          {"metric": self.best_key, "value": self.best, "step": tr.step, **res})


def evaluate_model(model: Any, ds: Any, *, n: int, seed: int, metrics: list[str] | None = None,
                   features: str | None = None, feature_options: dict[str, Any] | None = None,
                   nets: dict[str, Any] | None = None, cache: bool = True, split: str = "train",
                   heldout: torch.Tensor | None = None,
                   image_size: int | None = None) -> dict[str, Any]:
    """Evaluate a model on its data with a recorded protocol (used during training and by
    ``gankit eval``).

    Generative models (``sample``): ``n`` samples from ``seed`` against up to ``n`` real samples
    of ``split`` (``heldout`` for the memorisation metric). Translators (``translate``): the
    held-out inputs translated and compared with their targets, by the paired metrics (L1,
    PSNR, SSIM, sharpness, label accuracy when the data has labels; or the registered paired
    metrics named in ``metrics``: psnr, ssim, mae, ncc, dice, jaccard) and, for the
    distribution, by the set metrics of the data. Unpaired data is scored as pairs when its
    ``info["paired_test"]`` says the test split is aligned. ``auroc`` ranks a scoring model's
    scores of the test images (:func:`gankit.metrics.evaluate.score_auroc`). Segmenters
    (``segment``): Dice and Jaccard of the held-out masks
    (:func:`gankit.metrics.segmentation.segmentation_report`).
    """
    from ..metrics.evaluate import _subsample, evaluate_sets

    if metrics is not None and "auroc" in metrics:
        from ..metrics.evaluate import score_auroc

        rest = [k for k in metrics if k != "auroc"]
        res = score_auroc(model, ds, n=n, seed=seed, nets=nets)
        if rest:
            more = evaluate_model(model, ds, n=n, seed=seed, metrics=rest, features=features,
                                  feature_options=feature_options, nets=nets, cache=cache,
                                  split=split, heldout=heldout, image_size=image_size)
            res["results"] = {**more["results"], **res["results"]}
            res["protocol"] = {**more["protocol"], "auroc": res["protocol"]["auroc"]}
        return res
    if "sample" in model.capabilities:
        real = ds.x if split == "train" else ds.x_test
        if real is None:
            from ..errors import ConfigError

            raise ConfigError(f"dataset '{ds.name}' has no test split; use the train split")
        real = _subsample(real, n, seed)
        fake = model.draw(n, seed, nets=nets)
        key = {"dataset": ds.name, "split": split, "seed": seed, "image_size": image_size} \
            if cache else None
        return evaluate_sets(real, fake, metrics=metrics, features=features,
                             feature_options=feature_options, dataset=ds.name, info=ds.info,
                             real_key=key, seed=seed, heldout=heldout)
    if "translate" in model.capabilities and ds.a is not None:
        from ..errors import ConfigError
        from ..metrics.evaluate import REPORT_METRICS, paired_metrics
        from ..metrics.paired import paired_report

        held_out = ds.a_test is not None
        # unpaired training data may hold an aligned test split (info["paired_test"]: a_test[i]
        # translates to x_test[i], e.g. two contrasts of one phantom, or thin2thick): scored
        # as pairs
        paired = ds.pairing == "paired" or bool(ds.info.get("paired_test")
                                                and held_out
                                                and ds.x_test is not None
                                                and len(ds.a_test) == len(ds.x_test))
        a = ds.a_test if held_out else ds.a
        x = ds.x_test if ds.x_test is not None else ds.x
        y = ds.y_test if ds.x_test is not None else ds.y
        y_a = ds.info.get("y_a_test" if held_out else "y_a")  # the inputs' own labels
        digits = ds.info.get("features") == "lenet-mnist"
        m = min(n, len(a))
        out = model.infer("translate", a[:m], seed, nets=nets)
        res: dict[str, Any] = {"results": {}, "protocol": {"task": "translate held-out inputs",
                                                         "n": m, "seed": seed,
                                                         "split": "test" if held_out
                                                         else "train"}}
        # metrics=None: the whole paired report; named metrics: the report only for its own
        # names (l1, sharpness, label_acc), each registered paired metric (psnr, ssim, mae,
        # dice, ...) on its own.
        chosen = paired_metrics(metrics)
        if paired and (metrics is None or set(metrics) & set(REPORT_METRICS)):
            rep = paired_report(out, x[:m], y[:m] if y is not None and digits else None)
            res["results"] |= rep["results"]
            res["protocol"]["paired"] = rep["protocol"]
        elif y_a is not None and digits and out.dim() == 4 and out.shape[1] == 1:
            from ..metrics.paired import digit_label_accuracy

            # label preservation: does the LeNet read each translation as its input's digit
            res["results"]["label_acc"] = digit_label_accuracy(out, y_a[:m])
            res["protocol"]["label_acc"] = "lenet-mnist on the translations vs the inputs' labels"
        if chosen:
            if not paired:
                raise ConfigError(f"metric '{chosen[0]}' compares each output with its target; "
                                  f"'{ds.name}' is unpaired (no targets)")
            from ..registry import METRICS

            res["protocol"]["metrics"] = {}
            for k in chosen:
                res["results"] |= METRICS.get(k)(x[:m], out)
                res["protocol"]["metrics"][k] = METRICS.get(k).protocol
        set_metrics = [k for k in (metrics or ["fid", "kid", "pr", "dc"])
                       if k not in REPORT_METRICS and k not in chosen]
        if set_metrics and out.dim() == 4:
            sets = evaluate_sets(x[:m], out, metrics=set_metrics, features=features,
                                 dataset=ds.name, info=ds.info, seed=seed)
            res["results"] |= sets["results"]
            res["protocol"]["sets"] = sets["protocol"]
        return res
    if "segment" in model.capabilities and ds.a is not None and ds.pairing == "paired":
        from ..metrics.segmentation import segmentation_report

        return segmentation_report(model, ds, n=n, seed=seed, nets=nets)
    from ..models.base import CapabilityError

    raise CapabilityError(f"model '{model.name}' can neither sample, translate nor segment: "
                          f"nothing to evaluate")
