"""f-AnoGAN abnormality detection on the two built-in anomaly tasks, trained on normal data only.

Schlegl et al. 2019 ("f-AnoGAN: Fast unsupervised anomaly detection with generative adversarial
networks") train a WGAN-GP on normal images, then an encoder E with G and D frozen, and score an
image by ``A(x) = ||x - G(E(x))||^2 / n + kappa ||f(x) - f(G(E(x)))||^2 / n_d`` (kappa = 1,
"izi_f"); the residual ``|x - G(E(x))|`` localises the anomaly. For each task this benchmark
trains gankit's ``fanogan`` family once (both stages in one run, seed fixed) and scores the
held-out test set:

- ``mnist-anomaly`` (MNIST-5k, digit 0 held out): image AUROC over the 1,000 test digits (100
  zeros anomalous);
- ``phantom-lesions`` (32x32 CT-contrast phantoms; 200 healthy + 200 with lesions): image
  AUROC, pixel AUROC of the residual map against the lesion masks over all 400 test images, and
  the Dice of the residual map thresholded at one value, pooled over the 400 test images. The
  threshold is never tuned on the test set: (a) the best-Dice threshold on the separate
  validation split (100 healthy + 100 lesion phantoms from other seeds), (b) the 99th
  percentile of the residuals of the validation split's healthy images (no labels used).

Compared: the izi_f score of the izi_f encoder (the paper's method), the residual-only score
(kappa = 0) of the same encoder, and an encoder trained with the plain izi loss (kappa = 0) on
the same frozen G and D (``train.init_from`` the izi_f run, ``train.freeze=[G, D]``). A trivial
baseline gives the scale: the squared distance to the mean training image (per pixel:
``|x - mean|``). Writes ``medical_anomaly.json``/``.md`` and ``medical_anomaly.png`` (phantoms:
x, G(E(x)), residual map, true mask) and ``medical_anomaly_mnist.png``.

    python benchmarks/fanogan.py [--gan-steps 1000] [--enc-steps 1000] [--batch 32] [--width 16]
    python benchmarks/fanogan.py --runs DIR [--reuse]   # keep the runs / evaluate kept runs
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

import gankit
from gankit.data import load_data
from gankit.metrics.anomaly import (
    auroc,
    best_dice_threshold,
    dice,
    percentile_threshold,
    pixel_auroc,
)

TASKS = {"phantom-lesions": "phantom-lesions", "mnist-anomaly": "mnist-anomaly"}


def logged_seconds(run: Path) -> float:
    """A finished run's training time: the ``time`` of its last metrics record."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["time"])


def train_pair(task: str, runs: Path, a: argparse.Namespace) -> dict:
    """The izi_f run (both stages) and the izi encoder on its frozen G and D; with ``--reuse``,
    runs of the same names already finished under ``--runs`` are evaluated as they are."""
    izif, izi = runs / f"{task}-izi_f", runs / f"{task}-izi"
    if a.reuse and all((r / "checkpoints" / "latest").exists() for r in (izif, izi)):
        return {"izi_f": izif, "izi": izi,
                "train_s": {"izi_f": logged_seconds(izif), "izi": logged_seconds(izi)}}
    common = {"model.width": a.width, "train.log_every": 100, "train.sample_every": 10 ** 6,
              "train.ckpt_every": 10 ** 6}
    t = time.time()
    gankit.train("fanogan", task, steps=a.gan_steps + a.enc_steps, batch_size=a.batch,
                 seed=a.seed, out=izif, progress=False,
                 overrides={**common, "model.gan_steps": a.gan_steps})
    t_izif = time.time() - t
    t = time.time()
    # step 0 has no phase (G and D frozen, E starts at gan_steps = 1): E trains enc_steps steps
    gankit.train("fanogan", task, steps=1 + a.enc_steps, batch_size=a.batch, seed=a.seed,
                 out=izi, progress=False, init_from_run=izif,
                 overrides={**common, "model.gan_steps": 1, "model.kappa": 0.0,
                            "train.init_nets": ["G", "D"], "train.freeze": ["G", "D"]})
    return {"izi_f": izif, "izi": izi, "train_s": {"izi_f": t_izif, "izi": time.time() - t}}


