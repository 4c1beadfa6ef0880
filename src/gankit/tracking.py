"""Experiment tracking: one small interface, several back-ends (``train.trackers``).

A :class:`Tracker` receives scalars, images, hyper-parameters and text. The run directory's
JSON-lines files are the canonical record and are always written (``jsonl``, the default:
``metrics.jsonl`` with the training and ``eval/*`` records, ``probes.jsonl``,
``diagnostics.jsonl``, sample grids in ``samples/``); the trackers named in ``train.trackers``
receive the same records as they are logged:

========== ===================================================================================
jsonl      the run directory's own files (always on; listing it changes nothing)
csv        ``csv/<stream>.csv`` per stream (metrics, eval, probes); see :class:`CsvTracker`
tensorboard ``tb/`` event files: every scalar, eval metrics, sample grids as images, the
           hyper-parameters, the doctor's diagnoses as text (``pip install tensorboard``)
wandb      Weights & Biases (``pip install 'gankit[wandb]'``); project from ``WANDB_PROJECT``
mlflow     MLflow (``pip install 'gankit[mlflow]'``); experiment from ``MLFLOW_EXPERIMENT_NAME``
========== ===================================================================================

wandb and mlflow are imported only when chosen; a missing package is a one-line
:class:`~gankit.errors.ConfigError` naming the ``pip install``. The :class:`Tracking` callback
feeds the trackers from the Trainer's ``on_log`` and ``on_image`` hooks, so evaluation results
(the Evaluator), sample grids (SampleGrids) and diagnoses (the Doctor) reach every one of them.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import check_trackers
from .errors import ConfigError
from .train.trainer import Callback

if TYPE_CHECKING:
    import torch

    from .train.trainer import Trainer

#: tracker name -> (module it needs, the pip install that provides it)
NEEDS = {"tensorboard": ("tensorboard", "pip install tensorboard"),
         "wandb": ("wandb", "pip install 'gankit[wandb]'"),
         "mlflow": ("mlflow", "pip install 'gankit[mlflow]'")}
def _require(name: str) -> Any:
    """Import the package tracker ``name`` needs, or a one-line ConfigError."""
    import importlib

    module, pip = NEEDS[name]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"train.trackers: '{name}' needs the package '{module}': {pip}") \
            from None


def _finite(v: Any) -> float | None:
    """A scalar for a tracker: numbers as float, 'nan'/'inf' strings as float, else None."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.lower() in ("nan", "inf", "-inf"):
        return float(v)
    return None


