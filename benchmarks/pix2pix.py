"""pix2pix's objective ablation on edges2digits: L1 alone, cGAN alone, cGAN + L1.

Isola et al. 2017 ("Image-to-Image Translation with Conditional Adversarial Networks", §4.2,
Table 1, Fig. 4) train the same U-Net/PatchGAN with three objectives: L1 alone gives plausible
but blurry outputs; the cGAN alone gives sharp outputs that fit their input less well; the sum
is sharp and faithful. This benchmark trains the three ``model.mode`` settings of gankit's
``pix2pix`` on ``edges2digits`` (Sobel edge drawings -> 32x32 MNIST-5k digits, 4,000 training
pairs) for the same steps, batch, width and seed, then translates the 1,000 held-out edge maps
and scores them against their targets with :func:`gankit.metrics.paired.paired_report`: L1,
PSNR, SSIM, sharpness (mean variance of the Laplacian, next to the real targets') and label
preservation (the shipped ``lenet-mnist`` classifier's accuracy on the translations against the
true digit labels). It also measures how much the test-time dropout (the model's only noise)
changes a translation: the mean per-pixel standard deviation over 4 dropout seeds.

Everything goes through the public API (``gankit.train``, ``gankit.load``, ``translate``); the
translations use the EMA weights (``gankit.load``'s default, ``train.ema`` is on by default) and
are repeated with the raw weights. Writes ``pix2pix.md``, ``pix2pix.json`` and
``pix2pix.png`` (input / L1 / cGAN / cGAN+L1 / target rows for one held-out digit per class).

    python benchmarks/pix2pix.py [--steps 2500] [--batch 32] [--width 32] [--threads 1]
    python benchmarks/pix2pix.py --from-json    # rewrite the md from the saved json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from figures import image_rows  # benchmarks/figures.py (this directory is on sys.path)

import gankit
from gankit.data import load_data
from gankit.metrics.paired import digit_predictions, paired_report

MODES = {"l1": "L1 only", "cgan": "cGAN only", "cgan+l1": "cGAN + L1"}
METRICS = ("l1", "psnr", "ssim", "label_acc", "sharpness")


def translate_all(run_dir: Path, a: torch.Tensor, weights: str, batch: int,
                  seed: int = 0) -> torch.Tensor:
    g = gankit.load(run_dir, weights=weights)
    return g.translate(a, seed=seed, batch_size=batch)


def dropout_spread(run_dir: Path, a: torch.Tensor, batch: int, seeds: int = 4) -> float:
    """Mean over pixels and images of the per-pixel std of ``seeds`` translations (test-time
    dropout with different seeds; 0 means the dropout noise is ignored by the trained G)."""
    g = gankit.load(run_dir)
    outs = torch.stack([g.translate(a, seed=s, batch_size=batch) for s in range(seeds)])
    return float(outs.std(0, unbiased=False).mean())


def one_per_class(y: torch.Tensor, k: int = 10) -> list[int]:
    return [int(torch.nonzero(y == c)[0]) for c in range(k)]


def figure(rows: list[tuple[str, torch.Tensor]], path: Path) -> None:
    image_rows(rows, path, label_size=9, width=0.8, height=0.85,
               title="pix2pix on held-out edges2digits pairs (EMA weights, dropout seed 0)")


def fmt(v: float, k: str) -> str:
    return {"l1": f"{v:.4f}", "psnr": f"{v:.2f}", "ssim": f"{v:.4f}",
            "label_acc": f"{100 * v:.1f}%", "sharpness": f"{v:.4f}"}[k]


def mcnemar(right_1: np.ndarray, right_2: np.ndarray) -> dict[str, float]:
    """McNemar's paired test of two label accuracies on the same images (normal approximation):
    ``b`` images read right only in the first set, ``c`` only in the second, ``z = (b - c) /
    sqrt(b + c)``; |z| < 1.96 is no significant difference at the 5% level."""
    b, c = int((right_1 & ~right_2).sum()), int((~right_1 & right_2).sum())
    return {"only_first": b, "only_second": c, "z": (b - c) / math.sqrt(b + c) if b + c else 0.0}


def verdicts(res: dict[str, dict[str, float]], real: dict[str, float],
             tests: dict[str, dict[str, float]]) -> list[tuple[str, str, str]]:
    """The paper's three claims, each checked against the measured numbers: ``holds``, ``partly
    holds`` (one of its two parts) or ``does not hold``. Label accuracies count as different only
    when McNemar's paired test says so (|z| >= 1.96)."""
    l1, cg, both = res["l1"], res["cgan"], res["cgan+l1"]

    def verdict(*parts: bool) -> str:
        return "holds" if all(parts) else "partly holds" if any(parts) else "does not hold"

    def acc(m: dict[str, float]) -> str:
        return f"{100 * m['label_acc']:.1f}%"

    z_cg_l1, z_both_cg = tests["cgan vs l1"]["z"], tests["cgan+l1 vs cgan"]["z"]
    z_both_l1 = tests["cgan+l1 vs l1"]["z"]
    out = [(
        "L1 alone is blurrier: its sharpness is below the real targets' and below cGAN + L1's",
        verdict(l1["sharpness"] < real["sharpness"], l1["sharpness"] < both["sharpness"]),
        (f"sharpness L1 {l1['sharpness']:.4f}, cGAN + L1 {both['sharpness']:.4f}, real "
         f"{real['sharpness']:.4f} (L1 / real = {l1['sharpness'] / real['sharpness']:.2f})"))]
    pixels = cg["l1"] > max(l1["l1"], both["l1"]) and cg["psnr"] < min(l1["psnr"], both["psnr"])
    labels = z_cg_l1 <= -1.96 and z_both_cg >= 1.96
    out.append((
        ("cGAN alone is less faithful: worse L1 and PSNR, and worse label accuracy, than both "
         "others"), verdict(pixels, labels),
        (f"L1 {cg['l1']:.4f} vs {l1['l1']:.4f} (L1 only) / {both['l1']:.4f} (cGAN + L1); PSNR "
         f"{cg['psnr']:.2f} vs {l1['psnr']:.2f} / {both['psnr']:.2f} dB; labels {acc(cg)} vs "
         f"{acc(l1)} / {acc(both)} (McNemar z {z_cg_l1:+.2f} vs L1 only, {-z_both_cg:+.2f} vs "
         f"cGAN + L1)")))
    gap = l1["psnr"] - both["psnr"]
    out.append((
        "cGAN + L1 is best on label preservation at near-L1 PSNR (within 1 dB)",
        verdict(z_both_l1 >= 1.96 and z_both_cg >= 1.96, gap <= 1.0),
        (f"labels {acc(both)} vs {acc(l1)} (L1 only, McNemar z {z_both_l1:+.2f}) and {acc(cg)} "
         f"(cGAN only, z {z_both_cg:+.2f}); PSNR {both['psnr']:.2f} dB, {gap:.2f} dB below L1 "
         f"only's {l1['psnr']:.2f}")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=32, help="ngf = ndf (the paper's is 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--runs", type=Path, default=None, help="where the runs go (default: a "
                                                             "temporary folder, removed)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pix2pix.md")
    ap.add_argument("--from-json", action="store_true",
                    help="only rewrite the md from the json next to it (no training)")
    a = ap.parse_args()
    if a.from_json:
        record = json.loads(a.out.with_suffix(".json").read_text())
        a.out.write_text(markdown(record, a.out.with_suffix(".png").name))
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    command = "python benchmarks/pix2pix.py " + " ".join(shlex.quote(s) for s in sys.argv[1:])
    modes = a.modes.split(",")
    tmp = None
    if a.runs is None:
        tmp = tempfile.TemporaryDirectory(prefix="gankit-pix2pix-")
        a.runs = Path(tmp.name)
    ds = load_data("edges2digits")
    a_test, x_test, y_test = ds.a_test, ds.x_test, ds.y_test
    t_start = time.time()
    load0 = os.getloadavg()[0]
    real = paired_report(x_test, x_test, y_test)["results"]
    real = {"sharpness": real["sharpness_target"], "label_acc": real["label_acc"]}
    results: dict[str, dict[str, float]] = {}
    raw: dict[str, dict[str, float]] = {}
    extra: dict[str, dict[str, float]] = {}
    protocol = None
    right: dict[str, np.ndarray] = {}  # per held-out image: does the classifier read its label
    idx = one_per_class(y_test)
    rows = [("input", a_test[idx])]
    for mode in modes:
        out = a.runs / mode.replace("+", "_")
        t = time.time()
        run = gankit.train("pix2pix", "edges2digits", steps=a.steps, batch_size=a.batch,
                           seed=a.seed, out=out, progress=False,
                           overrides={"model.mode": mode, "model.width": a.width,
                                      "train.log_every": 100, "train.sample_every": a.steps,
                                      "train.ckpt_every": a.steps})
        train_s = time.time() - t
        last = run.metrics()[-1]
        t = time.time()
        fake = translate_all(out, a_test, "ema", a.batch)
        rep = paired_report(fake, x_test, y_test)
        protocol = rep["protocol"]
        results[mode] = {k: rep["results"][k] for k in METRICS}
        raw[mode] = {k: v for k, v in paired_report(
            translate_all(out, a_test, "raw", a.batch), x_test, y_test)["results"].items()
            if k in METRICS}
        extra[mode] = {"train_s": train_s, "eval_s": time.time() - t,
                       "dropout_std": dropout_spread(out, a_test[:200], a.batch),
                       "final_log": last}
        right[mode] = digit_predictions(fake) == y_test.numpy()
        rows.append((MODES[mode], fake[idx]))
        print(f"{mode:8s} train {train_s:6.0f} s | " + " | ".join(
            f"{k} {fmt(results[mode][k], k)}" for k in METRICS), flush=True)
    rows.append(("target", x_test[idx]))
    wall = time.time() - t_start
    a.out.parent.mkdir(parents=True, exist_ok=True)
    png = a.out.with_suffix(".png")
    figure(rows, png)
    tests = {f"{m1} vs {m2}": mcnemar(right[m1], right[m2])
             for m1, m2 in (("cgan", "l1"), ("cgan+l1", "cgan"), ("cgan+l1", "l1"))
             if m1 in right and m2 in right}
    errors = {m: int((~r).sum()) for m, r in right.items()}
    wrong_all = np.logical_and.reduce([~r for r in right.values()])
    real_right = digit_predictions(x_test) == y_test.numpy()
    errors["all"] = int(wrong_all.sum())
    errors["all_and_real"] = int((wrong_all & ~real_right).sum())
    errors["real"] = int((~real_right).sum())
    checks = verdicts(results, real, tests) if set(MODES) <= set(results) else []
    record = {
        "command": command, "steps": a.steps, "batch": a.batch, "width": a.width, "seed": a.seed,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "load_avg_at_start": load0, "wall_s": wall,
        "data": "edges2digits: 4,000 train pairs, 1,000 held-out pairs, 32x32",
        "eval": {"n": len(a_test), "weights": "ema (and raw)", "translate_batch": a.batch,
                 "dropout_seed": 0, "dropout_std": "mean per-pixel std over 4 seeds, 200 pairs"},
        "results_ema": results, "results_raw": raw, "real": real, "runs": extra,
        "label_tests": tests, "label_errors": errors,
        "claims": [{"claim": c, "verdict": v, "numbers": n} for c, v, n in checks],
        "paired_protocol": protocol,
    }
    a.out.with_suffix(".json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    a.out.write_text(markdown(record, png.name))
    print(f"wrote {a.out}, {a.out.with_suffix('.json')}, {png} in {wall / 60:.1f} min")
    if tmp is not None:
        tmp.cleanup()


def markdown(r: dict, png: str) -> str:
    res, raw, real, runs = r["results_ema"], r["results_raw"], r["real"], r["runs"]
    train_min = statistics.fmean(v["train_s"] for v in runs.values()) / 60
    epochs = r["steps"] * r["batch"] / 4000
    setup = (
        f"Same U-Net / 70x70 PatchGAN (`model.n_layers=3`; at 32x32 its 2x2 logit map's patches "
        f"each cover the whole image), width (ngf = ndf) {r['width']} (the paper's is 64), batch "
        f"{r['batch']}, {r['steps']} steps ({epochs:.0f} epochs of the 4,000 training pairs), "
        f"seed {r['seed']}, Adam 2e-4 (0.5, 0.999), D's loss halved, lambda = 100, toolkit "
        f"defaults otherwise (G's EMA, decay 0.999; constant learning rate). CPU, "
        f"{r['threads']} torch thread(s) on a shared {r['cpus']}-core machine (load average "
        f"{r['load_avg_at_start']:.1f} at the start): {train_min:.1f} min of training per "
        f"setting on average, {r['wall_s'] / 60:.1f} min wall in all.")
    protocol = (
        f"Evaluation: the {r['eval']['n']:,} held-out pairs translated with the EMA weights in "
        f"batches of {r['eval']['translate_batch']} (G's batch norm uses the test batch's "
        f"statistics, as the paper), test-time dropout from seed 0, scored by "
        f"`gankit.metrics.paired.paired_report`: L1 and PSNR on the [-1, 1] scale, SSIM (Wang "
        f"et al. 2004, 11-tap Gaussian), sharpness = mean variance of the 3x3 Laplacian "
        f"(Pech-Pacheco et al. 2000), label accuracy = the shipped `lenet-mnist` classifier on "
        f"the translations against the true digits. Dropout spread: the mean per-pixel std of "
        f"4 translations with different dropout seeds (first 200 pairs).")
    head = "| objective | L1 ↓ | PSNR (dB) ↑ | SSIM ↑ | label acc. ↑ | sharpness |"
    lines = ["# pix2pix objective ablation on edges2digits (Isola et al. 2017, Table 1 / Fig. 4)",
             "", f"Regenerate: `{r['command']}`", "", setup, "", protocol, "",
             head + " dropout spread |", "|---|---|---|---|---|---|---|"]
    for mode, v in res.items():
        lines.append(f"| {MODES[mode]} | " + " | ".join(fmt(v[k], k) for k in METRICS)
                     + f" | {runs[mode]['dropout_std']:.4f} |")
    lines.append(f"| real targets | | | | {100 * real['label_acc']:.1f}% | "
                 f"{real['sharpness']:.4f} | |")
    lines += ["", "Raw (non-EMA) weights, same protocol:", "", head, "|---|---|---|---|---|---|"]
    for mode, v in raw.items():
        lines.append(f"| {MODES[mode]} | " + " | ".join(fmt(v[k], k) for k in METRICS) + " |")
    lines += ["", f"![input / L1 / cGAN / cGAN + L1 / target]({png})", "",
              "## The paper's claims, checked (EMA weights)", ""]
    for c in r["claims"]:
        lines.append(f"- **{c['verdict']}**: {c['claim']}. {c['numbers']}.")
    err = r["label_errors"]
    lines += ["", "Label errors among the 1,000 held-out translations: " + ", ".join(
        f"{MODES[m]} {n}" for m, n in err.items() if m in MODES)
        + f"; misread under all three objectives: {err['all']}, of which {err['all_and_real']} "
        f"are misread on the real target digit too (the classifier misreads {err['real']} of the "
        f"1,000 real digits)."]
    if NOTES:
        lines += ["", "## Reading", "", *NOTES]
    return "\n".join(lines) + "\n"


# Commentary written after reading the measured numbers (kept here so that ``--from-json``
# regenerates the md whole); the tables and checks above carry the numbers.
NOTES: list[str] = [
    ("- **Blur: holds, but mildly.** L1 alone is the least sharp and below the real digits, as "
     "the paper says, yet only by a few percent. An edge drawing outlines every stroke of its "
     "digit, so the target is almost a deterministic function of the input and the L1-optimal "
     "output (the conditional median) has little to average away; the paper's blur comes from "
     "inputs that leave the output uncertain (colours, textures of facades and photos). Both "
     "adversarial objectives overshoot the real digits' sharpness a little (D presumably "
     "rewards saturated, high-contrast strokes)."),
    ("- **cGAN alone: less faithful pixel by pixel, not in the digit it draws.** Without the L1 "
     "term G is clearly worse on L1, PSNR and SSIM, and the figure shows the paper's artifacts "
     "(stray marks, a blotted loop). But the classifier reads the intended digit as often as "
     "from the L1 outputs: D judges the (edge map, digit) pair, so an output that is not the "
     "drawn digit is rejected, and the U-Net's skip connections carry the outline straight to "
     "the output; the label survives, the exact pixels do not."),
    ("- **cGAN + L1: the PSNR part holds, the label part cannot be shown here.** The sum keeps "
     "L1-level fidelity (about half a dB below L1 alone) with the sharpness of the adversarial "
     "outputs, the paper's point. On label preservation the three objectives tie (McNemar's "
     "paired test, |z| < 1.96), all just below the classifier's accuracy on the real digits: "
     "most misread translations are misread under every objective, and half of those are "
     "misread on the real digit too. They are atypical handwriting, or drawings whose outline "
     "merged (a loop filled in) so that no objective can recover the stroke. A task whose "
     "input leaves the class less determined would be needed to separate the objectives on "
     "labels."),
    ("- The EMA weights beat the raw ones on L1, PSNR and SSIM for every objective (labels "
     "within a few images). The test-time dropout moves a translation by well under 1% of the "
     "value range (the dropout spread column, on [-1, 1]): \"only minor stochasticity\", as "
     "the paper observed of its own dropout noise (§3.1)."),
]


if __name__ == "__main__":
    main()