def scores(run: Path, x: torch.Tensor) -> dict[str, np.ndarray]:
    g = gankit.load(run)
    return {"izi_f": g.score(x, seed=0, kappa=1.0).numpy(),
            "residual": g.score(x, seed=0, kappa=0.0).numpy()}


def evaluate(task: str, runs: dict, a: argparse.Namespace) -> tuple[dict, dict]:
    ds = load_data(task)
    x, y = ds.x_test, ds.y_test.numpy()
    mean = ds.x.mean(0, keepdim=True)
    res: dict = {"n_test": len(x), "n_anomalous": int(y.sum()), "n_train": len(ds.x),
                 "train_s": runs["train_s"]}
    s_f, s_i = scores(runs["izi_f"], x), scores(runs["izi"], x)
    res["image_auroc"] = {
        "izi_f encoder, izi_f score (kappa=1)": auroc(s_f["izi_f"], y),
        "izi_f encoder, residual score (kappa=0)": auroc(s_f["residual"], y),
        "izi encoder, residual score (kappa=0)": auroc(s_i["residual"], y),
        "izi encoder, izi_f score (kappa=1)": auroc(s_i["izi_f"], y),
        "baseline: distance to the mean training image": auroc(
            (x - mean).pow(2).flatten(1).mean(1).numpy(), y),
    }
    normal = y == 0
    res["recon_mse_normal_test"] = {  # how well each reconstructs the normal test images
        "G(E(x)), izi_f encoder": float(s_f["residual"][normal].mean()),
        "G(E(x)), izi encoder": float(s_i["residual"][normal].mean()),
        "the mean training image": float((x - mean).pow(2).flatten(1).mean(1)[normal].mean()),
    }
    fig: dict = {}
    if "masks_test" in ds.info:
        m_test = ds.info["masks_test"].numpy()
        x_val, m_val, y_val = ds.info["x_val"], ds.info["masks_val"].numpy(), ds.info["y_val"]
        pix: dict = {}
        for name, run in (("izi_f", runs["izi_f"]), ("izi", runs["izi"])):
            g = gankit.load(run)
            r_test = g.score(x, seed=0, map=True).numpy()
            r_val = g.score(x_val, seed=0, map=True).numpy()
            t_val, d_val = best_dice_threshold(r_val, m_val)
            t_pct = percentile_threshold(r_val[y_val.numpy() == 0], 99.0)
            pix[f"{name} encoder"] = {
                "pixel_auroc": pixel_auroc(r_test, m_test),
                "dice_val_threshold": dice(r_test > t_val, m_test),
                "threshold_val": t_val, "dice_on_val_at_it": d_val,
                "dice_p99_healthy_threshold": dice(r_test > t_pct, m_test),
                "threshold_p99": t_pct,
                "dice_lesion_images_val_threshold": dice(r_test[y == 1] > t_val, m_test[y == 1]),
            }
            if name == "izi_f":
                g_recon = gankit.load(run)
                recon = g_recon.decode(g_recon.encode(x, seed=0), seed=0)
                fig = {"x": x, "recon": recon, "resid": torch.from_numpy(r_test),
                       "mask": torch.from_numpy(m_test), "t": t_val}
        base = (x - mean).abs().numpy()
        tb, _ = best_dice_threshold((x_val - mean).abs().numpy(), m_val)
        pix["baseline: abs(x - mean training image)"] = {
            "pixel_auroc": pixel_auroc(base, m_test), "dice_val_threshold": dice(base > tb, m_test),
            "threshold_val": tb}
        res["pixel"] = pix
    else:
        g = gankit.load(runs["izi_f"])
        fig = {"x": x, "recon": g.decode(g.encode(x, seed=0), seed=0),
               "resid": g.score(x, seed=0, map=True), "y": ds.y_test}
    return res, fig


def figure_phantoms(f: dict, path: Path, k: int = 8) -> None:
    """Rows: x, G(E(x)), residual map (0 black .. >= 1 white), the thresholded map, the truth;
    k lesion test images then 2 healthy ones."""
    from gankit.data.images import save_grid

    idx = list(range(200, 200 + k)) + [0, 1]
    x, r = f["x"][idx], f["recon"][idx]
    res = f["resid"][idx].clamp(0, 1) * 2 - 1
    thr = (f["resid"][idx] > f["t"]).float() * 2 - 1
    gt = f["mask"][idx].float() * 2 - 1
    save_grid(torch.cat([x, r.clamp(-1, 1), res, thr, gt]), path, nrow=len(idx))


