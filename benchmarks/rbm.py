"""RBMs and a DBN on MNIST-5k: CD-1 vs CD-k vs PCD, test log-likelihood by AIS, Gibbs samples.

    python benchmarks/rbm.py                  # everything, --jobs 2: 18 min on 2 busy shared cores
    python benchmarks/rbm.py --quick          # smoke run of a minute or two (to /tmp)
    python benchmarks/rbm.py --render-only    # rewrite rbm.md and rbm.png from rbm.json

Models (``gankit train rbm`` / ``dbn`` through the API, seed 0, 4,000 MNIST-5k training images
dynamically binarised, minibatches of 100, SGD lr 0.05, momentum 0.9, weight cost 2e-4 on W;
the same number of updates for each): a 500-hidden-unit RBM (the size of Salakhutdinov & Murray
2008's MNIST RBM) trained by CD-1 and CD-10 (Hinton 2002) and by PCD-1 (Tieleman 2008); a DBN
(Hinton, Osindero & Teh 2006) of two 500-unit layers trained greedily, each layer for the same
number of updates by CD-1; and scikit-learn's ``BernoulliRBM`` (its PCD, its defaults but 500
units) fitted on the grey levels as probabilities, as an outside reference.

Evaluation on the 1,000 MNIST-5k test images under gankit's fixed binarisation
(``gankit.likelihood.fixed_binarize``): log p(v) = -F(v) - log Z with log Z by annealed importance
sampling (Salakhutdinov & Murray 2008's schedule shape, shortened to 5,000 intermediate
distributions for CPU time, 100 runs, base-rate model from the training data's pixel means; the
paper's full 14,500 on the CD-k model as a check), the standard error of log Z and the paper's
log(Z +- 3 sigma) interval; the same on 1,000 training images (generalisation gap); the mean
pseudo-log-likelihood (Besag 1975; what scikit-learn's ``score_samples`` estimates); for the
DBN the variational lower bound (one sample) and the importance-weighted bound (k = 100) with
AIS on its top RBM; and the base-rate model (independent pixels) as the floor. Samples: 25
Gibbs chains of 3,000 sweeps from the base-rate model per RBM (the DBN: in its top RBM, then
a top-down pass), and one chain's states after 1, 10, 100, 1,000 and 3,000 sweeps.

Published anchor: -86.34 nats for a 500-unit RBM trained with CD-25 on the full binarised MNIST
(60,000 images; Salakhutdinov & Murray 2008, Table 2), where CD-1 RBMs score far lower. MNIST-5k
(4,000 training images) and our binarisation differ, so only the ordering is compared.

Writes ``benchmarks/results/rbm.json`` (every raw number), ``rbm.md`` and ``rbm.png``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before torch is imported, here and in spawned workers

import argparse
import base64
import json
import math
import multiprocessing as mp
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
COMMAND = "python benchmarks/rbm.py"

FULL: dict[str, Any] = {
    "hidden": 500,
    "steps": 2000,  # updates per model (50 epochs of 4,000 images); per layer for the DBN
    "cd_k": 10,
    "ais_steps": 5000,  # the paper's schedule shape, a third of its length (CPU time) ...
    "ais_runs": 100,
    "ais_check_steps": 14_500,  # ... checked against the paper's full length on one model
    "ais_check_label": "rbm-cdk",
    "dbn_k": 100,  # importance samples of the DBN's bound
    "chains": 25,
    "chain_sweeps": [1, 10, 100, 1000, 3000],
    "sklearn_iter": 20,
    "n_test": 1000,
    "n_pl": 300,  # images for the pseudo-log-likelihood (it costs D free energies per image)
}
QUICK: dict[str, Any] = {**FULL, "hidden": 64, "steps": 100, "cd_k": 3, "ais_steps": 500,
                         "ais_runs": 20, "ais_check_steps": 1000, "dbn_k": 5, "chains": 8, "chain_sweeps": [1, 10, 100],
                         "sklearn_iter": 2, "n_test": 200, "n_pl": 20}
#: label -> (family, overrides) ; the settings fill in hidden sizes and k
MODELS = ("rbm-cd1", "rbm-cdk", "rbm-pcd", "dbn", "sklearn")


def _init_worker() -> None:
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import warnings

    warnings.filterwarnings("ignore")


def _grid(x: torch.Tensor) -> dict[str, Any]:
    """Images in [-1, 1] as 8-bit grey levels, base64 of the raw bytes (compact JSON)."""
    a = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return {"shape": list(a.shape), "uint8_b64": base64.b64encode(a.tobytes()).decode()}


def _ungrid(g: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(g["uint8_b64"]), np.uint8).reshape(g["shape"])


def _ais(r: Any, cpu_s: float) -> dict[str, Any]:
    """An AISResult as JSON."""
    return {"log_z": r.log_z, "se": r.se, "log_z_lo": r.log_z_lo, "log_z_hi": r.log_z_hi,
            "log_z_base": r.log_z_base, "steps": r.steps, "runs": r.runs,
            "ais_cpu_s": round(cpu_s, 1)}


def _chains(model: Any, S: dict[str, Any]) -> dict[str, Any]:
    """Long chains, and one chain's states along the way (the same seed: a prefix)."""
    c0 = time.process_time()
    long = model.draw(S["chains"], 1, steps=S["chain_sweeps"][-1])
    snaps = torch.cat([model.draw(1, 2, steps=s) for s in S["chain_sweeps"]])
    return {"long": _grid(long), "snapshots": _grid(snaps),
            "sample_cpu_s": round(time.process_time() - c0, 1),
            "mean_ink": float(((long + 1) / 2).mean())}


