"""Synthetic data for a downstream task, and MC-dropout uncertainty of a translation.

Issue 11, item 6: does data synthesised by an image-to-image GAN help a lesion segmenter that is
tested on *real* held-out images? The seeds claim that translated data helps segmentation, and
Pan et al. ("task-oriented synthesis boosts performance") that synthesis aimed at the task
helps. With no medical data to download, "real" images are phantoms of
:mod:`gankit.data.phantoms` (random ellipse anatomy with 1-3 lesion discs, rendered in the "ct"
contrast plus Gaussian noise), so every Dice is measured against an exact mask.

Per seed (the real subset, the new masks and every network's initialisation change with it):

1. a small real labelled set: 64 (image, lesion mask) pairs;
2. a synthesiser: gankit's ``pix2pix`` (Isola et al. 2017; U-Net G, PatchGAN D, cGAN + 100 x
   L1) trained on those 64 pairs to map the label map (tissue classes with the lesions, one
   channel) to the CT image -- the "labels -> photo" direction of the paper;
3. fresh label maps with new lesions (never seen by anything) translated into synthetic images:
   256 synthetic (image, mask) pairs whose masks are exact by construction;
4. a segmenter: gankit's ``pix2pix`` in the image -> mask direction with ``model.mode=l1`` (the
   U-Net trained with L1 to the +-1 mask, no discriminator; its test-time dropout off) trained
   for the same steps on (a) the 64 real pairs, (b) real + synthetic, (c) synthetic alone;
5. Dice of each segmenter on 256 real held-out phantoms (output thresholded at 0, per image,
   then averaged; :func:`gankit.metrics.medical.dice`).

Reported: mean Dice over the seeds with a 95% t-interval, and the paired differences (b - a),
(c - a) with theirs.

MC-dropout uncertainty for translation (the seeds' "translation with uncertainty"; Gal &
Ghahramani 2016 dropout as Bayesian approximation): the seed-0 synthesiser keeps its dropout on
at test time (``model.test_dropout``, as pix2pix does), so T passes with different dropout seeds
give a per-pixel predictive variance. On the held-out label maps we report the Spearman rank
correlation between that variance and the actual absolute error of the mean translation,
pooled over all pixels, per image (mean of the per-image correlations) and across images (the
image's mean variance against its mean error), against both the noisy real image and the
noise-free rendering of the same anatomy.

    python benchmarks/downstream.py [--seeds 3] [--syn-steps 500] [--seg-steps 500] \
        [--width 16] [--batch 16] [--threads 1] [--n-real 64]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import gankit
from gankit.data.base import Dataset
from gankit.data.phantoms import TISSUES, add_lesions, render, tissue_map
from gankit.metrics.medical import dice

SIZE = 32
NOISE = 0.08  # std of the Gaussian noise on the real CT images (intensities in [0, 1])
LESIONS = (1, 3)  # lesions per phantom (inclusive)
RADIUS = (0.10, 0.16)  # lesion radius, fraction of the side (3.2-5.1 px at 32 px)
N_SYN, N_TEST = 256, 256
T_PASSES = 16
OUT = Path(__file__).parent / "results"


def phantom_set(n: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` phantoms: label map (``[-1, 1]``: tissue class / 5), noisy CT image, clean CT
    image and lesion mask (+-1), each ``float32 [n, 1, SIZE, SIZE]``."""
    rng = np.random.default_rng(seed)
    labs = np.empty((n, SIZE, SIZE), np.int64)
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        labs[i] = tissue_map(rng, SIZE)
        masks[i] = add_lesions(rng, labs[i], int(rng.integers(LESIONS[0], LESIONS[1] + 1)),
                               radius=RADIUS)
    clean = render(labs, "ct")
    noisy = render(labs, "ct", noise=NOISE, rng=rng)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, np.float32))[:, None]

    return {"label": t(labs / (len(TISSUES) - 1) * 2 - 1), "image": t(noisy * 2 - 1),
            "clean": t(clean * 2 - 1), "mask": t(masks * 2.0 - 1)}


def common(steps: int, width: int, threads: int, seed: int, batch: int) -> dict:
    return {"train.steps": steps, "train.batch_size": batch, "train.seed": seed,
            "train.ema": False, "train.doctor": False, "train.log_every": max(1, steps),
            "train.threads": threads, "model.width": width, "model.n_layers": 2}


def fit(ds: Dataset, over: dict) -> gankit.api.TrainedModel:
    return gankit.train("pix2pix", ds, overrides=over, progress=False, save=False).generator


def mean_ci(v: list[float]) -> dict[str, float]:
    """Mean and a 95% Student-t interval over seeds."""
    from scipy.stats import t

    m = statistics.fmean(v)
    if len(v) < 2:
        return {"mean": m, "lo": math.nan, "hi": math.nan, "n": len(v)}
    h = t.ppf(0.975, len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v))
    return {"mean": m, "lo": m - h, "hi": m + h, "n": len(v)}


