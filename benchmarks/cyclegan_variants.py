"""CycleGAN and its variants on ct2mr: anatomy kept (shape consistency), many outputs per input
(augmented CycleGAN), and the information a CycleGAN hides for its cycle (Chu et al. 2017).

``ct2mr`` (``gankit.data.contrast_tasks``) holds CT-like renderings of 800 phantoms and
T1-MR-like renderings of 800 others, unpaired, and 200 held-out phantoms rendered both ways, with
every tissue map known. Three families train on it for the same steps, batch, widths and seed:

- ``cyclegan`` (Zhu et al. 2017): no shape term (the "shape off" row);
- ``shape-cyclegan`` (Zhang, Yang & Zheng 2018): the same plus a segmenter per domain and the
  shape-consistency cross-entropy, gamma = 1 (the "shape on" row);
- ``augcyclegan`` (Almahairi et al. 2018): a 16-d code per direction.

On the 200 held-out pairs, each CT -> MR translation is scored against the true MR of its own
anatomy (MAE and PSNR on the [-1, 1] scale, SSIM) and segmented by MR intensity (each pixel the
tissue whose MR intensity is nearest; no learned segmenter in between) against the true tissue
map: pixel accuracy and mean foreground Dice, i.e. whether the anatomy came through. The true MR
gives the ceiling of that reading, the CT input read as if it were MR the floor. The shape model's
own S_B is scored on its translations too. Augmented CycleGAN: translations under 8 codes, the
per-pixel std over codes (diversity), the metrics of each, and how well ``E_B`` reads the code
back (latent cycle). Chu et al.: :func:`gankit.metrics.steganography.cycle_steganography` on
the CycleGAN and the shape-consistent CycleGAN (64 held-out CT images).

    python benchmarks/cyclegan_variants.py [--steps 600] [--batch 4] [--width 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from figures import image_rows  # benchmarks/figures.py (this directory is on sys.path)

import gankit
from gankit.data import load_data
from gankit.data.contrast_tasks import label_agreement, segment_by_contrast
from gankit.data.phantoms import render
from gankit.metrics.paired import l1_error, psnr, ssim
from gankit.metrics.steganography import cycle_steganography, steer

OUT = Path(__file__).resolve().parent / "results"
K = 6  # tissue classes of ct2mr


def scores(out: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Image metrics against the true MR and the anatomy read off by MR intensity."""
    agree = label_agreement(segment_by_contrast(out, "mr"), labels, K)
    return {"mae": float(l1_error(out, target).mean()), "psnr": float(psnr(out, target).mean()),
            "ssim": float(ssim(out, target).mean()), "tissue_acc": agree["accuracy"],
            "tissue_dice": agree["dice"]}


def train(name: str, ds, out: Path, args, extra: dict) -> tuple[Path, float]:
    over = {"model.width": args.width, "model.n_blocks": args.blocks, "model.n_layers": 2,
            "train.batch_size": args.batch, "train.steps": args.steps, "train.seed": 0,
            "train.log_every": 50, "train.sample_every": 10**6, "train.ckpt_every": args.steps,
            **extra}
    t0 = time.perf_counter()
    run = gankit.train(name, ds, out=out / name, progress=False, overrides=over)
    return run.run_dir, time.perf_counter() - t0


