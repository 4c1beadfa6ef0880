"""Adversarial segmentation in 2-D and 3-D, with and without the adversarial term, and
Monte-Carlo dropout uncertainty.

Questions (issue 11, item 5):

1. Does SegAN's adversarial multi-scale L1 term (Xue et al. 2018) improve a segmenter over the
   *same* segmenter trained with its Dice loss alone? ``segan`` on ``phantom-seg`` (64x64
   CT-style phantoms, lesion masks known exactly) with ``model.lambda_adv=1`` vs ``0``; Dice of
   the 200 held-out phantoms, for each of several seeds; and the paper's own objective (the
   multi-scale L1 alone, ``lambda_dice=0``) on fewer seeds.
2. The same question in 3-D: ``vox2vox`` (Cirillo et al. 2020; 3-D U-Net + 3-D PatchGAN +
   5 x generalised Dice) vs ``model.mode=seg`` (the same 3-D U-Net, generalised Dice alone) on
   ``blobs3d`` (32^3 volumes), Dice of the 40 held-out volumes.
3. Is the Monte-Carlo dropout variance (T stochastic passes with the segmenter's dropout on; Gal
   & Ghahramani 2016) high where the segmentation is wrong? Spearman's rho of the per-pixel
   variance vs the per-pixel error |p - truth| (pooled over all held-out pixels), and of each
   image's mean variance vs its 1 - Dice.

Budget (a shared 2-core CPU): small widths and a few hundred steps; SegAN's learning rate is
raised from the paper's 2e-5 to 2e-4 for that reason (both arms alike). Everything goes through
the public API (``gankit.train``, ``run.generator.segment``). Writes
``benchmarks/results/medical_segmentation.{md,json,png}``.

    python benchmarks/segmentation.py [--steps 400] [--seeds 3] [--vox-steps 400]
                                      [--vox-seeds 2] [--mc 10]
    python benchmarks/segmentation.py --from-json    # rewrite the md from the saved json
"""

from __future__ import annotations

import argparse
import json
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

import gankit
from gankit.data import load_data
from gankit.metrics.segmentation import dice, jaccard, uncertainty_error

RESULTS = Path(__file__).resolve().parent / "results"


def train(model: str, data: str, steps: int, batch: int, seed: int, out: Path,
          overrides: dict) -> tuple[gankit.TrainedModel, float]:
    t0 = time.perf_counter()
    run = gankit.train(model, data, steps=steps, batch_size=batch, seed=seed, out=out,
                       progress=False,
                       overrides={"train.log_every": 50, "train.sample_every": steps,
                                  "train.ckpt_every": steps, **overrides})
    return run.generator, time.perf_counter() - t0


def score(g: gankit.TrainedModel, a: torch.Tensor, truth: torch.Tensor, mc: int) -> dict:
    """Deterministic and MC-dropout segmentations of the held-out inputs, scored."""
    prob = g.segment(a, seed=0, batch_size=50)
    d = dice(prob > 0.5, truth)
    both = g.segment(a, seed=0, batch_size=50, mc=mc, output="prob+variance")
    p_mc, var = both[:, :1], both[:, 1:]
    d_mc = dice(p_mc > 0.5, truth)
    unc = uncertainty_error(var, p_mc, truth)
    return {"dice": d.tolist(), "jaccard": jaccard(prob > 0.5, truth).tolist(),
            "dice_mc": d_mc.tolist(), "uncertainty": unc,
            "mean_variance_on_errors": float(var[(p_mc > 0.5) != truth].mean()),
            "mean_variance_on_correct": float(var[(p_mc > 0.5) == truth].mean()),
            "_prob": prob, "_var": var}