def figure_mnist(f: dict, path: Path, k: int = 8) -> None:
    """Rows: x, G(E(x)), residual; k anomalous (held-out digit) then k normal test digits."""
    from gankit.data.images import save_grid

    y = f["y"]
    idx = torch.cat([torch.nonzero(y == 1)[:k, 0], torch.nonzero(y == 0)[:k, 0]])
    rows = [f["x"][idx], f["recon"][idx].clamp(-1, 1), f["resid"][idx].clamp(0, 1) * 2 - 1]
    save_grid(torch.cat(rows), path, nrow=len(idx))


def markdown(r: dict) -> str:
    intro = (f"Trained on normal images only. Per task one `fanogan` run: WGAN-GP for "
             f"{r['gan_steps']} steps (n_critic = 5, lambda = 10, Adam 1e-4 (0, 0.9)), then the "
             f"izi_f encoder (kappa = 1) for {r['enc_steps']} steps with G and D frozen; a second "
             f"encoder with the plain izi loss (kappa = 0) on the same frozen G and D for "
             f"{r['enc_steps']} steps. Width {r['width']} (the paper's networks are larger), "
             f"latent 128, batch {r['batch']}, seed {r['seed']}. CPU, {r['threads']} torch "
             f"thread(s) on a shared machine (load average {r['load_avg_at_start']:.1f} when the "
             f"script started): {r['train_s'] / 60:.1f} min of training (both tasks, all runs), "
             f"{r['eval_s'] / 60:.1f} min of evaluation"
             + (" (this evaluation re-read the saved runs of that command, `--reuse`; training "
                "times from their logs)." if r.get("reused_runs") else "."))
    L = [f"Regenerate: `{r['command']}`", "",
         "# f-AnoGAN abnormality detection (Schlegl et al. 2019) on held-out data", "", intro, ""]
    L += ["## Image AUROC (test set; higher is better, 0.5 = chance)", "",
          "| score | " + " | ".join(r["tasks"]) + " |", "|---|" + "---|" * len(r["tasks"])]
    keys = list(next(iter(r["tasks"].values()))["image_auroc"])
    for k in keys:
        L.append(f"| {k} | " + " | ".join(f"{t['image_auroc'][k]:.3f}"
                                          for t in r["tasks"].values()) + " |")
    L.append("")
    for name, t in r["tasks"].items():
        rm = t.get("recon_mse_normal_test", {})
        L.append(f"- {name}: mean squared error on the normal test images: "
                 + ", ".join(f"{k} {v:.4f}" for k, v in rm.items()) + ".")
    for name, t in r["tasks"].items():
        L.append(f"- {name}: {t['n_test']} test images, {t['n_anomalous']} anomalous; "
                 f"{t['n_train']} normal training images; training "
                 f"{t['train_s']['izi_f'] / 60:.1f} min (izi_f run) + "
                 f"{t['train_s']['izi'] / 60:.1f} min (izi encoder).")
    ph = r["tasks"].get("phantom-lesions", {}).get("pixel")
    if ph:
        note = ("Dice is pooled over all 400 test images (false positives on healthy ones "
                "count); its threshold is chosen without the test set: `val` = the best-Dice "
                "threshold on the validation split (100 healthy + 100 lesion phantoms, other "
                "seeds), `p99` = the 99th percentile of the healthy validation images' residuals "
                "(no labels).")
        head = ("| map | pixel AUROC | Dice (val threshold) | Dice (p99 threshold) | "
                "Dice on lesion images only (val threshold) |")
        title = "## Localisation on phantom-lesions (residual map |x - G(E(x))|, 400 test images)"
        L += ["", title, "", note, "", head, "|---|---|---|---|---|"]
        for k, v in ph.items():
            L.append(f"| {k} | {v['pixel_auroc']:.3f} | {v['dice_val_threshold']:.3f} | "
                     + (f"{v['dice_p99_healthy_threshold']:.3f}" if "threshold_p99" in v else "-")
                     + " | " + (f"{v['dice_lesion_images_val_threshold']:.3f}"
                                if "dice_lesion_images_val_threshold" in v else "-") + " |")
    fig1 = ("`medical_anomaly.png` (phantoms; columns: 8 lesion test images, then 2 healthy): "
            "rows x, G(E(x)), residual map (0 black, >= 1 white), the map thresholded at the "
            "validation threshold, the true lesion mask.")
    fig2 = ("`medical_anomaly_mnist.png` (columns: 8 held-out zeros, then 8 normal digits): "
            "rows x, G(E(x)), residual map.")
    L += ["", "## Figures", "", fig1, "", fig2, ""]
    L += ["## Reading", ""] + [f"- {c}" for c in r["reading"]] + [""]
    return "\n".join(L)


