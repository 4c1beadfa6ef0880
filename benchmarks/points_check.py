"""Mode coverage of gan / wgan-gp / unrolled (K = 0 and K = 5) on ring8 and grid25 with each
family's own point defaults.

A rerunnable check of the point settings of ``wgan-gp`` (Gulrajani et al. 2017, the released toy
code's lambda = 0.1 and betas (0.5, 0.9)) and ``unrolled`` (Metz et al. 2017, Appendix A
networks; Adam 1e-3 and batch 512 on points), next to the plain ``gan`` and the unrolled
networks without unrolling (K = 0). Protocol as ``benchmarks/modes.py`` (PacGAN / VEEGAN):
2,500 samples of G (no EMA), a sample is high quality within 3 sigma of its nearest centre, a
mode is covered with >= 1 high-quality sample. Every run uses one torch thread.

Without ``--batch`` each family trains at its own default batch (``train.batch_size`` = 64 for
``gan``/``wgan-gp``, 512 for ``unrolled`` on points); ``--batch 100`` is the zoo's setting
(``benchmarks/zoo.py``, modes section).

    python benchmarks/points_check.py --steps 2000 --seeds 3
    python benchmarks/points_check.py --models unrolled-k0,unrolled --steps 4000 --data ring8
    python benchmarks/points_check.py --models wgan-gp --batch 100 --set loss.lambda_gp=10 \\
        --set optim.betas_g=[0,0.9] --set optim.betas_d=[0,0.9]     # the former settings
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before torch is imported, here and in worker processes

import argparse
import json
import multiprocessing as mp
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

# label -> (registered model, overrides); "unrolled" is K = 5, the family's default
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "gan": ("gan", {}),
    "wgan-gp": ("wgan-gp", {}),
    "unrolled-k0": ("unrolled", {"model.unroll_steps": 0}),
    "unrolled": ("unrolled", {}),
}


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train one (model, data, seed) and measure its modes; runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import gankit
    from gankit.metrics.evaluate import evaluate_sets

    t0 = time.perf_counter()
    over = {"train.ema": False, "train.doctor": False, "train.log_every": 500,
            **task["overrides"]}
    run = gankit.train(task["model"], task["data"], steps=task["steps"],
                       batch_size=task["batch"], seed=task["seed"], save=False, progress=False,
                       overrides=over)
    fake = run.generator.sample(2500, seed=1000 + task["seed"])
    r = evaluate_sets(run.data.x_test, fake, metrics=["modes"], info=run.data.info)["results"]
    c = run.cfg
    return {**task, "modes": int(r["modes_covered"]), "n_modes": int(r["n_modes"]),
            "hq": 100.0 * float(r["high_quality_frac"]), "seconds": time.perf_counter() - t0,
            "resolved": {"batch": c.train.batch_size, "lr_g": c.optim.lr_g, "lr_d": c.optim.lr_d,
                         "betas_d": list(c.optim.betas_d), "lambda_gp": c.loss.lambda_gp,
                         "n_critic": c.optim.n_critic}}


def fmt(xs: list[float], digits: int = 1) -> str:
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.{digits}f} ± {s:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--models", default=",".join(ROWS),
                    help=f"comma-separated rows among {', '.join(ROWS)}")
    ap.add_argument("--data", default="ring8,grid25")
    ap.add_argument("--steps", type=int, default=2000, help="generator steps per run")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    ap.add_argument("--batch", type=int, default=None,
                    help="force one batch size (default: each family's own)")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="extra override key=value for every run (repeatable)")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (one thread each)")
    ap.add_argument("--json", type=Path, default=None, help="write every run's result here")
    a = ap.parse_args()

    from gankit.config import parse_value

    extra = {k: parse_value(v) for k, v in (s.split("=", 1) for s in a.sets)}
    labels = [m for m in a.models.split(",") if m]
    unknown = [m for m in labels if m not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose among {list(ROWS)}")
    tasks = [{"label": lab, "model": ROWS[lab][0], "overrides": {**ROWS[lab][1], **extra},
              "data": d, "seed": s, "steps": a.steps, "batch": a.batch}
             for d in a.data.split(",") for lab in labels for s in range(a.seeds)]
    print(f"{len(tasks)} runs, {a.steps} steps each, batch "
          f"{a.batch or 'family default'}, overrides {extra or '-'}", flush=True)
    results: list[dict[str, Any]] = []
    with mp.get_context("spawn").Pool(max(1, a.jobs), maxtasksperchild=1) as pool:
        for r in pool.imap(run_one, tasks):
            results.append(r)
            print(f"  {r['data']:7s} {r['label']:12s} seed {r['seed']}: modes "
                  f"{r['modes']}/{r['n_modes']}  HQ {r['hq']:5.1f}%  "
                  f"(batch {r['resolved']['batch']}, {r['seconds']:.0f} s)", flush=True)
    print(f"\nmean ± std over seeds ({a.steps} steps):")
    for d in a.data.split(","):
        for lab in labels:
            per = [r for r in results if r["data"] == d and r["label"] == lab]
            print(f"  {d:7s} {lab:12s} modes {fmt([r['modes'] for r in per])} / "
                  f"{per[0]['n_modes']}   HQ% {fmt([r['hq'] for r in per])}   "
                  f"batch {per[0]['resolved']['batch']}")
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