def uncertainty(g: gankit.api.TrainedModel, test: dict[str, torch.Tensor]) -> dict:
    """Spearman correlations of MC-dropout variance with the error of the mean translation."""
    from scipy.stats import spearmanr

    outs = torch.stack([g.translate(test["label"], seed=1000 + k, batch_size=64)
                        for k in range(T_PASSES)])  # [T, N, 1, H, W]
    mean, var = outs.mean(0), outs.var(0, unbiased=True)
    res: dict = {"T": T_PASSES, "mean_std": float(var.sqrt().mean())}
    for target in ("image", "clean"):
        err = (mean - test[target]).abs()
        v, e = var.flatten(1).numpy(), err.flatten(1).numpy()  # [N, P]
        pooled = float(spearmanr(v.ravel(), e.ravel())[0])
        per = [spearmanr(v[i], e[i])[0] for i in range(len(v))]
        per = [float(r) for r in per if np.isfinite(r)]
        across = float(spearmanr(v.mean(1), e.mean(1))[0])
        res[target] = {"pooled_pixels": pooled, "per_image_mean": statistics.fmean(per),
                       "per_image_n": len(per), "across_images": across,
                       "mae_of_mean": float(err.mean())}
    # where the variance is largest: the top 5% most uncertain pixels' error vs the rest
    err = (mean - test["clean"]).abs().flatten()
    q = torch.quantile(var.flatten(), 0.95)
    top = var.flatten() >= q
    res["clean"]["err_top5pct_var"] = float(err[top].mean())
    res["clean"]["err_rest"] = float(err[~top].mean())
    return res


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    test = phantom_set(N_TEST, 10_000)
    rows: dict[str, list[float]] = {"real": [], "real+syn": [], "syn": []}
    syn_quality: list[float] = []
    unc = None
    t0 = time.time()
    for s in range(args.seeds):
        real = phantom_set(args.n_real, 100 + s)
        new = phantom_set(N_SYN, 200 + s)  # only its label maps and masks are used
        syn_ds = Dataset(f"ct-from-labels-{s}", real["image"], a=real["label"], pairing="paired")
        g = fit(syn_ds, common(args.syn_steps, args.width, args.threads, s, args.batch))
        synth = g.translate(new["label"], seed=s, batch_size=64)  # [N_SYN, 1, H, W]
        syn_quality.append(float((synth - new["clean"]).abs().mean()))
        if s == 0:
            unc = uncertainty(g, test)
        sets = {
            "real": (real["image"], real["mask"]),
            "real+syn": (torch.cat([real["image"], synth]), torch.cat([real["mask"],
                                                                       new["mask"]])),
            "syn": (synth, new["mask"]),
        }
        for name, (img, msk) in sets.items():
            ds = Dataset(f"seg-{name}-{s}", msk, a=img, pairing="paired")
            over = common(args.seg_steps, args.width, args.threads, s, args.batch)
            seg = fit(ds, {**over, "model.mode": "l1", "model.test_dropout": False})
            pred = seg.translate(test["image"], seed=0, batch_size=64)
            d = float(dice(pred, test["mask"]).mean())
            rows[name].append(d)
            print(f"seed {s} {name:8s} dice {d:.4f}  ({time.time() - t0:.0f}s)", flush=True)
    diffs = {k: [b - a for a, b in zip(rows["real"], rows[k])] for k in ("real+syn", "syn")}
    return {
        "command": "python benchmarks/downstream.py " + " ".join(shlex.quote(a) for a in
                                                               sys.argv[1:]),
        "settings": {"seeds": args.seeds, "size": SIZE, "noise": NOISE, "lesions": LESIONS,
                     "radius": RADIUS, "n_real": args.n_real, "n_syn": N_SYN, "n_test": N_TEST,
                     "syn_steps": args.syn_steps, "seg_steps": args.seg_steps,
                     "width": args.width, "n_layers": 2, "batch": args.batch, "threads": args.threads,
                     "torch": torch.__version__, "python": platform.python_version()},
        "dice": {k: {"per_seed": v, **mean_ci(v)} for k, v in rows.items()},
        "gain": {k: {"per_seed": v, **mean_ci(v)} for k, v in diffs.items()},
        "synthesis_mae_vs_clean": syn_quality,
        "uncertainty": unc,
        "seconds": round(time.time() - t0, 1),
    }


def ci(d: dict, pct: bool = False) -> str:
    f = (lambda x: f"{x:+.3f}") if pct else (lambda x: f"{x:.3f}")
    return f"{f(d['mean'])} [{f(d['lo'])}, {f(d['hi'])}]"


