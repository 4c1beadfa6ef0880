"""What a training prints: the start-up summary, the progress bar, plain progress lines.

On a terminal, a rich progress bar whose step counter, percentage, speed and ETA keep their
place at 80 columns (the loss text is the one column that is cut, with an ellipsis). When
stdout is not a terminal (``nohup``, a batch scheduler, a pipe) there is no bar: plain lines,
flushed at once, at least one per 10% of the run (and one a minute at log steps on slow
runs)::

    step 120/1000 (12%)  35.2 it/s  elapsed 0:00:03  ETA 0:00:25  D=0.693 G=0.701
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from .trainer import Trainer

#: a plain progress line at least this often (seconds) at log steps, besides every 10%
LINE_SECONDS = 60.0


def hms(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def startup_summary(tr: Trainer, data: Any = None, total: int | None = None) -> list[tuple[str, str]]:
    """(label, value) rows describing the run about to train."""
    cfg, t = tr.cfg, tr.cfg.train
    rows: list[tuple[str, str]] = []
    dev = str(tr.device)
    if tr.device.type == "cuda":
        import torch

        dev += f" ({torch.cuda.get_device_name(tr.device)})"
    rows.append(("device", dev + (f", {tr.dist.world} processes" if tr.dist.enabled else "")))
    amp = {"bf16": "bfloat16 autocast", "fp16": "float16 autocast + grad scaling"}.get(t.amp)
    rows.append(("dtype", "float32" + (f" with {amp}" if amp else "")))
    if data is not None:
        shape = "x".join(str(s) for s in data.shape)
        extra = f", {data.num_classes} classes" if getattr(data, "num_classes", 0) else ""
        rows.append(("data", f"{data.name}: {len(data)} samples of {shape}{extra}"))
        if data.is_image:
            size = f"{data.shape[-2]}x{data.shape[-1]}, {data.shape[0]} channel(s)"
            rows.append(("image size", size))
    describe = getattr(tr.source, "describe", None)  # a streaming source says what it does
    if callable(describe):
        how = str(describe())
    else:
        x = data.x if data is not None else None
        how = "in memory" + (f" ({str(x.dtype).replace('torch.', '')})" if x is not None
                             else "") + f" on {tr.device}, batches as index slices"
    rows.append(("data source", f"{getattr(tr.model, 'data_source', 'samples')}: {how}"))
    nets = {**tr.nets, **{f"{k} (frozen)": n for k, n in tr.frozen.items()}}
    rows.append(("parameters", ", ".join(
        f"{k} {_count(sum(p.numel() for p in n.parameters()))}" for k, n in nets.items())))
    steps = total if total is not None else t.steps
    rows.append(("steps", f"{steps}" + (f" (resuming at {tr.step})" if tr.step else "")
                 + f", batch {t.batch_size}"
                 + (f" ({cfg.optim.grad_accum} micro-batches)" if cfg.optim.grad_accum > 1
                    else "")))
    name = str(cfg.model.get("name", type(tr.model).__name__))
    note = tr.model.summary_note() if hasattr(tr.model, "summary_note") else None
    rows.append(("model", f"{name} ({note})" if note else name))
    rows.append(("run dir", str(tr.run_dir) if tr.run_dir is not None else "(not saved)"))
    threads = getattr(tr, "threads", None)
    if threads is not None:
        rows.append(("threads", threads.describe()))
    return rows


def print_summary(rows: list[tuple[str, str]], console: Console, plain: bool) -> None:
    if plain:
        f = console.file
        for k, v in rows:
            print(f"{k:<12} {v}", file=f, flush=True)
        return
    from rich.markup import escape

    for k, v in rows:
        console.print(f"[dim]{k:<12}[/dim] {escape(v)}", highlight=False, soft_wrap=True)


def make_progress(console: Console | None, disable: bool) -> Progress:
    """A progress bar that keeps step/total, %, speed and ETA visible at 80 columns."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column

    fixed = {"no_wrap": True}
    return Progress(
        TextColumn("[bold]{task.description}", table_column=Column(**fixed)),
        MofNCompleteColumn(table_column=Column(**fixed)),
        TaskProgressColumn(table_column=Column(**fixed)),
        TextColumn("{task.fields[speed]}", table_column=Column(**fixed)),
        TextColumn("ETA", table_column=Column(**fixed)),
        TimeRemainingColumn(table_column=Column(**fixed)),
        BarColumn(bar_width=16),
        TextColumn("{task.fields[losses]}",
                   table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1, min_width=1)),
        console=console, disable=disable, transient=False, expand=True,
    )


class PlainLines:
    """Progress as plain, flushed lines (stdout not a terminal): one at each tenth of the run,
    and one at a log step when :data:`LINE_SECONDS` passed since the last line."""

    def __init__(self, file: TextIO, total: int, start: int) -> None:
        self.file, self.total, self.start = file, total, start
        self.t0 = self.t_last = time.perf_counter()
        self.s_last = start
        self.next = self._next_mark(start)

    def _next_mark(self, step: int) -> int:
        tenth = self.total / 10
        k = math.floor(step / tenth + 1e-9) + 1 if tenth > 0 else 1
        return min(self.total, max(step + 1, math.ceil(k * tenth - 1e-9)))

    def update(self, step: int, losses: str, logged: bool) -> bool:
        """Print a line if ``step`` reached the next tenth (or a log step a minute after the
        last line); True when one was printed."""
        now = time.perf_counter()
        if not (step >= self.next or (logged and now - self.t_last >= LINE_SECONDS)):
            return False
        done, elapsed = step - self.start, now - self.t0
        rate = (step - self.s_last) / max(now - self.t_last, 1e-9)
        eta = (self.total - step) * elapsed / done if done > 0 else float("nan")
        pct = 100.0 * step / max(self.total, 1)
        print(f"step {step}/{self.total} ({pct:.0f}%)  {rate:.1f} it/s  elapsed {hms(elapsed)}"
              f"  ETA {hms(eta)}" + (f"  {losses}" if losses else ""), file=self.file,
              flush=True)
        self.t_last, self.s_last = now, step
        if step >= self.next:
            self.next = self._next_mark(step)
        return True
