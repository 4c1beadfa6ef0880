"""Reference points for the digit metrics: real vs real, a trained DCGAN, noise.

Protocol: features from the shipped ``lenet-mnist`` classifier; the reference set is the 4,000
MNIST-5k training images; each compared set has 1,000 images (the size of the test split):
(a) the real test split, (b) 1,000 samples of a trained run's G_ema (seed 0), (c) uniform noise
in [-1, 1]. FID/KID/precision/recall/density/coverage and IS (lenet logits, 10 splits).

    python benchmarks/eval_table.py --run runs/dcgan-mnist5k [--out benchmarks/results/eval_table.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import gankit
from gankit.data import load_data
from gankit.metrics.evaluate import evaluate_sets

METRICS = ["fid", "kid", "pr", "dc", "is"]

NOTES = """How to read it. lenet features are unnormalised ReLU activations, so FID and KID are on a
larger scale than Inception numbers in papers (which are not comparable anyway: MNIST through
Inception is meaningless). Real-vs-real gives FID near 5 (finite samples) and KID consistent with
0; noise is far away on FID/KID/coverage/IS. Noise gets precision 1.0 and density > 1: its
features collapse to one point that lies inside the k-NN balls of outlying real images. This is
the outlier weakness of improved precision/recall that Naeem et al. (2020) point out; coverage,
which only uses balls around real points' nearest fakes, correctly gives noise ~0. Read precision
together with coverage."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append", default=[],
                    help="run directories to include (repeatable)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_table.md")
    a = ap.parse_args()
    ds = load_data("mnist5k")
    rows: list[tuple[str, torch.Tensor]] = [("real test split (a)", ds.x_test)]
    for run in a.run:
        cfg = json.loads((run / "config.json").read_text())
        steps = json.loads((run / "run.json").read_text()).get("step")
        rows.append((f"`{cfg['model']['name']}` {run.name}, {steps} steps (b)",
                     gankit.load(run).sample(1000, seed=0)))
    rows.append(("uniform noise (c)", torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1))
    out = {}
    for name, x in rows:
        r = evaluate_sets(ds.x, x, metrics=METRICS, features="lenet-mnist", dataset="mnist5k")
        out[name] = r
        print(name, {k: round(v, 4) for k, v in r["results"].items()}, flush=True)
    proto = next(iter(out.values()))["protocol"]
    lines = ["# Digit metrics: reference points", "",
             f"Regenerate: `python benchmarks/eval_table.py {' '.join('--run ' + str(r) for r in a.run)}`", "",
             (f"Features `{proto['features']['extractor']}` (sha256 {proto['features']['checksum'][:16]}...), "
              f"reference = {proto['n_real']} MNIST-5k training images, each row 1,000 images, seed 0."), "",
             "| compared set | FID | KID | precision | recall | density | coverage | IS |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in out.items():
        v = r["results"]
        lines.append(f"| {name} | {v['fid']:.2f} | {v['kid_mean']:.2f} ± {v['kid_std']:.2f} | "
                     f"{v['precision']:.3f} | {v['recall']:.3f} | {v['density']:.3f} | "
                     f"{v['coverage']:.3f} | {v['is_mean']:.2f} ± {v['is_std']:.2f} |")
    lines += ["", NOTES]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
