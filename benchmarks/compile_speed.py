"""``train.compile``: the Trainer with eager networks vs ``torch.compile``d ones.

Trains the same DCGAN (MNIST-5k, non-saturating loss, Adam, EMA off, doctor off) for a number of
steps, eager and compiled, in alternating rounds in one process, and reports the steady-state
images/s of each (the compiled model is warmed up first, so compilation time is reported
separately) and their median ratio. Written to ``benchmarks/results/compile_speed.json``.

    python benchmarks/compile_speed.py [--width 64] [--batch 64] [--rounds 5] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from gankit.config import resolve_config
from gankit.data import load_data
from gankit.models import get_family
from gankit.train.trainer import Trainer

OUT = Path(__file__).parent / "results" / "compile_speed.json"


def trainer(width: int, batch: int, compile_: bool, device: str) -> Trainer:
    cfg = resolve_config("dcgan", {"model": {"width": width},
                                   "train": {"ema": False, "doctor": False, "progress": False,
                                             "batch_size": batch, "compile": compile_,
                                             "device": device}})
    ds = load_data("mnist5k")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = get_family("dcgan")(cfg, ds.describe())
    return Trainer(cfg, model, ds, None)


def timed(tr: Trainer, steps: int) -> float:
    """Images per second over ``steps`` training steps."""
    if tr.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.train_step()
    if tr.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * tr.cfg.train.batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    eager = trainer(a.width, a.batch, False, a.device)
    compiled = trainer(a.width, a.batch, True, a.device)
    t0 = time.perf_counter()
    timed(compiled, 3)  # compiles (forward and backward graphs of each network)
    compile_s = time.perf_counter() - t0
    timed(eager, 3)
    rows = []
    for r in range(a.rounds):
        e, c = timed(eager, a.steps), timed(compiled, a.steps)
        rows.append({"round": r, "eager_img_s": round(e, 2), "compiled_img_s": round(c, 2),
                     "ratio": round(c / e, 4)})
        print(rows[-1], flush=True)
    res = {"command": "python benchmarks/compile_speed.py " + " ".join(
               f"--{k} {v}" for k, v in vars(a).items() if v is not None),
           "device": str(eager.device), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "width": a.width, "batch": a.batch, "compile_seconds": round(compile_s, 1),
           "median_ratio_compiled_over_eager": statistics.median(r["ratio"] for r in rows),
           "rounds": rows}
    OUT.parent.mkdir(exist_ok=True)
    runs = json.loads(OUT.read_text()) if OUT.exists() else {}
    runs[str(eager.device.type)] = res
    OUT.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"compiled / eager images/s: median {res['median_ratio_compiled_over_eager']:.3f} "
          f"(compilation {compile_s:.0f} s) -> {OUT}")


if __name__ == "__main__":
    main()