def scalars_of(rec: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a log record (``step`` excluded)."""
    out = {}
    for k, v in rec.items():
        if k == "step":
            continue
        f = _finite(v)
        if f is not None:
            out[k] = f
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"steps": 5}}`` -> ``{"train.steps": 5}``; lists become strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, key + ".")
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = json.dumps(v, default=str)
    return out


def _png_bytes(image: torch.Tensor | bytes | str | Path) -> bytes:
    """PNG bytes of a PNG file/bytes, or of an image tensor ``[C, H, W]`` in [-1, 1]."""
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, bytes):
        return image
    from PIL import Image

    x = image.detach().float().cpu().clamp(-1, 1)
    if x.dim() == 2:
        x = x[None]
    arr = ((x + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(buf, format="png")
    return buf.getvalue()


class Tracker(ABC):
    """The interface every experiment tracker implements.

    ``scalars(step, values)``, ``image(tag, step, image)`` (a PNG path or bytes, or an image
    tensor ``[C, H, W]`` in [-1, 1]), ``hparams(hparams, metrics)``, ``text(tag, step, text)``,
    ``rewind(step)`` (a resumed or rolled-back run: records after ``step`` belong to undone
    steps; back-ends that cannot delete keep them) and ``close()``.
    """

    name = "tracker"

    @abstractmethod
    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    @abstractmethod
    def image(self, tag: str, step: int, image: Any) -> None: ...

    @abstractmethod
    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None: ...

    @abstractmethod
    def text(self, tag: str, step: int, text: str) -> None: ...

    def rewind(self, step: int) -> None:
        """Forget records after ``step`` where the back-end can (CSV can, remote ones cannot)."""

    def close(self) -> None:
        """Flush and release the back-end."""


class CsvTracker(Tracker):
    """One CSV file per stream in ``folder`` (``metrics.csv``, ``eval.csv``, ``probes.csv``).

    The stream of a record is told by its keys (:meth:`stream_of`). The header is the ``step``
    column and the keys of the first record in order; when a later record brings a new key, the
    file is rewritten atomically with the key appended to the header (earlier rows get an empty
    cell), so every row always matches the header and a crash leaves the old or the new file.
    Images and text go to ``folder/events.csv`` (step, kind, tag, value: the PNG path or the
    text); hyper-parameters to ``folder/hparams.csv`` (key, value).
    """

    name = "csv"

    def __init__(self, folder: str | Path) -> None:
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.headers: dict[str, list[str]] = {}

    def _path(self, stream: str) -> Path:
        return self.dir / f"{stream}.csv"

    def _header(self, stream: str) -> list[str]:
        if stream not in self.headers:
            p = self._path(stream)
            if p.exists() and p.stat().st_size:
                with open(p, newline="") as f:
                    self.headers[stream] = next(csv.reader(f), [])
            else:
                self.headers[stream] = []
        return self.headers[stream]

    def _rows(self, stream: str) -> list[dict[str, str]]:
        p = self._path(stream)
        if not p.exists():
            return []
        with open(p, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, stream: str, header: list[str], rows: list[dict[str, Any]]) -> None:
        from .rundir import atomic_write_text

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=header, restval="", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self._path(stream), buf.getvalue())
        self.headers[stream] = header

    def write(self, stream: str, row: dict[str, Any]) -> None:
        """Append one row (``step`` first) to ``stream``'s CSV, growing the header if needed."""
        header = self._header(stream)
        new = [k for k in row if k not in header]
        if not header:
            header = ["step", *[k for k in row if k != "step"]]
            self._rewrite(stream, header, [row])
            return
        if new:
            self._rewrite(stream, header + new, [*self._rows(stream), row])
            return
        with open(self._path(stream), "a", newline="") as f:
            csv.DictWriter(f, fieldnames=header, restval="", lineterminator="\n").writerow(row)

    @staticmethod
    def stream_of(values: dict[str, Any]) -> str:
        """``eval`` for ``eval/*`` records, ``probes`` for the doctor's ``doctor/*``, else
        ``metrics``."""
        for prefix, stream in (("eval/", "eval"), ("doctor/", "probes")):
            if values and all(k.startswith(prefix) for k in values):
                return stream
        return "metrics"

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.write(self.stream_of(values), {"step": step, **values})

    def image(self, tag: str, step: int, image: Any) -> None:
        value = str(image) if isinstance(image, (str, Path)) else ""
        if not value:
            value = str(self.dir / f"{tag.replace('/', '_')}_{step:08d}.png")
            Path(value).write_bytes(_png_bytes(image))
        self.write("events", {"step": step, "kind": "image", "tag": tag, "value": value})

    def text(self, tag: str, step: int, text: str) -> None:
        self.write("events", {"step": step, "kind": "text", "tag": tag, "value": text})

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        rows = [{"key": k, "value": v} for k, v in {**hparams, **metrics}.items()]
        header = ["key", "value"]
        self._rewrite("hparams", header, rows)

    def rewind(self, step: int) -> None:
        for p in self.dir.glob("*.csv"):
            stream = p.stem
            if stream == "hparams":
                continue
            rows = self._rows(stream)
            keep = [r for r in rows if _int(r.get("step")) <= step]
            if len(keep) != len(rows):
                self._rewrite(stream, self._header(stream), keep)


def _int(v: Any) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 0


class TensorBoardTracker(Tracker):
    """TensorBoard event files in ``folder`` (``torch.utils.tensorboard.SummaryWriter``).

    A resumed run passes ``purge_step``: TensorBoard hides the events of the undone steps.
    """

    name = "tensorboard"

    def __init__(self, folder: str | Path, purge_step: int | None = None) -> None:
        _require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(folder)
        self.writer = SummaryWriter(str(self.dir), purge_step=purge_step or None)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def image(self, tag: str, step: int, image: Any) -> None:
        import numpy as np
        from PIL import Image

        arr = np.asarray(Image.open(io.BytesIO(_png_bytes(image))).convert("RGB"))  # [H, W, 3]
        self.writer.add_image(tag, arr, step, dataformats="HWC")

    def text(self, tag: str, step: int, text: str) -> None:
        self.writer.add_text(tag, text, step)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        hp = {k: ("" if v is None else v) for k, v in hparams.items()}
        self.writer.add_hparams(hp, {f"hparam/{k}": v for k, v in metrics.items()},
                                run_name=".")

    def rewind(self, step: int) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """Weights & Biases: ``wandb.init`` (project ``$WANDB_PROJECT`` or ``gankit``, the run
    directory's name, the config), ``run.log`` of scalars, ``wandb.Image`` and ``wandb.Html``,
    the config and final metrics in ``run.config`` / ``run.summary``."""

    name = "wandb"

    def __init__(self, folder: str | Path, name: str, config: dict[str, Any]) -> None:
        self.wandb = _require("wandb")
        self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "gankit"), name=name,
                                   dir=str(folder), config=config, resume="allow")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def image(self, tag: str, step: int, image: Any) -> None:
        from PIL import Image

        img = Image.open(io.BytesIO(_png_bytes(image)))
        self.run.log({tag: self.wandb.Image(img, caption=f"step {step}")}, step=step)

    def text(self, tag: str, step: int, text: str) -> None:
        self.run.log({tag: self.wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step=step)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        self.run.config.update(hparams, allow_val_change=True)
        self.run.summary.update(metrics)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(Tracker):
    """MLflow: a run in experiment ``$MLFLOW_EXPERIMENT_NAME`` (or ``gankit``) named after the
    run directory; ``log_metrics``, images as artifacts (``log_image``), text with
    ``log_text``, hyper-parameters with ``log_params`` (in batches of 100, values cut to 500
    characters: MLflow's limits)."""

    name = "mlflow"

    def __init__(self, name: str) -> None:
        self.mlflow = _require("mlflow")
        self.mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "gankit"))
        self.run = self.mlflow.start_run(run_name=name)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.mlflow.log_metrics(dict(values), step=step)

    def image(self, tag: str, step: int, image: Any) -> None:
        from PIL import Image

        img = Image.open(io.BytesIO(_png_bytes(image)))
        self.mlflow.log_image(img, f"{tag}/step_{step:08d}.png")

    def text(self, tag: str, step: int, text: str) -> None:
        self.mlflow.log_text(text, f"{tag}/step_{step:08d}.txt")

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        items = [(k, str(v)[:500]) for k, v in hparams.items()]
        for i in range(0, len(items), 100):
            self.mlflow.log_params(dict(items[i:i + 100]))
        if metrics:
            self.mlflow.log_metrics(dict(metrics))

    def close(self) -> None:
        self.mlflow.end_run()