def task(t: dict[str, Any]) -> dict[str, Any]:
    import gankit
    from gankit.data import load_data

    S, label = t["settings"], t["label"]
    ds = load_data("mnist5k")
    xt, xr = ds.x_test[:S["n_test"]], ds.x[:S["n_test"]]
    out: dict[str, Any] = {"label": label}
    base = {"train.doctor": False, "train.log_every": 100, "train.sample_every": 10 ** 9}
    if label == "sklearn":
        return task_sklearn(ds, S, out)
    c0, w0 = time.process_time(), time.perf_counter()
    if label == "dbn":
        ov = {**base, "model.layers": [S["hidden"], S["hidden"]],
              "model.layer_steps": [S["steps"]]}
        steps = 2 * S["steps"]
        run = gankit.train("dbn", ds, steps=steps, seed=0, save=False, progress=False,
                           overrides=ov)
    else:
        k = {"rbm-cd1": 1, "rbm-cdk": S["cd_k"], "rbm-pcd": 1}[label]
        ov = {**base, "model.hidden": S["hidden"], "model.k": k,
              "model.method": "pcd" if label == "rbm-pcd" else "cd"}
        run = gankit.train("rbm", ds, steps=S["steps"], seed=0, save=False, progress=False,
                           overrides=ov)
    out["train_cpu_s"] = round(time.process_time() - c0, 1)
    out["train_wall_s"] = round(time.perf_counter() - w0, 1)
    out["steps"] = run.trainer.step
    out["config"] = run.cfg.to_dict()["model"]
    out["last_log"] = {k: v for k, v in run.trainer.last_log.items()
                       if k.startswith(("loss/", "rbm/"))}
    model, g = run.model, run.generator
    c1 = time.process_time()
    part = model.top_log_partition if label == "dbn" else model.log_partition
    out["ais"] = _ais(part(S["ais_steps"], S["ais_runs"], 0), time.process_time() - c1)
    if label == S["ais_check_label"]:
        c1 = time.process_time()
        out["ais_check"] = _ais(part(S["ais_check_steps"], S["ais_runs"], 0),
                                time.process_time() - c1)
    opts = {"steps": S["ais_steps"], "runs": S["ais_runs"], "exact": False}
    c1 = time.process_time()
    if label == "dbn":
        out["test_bound"] = g.log_prob(xt, seed=0, **opts).mean().item()
        out["test_iw_bound"] = g.log_prob(xt, seed=0, k=S["dbn_k"], **opts).mean().item()
        out["train_iw_bound"] = g.log_prob(xr, seed=0, k=S["dbn_k"], **opts).mean().item()
        rbm1 = model.rbm1
    else:
        out["test_ll"] = g.log_prob(xt, **opts).mean().item()
        out["train_ll"] = g.log_prob(xr, **opts).mean().item()
        with torch.no_grad():
            v = model.visible(xt[:S["n_pl"]])
            out["test_pl"] = model.rbm.pseudo_log_likelihood(v).mean().item()
        rbm1 = model.rbm
    # the floor: independent pixels with the training data's base rates
    with torch.no_grad():
        bA = rbm1.base_logits().double()
        v = model.visible(xt).double()
        out["base_rate_ll"] = (v @ bA - torch.nn.functional.softplus(bA).sum()).mean().item()
    out["eval_cpu_s"] = round(time.process_time() - c1, 1)
    out["samples"] = _chains(model, S)
    return out