def write_md(res: dict) -> str:
    st, u = res["settings"], res["uncertainty"]
    lines = [
        f"Regenerate: `{res['command']}`",
        "",
        "# Synthetic data for lesion segmentation, and MC-dropout uncertainty of translation",
        "",
        (f"Phantoms of `gankit.data.phantoms` at {st['size']} px: ellipse anatomy with "
        f"{st['lesions'][0]}-{st['lesions'][1]} lesion discs (radius {st['radius'][0]}-"
        f"{st['radius'][1]} of the side), \"ct\" contrast plus Gaussian noise of std "
        f"{st['noise']} (intensities in [0, 1]). Real held-out test set: {st['n_test']} fresh "
        f"phantoms (one fixed set). Per seed: {st['n_real']} real labelled pairs; a pix2pix "
        f"synthesiser (Isola et al. 2017, cGAN + 100 x L1, width {st['width']}, "
        f"PatchGAN n_layers {st['n_layers']}, {st['syn_steps']} steps, batch {st['batch']}) "
        f"trained label map -> CT image on them; {st['n_syn']} new label maps with new lesions "
        "translated into synthetic pairs. Segmenter: pix2pix image -> mask with `model.mode=l1` "
        f"(U-Net + L1 to the +-1 mask, no discriminator, test-time dropout off), "
        f"{st['seg_steps']} steps, batch {st['batch']}, the same for the three training sets. "
        "Dice per test image with the output thresholded at 0 (`gankit.metrics.medical.dice`), "
        f"averaged. Mean over {st['seeds']} seeds with a 95% Student-t interval. CPU, "
        f"{st['threads']} thread(s) on a shared machine; {res['seconds'] / 60:.1f} min in all."),
        "",
        "| segmenter trained on | Dice on real held-out (95% CI) | sd over seeds | per seed |",
        "|---|---|---|---|",
    ]
    names = {"real": f"(a) {st['n_real']} real pairs",
             "real+syn": f"(b) {st['n_real']} real + {st['n_syn']} synthesised",
             "syn": f"(c) {st['n_syn']} synthesised only"}
    for k, label in names.items():
        d = res["dice"][k]
        sd = statistics.stdev(d["per_seed"]) if len(d["per_seed"]) > 1 else math.nan
        lines.append(f"| {label} | {ci(d)} | {sd:.3f} | "
                     f"{', '.join(f'{v:.3f}' for v in d['per_seed'])} |")
    lines += ["", "| paired difference | Dice change (95% CI) | per seed |", "|---|---|---|"]
    for k, label in (("real+syn", "(b) - (a)"), ("syn", "(c) - (a)")):
        d = res["gain"][k]
        lines.append(f"| {label} | {ci(d, True)} | "
                     f"{', '.join(f'{v:+.3f}' for v in d['per_seed'])} |")
    g = res["gain"]["real+syn"]
    verdict = ("holds" if g["lo"] > 0 else "does not hold" if g["hi"] < 0 else
               "not shown (the interval contains 0)")
    lines += [
        "",
        (f"Synthesiser fidelity: mean |synthetic - noise-free rendering of the same label map| "
        f"= {', '.join(f'{v:.3f}' for v in res['synthesis_mae_vs_clean'])} per seed ([-1, 1] "
        "scale)."),
        "",
        (f"**Claim** (seeds; Pan et al.: task-oriented synthesis boosts performance): adding "
        f"synthesised pairs to a small real set raises real-test Dice -- **{verdict}** here "
        f"(gain {ci(g, True)})."),
        "",
        "## MC-dropout uncertainty of the translation (label map -> CT)",
        "",
        (f"Seed-0 synthesiser, {u['T']} passes with test-time dropout (different dropout seeds) "
        f"on the {st['n_test']} held-out label maps; per-pixel variance vs |mean translation - "
        f"target|. Mean per-pixel std {u['mean_std']:.4f}. Spearman rank correlations:"),
        "",
        "| target | pooled over pixels | per image (mean) | across images | MAE of mean |",
        "|---|---|---|---|---|",
    ]
    for t, label in (("image", "noisy real image"), ("clean", "noise-free rendering")):
        r = u[t]
        lines.append(f"| {label} | {r['pooled_pixels']:.3f} | {r['per_image_mean']:.3f} "
                     f"(n={r['per_image_n']}) | {r['across_images']:.3f} | "
                     f"{r['mae_of_mean']:.4f} |")
    c = u["clean"]
    lines += [
        "",
        (f"The 5% most uncertain pixels have mean error {c['err_top5pct_var']:.4f} against "
        f"{c['err_rest']:.4f} for the rest (noise-free target). The noise of the real image "
        "cannot be predicted from the label map, so the correlation against the noisy image is "
        "bounded by that irreducible (aleatoric) error; MC dropout estimates the model's "
        "(epistemic) part only (Gal & Ghahramani 2016)."),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--syn-steps", type=int, default=500)
    p.add_argument("--seg-steps", type=int, default=500)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-real", type=int, default=64,
                   help="real labelled pairs (64 writes medical_downstream.*, others "
                        "medical_downstream_realN.*)")
    p.add_argument("--from-json", action="store_true", help="rewrite the md from the json")
    args = p.parse_args()
    stem = "medical_downstream" + ("" if args.n_real == 64 else f"_real{args.n_real}")
    js = OUT / f"{stem}.json"
    if args.from_json:
        res = json.loads(js.read_text())
    else:
        res = run(args)
        js.write_text(json.dumps(res, indent=2) + "\n")
    (OUT / f"{stem}.md").write_text(write_md(res))
    print(write_md(res))


if __name__ == "__main__":
    main()