def ms(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def arm_summary(rows: list[dict]) -> dict:
    """Over seeds: per-seed mean Dice; pooled per-image Dice; uncertainty correlations."""
    seed_means = [float(np.mean(r["dice"])) for r in rows]
    pooled = [x for r in rows for x in r["dice"]]
    return {"seed_mean_dice": seed_means, "dice_mean": float(np.mean(pooled)),
            "dice_std_images": float(np.std(pooled, ddof=1)),
            "jaccard_mean": float(np.mean([x for r in rows for x in r["jaccard"]])),
            "dice_mc_mean": float(np.mean([x for r in rows for x in r["dice_mc"]])),
            "spearman_pixel": [r["uncertainty"]["spearman_pixel"] for r in rows],
            "spearman_image": [r["uncertainty"]["spearman_image"] for r in rows],
            "var_on_errors": [r["mean_variance_on_errors"] for r in rows],
            "var_on_correct": [r["mean_variance_on_correct"] for r in rows],
            "train_s": [r["train_s"] for r in rows]}


def figure(path: Path, ds2, seg2: dict, ds3, seg3: dict) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    idx = [0, 1, 2, 3]
    cols = ["input", "truth", "adversarial", "Dice/GDL only", "MC variance (adv.)"]
    fig = Figure(figsize=(2.0 * len(cols), 2.0 * (len(idx) + 1)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(idx) + 1, len(cols))
    rows = [(ds2.a_test[i, 0], ds2.x_test[i, 0] > 0, seg2["adv"]["_prob"][i, 0] > 0.5,
             seg2["base"]["_prob"][i, 0] > 0.5, seg2["adv"]["_var"][i, 0]) for i in idx]
    m = ds3.a_test.shape[2] // 2  # the middle slice of the first held-out volume
    rows.append((ds3.a_test[0, 0, m], ds3.x_test[0, 0, m] > 0, seg3["adv"]["_prob"][0, 0, m] > 0.5,
                 seg3["base"]["_prob"][0, 0, m] > 0.5, seg3["adv"]["_var"][0, 0, m]))
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r, c]
            vmax = max(float(img.max()), 1e-6) if c == 4 else 1  # variance: to its maximum
            ax.imshow(img.float().numpy(), cmap="magma" if c == 4 else "gray",
                      vmin=0 if c else -1, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
        axes[r, 0].set_ylabel("blobs3d (mid slice)" if r == len(idx) else f"phantom {idx[r]}",
                              fontsize=8)
    fig.suptitle("SegAN (Xue et al. 2018) on phantom-seg, vox2vox (Cirillo et al. 2020) on "
                 "blobs3d", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--paper-seeds", type=int, default=1,
                    help="seeds of SegAN's own objective (multi-scale L1 alone, no Dice)")
    ap.add_argument("--vox-steps", type=int, default=400)
    ap.add_argument("--vox-seeds", type=int, default=2)
    ap.add_argument("--vox-width", type=int, default=8)
    ap.add_argument("--vox-batch", type=int, default=4)
    ap.add_argument("--mc", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--from-json", action="store_true",
                    help="only rewrite the .md from the saved .json (no training)")
    args = ap.parse_args()
    if args.from_json:
        write_md(json.loads((RESULTS / "medical_segmentation.json").read_text()))
        return
    torch.set_num_threads(args.threads)
    cmd = " ".join(["python benchmarks/segmentation.py", *map(shlex.quote, sys.argv[1:])])
    t_all = time.perf_counter()
    ds2, ds3 = load_data("phantom-seg"), load_data("blobs3d")
    arms2 = {"adv": {"model.lambda_adv": 1.0}, "base": {"model.lambda_adv": 0.0},
             "paper": {"model.lambda_adv": 1.0, "model.lambda_dice": 0.0}}
    arms3 = {"adv": {"model.mode": "gan+seg"}, "base": {"model.mode": "seg"}}
    res2: dict[str, list[dict]] = {k: [] for k in arms2}
    res3: dict[str, list[dict]] = {k: [] for k in arms3}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for arm, over in arms2.items():
                if arm == "paper" and seed >= args.paper_seeds:
                    continue
                g, secs = train("segan", "phantom-seg", args.steps, args.batch, seed,
                                Path(tmp) / f"segan-{arm}-{seed}",
                                {"model.width": args.width, "model.max_width": 8 * args.width,
                                 "optim.lr": 2e-4, **over})
                r = score(g, ds2.a_test, ds2.x_test > 0, args.mc)
                r["train_s"] = secs
                res2[arm].append(r)
                print(f"segan {arm} seed {seed}: Dice {np.mean(r['dice']):.3f} ({secs:.0f} s)",
                      flush=True)
        for seed in range(args.vox_seeds):
            for arm, over in arms3.items():
                g, secs = train("vox2vox", "blobs3d", args.vox_steps, args.vox_batch, seed,
                                Path(tmp) / f"vox-{arm}-{seed}",
                                {"model.width": args.vox_width, "model.depth": 3,
                                 "model.n_layers": 2, "model.bottleneck": 1, **over})
                r = score(g, ds3.a_test, ds3.x_test > 0, args.mc)
                r["train_s"] = secs
                res3[arm].append(r)
                print(f"vox2vox {arm} seed {seed}: Dice {np.mean(r['dice']):.3f} ({secs:.0f} s)",
                      flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure(RESULTS / "medical_segmentation.png", ds2, {k: v[0] for k, v in res2.items()},
           ds3, {k: v[0] for k, v in res3.items()})
    s2 = {k: arm_summary(v) for k, v in res2.items()}
    s3 = {k: arm_summary(v) for k, v in res3.items()}
    diff2 = [a - b for a, b in zip(s2["adv"]["seed_mean_dice"], s2["base"]["seed_mean_dice"])]
    diff3 = [a - b for a, b in zip(s3["adv"]["seed_mean_dice"], s3["base"]["seed_mean_dice"])]
    wall = time.perf_counter() - t_all
    out = {
        "command": cmd,
        "protocol": {
            "segan": {"data": "phantom-seg: 800 training / 200 held-out 64x64 phantoms",
                      "steps": args.steps, "batch": args.batch, "width": args.width,
                      "max_width": 8 * args.width, "lr": 2e-4, "seeds": list(range(args.seeds)),
                      "paper_seeds": list(range(min(args.paper_seeds, args.seeds))),
                      "arms": {"adv": "lambda_adv=1, lambda_dice=1",
                               "base": "lambda_adv=0, lambda_dice=1 (no critic)",
                               "paper": "lambda_adv=1, lambda_dice=0 (the paper's objective)"}},
            "vox2vox": {"data": "blobs3d: 160 training / 40 held-out 32^3 volumes",
                        "steps": args.vox_steps, "batch": args.vox_batch,
                        "width": args.vox_width, "depth": 3, "n_layers": 2, "bottleneck": 1,
                        "seeds": list(range(args.vox_seeds)),
                        "arms": {"adv": "mode=gan+seg (adversarial + 5 x generalised Dice)",
                                 "base": "mode=seg (5 x generalised Dice alone, no D)"}},
            "dice": "per held-out image/volume, probabilities thresholded at 0.5, 1 when both "
                    "masks are empty; mean over images (pooled over seeds)",
            "mc_dropout": f"T={args.mc} passes, dropout masks seeded (seed 0); variance of the "
                          f"foreground probability; error |mean prob - truth|",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                       f"{args.threads} thread(s), shared with other jobs",
        },
        "segan": s2, "vox2vox": s3,
        "segan_adv_minus_base_per_seed": diff2, "vox2vox_adv_minus_base_per_seed": diff3,
        "wall_s": wall,
    }
    (RESULTS / "medical_segmentation.json").write_text(json.dumps(out, indent=2))
    write_md(out)
    print(f"wrote {RESULTS / 'medical_segmentation.md'} ({wall:.0f} s)")


def verdict(diff: list[float], what: str) -> str:
    wins = sum(d > 0 for d in diff)
    mean = statistics.mean(diff)
    if len(diff) >= 2:
        sd = statistics.stdev(diff)
        clear = abs(mean) > 2 * sd / len(diff) ** 0.5
        few = (f" (only {len(diff)} seeds: the spread itself is uncertain, so read this as an "
               f"indication)" if len(diff) < 3 else "")
        return (f"{what}: adversarial minus baseline Dice = {mean:+.3f} ± {sd:.3f} over "
                f"{len(diff)} seeds ({wins} of {len(diff)} seeds favour the adversarial term); "
                + ("larger than twice its standard error" if clear else
                   "within two standard errors of zero: no difference is shown at this budget")
                + few + ".")
    return (f"{what}: adversarial minus baseline Dice = {mean:+.3f} on one seed (no seed spread: "
            f"read it as an indication, not a result).")


def write_md(o: dict) -> None:
    p2, p3 = o["protocol"]["segan"], o["protocol"]["vox2vox"]
    lines = [
        f"Regenerate: `{o['command']}`",
        "",
        "# Adversarial segmentation (SegAN, vox2vox) and Monte-Carlo dropout uncertainty",
        "",
        ("Ground truth is exact: lesion masks of synthetic CT-style phantoms (`phantom-seg`) and "
        "blob masks of 32^3 volumes (`blobs3d`), scored on held-out data only. Each comparison "
        "trains the same segmenter for the same steps, batch, width and seed, with and without "
        "the adversarial term."),
        "",
        f"Machine: {o['protocol']['machine']}. Wall time {o['wall_s'] / 60:.1f} min.",
        "",
        "## Dice with and without the adversarial term",
        "",
        ("| task | model | objective | Dice (mean ± std over held-out images) | per-seed mean "
        "Dice | Jaccard | Dice of the MC-dropout mean |"),
        "|---|---|---|---|---|---|---|",
    ]
    for task, key, p in (("phantom-seg (2-D, 200 held-out)", "segan", p2),
                         ("blobs3d (3-D, 40 held-out)", "vox2vox", p3)):
        for arm in [a for a in ("adv", "base", "paper") if a in o[key]]:
            s = o[key][arm]
            lines.append(f"| {task} | {key} | {p['arms'][arm]} | {s['dice_mean']:.3f} ± "
                         f"{s['dice_std_images']:.3f} | "
                         f"{', '.join(f'{x:.3f}' for x in s['seed_mean_dice'])} | "
                         f"{s['jaccard_mean']:.3f} | {s['dice_mc_mean']:.3f} |")
    lines += [
        "",
        "- " + verdict(o["segan_adv_minus_base_per_seed"], "SegAN (Xue et al. 2018) on "
                       "phantom-seg"),
        "- " + verdict(o["vox2vox_adv_minus_base_per_seed"], "vox2vox (Cirillo et al. 2020) on "
                       "blobs3d"),
        "",
        (f"SegAN: {p2['steps']} steps, batch {p2['batch']}, U-Net width {p2['width']} (max "
        f"{p2['max_width']}), Adam lr {p2['lr']} (the paper's 2e-5 is too slow for this budget), "
        f"seeds {p2['seeds']} (the paper's objective: seeds {p2.get('paper_seeds', [])}). "
        f"vox2vox: {p3['steps']} steps, batch {p3['batch']}, width "
        f"{p3['width']}, depth {p3['depth']}, PatchGAN n_layers {p3['n_layers']}, lambda 5 "
        f"(paper), Adam 2e-4 (paper), seeds {p3['seeds']}."),
        "",
        "## Monte-Carlo dropout: is the variance high where the segmentation is wrong?",
        "",
        f"{o['protocol']['mc_dropout']}. Spearman's rho per seed.",
        "",
        ("| model | objective | rho(pixel variance, pixel error) | rho(image mean variance, "
        "1 - Dice) | mean variance on wrong / right pixels |"),
        "|---|---|---|---|---|",
    ]
    for key, p in (("segan", p2), ("vox2vox", p3)):
        for arm in [a for a in ("adv", "base", "paper") if a in o[key]]:
            s = o[key][arm]
            ratio = ", ".join(f"{e:.2e} / {c:.2e}" for e, c in zip(s["var_on_errors"],
                                                                   s["var_on_correct"]))
            lines.append(f"| {key} | {p['arms'][arm]} | "
                         f"{', '.join(f'{x:.3f}' for x in s['spearman_pixel'])} | "
                         f"{', '.join(f'{x:.3f}' for x in s['spearman_image'])} | {ratio} |")
    runs = [r for k in ("segan", "vox2vox") for r in o[k].values()]
    px = [x for r in runs for x in r["spearman_pixel"]]
    im = [x for r in runs for x in r["spearman_image"]]
    lines += [
        "",
        (f"Over every run, the pixel rho lies in [{min(px):.2f}, {max(px):.2f}] and the image rho "
        f"in [{min(im):.2f}, {max(im):.2f}]."),
        "",
        ("Pixel rho pools every held-out pixel (most are background, confidently right, with "
        "near-zero variance, which the ranks reward); image rho asks whether the images the model "
        "is unsure about are the ones it segments worse."),
        "",
        "![held-out examples](medical_segmentation.png)",
        "",
        ("Columns: input, truth, adversarial mask, baseline mask, MC-dropout variance of the "
         "adversarial model (black 0, brightest its maximum in the panel); the last row is the "
         "middle slice of a blobs3d volume."),
    ]
    (RESULTS / "medical_segmentation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