def figure(rows: list[tuple[str, torch.Tensor]], path: Path) -> None:
    image_rows(rows, path, label_size=7, width=0.9, height=0.95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the three run directories here (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shown = [f"--{k}={v}" for k, v in vars(args).items()
             if k != "keep" and v != ap.get_default(k)]  # --keep only says where runs go
    cmd = "python benchmarks/cyclegan_variants.py " + " ".join(shlex.quote(a) for a in shown)
    t_start = time.perf_counter()
    ds = load_data("ct2mr")
    a, x, lab = ds.a_test, ds.x_test, ds.info["labels_test"]
    res: dict = {"command": cmd.strip(), "data": "ct2mr", "n_test": len(a),
                 "settings": {k: v for k, v in vars(args).items() if k != "keep"}, "rows": {},
                 "seconds": {}}
    res["rows"]["true MR (ceiling)"] = scores(x, x, lab)
    res["rows"]["CT input read as MR (floor)"] = scores(a, x, lab)
    outs: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or Path(tmp)
        runs = {}
        for name, extra in (("cyclegan", {}),
                            ("shape-cyclegan", {"model.seg_width": 16, "model.seg_blocks": 1}),
                            ("augcyclegan", {})):
            runs[name], res["seconds"][name] = train(name, ds, tmp, args, extra)
            print(f"{name}: trained in {res['seconds'][name]:.0f} s", flush=True)
        for name, label in (("cyclegan", "CycleGAN (shape off)"),
                            ("shape-cyclegan", "shape-consistent CycleGAN (shape on)")):
            g = gankit.load(runs[name])
            outs[name] = g.translate(a, seed=0)
            res["rows"][label] = scores(outs[name], x, lab)
        # the shape model's own segmenter on its translations and on the true MR
        g = gankit.load(runs["shape-cyclegan"])
        seg_fake = g.segment(outs["shape-cyclegan"]).long()
        seg_real = g.segment(x).long()
        res["shape_segmenter"] = {
            "S_B on its translations": label_agreement(seg_fake, lab, K),
            "S_B on the true MR": label_agreement(seg_real, lab, K)}
        # augmented CycleGAN: 8 codes per input
        g = gankit.load(runs["augcyclegan"])
        many = torch.stack([g.translate(a, seed=s) for s in range(8)])  # [8, N, 1, H, W]
        outs["augcyclegan"] = many[0]
        per_code = [scores(m, x, lab) for m in many]
        aug = {k: float(np.mean([p[k] for p in per_code])) for k in per_code[0]}
        res["rows"]["augmented CycleGAN (mean over 8 codes)"] = aug
        m = g.model
        with torch.no_grad():
            z = torch.randn(len(a), m.z_dim, generator=torch.Generator().manual_seed(7))
            z_rec = m.E_B(a, m.G_AB(a, z))
        res["augcyclegan"] = {
            "diversity_std_over_codes": float(many.std(0, unbiased=False).mean()),
            "diversity_std_tissue_interior": float(many.std(0, unbiased=False)[:, 0][
                lab > 0].mean()),
            "latent_rec_mae": float((z_rec - z).abs().mean()),
            "latent_rec_mae_of_mean_guess": float((z - z.mean(0)).abs().mean()),
            "latent_rec_corr": float(np.corrcoef(z_rec.flatten(), z.flatten())[0, 1])}
        # Chu et al. 2017 on the two deterministic translators
        clean = torch.from_numpy(render(lab.numpy(), "ct")).unsqueeze(1) * 2 - 1
        n = 64
        res["steganography"] = {}
        for name in ("cyclegan", "shape-cyclegan"):
            mod = gankit.load(runs[name]).model
            res["steganography"][name] = cycle_steganography(
                mod.G_AB, mod.G_BA, a[:n], a_clean=clean[:n], b_true=x[:n], labels=lab[:n],
                read=(lambda t: segment_by_contrast(t, "ct"),
                      lambda t: segment_by_contrast(t, "mr"), K), eps=0.03, steps=100)
        mod = gankit.load(runs["cyclegan"]).model
        with torch.no_grad():
            rec = mod.G_BA(mod.G_AB(a[:8]))
            rec_true = mod.G_BA(x[:8])
        attacked = steer(mod.G_AB, mod.G_BA, a[:8], a[:8].roll(1, 0), eps=0.03,
                         steps=100)["reconstructions"]
    res["seconds"]["total"] = time.perf_counter() - t_start
    res["machine"] = {"python": platform.python_version(), "torch": torch.__version__,
                      "threads": args.threads, "cpu": platform.processor() or platform.machine()}
    OUT.mkdir(exist_ok=True)
    (OUT / "cyclegan_variants.json").write_text(json.dumps(res, indent=2) + "\n")
    figure([("CT input", a[:8]), ("true MR", x[:8]), ("CycleGAN", outs["cyclegan"][:8]),
            ("shape-CycleGAN", outs["shape-cyclegan"][:8]),
            ("augCycleGAN z1", many[0, :8]), ("augCycleGAN z2", many[1, :8]),
            ("|z1 - z2| x 5", (many[0, :8] - many[1, :8]).abs() * 5 - 1),
            ("CycleGAN cycle", rec), ("G_BA(true MR)", rec_true),
            ("cycle, attacked", attacked)], OUT / "cyclegan_variants.png")
    write_md(res)


def reading(res: dict) -> list[str]:
    """Plain-language comparisons, each computed from the numbers above (one seed: no CI)."""
    rows, out = res["rows"], []
    off, on = rows["CycleGAN (shape off)"], rows["shape-consistent CycleGAN (shape on)"]
    better = on["tissue_dice"] > off["tissue_dice"] and on["mae"] < off["mae"]
    out.append(f"- Shape consistency (one seed, no confidence interval): tissue Dice "
               f"{off['tissue_dice']:.3f} -> {on['tissue_dice']:.3f}, MAE {off['mae']:.3f} -> "
               f"{on['mae']:.3f}: the shape term "
               + ("kept more anatomy and fit the true MR better." if better else
                  "did not improve both anatomy and fidelity at this training length."))
    an = res["steganography"]["cyclegan"]["anatomy"]
    vis, rec, tru = (an[k].get("dice_4", float("nan")) for k in
                     ("visible_in_translation", "recovered_by_cycle", "from_true_b"))
    out.append(f"- Chu et al.: CycleGAN's translations show bone with Dice {vis:.3f}, yet its "
               f"cycle reconstructs bone with Dice {rec:.3f}, more than G_BA recovers from the "
               f"true MR, where bone is plainly visible ({tru:.3f})"
               + (": the bone travels through the translation without being shown in it."
                  if rec > max(vis, tru) else "."))
    fr = res["steganography"]["cyclegan"]["fragility"]["perturbed"]
    g = max(v["gain"] for v in fr.values())
    out.append(f"- The hidden signal is {'not ' if g < 0.5 else ''}fragile here: the largest "
               f"gain of a near-invisible change (noise, 8-bit, blur) is {g:.2f}"
               + (" (Chu et al. report that such changes wipe out the reconstruction's "
                  "hidden details; this short run's code survives them)." if g < 0.5 else "."))
    au = res["augcyclegan"]
    learned = au["latent_rec_mae"] < 0.8 * au["latent_rec_mae_of_mean_guess"]
    out.append(f"- Augmented CycleGAN: its codes change the translation a lot (per-pixel std "
               f"{au['diversity_std_over_codes']:.3f}) but "
               + ("the latent cycle reads them back" if learned else
                  "in this run the latent cycle did not learn to read them back (MAE "
                  f"{au['latent_rec_mae']:.3f} vs {au['latent_rec_mae_of_mean_guess']:.3f} for "
                  "the mean guess), and its translations are the least faithful: it needs more "
                  "than these steps"))
    out[-1] += "."
    return out


def write_md(res: dict) -> None:
    def f(v: float) -> str:
        return f"{v:.3f}"

    s = res["settings"]
    lines = [f"`{res['command']}`", "",
             ("# CycleGAN variants on ct2mr (Zhu et al. 2017; Zhang, Yang & Zheng 2018; "
             "Almahairi et al. 2018; Chu et al. 2017)"), "",
             f"Held-out: {res['n_test']} phantoms of ct2mr rendered CT-like (input) and "
             f"MR-like (target), 32x32, never seen in training (trained unpaired on 800 + 800 "
             f"other phantoms). Each family: {s['steps']} steps, batch {s['batch']}, width "
             f"{s['width']}, {s['blocks']} residual block(s), 34x34 PatchGAN (n_layers 2), seed "
             f"0, Adam 2e-4 (0.5, 0.999), constant then linear decay; shape-consistent "
             f"CycleGAN's segmenters are width-16 ResNets with 1 block, gamma = 1. CPU, "
             f"{s['threads']} thread(s); training took "
             + ", ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items() if k != "total")
             + f" (total {res['seconds']['total']:.0f} s).", "",
             "## CT -> MR: image fidelity and anatomy", "",
             ("MAE/PSNR/SSIM against the true MR of the same phantom ([-1, 1] scale). Tissue "
             "accuracy/Dice: the translation segmented by MR intensity (nearest tissue "
             "intensity) against the true tissue map; Dice is the mean over the foreground "
             "tissues."), "",
             "| model | MAE | PSNR (dB) | SSIM | tissue accuracy | tissue Dice |",
             "|---|---|---|---|---|---|"]
    for k, r in res["rows"].items():
        lines.append(f"| {k} | {f(r['mae'])} | {r['psnr']:.2f} | {f(r['ssim'])} | "
                     f"{f(r['tissue_acc'])} | {f(r['tissue_dice'])} |")
    sh = res["shape_segmenter"]
    lines += ["", ("The shape model's own segmenter S_B (accuracy / Dice against the true map): "
              f"on its translations {f(sh['S_B on its translations']['accuracy'])} / "
              f"{f(sh['S_B on its translations']['dice'])}, on the true MR "
              f"{f(sh['S_B on the true MR']['accuracy'])} / {f(sh['S_B on the true MR']['dice'])}."),
              "", "## Augmented CycleGAN: one input, many outputs", ""]
    au = res["augcyclegan"]
    lines += [(f"- per-pixel std over 8 codes, mean over pixels: "
              f"{au['diversity_std_over_codes']:.4f} (inside the body "
              f"{au['diversity_std_tissue_interior']:.4f}); the row above averages the metrics "
              f"of the 8 codes' translations."),
              (f"- latent cycle: E_B(a, G_AB(a, z)) recovers z with MAE "
              f"{au['latent_rec_mae']:.3f} (guessing the mean code: "
              f"{au['latent_rec_mae_of_mean_guess']:.3f}), correlation "
              f"{au['latent_rec_corr']:.3f}."), "",
              "## Chu et al. 2017: what the cycle hides (64 held-out CT images)", "",
              ("| model | cycle MAE | + noise 0.01: MAE (gain) | + noise 0.03: MAE (gain) | "
              "8-bit: MAE | blur: MAE | MAE from true MR | noise corr. own / true MR | "
              "attack eps 0.03: moved |"), "|---|---|---|---|---|---|---|---|---|"]
    for name, st in res["steganography"].items():
        fr, hi, sr = st["fragility"], st["hidden"], st["steer"]
        p = fr["perturbed"]
        lines.append(
            f"| {name} | {fr['reconstruction_mae']:.4f} | "
            f"{p['noise_0.01']['reconstruction_mae']:.4f} ({p['noise_0.01']['gain']:.2f}) | "
            f"{p['noise_0.03']['reconstruction_mae']:.4f} ({p['noise_0.03']['gain']:.2f}) | "
            f"{p['quantise_8bit']['reconstruction_mae']:.4f} | "
            f"{p['blur_0.5']['reconstruction_mae']:.4f} | {hi['mae_from_true_b']:.4f} | "
            f"{hi['noise_corr_from_own_translation']:.3f} / {hi['noise_corr_from_true_b']:.3f} | "
            f"{sr['moved']:.3f} |")
    lines += ["", ("Anatomy through the cycle: tissue Dice (mean over foreground tissues; "
                   "organ / bone in brackets) of the translation read by MR intensity, of the "
                   "cycle's reconstruction read by CT intensity, and of G_BA(true MR) read by CT "
                   "intensity; the CT input itself for reference."), "",
              ("| model | input | visible in G_AB(a) | recovered in G_BA(G_AB(a)) | "
              "G_BA(true MR) |"), "|---|---|---|---|---|"]
    for name, st in res["steganography"].items():
        an = st["anatomy"]
        cells = [f"{an[k]['dice']:.3f} ({an[k].get('dice_3', float('nan')):.3f} / "
                 f"{an[k].get('dice_4', float('nan')):.3f})"
                 for k in ("input", "visible_in_translation", "recovered_by_cycle",
                           "from_true_b")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## What the numbers say", ""] + reading(res)
    lines += ["", ("Gain: added reconstruction error per unit of change made to the translation "
              "(1 = the change passes through unamplified). MAE from true MR: G_BA applied to "
              "the true MR of the same anatomy instead of the model's own translation. Noise "
              "corr.: correlation of (reconstruction - clean CT) with the input's own noise "
              "(input - clean CT). Attack: share of the way from G_BA(G_AB(a1)) to a faithful "
              "reconstruction of another image a2 covered by a perturbation of at most 0.03 "
              "per pixel (1.5 % of the range) added to G_AB(a1) (100 steps of projected "
              "sign-gradient descent)."), "", "![](cyclegan_variants.png)", ""]
    (OUT / "cyclegan_variants.md").write_text("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--from-json":
        write_md(json.loads((OUT / "cyclegan_variants.json").read_text()))
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        main()