def reading(tasks: dict) -> list[str]:
    """Plain statements computed from the numbers (no hand-written verdicts)."""
    out = []
    for name, t in tasks.items():
        au = t["image_auroc"]
        f, base = au["izi_f encoder, izi_f score (kappa=1)"], \
            au["baseline: distance to the mean training image"]
        izi = au["izi encoder, residual score (kappa=0)"]
        out.append(f"{name}: izi_f image AUROC {f:.3f} vs izi {izi:.3f} "
                   f"({'higher' if f > izi else 'not higher'}) and vs the mean-image baseline "
                   f"{base:.3f} ({'higher' if f > base else 'not higher'}).")
        if "pixel" in t:
            p = t["pixel"]
            out.append(f"{name}: pixel AUROC {p['izi_f encoder']['pixel_auroc']:.3f} (izi_f) vs "
                       f"{p['baseline: abs(x - mean training image)']['pixel_auroc']:.3f} "
                       f"(|x - mean|); Dice {p['izi_f encoder']['dice_val_threshold']:.3f} at the "
                       f"validation threshold {p['izi_f encoder']['threshold_val']:.2f}; the "
                       f"healthy-p99 threshold is {p['izi_f encoder']['threshold_p99']:.2f} "
                       f"(Dice {p['izi_f encoder']['dice_p99_healthy_threshold']:.3f}).")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gan-steps", type=int, default=1000)
    ap.add_argument("--enc-steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--runs", type=Path, default=None,
                    help="where the runs go (default: a temporary folder, removed)")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "medical_anomaly.md")
    ap.add_argument("--reuse", action="store_true",
                    help="evaluate finished runs found under --runs instead of training again")
    ap.add_argument("--from-json", action="store_true",
                    help="only rewrite the md from the json next to it (no training)")
    a = ap.parse_args()
    if a.from_json:
        rec = json.loads(a.out.with_suffix(".json").read_text())
        a.out.write_text(markdown(rec))
        return
    # --runs and --reuse only say where runs are kept: the results do not depend on them
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg == "--reuse":
            skip = False
            continue
        if arg == "--runs":
            skip = True
            continue
        if not arg.startswith("--runs="):
            argv.append(arg)
    command = "OMP_NUM_THREADS=1 python benchmarks/fanogan.py " + " ".join(map(shlex.quote, argv))
    tmp = None
    if a.runs is None:
        tmp = tempfile.TemporaryDirectory(prefix="gankit-fanogan-")
        a.runs = Path(tmp.name)
    t0, load0 = time.time(), os.getloadavg()[0]
    tasks: dict = {}
    eval_s = 0.0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for task in a.tasks.split(","):
        runs = train_pair(task, a.runs, a)
        t = time.time()
        tasks[task], fig = evaluate(task, runs, a)
        eval_s += time.time() - t
        if "mask" in fig:
            figure_phantoms(fig, a.out.with_suffix(".png"))
        else:
            figure_mnist(fig, a.out.with_name(a.out.stem + "_mnist.png"))
        print(task, json.dumps(tasks[task]["image_auroc"]), flush=True)
    rec = {"command": command, "reused_runs": bool(a.reuse), "gan_steps": a.gan_steps, "enc_steps": a.enc_steps,
           "batch": a.batch, "width": a.width, "seed": a.seed,
           "threads": torch.get_num_threads(), "machine": platform.machine(),
           "cpus": os.cpu_count(), "load_avg_at_start": load0, "wall_s": time.time() - t0,
           "train_s": sum(sum(t["train_s"].values()) for t in tasks.values()), "eval_s": eval_s,
           "tasks": tasks, "reading": reading(tasks)}
    a.out.with_suffix(".json").write_text(json.dumps(rec, indent=2, default=str) + "\n")
    a.out.write_text(markdown(rec))
    print(f"wrote {a.out} in {rec['wall_s'] / 60:.1f} min")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
