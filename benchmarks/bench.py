"""The leaderboard of issue 12, measured with ``gankit bench``: generative models trained under one
CPU-time budget each, evaluated with one protocol (gankit.bench).

    python benchmarks/bench.py                 # the three benches below (~15 min, 2 shared cores)
    python benchmarks/bench.py --quick         # a smoke run of a few minutes (to /tmp)
    python benchmarks/bench.py --render-only   # rewrite bench.md from bench.json
    python benchmarks/bench.py --models-images dcgan,vae,pixelcnn --models-toy gan,vae,ddpm

Benches: ring8 and grid25 (toy mixtures: modes, precision/recall, density/coverage, NLL in nats
per point where the family has one, Parzen) with 3 training seeds each, and mnist5k (lenet
FID/KID, precision/recall, density/coverage, NLL in bits/dim, Parzen, sharpness) with one seed.
Budgets are CPU seconds of a one-thread process (``--budget-kind cpu``: load from other processes
does not shorten them). The bench folders (runs, checkpoints) go to ``--work``; an interrupted run
of this script continues where it stopped (``gankit bench`` is resumable).

Writes ``benchmarks/results/bench.json`` (every bench.json) and ``bench.md``: the three
leaderboards, a reading of them against the deck's "Comparisons among DGMs" and "Model
results" tables and the seeds' claims (computed from the numbers, so it stays true when the lead
reruns this with every family), and the Theis et al. 2016 demonstration from the leaderboards'
own numbers.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before torch is imported

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
COMMAND = "python benchmarks/bench.py"

#: Families on main when this was written; the lead adds the others of issue 12 after merging.
MODELS_TOY = "gan,wgan-gp,vae"
MODELS_IMAGES = "gan,dcgan,wgan-gp,vae"


def benches(args: argparse.Namespace) -> list[dict[str, Any]]:
    toy_models = [m for m in args.models_toy.split(",") if m]
    img_models = [m for m in args.models_images.split(",") if m]
    seeds = [0] if args.quick else [0, 1, 2]
    toy_budget = 2.0 if args.quick else args.toy_budget
    img_budget = 5.0 if args.quick else args.image_budget
    common = {"budget_kind": "cpu", "nll_n": 1000}
    return [
        {"data": "ring8", "models": toy_models, "seeds": seeds, "budget": toy_budget, "n": 1000,
         **common},
        {"data": "grid25", "models": toy_models, "seeds": seeds, "budget": toy_budget,
         "n": 1000, **common},
        {"data": "mnist5k", "models": img_models, "seeds": [0], "budget": img_budget,
         "n": 300 if args.quick else 1000, "nll_n": 200 if args.quick else 1000,
         "budget_kind": "cpu",
         # the VAE's importance-weighted bound (Burda et al. 2016) with k = 100, not its ELBO
         "sets": {m: ["log_prob.k=100"] for m in img_models if m == "vae"}},
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from gankit.bench import BenchSpec, parse_sets, run_bench

    out: dict[str, Any] = {"machine": machine(), "benches": {}}
    t0 = time.time()
    for b in benches(args):
        sets = parse_sets(b.pop("sets", {}), b["models"])
        spec = BenchSpec(**b, sets=sets)
        folder = Path(args.work) / spec.data
        print(f"== {spec.data}: {', '.join(spec.models)}; seeds {spec.seeds}; "
              f"{spec.budget:g} s cpu each", flush=True)
        t = time.time()
        data = run_bench(spec, folder, say=lambda s: print(s, flush=True))
        data["wall_seconds"] = round(time.time() - t, 1)
        out["benches"][spec.data] = data
    out["wall_seconds"] = round(time.time() - t0, 1)
    return out


def machine() -> dict[str, Any]:
    import torch

    return {"cpu": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": 1}


# ---------------------------------------------------------------------------------------------
# the reading (from the numbers)
# ---------------------------------------------------------------------------------------------

def _mean(row: dict[str, Any], key: str) -> float | None:
    c = row["cells"].get(key)
    return None if c is None else c[0]


def _adversarial(name: str) -> bool:
    from gankit.models import get_family

    try:
        return bool(get_family(name).adversarial)
    except Exception:  # noqa: BLE001  (a family this gankit does not have: not a GAN here)
        return False


def _kind(name: str) -> str:
    """The issue-12 family a model name belongs to, by its registered name."""
    n = name.lower()
    for key, kind in (("pixelcnn", "autoregressive"), ("ddpm", "diffusion"),
                      ("ncsn", "diffusion"), ("score", "diffusion"), ("nice", "flow"),
                      ("realnvp", "flow"), ("rbm", "rbm"), ("dbn", "rbm"), ("dbm", "rbm"),
                      ("vae", "vae")):
        if key in n:
            return kind
    return "gan" if _adversarial(name) else "other"


def reading(benches: dict[str, Any]) -> list[str]:
    """Sentences checking the deck's and the seeds' claims against the leaderboards."""
    from gankit.bench import leaderboard_rows

    out: list[str] = []
    img = benches.get("mnist5k")
    if img is not None:
        _, rows = leaderboard_rows(img)
        ref = next((r for r in rows if r.get("reference")), None)
        rows = [r for r in rows if not r.get("reference")]
        gans = [r for r in rows if _kind(r["model"]) == "gan"]
        vaes = [r for r in rows if _kind(r["model"]) == "vae"]
        data_sharp = _mean(ref, "sharpness") if ref else None
        for v in vaes:
            for g in gans:
                sv, sg = _mean(v, "sharpness"), _mean(g, "sharpness")
                rv, rg = _mean(v, "recall"), _mean(g, "recall")
                cv, cg = _mean(v, "coverage"), _mean(g, "coverage")
                if None in (sv, sg, rv, rg, cv, cg):
                    continue
                blur = "blurrier" if sv < sg else "not blurrier"
                div = "more diverse" if (rv > rg and cv > cg) else \
                    "mixed on diversity" if (rv > rg or cv > cg) else "less diverse"
                out.append(f"mnist5k, {v['model']} vs {g['model']}: {v['model']} is {blur} "
                           f"(Laplacian variance {sv:.3f} vs {sg:.3f}; data "
                           f"{data_sharp:.3f}) and {div} (recall {rv:.3f} vs {rg:.3f}, coverage "
                           f"{cv:.3f} vs {cg:.3f}). The deck's 'Comparisons among DGMs' and "
                           f"the book chapters say VAEs are blurrier and more diverse, GANs sharp "
                           f"and less diverse.")
        slow = [r for r in rows if _kind(r["model"]) == "autoregressive"]
        others = [r for r in rows if _kind(r["model"]) != "autoregressive"
                  and _mean(r, "sample_ms") is not None]
        for s in slow:
            fastest = min(others, key=lambda r: _mean(r, "sample_ms"), default=None)
            if fastest is not None:
                ratio = _mean(s, "sample_ms") / max(_mean(fastest, "sample_ms"), 1e-9)
                out.append(f"mnist5k: {s['model']} samples in {_mean(s, 'sample_ms'):.2f} ms per "
                           f"image, {ratio:.0f}x the fastest ({fastest['model']}): "
                           f"autoregressive sampling is pixel by pixel (the deck: 'slow').")
        nll = [(r["model"], _mean(r, "nll_nats"), r.get("nll_kind")) for r in rows
               if _mean(r, "nll_nats") is not None]
        if len(nll) >= 2:
            order = " < ".join(f"{m} {v:.1f} ({k})" for m, v, k in sorted(nll, key=lambda t: t[1]))
            out.append(f"mnist5k held-out NLL, nats per image (best first): {order}. The "
                       f"published order on binarised MNIST (the deck's 'Model results'): "
                       f"PixelCNN 81.30 < RBM (AIS) 86.34 < VAE about 86.8; flows report "
                       f"bits/dim on dequantized data, a different space, so they are ranked "
                       f"only against other dequantized models.")
        elif nll:
            out.append(f"mnist5k: only {nll[0][0]} has a held-out likelihood "
                       f"({nll[0][1]:.1f} nats per image, {nll[0][2]}); the published ordering "
                       f"(PixelCNN 81.30 < RBM-AIS 86.34 < VAE about 86.8 nats on binarised "
                       f"MNIST) needs the other families, which the lead adds after merging.")
    for name in ("ring8", "grid25"):
        b = benches.get(name)
        if b is None:
            continue
        _, rows = leaderboard_rows(b)
        rows = [r for r in rows if not r.get("reference")]
        modes = {r["model"]: _mean(r, "modes_covered") for r in rows
                 if _mean(r, "modes_covered") is not None}
        if not modes:
            continue
        total = int(next(iter(b["entries"].values()))["results"].get("n_modes", 0) or 0)
        best = max(modes, key=modes.get)
        txt = ", ".join(f"{m} {v:.1f}" for m, v in sorted(modes.items(), key=lambda t: -t[1]))
        diff = [m for m in modes if _kind(m) == "diffusion"]
        claim = ""
        if diff:
            gmax = max((v for m, v in modes.items() if _kind(m) == "gan"), default=None)
            if gmax is not None:
                dm = max(modes[m] for m in diff)
                verb = "covers more" if dm > gmax else "does not cover more"
                claim = (f" Diffusion ({', '.join(diff)}) {verb} modes than the best GAN "
                         f"({dm:.1f} vs {gmax:.1f}); the chapters claim it covers more.")
        out.append(f"{name}: modes covered of {total} (mean over seeds): {txt}; most: {best}."
                   + claim)
    return out


# ---------------------------------------------------------------------------------------------
# bench.md
# ---------------------------------------------------------------------------------------------

def render(res: dict[str, Any]) -> str:
    from gankit.bench import LEGEND, THEIS_CAVEAT, markdown_table, theis_findings

    m = res["machine"]
    lines = [f"Regenerate: `{COMMAND}`", "",
             "# gankit bench: generative models under one CPU budget", "",
             (f"Machine: {m['cpu']}, {m['cpus']} CPUs (shared with other jobs), torch "
             f"{m['torch']}, one thread per training; budgets are CPU seconds "
             f"(`--budget-kind cpu`). Whole run {res['wall_seconds'] / 60:.1f} min wall. "
             f"Families: those on main when this was written; rerun with every family of "
             f"issue 12 after merging (`--models-images`, `--models-toy`)."), "",
             "Commands (each one `gankit bench`):", ""]
    for name, b in res["benches"].items():
        s = b["spec"]
        sets = " ".join(f"--set {mm}:{kv}" for mm, kvs in s["sets"].items() for kv in kvs)
        lines.append(f"- `gankit bench --data {name} --models {','.join(s['models'])} --budget "
                     f"{s['budget']:g}s --budget-kind {s['budget_kind']} --seeds "
                     f"{','.join(map(str, s['seeds']))} --n {s['n']} --nll-n {s['nll_n']}"
                     f"{' ' + sets if sets else ''} --out bench/{name}` "
                     f"({b['wall_seconds'] / 60:.1f} min wall)")
    for name, b in res["benches"].items():
        s = b["spec"]
        lines += ["", (f"## {name}: {s['budget']:g} s of {s['budget_kind']} time per model, "
                  f"seeds {','.join(map(str, s['seeds']))}"), "", *markdown_table(b)]
    lines += ["", LEGEND, "", f"\\* {THEIS_CAVEAT}", "", "## Protocol", ""]
    last = list(res["benches"].values())[-1]
    lines += [f"- {p}" for p in last.get("protocol") or []]
    lines += [("- The toy benches use the same protocol with raw coordinates as features and "
              "no bits/dim (points: nats per point).")]
    lines += ["", "## Reading against the lecture deck and the chapters", ""]
    lines += [f"- {t}" for t in reading(res["benches"])] or ["- (no comparable models)"]
    lines += ["", "## Theis et al. demonstration", "",
              ("Theis et al. 2016: a model can have a better held-out likelihood and worse samples "
              "than another, so neither measure stands in for the other. From the leaderboards' "
              "own numbers:"), ""]
    for name, b in res["benches"].items():
        lines += [f"- {name}: {t}" for t in theis_findings(b)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run (to /tmp)")
    ap.add_argument("--render-only", action="store_true", help="rewrite bench.md from bench.json")
    ap.add_argument("--work", default="runs/bench", help="where the bench folders go")
    ap.add_argument("--models-toy", default=MODELS_TOY)
    ap.add_argument("--models-images", default=MODELS_IMAGES)
    ap.add_argument("--toy-budget", type=float, default=4.0, help="CPU s per toy model and seed")
    ap.add_argument("--image-budget", type=float, default=45.0, help="CPU s per mnist5k model")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "src"))
    out_json, out_md = RESULTS / "bench.json", RESULTS / "bench.md"
    if args.quick:
        args.work = "/tmp/gankit-bench-quick"
        out_json, out_md = Path("/tmp/gankit-bench-quick.json"), Path("/tmp/gankit-bench-quick.md")
    if args.render_only:
        res = json.loads(out_json.read_text())
    else:
        res = run(args)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(res, indent=1, default=str) + "\n")
    out_md.write_text(render(res))
    print(f"wrote {out_json} and {out_md}")


if __name__ == "__main__":
    main()