def build_trackers(names: list[str], run_dir: Path, config: dict[str, Any],
                   step: int = 0) -> list[Tracker]:
    """The trackers named (``jsonl`` needs none: the run directory is written by the Trainer)."""
    out: list[Tracker] = []
    for n in names:
        if n == "csv":
            tr: Tracker = CsvTracker(run_dir / "csv")
        elif n == "tensorboard":
            tr = TensorBoardTracker(run_dir / "tb", purge_step=step)
        elif n == "wandb":
            tr = WandbTracker(run_dir, run_dir.name, config)
        elif n == "mlflow":
            tr = MlflowTracker(run_dir.name)
        else:
            continue
        out.append(tr)
    return out


class Tracking(Callback):
    """Feeds the trackers of ``train.trackers`` from the Trainer's log (a Callback).

    * ``metrics``, ``eval`` and ``probes`` records: every numeric value, as scalars;
    * ``diagnostics`` records: one text line per diagnosis under ``doctor/<diagnosis>``;
    * images (``on_image``: sample grids): as images;
    * at the start, the resolved config as hyper-parameters (with the final metrics at the end:
      the last evaluation results, or the last logged losses).

    Packages are checked when the callback is built, before anything is written. Your own
    back-ends (:class:`Tracker` subclasses) join with ``own``::

        gankit.train(..., callbacks=[Tracking(own=[MyTracker()])])
    """

    def __init__(self, run_dir: Path | None = None, names: list[str] | tuple[str, ...] = (),
                 own: list[Tracker] | tuple[Tracker, ...] = ()) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.names = [n for n in check_trackers(list(names)) if n != "jsonl"]
        if self.names and self.run_dir is None:
            raise ConfigError(f"train.trackers {self.names} need a run directory (save=True)")
        for n in self.names:
            if n in NEEDS:
                _require(n)
        self.own = list(own)
        self.trackers: list[Tracker] = []
        self.final: dict[str, float] = {}

    def on_train_start(self, tr: Trainer) -> None:
        self.config = flatten(tr.cfg.to_dict())
        built = build_trackers(self.names, self.run_dir, tr.cfg.to_dict(), tr.step) \
            if self.run_dir is not None else []
        self.trackers = [*built, *self.own]
        for t in self.trackers:
            t.rewind(tr.step)

    def on_log(self, tr: Trainer, stream: str, rec: dict[str, Any]) -> None:
        step = int(rec["step"]) if "step" in rec else tr.step
        if stream == "diagnostics":
            line = f"[{rec.get('severity', '')}] {rec.get('state', '')}: " \
                   f"{rec.get('title', '')}: {rec.get('summary', '')}"
            for t in self.trackers:
                t.text(f"doctor/{rec.get('diagnosis', 'note')}", step, line)
            return
        vals = scalars_of(rec)
        if not vals:
            return
        if stream == "eval":
            self.final = {k: v for k, v in vals.items() if math.isfinite(v)}
        elif stream == "metrics" and not any(k.startswith("eval/") for k in self.final):
            self.final = {k: v for k, v in vals.items()
                          if k.startswith("loss/") and math.isfinite(v)}
        for t in self.trackers:
            t.scalars(step, vals)

    def on_image(self, tr: Trainer, tag: str, path: Path) -> None:
        for t in self.trackers:
            t.image(tag, tr.step, path)

    def on_rollback(self, tr: Trainer, step: int) -> None:
        for t in self.trackers:
            t.rewind(step)

    def on_train_end(self, tr: Trainer) -> None:
        for t in self.trackers:
            try:
                t.hparams(self.config, self.final)
            finally:
                t.close()
        self.trackers = []
