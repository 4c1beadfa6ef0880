"""Mode collapse, measured: modes covered and % high-quality samples on ring8 / grid25.

Protocol (PacGAN, Lin et al. 2018; VEEGAN, Srivastava et al. 2017): after training, 2,500
samples; a sample is high quality within 3 sigma of its nearest centre; a mode is covered when it
has at least one high-quality sample. Each (model, dataset) is trained with 3 seeds; the table
gives mean ± std next to the published rows.

    python benchmarks/modes.py --models gan --steps 5000 [--out benchmarks/results/modes.md]
    python benchmarks/modes.py --models gan,wgan,wgan-gp,lsgan,unrolled --set gan+mbd:tricks.minibatch_discrimination=5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import gankit
from gankit.metrics.evaluate import evaluate_sets

# Published rows (2,500 samples; mean ± std where given).
PUBLISHED = {
    ("ring8", "PacGAN Table 1: GAN"): "6.3 ± 0.5 | 98.2 ± 0.2",
    ("ring8", "PacGAN Table 1: PacGAN2"): "7.9 ± 0.1 | 95.6 ± 2.0",
    ("grid25", "PacGAN Table 1: GAN"): "17.3 ± 0.8 | 94.8 ± 0.7",
    ("grid25", "PacGAN Table 1: PacGAN2"): "23.8 ± 0.7 | 91.3 ± 0.8",
    ("ring8", "VEEGAN Table 1: GAN"): "1.0 | 99.3",
    ("ring8", "VEEGAN Table 1: Unrolled GAN"): "7.6 | 35.6",
    ("ring8", "VEEGAN Table 1: VEEGAN"): "8.0 | 52.9",
    ("grid25", "VEEGAN Table 1: GAN"): "3.3 | 0.5",
    ("grid25", "VEEGAN Table 1: Unrolled GAN"): "23.6 | 16.0",
    ("grid25", "VEEGAN Table 1: VEEGAN"): "24.6 | 40.0",
}


def run_one(model: str, data: str, seed: int, steps: int, batch: int,
            overrides: dict) -> dict:
    t = time.perf_counter()
    run = gankit.train(model, data, steps=steps, batch_size=batch, seed=seed, save=False,
                       progress=False, overrides={"train.ema": False, **overrides})
    fake = run.generator.sample(2500, seed=1000 + seed)
    res = evaluate_sets(run.data.x_test, fake, metrics=["modes"], info=run.data.info)["results"]
    return {"modes": res["modes_covered"], "hq": 100 * res["high_quality_frac"],
            "kl": res["kl_to_uniform"], "seconds": time.perf_counter() - t}


def fmt(xs: list[float], digits: int = 1) -> str:
    m = statistics.mean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gan")
    ap.add_argument("--data", default="ring8,grid25")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="LABEL:key=value — an extra row LABEL = model with an override "
                         "(e.g. 'gan+mbd:tricks.minibatch_discrimination=5')")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "modes.md")
    a = ap.parse_args()

    rows: list[tuple[str, str, dict]] = [(m, m, {}) for m in a.models.split(",") if m]
    for item in a.sets:
        label, _, kv = item.partition(":")
        base = label.split("+")[0]
        over = dict(x.split("=", 1) for x in kv.split(";") if x)
        rows.append((label, base, {k: gankit.config.parse_value(v) for k, v in over.items()}))
    results: dict = {}
    for data in a.data.split(","):
        for label, model, over in rows:
            per = [run_one(model, data, s, a.steps, a.batch, over) for s in range(a.seeds)]
            results[(data, label)] = per
            print(f"{data:7s} {label:22s} modes {fmt([p['modes'] for p in per])}  "
                  f"HQ% {fmt([p['hq'] for p in per])}  ({statistics.mean(p['seconds'] for p in per):.0f} s/run)",
                  flush=True)
    lines = [f"# Mode collapse on ring8 / grid25 ({a.seeds} seeds, {a.steps} steps, batch {a.batch})",
             "", "Regenerate: `python benchmarks/modes.py " + " ".join(
                 f"--{k} {v}" for k, v in (("models", a.models), ("steps", a.steps))) +
             "".join(f" --set '{s}'" for s in a.sets) + "`", "",
             "2,500 samples; high quality = within 3 sigma of the nearest centre; a mode is "
             "covered with >= 1 high-quality sample (PacGAN protocol).", ""]
    for data in a.data.split(","):
        lines += [f"## {data}", "", "| model | modes covered | % high quality | KL(modes ‖ uniform) | s/run |",
                  "|---|---|---|---|---|"]
        for label, _, _ in rows:
            per = results[(data, label)]
            lines.append(f"| gankit `{label}` | {fmt([p['modes'] for p in per])} | "
                         f"{fmt([p['hq'] for p in per])} | {fmt([p['kl'] for p in per], 2)} | "
                         f"{statistics.mean(p['seconds'] for p in per):.0f} |")
        for (d, name), val in PUBLISHED.items():
            if d == data:
                m, h = val.split(" | ")
                lines.append(f"| {name} (published) | {m} | {h} | | |")
        lines.append("")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    (a.out.with_suffix(".json")).write_text(json.dumps(
        {f"{d}/{m}": v for (d, m), v in results.items()}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
