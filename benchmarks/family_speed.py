"""Training speed of model families: images/s, FLOPs per step, and where the time goes.

For each model (default: dcgan sngan began ebgan) the script builds the family from its default
config on a dataset (default MNIST-5k, 28x28 grayscale) as ``gankit.train`` does (config layers,
``torch.manual_seed(train.seed)``, then the Trainer with EMA as configured; no run directory, no
doctor, no progress bar) and reports:

* parameters of G and D;
* FLOPs of one training step (one G step and its ``n_critic`` D steps, EMA update included),
  counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products;
  element-wise work is not counted);
* images/s = batch x timed steps / wall time of ``Trainer.fit`` after ``--warmup`` steps, the
  median over ``--rounds`` rounds in which the models alternate (the order rotates every round,
  so drift in machine load favours none);
* achieved GFLOP/s = GFLOP/step x steps/s, against the machine's measured fp32 matmul peak: a
  model whose achieved rate is close to DCGAN's is FLOP-bound (slow because it computes more),
  one far below it spends its time elsewhere (element-wise ops, Python, memory traffic);
* with ``--profile``, the torch.profiler top-10 ops by self CPU time of ``--profile-steps`` steps.

One "step" is one generator step, as everywhere in gankit, so a family with ``n_critic = 5``
(``sngan``) does five D updates per step. A model is ``NAME`` or ``NAME:key=value,key=value``
with config overrides (``sngan:model.g_width=128,model.d_width=64``). ``--max-seconds`` caps the
timed steps of a slow model per round (at least one step is always timed).

    python benchmarks/family_speed.py [--models dcgan sngan began ebgan] [--steps 20]
        [--warmup 2] [--rounds 3] [--max-seconds 60] [--batch 64] [--data mnist5k]
        [--threads 1] [--profile] [--out benchmarks/results/family_speed.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from overhead import matmul_peak  # benchmarks/overhead.py (this directory is on sys.path)

from gankit.config import parse_overrides, resolve_config
from gankit.data import Dataset, load_data
from gankit.models import ModelFamily, get_family
from gankit.train.callbacks import MetricsLogger
from gankit.train.trainer import Trainer


@dataclass
class Entry:
    """One model to measure and what was measured."""

    label: str
    name: str
    overrides: dict[str, Any]
    family: type[ModelFamily] | None = None  # None: the registered family of ``name``
    trainer: Trainer | None = None
    params_g: int = 0
    params_d: int = 0
    n_critic: int = 1
    flops: int = 0
    img_s: list[float] = field(default_factory=list)
    profile: str = ""

    @property
    def median_img_s(self) -> float:
        return statistics.median(self.img_s) if self.img_s else float("nan")


def parse_spec(spec: str) -> Entry:
    """``NAME`` or ``NAME:key=value,key=value`` -> an :class:`Entry`."""
    name, _, rest = spec.partition(":")
    items = [s for s in rest.split(",") if s]
    return Entry(spec, name, parse_overrides(items) if items else {})


def build(e: Entry, ds: Dataset, batch: int, seed: int = 0) -> None:
    """Resolve the config and build family and Trainer as ``gankit.train`` does (no run dir)."""
    layers = [e.overrides, {"train": {"batch_size": batch, "seed": seed, "progress": False,
                                      "log_every": 50}}]
    cfg = resolve_config(e.name, *layers)
    torch.manual_seed(cfg.train.seed)  # network initialisation, as gankit.train
    fam = (e.family or get_family(e.name))(cfg, ds.describe())
    e.params_g = sum(p.numel() for p in fam.G.parameters())
    e.params_d = sum(p.numel() for p in fam.D.parameters())
    e.n_critic = cfg.optim.n_critic
    e.trainer = Trainer(cfg, fam, ds, None, [MetricsLogger(None, 50, 10**9, False)])


def run_steps(tr: Trainer, n: int) -> float:
    """Train ``n`` more steps; wall seconds."""
    t = time.perf_counter()
    tr.fit(tr.step + n)
    return time.perf_counter() - t


def step_flops(tr: Trainer) -> int:
    """FLOPs of one training step (one more step is trained)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        tr.fit(tr.step + 1)
    return fc.get_total_flops()


