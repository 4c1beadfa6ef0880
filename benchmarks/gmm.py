"""Gaussian mixtures on MNIST-5k: an independent per-pixel mixture samples noise, a mixture over
whole images (in PCA space) samples digits; and the per-pixel one has the better likelihood.

    python benchmarks/gmm.py                  # about 10 min on 2 shared cores
    python benchmarks/gmm.py --quick          # smoke run of a minute (writes to /tmp)
    python benchmarks/gmm.py --render-only    # rewrite gmm.md (and gmm.png) from gmm.json

The chapter's thought experiment (Wenzel 2023, §2.1.3): fit a Gaussian mixture to the grey
values and "randomly draw the required number of voxel values from the distribution": the image
"will almost look like random noise, because we did not model the spatial relation of the gray
values". Two ``gmm`` models (scikit-learn's EM through the gankit Trainer, one EM iteration per
step) train on the 4,000 MNIST-5k training images:

- ``pixels``: an independent 1-D mixture of ``k`` Gaussians per pixel, on the logit of the
  dequantised grey level;
- ``pca``: one full-covariance mixture of ``k`` Gaussians over whole images, in the space of
  their first ``components`` principal components (whitened), with the probabilistic-PCA
  Gaussian on the discarded directions so that it too has a density on the image space.

Measured, on the 1,000 MNIST-5k test images: the lenet FID (the shipped ``lenet-mnist``
features) of 2,000 samples of each (reference rows: 2,000 training images, the real floor, and
uniform noise); the spatial correlation of the samples (the Pearson correlation of horizontally
adjacent pixels across samples, averaged over the pixel pairs that vary: 0 for independent
pixels); and the exact held-out log-likelihood in bits per dimension of the dequantised test
images (``gankit.likelihood``: (D ln 256 - log p(y)) / (D ln 2), one dequantisation drawn from
seed 0), with the same on the training images for the generalisation gap.

Writes ``benchmarks/results/gmm.md``, ``gmm.json`` (every raw number) and ``gmm.png``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before numpy/torch load their BLAS

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
COMMAND = "python benchmarks/gmm.py"

FULL: dict[str, Any] = {"n_samples": 2000, "seed": 0, "models": {
    "pixels": {"model.space": "pixels", "model.k": 3, "train.steps": 20},
    "pca": {"model.space": "pca", "model.k": 10, "model.components": 50, "train.steps": 100},
}}
QUICK: dict[str, Any] = {"n_samples": 300, "seed": 0, "models": {
    "pixels": {"model.space": "pixels", "model.k": 2, "train.steps": 2},
    "pca": {"model.space": "pca", "model.k": 4, "model.components": 20, "train.steps": 5},
}}


def neighbour_correlation(x: torch.Tensor) -> float:
    """Mean Pearson correlation, across images, of horizontally adjacent pixels (over the pairs
    whose two pixels both vary); ``x [N, 1, H, W]``."""
    a = x[..., :, 1:].flatten(1).double()
    b = x[..., :, :-1].flatten(1).double()
    a, b = a - a.mean(0), b - b.mean(0)
    sa, sb = a.pow(2).mean(0).sqrt(), b.pow(2).mean(0).sqrt()
    ok = (sa > 1e-6) & (sb > 1e-6)
    r = (a * b).mean(0)[ok] / (sa[ok] * sb[ok])
    return float(r.mean())


def encode_grid(x: torch.Tensor) -> dict[str, Any]:
    """Images in [-1, 1] as 8-bit grey levels, base64 of the raw bytes (compact JSON)."""
    import base64

    a = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return {"shape": list(a.shape), "uint8_b64": base64.b64encode(a.tobytes()).decode()}


def decode_grid(g: dict[str, Any]) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(g["uint8_b64"]), np.uint8).reshape(g["shape"])


def bits_per_dim_of(g: Any, x: torch.Tensor) -> float:
    from gankit.likelihood import bits_per_dim

    lp = g.log_prob(x, seed=0)
    return bits_per_dim(lp, int(np.prod(x.shape[1:])), "dequantized")


def measure(settings: dict[str, Any]) -> dict[str, Any]:
    import gankit
    import gankit.metrics
    from gankit.data import load_data
    from gankit.metrics.fid import fid
    from gankit.registry import FEATURES

    ds = load_data("mnist5k")
    lenet = FEATURES.get("lenet-mnist")()
    n = settings["n_samples"]
    test_f = lenet.features(ds.x_test)
    out: dict[str, Any] = {"models": {}, "reference": {}}
    gen = torch.Generator().manual_seed(123)
    noise = torch.rand(n, *ds.x.shape[1:], generator=gen) * 2 - 1
    real = ds.x[:n]
    for name, x in (("training images", real), ("uniform noise", noise)):
        out["reference"][name] = {"fid": fid(test_f, lenet.features(x)),
                                  "neighbour_correlation": neighbour_correlation(x)}
    grids: dict[str, Any] = {"real": real[:36]}
    tmp = tempfile.mkdtemp(prefix="gmm-bench-")
    for label, ov in settings["models"].items():
        t0 = time.perf_counter()
        c0 = time.process_time()
        run = gankit.train("gmm", ds, seed=settings["seed"], out=Path(tmp) / label,
                           progress=False,
                           overrides={"train.doctor": False, "train.log_every": 1,
                                      "train.sample_every": 100000, **ov})
        rec: dict[str, Any] = {"config": ov, "train_wall_s": round(time.perf_counter() - t0, 1),
                               "train_cpu_s": round(time.process_time() - c0, 1)}
        rec["nll_curve_bpd"] = [round(r["loss/bpd"], 5) for r in run.metrics()
                                if "loss/bpd" in r]
        g = run.generator
        t0 = time.perf_counter()
        s = g.sample(n, seed=1)
        rec["sample_s_per_1000"] = round(1000 * (time.perf_counter() - t0) / n, 3)
        rec["fid"] = fid(test_f, lenet.features(s))
        rec["neighbour_correlation"] = neighbour_correlation(s)
        grids[label] = s[:36]
        if label == "pca":
            full = g.sample(n, seed=1, mean=False)
            rec["fid_full_draw"] = fid(test_f, lenet.features(full))
            rec["neighbour_correlation_full_draw"] = neighbour_correlation(full)
            grids["pca (full draw)"] = full[:36]
        t0 = time.perf_counter()
        rec["test_bpd"] = bits_per_dim_of(g, ds.x_test)
        rec["train_bpd"] = bits_per_dim_of(g, ds.x[:1000])
        rec["log_prob_s_per_1000"] = round(1000 * (time.perf_counter() - t0) / 2000, 3)
        rec["likelihood"] = run.model.likelihood()
        out["models"][label] = rec
        print(f"{label}: FID {rec['fid']:.2f}, corr {rec['neighbour_correlation']:.3f}, "
              f"test {rec['test_bpd']:.3f} bits/dim", flush=True)
    out["grids"] = {k: encode_grid(v) for k, v in grids.items()}
    return out


def render(res: dict[str, Any], out_dir: Path) -> None:
    S, m, ref = res["settings"], res["results"]["models"], res["results"]["reference"]
    px, pc = m["pixels"], m["pca"]
    lines = [
        f"Regenerate: `{COMMAND}`",
        "",
        "# Gaussian mixtures on MNIST-5k: per-pixel noise vs whole-image digits",
        "",
        ("Two `gmm` models (scikit-learn's EM through the gankit Trainer, one EM iteration per "
        f"step, training seed {S['seed']}) on the 4,000 training images; measured on the 1,000 "
        f"test images. FID: lenet-mnist features, {S['n_samples']} samples (sampling seed 1) "
        "against the test images. Spatial correlation: Pearson correlation of horizontally "
        "adjacent pixels across images, averaged over the pixel pairs that vary. Bits/dim: exact "
        "log-density of the dequantised images (one dequantisation, seed 0), "
        "(D ln 256 - log p) / (D ln 2)."),
        "",
        ("| model | EM iterations | FID (lenet) | neighbour corr. | test bits/dim | "
        "train bits/dim | train wall s |"),
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in m.items():
        cfg = r["config"]
        desc = (f"per-pixel 1-D mixture, k={cfg['model.k']}" if label == "pixels" else
                f"PCA-space mixture, k={cfg['model.k']}, {cfg['model.components']} components")
        lines.append(f"| {desc} | {cfg['train.steps']} | {r['fid']:.2f} | "
                     f"{r['neighbour_correlation']:.3f} | {r['test_bpd']:.3f} | "
                     f"{r['train_bpd']:.3f} | {r['train_wall_s']} |")
    lines.append(f"| PCA-space mixture, full draw (with the residual noise) | | "
                 f"{pc['fid_full_draw']:.2f} | {pc['neighbour_correlation_full_draw']:.3f} | "
                 "| | |")
    for name, r in ref.items():
        lines.append(f"| reference: {name} | | {r['fid']:.2f} | "
                     f"{r['neighbour_correlation']:.3f} | | | |")
    better_ll = px["test_bpd"] < pc["test_bpd"]
    lines += [
        "",
        "## Reading",
        "",
        (f"- The per-pixel mixture gets every pixel's marginal right and nothing else: its samples' "
        f"neighbouring pixels are uncorrelated ({px['neighbour_correlation']:.3f}, against "
        f"{ref['training images']['neighbour_correlation']:.3f} in real digits), and they are "
        f"noise to the digit classifier (FID {px['fid']:.1f}, uniform noise "
        f"{ref['uniform noise']['fid']:.1f}). The mixture over whole images in PCA space samples "
        f"digits (FID {pc['fid']:.1f}, correlation {pc['neighbour_correlation']:.3f}): the "
        "chapter's point that a generative model must model the joint distribution of the "
        "pixels, not their marginals."),
        f"- Likelihood says the opposite: the per-pixel mixture's held-out log-likelihood is "
        f"{px['test_bpd']:.3f} bits/dim against the PCA mixture's {pc['test_bpd']:.3f}"
        + (" — a better likelihood with far worse samples, the dissociation of Theis et al. "
           "2016 ('A note on the evaluation of generative models'). The per-pixel model spends "
           "its density on what most pixels are (the black background, modelled to within its "
           "grey-level bin), while the PCA model's isotropic residual Gaussian (probabilistic "
           f"PCA's one variance for all {784 - pc['config']['model.components']} discarded "
           "directions) is far too wide for the background pixels." if better_ll else
           "."),
        ("- Both log-likelihoods are exact densities of the dequantised images (the per-pixel "
        "mixture's mass beyond the logit's squeeze and the PCA model's mass outside [0, 1]^D are "
        "not renormalised, so both bits/dim err high, never low)."),
        "",
        "![samples](gmm.png)",
        "",
        f"Machine: {res['machine']}; total {res['seconds']:.0f} s wall.",
    ]
    (out_dir / "gmm.md").write_text("\n".join(lines) + "\n")
    from gankit.theory._common import pyplot

    plt = pyplot()
    grids = res["results"]["grids"]
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.6))
    for ax, (k, g) in zip(axes, grids.items()):
        a = decode_grid(g)[:, 0]  # [36, H, W]
        h, w = a.shape[1:]
        tile = a.reshape(6, 6, h, w).transpose(0, 2, 1, 3).reshape(6 * h, 6 * w)
        ax.imshow(tile, cmap="gray", vmin=0, vmax=255)
        extra = ""
        if k in m:
            extra = f"\nFID {m[k]['fid']:.1f}, corr {m[k]['neighbour_correlation']:.2f}"
        ax.set_title(f"{k}{extra}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "gmm.png", dpi=100, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out_dir = a.out or (Path("/tmp/gmm-bench") if a.quick else HERE / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    if a.render_only:
        render(json.loads((out_dir / "gmm.json").read_text()), out_dir)
        return
    torch.set_num_threads(1)
    import warnings

    warnings.filterwarnings("ignore")
    settings = QUICK if a.quick else FULL
    t0 = time.perf_counter()
    results = measure(settings)
    res = {"command": COMMAND + (" --quick" if a.quick else ""), "settings": settings,
           "results": results, "seconds": time.perf_counter() - t0,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                      f"Python {sys.version.split()[0]}"}
    (out_dir / "gmm.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    render(res, out_dir)
    print(f"wrote {out_dir / 'gmm.md'}")
    assert all(math.isfinite(r["test_bpd"]) for r in results["models"].values())


if __name__ == "__main__":
    main()