def task_sklearn(ds: Any, S: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """scikit-learn's BernoulliRBM (PCD; learning_rate 0.1, batch 10, its defaults) fitted on the
    grey levels read as probabilities; evaluated by gankit's AIS on the same weights."""
    from sklearn.neural_network import BernoulliRBM as SkRBM

    from gankit.config import resolve_config
    from gankit.models.rbm import RBM, annealed_importance_sampling

    c0 = time.process_time()
    X = ((ds.x + 1) / 2).flatten(1).double().numpy()
    sk = SkRBM(n_components=S["hidden"], n_iter=S["sklearn_iter"], random_state=0).fit(X)
    out["train_cpu_s"] = round(time.process_time() - c0, 1)
    # a gankit RBM of the same size holding scikit-learn's weights
    model = RBM(resolve_config("rbm", {"model": {"hidden": S["hidden"]}}), ds.describe())
    rbm = model.rbm
    with torch.no_grad():
        rbm.W.copy_(torch.from_numpy(sk.components_))
        rbm.b.copy_(torch.from_numpy(sk.intercept_visible_))
        rbm.c.copy_(torch.from_numpy(sk.intercept_hidden_))
        rbm.data_sum.copy_(torch.from_numpy(X.sum(0)))  # base rates: the training data's
        rbm.data_count.fill_(len(X))
    c1 = time.process_time()
    r = annealed_importance_sampling(rbm, S["ais_steps"], S["ais_runs"],
                                     torch.Generator().manual_seed(0))
    out["ais"] = _ais(r, time.process_time() - c1)
    xt, xr = ds.x_test[:S["n_test"]], ds.x[:S["n_test"]]
    with torch.no_grad():
        vt, vr = model.visible(xt), model.visible(xr)
        out["test_ll"] = (-rbm.free_energy(vt) - r.log_z).mean().item()
        out["train_ll"] = (-rbm.free_energy(vr) - r.log_z).mean().item()
        out["test_pl"] = rbm.pseudo_log_likelihood(vt[:S["n_pl"]]).mean().item()
        # score_samples flips one random pixel per image (RandomState(random_state)): its mean
        # over the images with random_state 0, and over 20 random states (-> the full sum)
        vn = vt[:S["n_pl"]].double().numpy()
        out["sklearn_score_samples"] = float(sk.score_samples(vn).mean())
        runs = []
        for seed in range(20):
            sk.random_state = seed
            runs.append(float(sk.score_samples(vn).mean()))
        out["sklearn_score_samples_20"] = float(np.mean(runs))
        bA = rbm.base_logits().double()
        out["base_rate_ll"] = (vt.double() @ bA
                               - torch.nn.functional.softplus(bA).sum()).mean().item()
    out["eval_cpu_s"] = round(time.process_time() - c1 - out["ais"]["ais_cpu_s"], 1)
    out["samples"] = _chains(model, S)
    return out


def run_task(t: dict[str, Any]) -> dict[str, Any]:
    """Run one task in this process; never raises (a crash is a result)."""
    _init_worker()
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        out = task(t)
        out.setdefault("status", "ok")
    except Exception as e:  # noqa: BLE001
        out = {"label": t["label"], "status": "crash", "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc(limit=8)}
    out["wall_s"] = round(time.perf_counter() - w0, 1)
    out["cpu_s"] = round(time.process_time() - c0, 1)
    print(f"[rbm bench] {t['label']}: {out['status']} in {out['wall_s']} s wall", flush=True)
    return out


# -- rendering -----------------------------------------------------------------------------------
NAMES = {"rbm-cd1": "RBM, CD-1", "rbm-cdk": "RBM, CD-{k}", "rbm-pcd": "RBM, PCD-1",
         "dbn": "DBN 500-500, CD-1 per layer", "sklearn": "scikit-learn BernoulliRBM (PCD)"}


def _name(label: str, S: dict[str, Any]) -> str:
    return NAMES[label].format(k=S["cd_k"]).replace("500", str(S["hidden"]))


def _f(x: Any, nd: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def render(res: dict[str, Any], out_dir: Path) -> None:
    S = res["settings"]
    rows = {r["label"]: r for r in res["results"]}
    ok = {k: r for k, r in rows.items() if r.get("status") == "ok"}
    lines = [(f"Regenerate: `{res['command']}` (`--quick` for a smoke run, `--render-only` to "
             f"rewrite this file and rbm.png from rbm.json). Machine: {res['machine']}; "
             f"whole run {res['wall_min']:.1f} min wall."), "",
             "# RBMs and a DBN on MNIST-5k: CD-1 vs CD-k vs PCD, AIS log-likelihood", "",
             (f"{S['hidden']} hidden units (Salakhutdinov & Murray 2008's MNIST RBM has 500), "
             f"{S['steps']} updates of minibatches of 100 per model (per layer for the DBN), "
             "SGD lr 0.05, momentum 0.9, weight cost 2e-4, dynamic binarisation, seed 0. "
             f"Test: the first {S['n_test']} MNIST-5k test images under the fixed binarisation "
             "of `gankit.likelihood` (the same binary images for every binary model). log Z by "
             f"AIS with {S['ais_steps']:,} intermediate distributions and {S['ais_runs']} runs "
             "from the base-rate model (Salakhutdinov & Murray 2008); se = standard error of "
             "log Z (delta method), interval = log(Z +- 3 se Z). Nats per image."), "",
             ("| model | test log p (nats) | train log p | log Z | se | log(Z - 3σ), log(Z + 3σ) "
             "| test pseudo-LL | train CPU s |"),
             "|---|---|---|---|---|---|---|---|"]
    for label in MODELS:
        r = rows.get(label)
        if r is None:
            continue
        if r.get("status") != "ok":
            lines.append(f"| {_name(label, S)} | failed: {r.get('error', '?')} |  |  |  |  |  |  |")
            continue
        a = r["ais"]
        if label == "dbn":
            test = (f"bound {_f(r['test_bound'])}; IW bound (k = {S['dbn_k']}) "
                    f"{_f(r['test_iw_bound'])}")
            train = f"IW bound {_f(r['train_iw_bound'])}"
            pl = "-"
            logz = f"{_f(a['log_z'])} (top RBM)"
        else:
            test, train, pl, logz = (_f(r["test_ll"]), _f(r["train_ll"]), _f(r["test_pl"]),
                                     _f(a["log_z"]))
        lines.append(f"| {_name(label, S)} | {test} | {train} | {logz} | {_f(a['se'], 3)} | "
                     f"{_f(a['log_z_lo'])}, {_f(a['log_z_hi'])} | {pl} | {r['train_cpu_s']} |")
    chk = ok.get(S["ais_check_label"], {}).get("ais_check")
    if chk:
        a = ok[S["ais_check_label"]]["ais"]
        lines += ["", (f"AIS length check ({_name(S['ais_check_label'], S)}): log Z = "
                       f"{_f(a['log_z'])} ± {_f(a['se'], 3)} with {a['steps']:,} intermediate "
                       f"distributions, {_f(chk['log_z'])} ± {_f(chk['se'], 3)} with "
                       f"{chk['steps']:,} (the paper's schedule); difference "
                       f"{_f(chk['log_z'] - a['log_z'], 3)} nats.")]
    floor = next((r["base_rate_ll"] for r in ok.values()), None)
    lines += ["", (f"Floor: the base-rate model (independent pixels at the training data's means) "
              f"scores {_f(floor)} nats on the same test images."), ""]
    # the reading
    rbm_ll = {k: ok[k]["test_ll"] for k in ("rbm-cd1", "rbm-cdk", "rbm-pcd") if k in ok}
    if rbm_ll:
        order = sorted(rbm_ll, key=lambda k: -rbm_ll[k])
        lines += ["## Reading", "",
                  "- Ordering of the gankit RBMs by AIS test log-likelihood: "
                  + " > ".join(f"{_name(k, S)} ({_f(rbm_ll[k])})" for k in order) + ". "
                  "Salakhutdinov & Murray 2008 report -86.34 nats for CD-25 (500 units, full "
                  "binarised MNIST, many more updates) and much lower values for CD-1; the "
                  "published ordering is longer chains ahead of CD-1. The numbers here are not "
                  "comparable to theirs (4,000 training images, another binarisation, "
                  f"{S['steps']} updates).",
                  ("- AIS: the standard errors are those of log Z over the AIS runs; they do not "
                  "include the bias of a too-short annealing schedule, which makes AIS "
                  "under-estimate log Z and so over-estimate log p."),
                  ("- Pseudo-likelihood (scikit-learn's `score_samples` is its one-term "
                  "estimate) rewards models that predict each pixel from its neighbours; it is "
                  "not log p and need not order models as log p does.")]
    pl = {k: r["test_pl"] for k, r in ok.items() if "test_pl" in r and "test_ll" in r}
    if len(pl) > 1:
        by_pl = sorted(pl, key=lambda k: -pl[k])
        by_ll = sorted(pl, key=lambda k: -ok[k]["test_ll"])
        lines += [("- Pseudo-likelihood ordering here: " + " > ".join(
            f"{_name(k, S)} ({_f(pl[k])})" for k in by_pl) + (
            "; the same as the log-likelihood ordering." if by_pl == by_ll else
            "; not the log-likelihood ordering, so a pseudo-likelihood (or scikit-learn's "
            "`score_samples`) cannot rank these models by likelihood."))]
    weak = [_name(k, S) for k, r in ok.items() if r["ais"]["log_z_lo"] == -math.inf]
    if weak:
        lines += [("- Less reliable AIS estimates (3 standard errors exceed Z itself: a few runs "
                   "carry most of the importance weight): " + ", ".join(weak) + ". Their log p "
                   "may be over-estimated; more intermediate distributions would tell.")]
    if "sklearn" in ok:
        s = ok["sklearn"]
        lines += [(f"- scikit-learn's BernoulliRBM ({S['sklearn_iter']} epochs, its own PCD, "
                  f"batch 10, lr 0.1, fitted on grey levels as probabilities): AIS test log p "
                  f"{_f(s['test_ll'])}; its `score_samples` mean {_f(s['sklearn_score_samples'])} "
                  f"(random_state 0), {_f(s['sklearn_score_samples_20'])} over 20 random states, "
                  f"vs the full pseudo-LL {_f(s['test_pl'])} computed by gankit on the same "
                  "weights: score_samples scales one random pixel's log conditional by D, an "
                  "unbiased but very noisy estimate of the sum over pixels.")]
    if "dbn" in ok:
        d = ok["dbn"]
        lines += [(f"- DBN: variational lower bound {_f(d['test_bound'])} nats, importance-"
                  f"weighted bound with k = {S['dbn_k']}: {_f(d['test_iw_bound'])} (both with "
                  "log Z of the top RBM by AIS, so estimates of bounds).")]
    lines += ["", f"Samples (rbm.png): per model, {S['chains']} chains of "
              f"{S['chain_sweeps'][-1]:,} Gibbs sweeps from the base-rate model (visible means "
              "of the last sweep); bottom row: one chain after "
              + ", ".join(f"{s:,}" for s in S["chain_sweeps"]) + " sweeps per model.", "",
              "CPU seconds per model (training / AIS / other evaluation / sampling): "
              + "; ".join(f"{_name(k, S)} {r['train_cpu_s']} / {r['ais']['ais_cpu_s']} / "
                          f"{r.get('eval_cpu_s', '-')} / {r['samples']['sample_cpu_s']}"
                          for k, r in ok.items()) + "."]
    (out_dir / "rbm.md").write_text("\n".join(lines) + "\n")
    _figure(res, out_dir / "rbm.png")


def _figure(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    S = res["settings"]
    ok = [r for r in res["results"] if r.get("status") == "ok"]
    if not ok:
        return
    fig, axes = plt.subplots(2, len(ok), figsize=(3.2 * len(ok), 4.6),
                             gridspec_kw={"height_ratios": [6, 1.3]}, squeeze=False)
    for j, r in enumerate(ok):
        a = _ungrid(r["samples"]["long"])[:, 0]  # [n, 28, 28]
        n = len(a)
        c = math.ceil(math.sqrt(n))
        tile = np.zeros((c * 28, c * 28), np.uint8)
        for i in range(n):
            tile[(i // c) * 28:(i // c + 1) * 28, (i % c) * 28:(i % c + 1) * 28] = a[i]
        axes[0, j].imshow(tile, cmap="gray", vmin=0, vmax=255)
        title = _name(r["label"], S)
        ll = r.get("test_ll", r.get("test_iw_bound"))
        axes[0, j].set_title(f"{title}\ntest {'log p' if 'test_ll' in r else 'IW bound'} "
                             f"{_f(ll)}", fontsize=8)
        s = _ungrid(r["samples"]["snapshots"])[:, 0]
        axes[1, j].imshow(np.concatenate(list(s), 1), cmap="gray", vmin=0, vmax=255)
        axes[1, j].set_title("one chain: " + ", ".join(str(x) for x in S["chain_sweeps"])
                             + " sweeps", fontsize=7)
        for ax in axes[:, j]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="rbm_bench_")) if args.quick
                           else HERE / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        render(json.loads((out_dir / "rbm.json").read_text()), out_dir)
        print(f"wrote {out_dir / 'rbm.md'}")
        return
    S = QUICK if args.quick else FULL
    w0 = time.perf_counter()
    # the longest tasks first, so that two workers finish together
    order = ["rbm-cdk", "dbn", "rbm-pcd", "rbm-cd1", "sklearn"]
    tasks = [{"label": label, "settings": S} for label in order]
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(run_task, tasks, chunksize=1)
    else:
        results = [run_task(t) for t in tasks]
    results.sort(key=lambda r: MODELS.index(r["label"]))
    res = {"command": COMMAND + (" --quick" if args.quick else ""), "settings": S,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch "
                      f"{torch.__version__}, one thread per run, {args.jobs} runs at once",
           "wall_min": (time.perf_counter() - w0) / 60, "results": results}
    (out_dir / "rbm.json").write_text(json.dumps(res, indent=1))
    render(res, out_dir)
    print(f"wrote {out_dir / 'rbm.json'}, rbm.md, rbm.png")
    bad = [r["label"] for r in results if r.get("status") != "ok"]
    if bad:
        print(f"failed: {bad}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