def profile_table(tr: Trainer, steps: int, top: int = 10) -> str:
    """torch.profiler top-``top`` ops by self CPU time over ``steps`` training steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tr.fit(tr.step + steps)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def measure(entries: list[Entry], ds: Dataset, *, batch: int = 64, steps: int = 20,
            warmup: int = 2, rounds: int = 3, max_seconds: float = 60.0,
            profile_steps: int = 0, log: bool = True) -> None:
    """Build, warm up, count FLOPs and time every entry (alternating); fills the entries."""
    per_step: dict[str, float] = {}
    for e in entries:
        build(e, ds, batch)
        assert e.trainer is not None
        per_step[e.label] = run_steps(e.trainer, max(warmup, 1)) / max(warmup, 1)
        e.flops = step_flops(e.trainer)
    # steps per round: --steps, capped by --max-seconds from the warm-up time
    n_steps = {e.label: max(1, min(steps, int(max_seconds / per_step[e.label])))
               for e in entries}
    for r in range(rounds):
        for i in range(len(entries)):
            e = entries[(i + r) % len(entries)]
            assert e.trainer is not None
            n = n_steps[e.label]
            e.img_s.append(n * batch / run_steps(e.trainer, n))
        if log:
            print(f"round {r}: " + " | ".join(f"{e.label} {e.img_s[-1]:.1f} img/s"
                                              for e in entries), flush=True)
    if profile_steps:
        for e in entries:
            assert e.trainer is not None
            e.profile = profile_table(e.trainer, profile_steps)


def markdown_table(entries: list[Entry], batch: int) -> str:
    ref = next((e for e in entries if e.name == "dcgan" and not e.overrides), None)
    head = ("| model | D steps / step | params G | params D | GFLOP/step | img/s | ms/step "
            "| achieved GFLOP/s |" + (" slower than dcgan |" if ref else ""))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for e in entries:
        ips = e.median_img_s
        row = (f"| `{e.label}` | {e.n_critic} | {e.params_g / 1e6:.2f} M | {e.params_d / 1e6:.2f} M "
               f"| {e.flops / 1e9:.1f} | {ips:.1f} | {1000 * batch / ips:.0f} "
               f"| {e.flops / 1e9 * ips / batch:.1f} |")
        if ref:
            row += f" {ref.median_img_s / ips:.1f}x |"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["dcgan", "sngan", "began", "ebgan"],
                    help="NAME or NAME:key=value,key=value (config overrides)")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per model per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=60.0,
                    help="cap on one model's timed seconds per round (fewer steps if slow)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler top-10 ops")
    ap.add_argument("--profile-steps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the report (markdown)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    ds = load_data(a.data)
    entries = [parse_spec(s) for s in a.models]
    measure(entries, ds, batch=a.batch, steps=a.steps, warmup=a.warmup, rounds=a.rounds,
            max_seconds=a.max_seconds, profile_steps=a.profile_steps if a.profile else 0)
    peak = matmul_peak(1024)  # overhead.py's measurement, same thread setting
    res = ds.describe()
    title = (f"# Training speed per family ({a.data}, {'x'.join(map(str, res['shape']))}, "
             f"batch {a.batch})")
    setup = (f"`python benchmarks/family_speed.py {' '.join(sys.argv[1:])}`; torch {torch.__version__}, "
             f"{torch.get_num_threads()} thread(s), {platform.machine()}; fp32 matmul peak "
             f"{peak:.0f} GFLOP/s. img/s: median over rounds (models alternate); a step is one G "
             f"step with its D steps; FLOPs by FlopCounterMode (conv/matmul only).")
    report = [title, "", setup, "", markdown_table(entries, a.batch)]
    for e in entries:
        if e.profile:
            head = f"## `{e.label}`: top-10 ops by self CPU time over {a.profile_steps} step(s)"
            report += ["", head, "", "```", e.profile.rstrip(), "```"]
    text = "\n".join(report) + "\n"
    print()
    print(text)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)


if __name__ == "__main__":
    main()
