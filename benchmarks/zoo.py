"""The model zoo, measured: mode collapse, semi-supervised learning, conditional control, WGAN's
loss-quality claim and sample quality under one CPU budget, on this machine.

Five sections, each a claim of the literature (and of the seeds) checked with a number:

``modes``
    Mode collapse on the 2-D mixtures ring8 / grid25 with the protocol of VEEGAN (Srivastava et
    al. 2017, "VEEGAN: Reducing Mode Collapse in GANs using Implicit Variational Learning") and
    PacGAN (Lin et al. 2018, "PacGAN: The power of two samples in generative adversarial
    networks"): 2,500 samples, high quality = within 3 sigma of the nearest centre, a mode is
    covered with >= 1 high-quality sample; 3 seeds; ``gan`` (Goodfellow et al. 2014), ``wgan``
    (Arjovsky et al. 2017), ``wgan-gp`` (Gulrajani et al. 2017), ``lsgan`` (Mao et al. 2017),
    ``unrolled`` (Metz et al. 2017) and ``gan`` with minibatch discrimination (Salimans et al.
    2016 §3.2), each evaluated with the raw generator G and with its EMA (Yazici et al. 2019),
    next to the published rows of :mod:`modes` (``benchmarks/modes.py``). A longer, cooled run of
    the plain ``gan`` (learning rate decayed linearly to 0) tests whether the gap in
    high-quality samples to PacGAN's GAN is a matter of schedule.
``ssl``
    ``sgan`` (Odena 2016; Salimans et al. 2016 §5) with 100 labels on MNIST-5k against a
    classifier of exactly its D (same initial weights, same optimiser, same number of steps,
    same labelled subset and batch draw) trained on the 100 labels alone; test accuracy on the
    1,000 test images.
``conditional``
    ``cgan`` (Mirza & Osindero 2014) and ``acgan`` (Odena et al. 2017): fraction of 1,000
    class-balanced samples that the shipped ``lenet-mnist`` classifies as the requested class;
    ``infogan`` (Chen et al. 2016): accuracy of the best one-to-one matching of its 10
    categorical codes to lenet's predicted digits (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``), against a null of shuffled codes.
``wgan``
    Arjovsky et al. 2017 (§4.2, "meaningful loss metric") claim the critic's estimate of the
    Wasserstein distance falls as samples improve, unlike a standard GAN's discriminator loss.
    ``wgan-gp`` (and ``wgan``) log ``wasserstein/estimate``; ``dcgan`` logs ``loss/D``; FID with
    ``lenet-mnist`` is evaluated during training (``train.eval_every``); Spearman rank
    correlations and a PNG.
``quality``
    FID (Heusel et al. 2017), KID (Binkowski et al. 2018) and precision/recall (Kynkaanniemi et
    al. 2019) with ``lenet-mnist`` for every registered family on MNIST-5k after the same CPU
    budget: each model trains in chunks until its process has used ``--budget`` CPU seconds
    (``time.process_time`` on one thread, so other processes on the machine do not shorten a
    model's budget); steps reached and images/s are reported.

Every training is single-threaded; ``--jobs 2`` runs two at once. The CPU-sized networks
(conv width 32 instead of 64) are stated in the report. The doctor (``train.doctor``) is off so
that no run is rolled back or slowed by probes (``--doctor`` turns it on).

    python benchmarks/zoo.py                      # the five sections: ~45 min on 2 free cores, --jobs 2
    python benchmarks/zoo.py --only wgan          # one section; merged into the existing JSON
    python benchmarks/zoo.py --only diagnostics   # follow-ups of surprising rows (~5 min)
    python benchmarks/zoo.py --quick              # smoke run of a few minutes (to /tmp)
    python benchmarks/zoo.py --render-only        # rewrite zoo.md from zoo.json

Writes ``benchmarks/results/zoo.md``, ``zoo.json`` (every raw number) and ``zoo_*.png``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before torch is imported, here and in spawned workers

import argparse
import json
import math
import multiprocessing as mp
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gankit.train.trainer import Callback

HERE = Path(__file__).resolve().parent
SECTIONS = ("modes", "ssl", "conditional", "wgan", "quality")
EXTRA_SECTIONS = ("diagnostics",)  # not in the default run: --only diagnostics (~5 min)
# (label, model, data, steps, overrides): follow-ups of surprising mode-collapse rows, seed 0
FORMER_WGANGP = {"loss.lambda_gp": 10.0, "optim.betas_g": [0.0, 0.9], "optim.betas_d": [0.0, 0.9]}
DIAGNOSTICS = [
    ("unrolled K=0", "unrolled", "ring8", 2000, {"model.unroll_steps": 0, "train.batch_size": 512}),
    ("unrolled K=5, 4000 steps", "unrolled", "ring8", 4000, {"train.batch_size": 512}),
    ("unrolled K=5, batch 100", "unrolled", "ring8", 2000, {}),
    ("unrolled K=5, lr 1e-4", "unrolled", "ring8", 2000,
     {"train.batch_size": 512, "optim.lr_g": 1e-4, "optim.lr_d": 1e-4}),
    ("wgan-gp, image settings", "wgan-gp", "ring8", 2000, FORMER_WGANGP),
    ("wgan-gp, image settings, hand-written loop", "wgan-gp", "ring8", 2000, FORMER_WGANGP),
    ("wgan-gp, no batch norm in G", "wgan-gp", "ring8", 2000, {"model.g_batchnorm": False}),
    ("wgan, 2000 steps", "wgan", "ring8", 2000, {}),
]

# -- settings ------------------------------------------------------------------------------------
FULL: dict[str, Any] = {
    "modes_models": [("gan", "gan", {}), ("wgan", "wgan", {}), ("wgan-gp", "wgan-gp", {}),
                     ("lsgan", "lsgan", {}),
                     # its own point batch (Metz et al.'s notebook), not the shared 100
                     ("unrolled", "unrolled", {"train.batch_size": 512}),
                     ("gan+mbd", "gan", {"tricks.minibatch_discrimination": 5})],
    "modes_data": ["ring8", "grid25"],
    "modes_steps": 2000,
    "modes_seeds": 3,
    "modes_batch": 100,
    "modes_long_steps": 5000,  # the plain gan, constant vs linearly cooled learning rate
    "width": 32,  # conv families: channels of the first stage (DCGAN ngf/ndf), 64 by default
    "budget": 120.0,  # CPU seconds of training per model in the quality section
    "quality_batch": 64,
    "quality_n": 1000,
    "wgan_runs": {"wgan-gp": (500, 50), "wgan": (500, 50), "dcgan": (1000, 100)},  # steps, every
    "wgan_eval_n": 1000,
    "ssl_steps": 1500,
    "ssl_seeds": 3,
    "cond_steps": 1000,
}
QUICK: dict[str, Any] = {
    **FULL,
    "modes_models": FULL["modes_models"],
    "modes_steps": 150,
    "modes_seeds": 1,
    "modes_long_steps": 300,
    "budget": 3.0,
    "wgan_runs": {"wgan-gp": (40, 20), "wgan": (40, 20), "dcgan": (80, 40)},
    "wgan_eval_n": 300,
    "ssl_steps": 60,
    "diag_max_steps": 100,
    "ssl_seeds": 1,
    "cond_steps": 60,
}
# Rough CPU seconds per generator step on this machine (one thread), for scheduling only.
STEP_COST = {"gan": 0.012, "wgan": 0.028, "wgan-gp": 0.038, "lsgan": 0.011, "unrolled": 0.05,
             "gan+mbd": 0.015}


def _base_overrides(doctor: bool) -> dict[str, Any]:
    """Overrides every run gets: the doctor off unless asked (when this gankit has one)."""
    from gankit.config import TrainConfig

    out: dict[str, Any] = {}
    if "doctor" in TrainConfig.model_fields:
        out["train.doctor"] = bool(doctor)
    return out


def cpu_sized(model: str, width: int) -> dict[str, Any]:
    """Width overrides for a family: every conv-width knob its Params has, set to ``width``."""
    from gankit.models import get_family

    fields = get_family(model).Params.model_fields
    return {f"model.{k}": width for k in ("width", "g_width", "d_width") if k in fields}


# -- workers ----------------------------------------------------------------------------------------
def _init_worker() -> None:
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process
    import warnings

    warnings.filterwarnings("ignore")


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task in this process; never raises (errors are returned and reported)."""
    _init_worker()
    w0, c0 = time.perf_counter(), time.process_time()
    fn = {"modes": task_modes, "hand-wgangp": task_hand_wgangp,
          "ssl-sgan": task_ssl_sgan, "ssl-clf": task_ssl_clf,
          "cond": task_cond, "wgan": task_wgan, "quality": task_quality,
          "quality-ref": task_quality_ref}[task["kind"]]
    try:
        out = fn(task)
        out.setdefault("status", "ok")
    except Exception as e:  # noqa: BLE001 (a crashing model is a result, not the end of the run)
        out = {"status": "crash", "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc()[-3000:]}
    out["wall_s"] = round(time.perf_counter() - w0, 2)
    out["cpu_s"] = round(time.process_time() - c0, 2)
    out["task"] = {k: v for k, v in task.items() if k != "samples"}
    return out


def _finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def _nan_in_log(rec: dict[str, Any]) -> list[str]:
    """Keys of a logged record whose value is NaN/inf (the logger writes them as strings)."""
    bad = []
    for k, v in rec.items():
        if isinstance(v, str) and v.lower() in ("nan", "inf", "-inf") or isinstance(v, float) and not math.isfinite(v):
            bad.append(k)
    return bad


class LinearLRDecay(Callback):
    """Callback: every learning rate decays linearly from its initial value to 0 at ``total``.

    A "cooled" schedule for the mode-collapse question: with a constant rate the players keep
    circling the equilibrium (simultaneous gradient steps on a GAN game do not settle, Mescheder
    et al. 2017), which costs high-quality samples at PacGAN's 3-sigma radius.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.base: dict[str, list[float]] = {}

    def on_train_start(self, tr: Any) -> None:
        self.base = {k: [g["lr"] for g in o.param_groups] for k, o in tr.opts.items()}

    def on_step_end(self, tr: Any) -> None:
        f = max(0.0, 1.0 - tr.step / self.total)
        for k, o in tr.opts.items():
            for g, lr in zip(o.param_groups, self.base[k]):
                g["lr"] = lr * f


def task_modes(t: dict[str, Any]) -> dict[str, Any]:
    import gankit
    from gankit.metrics.evaluate import evaluate_sets

    cbs = [LinearLRDecay(t["steps"])] if t.get("cool") else []
    ov = {**t["base"], "train.ema": True, **t["overrides"]}
    if t.get("log_every"):
        ov["train.log_every"] = t["log_every"]
    run = gankit.train(t["model"], t["data"], steps=t["steps"], batch_size=t["batch"],
                       seed=t["seed"], save=False, progress=False, overrides=ov, callbacks=cbs)
    out: dict[str, Any] = {"steps": run.trainer.step, "n_critic": run.cfg.optim.n_critic}
    bad = _nan_in_log(run.trainer.last_log)
    if bad:
        out["status"] = "nan"
        out["error"] = f"non-finite logged stats: {bad}"
    for which, nets in (("G", {}), ("G_ema", run.trainer.sampling_nets())):
        fake = run.model.draw(2500, 1000 + t["seed"], nets=nets)
        if not _finite(fake):
            out["status"] = "nan"
            out[which] = None
            continue
        res = evaluate_sets(run.data.x_test, fake, metrics=["modes"], info=run.data.info)
        r = res["results"]
        out[which] = {"modes": r["modes_covered"], "hq": 100 * r["high_quality_frac"],
                      "kl": r["kl_to_uniform"]}
        if t["seed"] == 0:
            out[f"samples_{which}"] = fake[:1000].numpy().round(4).tolist()
    if t.get("log_every"):
        hist = next((cb.history for cb in run.trainer.callbacks if hasattr(cb, "history")), [])
        keep = ("step", "loss/D", "loss/G", "D/real", "D/fake", "wasserstein/estimate")
        out["history"] = [{k: v for k, v in h.items() if k in keep} for h in hist]
    return out


def task_hand_wgangp(t: dict[str, Any]) -> dict[str, Any]:
    """WGAN-GP written out by hand (Gulrajani et al. 2017, Algorithm 1) with the family's own
    networks, optimiser settings, penalty weight and data, outside the Trainer: if it behaves
    like the ``wgan-gp`` rows, the Trainer is not the cause."""
    from gankit.config import parse_overrides, resolve_config
    from gankit.data import load_data
    from gankit.metrics.evaluate import evaluate_sets
    from gankit.models import get_family

    seed, steps, n = t["seed"], t["steps"], t["batch"]
    ds = load_data(t["data"], seed=seed)
    layers = [parse_overrides([f"{k}={json.dumps(v)}" for k, v in t["overrides"].items()]),
              {"train": {"seed": seed, "batch_size": n}, "data": {"name": t["data"]}}]
    cfg = resolve_config("wgan-gp", *layers)
    torch.manual_seed(seed)
    fam = get_family("wgan-gp")(cfg, ds.describe())
    G, D, o = fam.G, fam.D, cfg.optim
    opt_g = torch.optim.Adam(G.parameters(), o.lr_g, betas=o.betas_g)
    opt_d = torch.optim.Adam(D.parameters(), o.lr_d, betas=o.betas_d)
    gen = torch.Generator().manual_seed(seed + 2)
    hist: list[dict[str, float]] = []
    est: list[float] = []
    every = t.get("log_every") or 500
    for it in range(steps):
        for _ in range(o.n_critic):
            real = ds.x[torch.randint(len(ds.x), (n,), generator=gen)]  # [n, 2]
            with torch.no_grad():
                fake = G(fam.sample_latent(n, gen))
            d_real, d_fake = D(real).mean(), D(fake).mean()
            a = torch.rand(n, 1, generator=gen)
            x_hat = (real + a * (fake - real)).requires_grad_(True)
            (g,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
            loss = d_fake - d_real + cfg.loss.lambda_gp * (g.norm(dim=1) - 1).pow(2).mean()
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
            est.append(float(d_real - d_fake))
        D.requires_grad_(False)
        loss_g = -D(G(fam.sample_latent(n, gen))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
        if (it + 1) % every == 0:
            hist.append({"step": it + 1, "wasserstein/estimate": statistics.mean(est)})
            est = []
    G.eval()
    with torch.no_grad():
        fake = G(fam.sample_latent(2500, torch.Generator().manual_seed(1000 + seed)))
    r = evaluate_sets(ds.x_test, fake, metrics=["modes"], info=ds.info)["results"]
    return {"steps": steps, "history": hist,
            "G": {"modes": r["modes_covered"], "hq": 100 * r["high_quality_frac"],
                  "kl": r["kl_to_uniform"]}}


def _labelled_accuracy(D: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    D.eval()
    with torch.no_grad():
        pred = torch.cat([D(b).argmax(1) for b in x.split(500)])
    return float((pred == y).float().mean())


def _recalibrated_accuracy(D: torch.nn.Module, x_bn: torch.Tensor, x: torch.Tensor,
                           y: torch.Tensor) -> float:
    """Accuracy after re-estimating batch-norm statistics on ``x_bn`` (cumulative average).

    A diagnostic: SGAN's D updates its running statistics on real, fake and labelled batches,
    so eval-mode statistics mix in generated images; recomputing them on the unlabelled
    training images separates that effect from what the weights learned.
    """
    import copy

    D = copy.deepcopy(D)
    bns = [m for m in D.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the passes below
    D.train()
    with torch.no_grad():
        for b in x_bn.split(250):
            D(b)
    return _labelled_accuracy(D, x, y)


def task_ssl_sgan(t: dict[str, Any]) -> dict[str, Any]:
    import gankit

    ov = {**t["base"], **t["width_ov"], "model.n_labels": t["n_labels"]}
    run = gankit.train("sgan", "mnist5k", steps=t["steps"], batch_size=64, seed=t["seed"],
                       save=False, progress=False, overrides=ov)
    ds = run.data
    D = run.model.D
    out = {"steps": run.trainer.step, "labelled_idx": run.model.labelled_idx.tolist(),
           "test_acc": _labelled_accuracy(D, ds.x_test, ds.y_test),
           "test_acc_bn_recal": _recalibrated_accuracy(D, ds.x, ds.x_test, ds.y_test),
           "sup_acc_last": run.trainer.last_log.get("D/sup_acc")}
    bad = _nan_in_log(run.trainer.last_log)
    if bad:
        out["status"] = "nan"
        out["error"] = f"non-finite logged stats: {bad}"
    return out


def task_ssl_clf(t: dict[str, Any]) -> dict[str, Any]:
    """SGAN's D (same initial weights: built exactly as ``gankit.train`` builds the family) trained
    with the same optimiser on the same labelled subset, batch draw and number of steps, alone."""
    import torch.nn.functional as F

    from gankit.config import parse_overrides, resolve_config
    from gankit.data import load_data
    from gankit.models import get_family
    from gankit.models.sgan import choose_labelled
    from gankit.train.optim import build_optimizer, resolve_spec

    seed = t["seed"]
    ov = {**t["base"], **t["width_ov"], "model.n_labels": t["n_labels"]}
    flags = {"train": {"steps": t["steps"], "batch_size": 64, "seed": seed},
             "data": {"name": "mnist5k"}}
    cfg = resolve_config("sgan", parse_overrides([f"{k}={json.dumps(v)}" for k, v in ov.items()]),
                         flags)
    ds = load_data("mnist5k", seed=seed)
    torch.manual_seed(cfg.train.seed)  # as gankit.train: network initialisation
    fam = get_family("sgan")(cfg, ds.describe())
    D = fam.D
    torch.manual_seed(cfg.train.seed)
    opt = build_optimizer(fam, "D", D, resolve_spec(fam, "D"))  # the Trainer's D optimizer
    idx = choose_labelled(ds.y, t["n_labels"], ds.num_classes, cfg.train.seed)
    gen = torch.Generator().manual_seed(seed + 1)
    D.train()
    for _ in range(t["steps"]):
        sel = idx[torch.randint(len(idx), (64,), generator=gen)]  # with replacement, as SGAN
        loss = F.cross_entropy(D(ds.x[sel]), ds.y[sel])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"steps": t["steps"], "labelled_idx": idx.tolist(), "final_loss": float(loss),
            "test_acc": _labelled_accuracy(D, ds.x_test, ds.y_test),
            "test_acc_bn_recal": _recalibrated_accuracy(D, ds.x, ds.x_test, ds.y_test)}


def _lenet() -> Any:
    import gankit.metrics  # noqa: F401  (registers the extractors; FEATURES is empty before)
    from gankit.registry import FEATURES

    return FEATURES.get("lenet-mnist")()


def _grid_u8(x: torch.Tensor) -> list:
    """Images in [-1, 1] -> uint8 nested lists (for plots in the main process)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy().tolist()


def task_cond(t: dict[str, Any]) -> dict[str, Any]:
    from scipy.optimize import linear_sum_assignment

    import gankit

    ov = {**t["base"], **t["width_ov"]}
    run = gankit.train(t["model"], "mnist5k", steps=t["steps"], batch_size=64, seed=t["seed"],
                       save=False, progress=False, overrides=ov)
    n, k = 1000, 10
    wanted = torch.arange(n) % k  # balanced: 100 per class / code
    lenet = _lenet()
    out: dict[str, Any] = {"steps": run.trainer.step}
    if t["model"] == "infogan":
        m, G = run.model, run.trainer.G_sample.eval()
        g = torch.Generator().manual_seed(123)
        z = torch.randn(n, m.noise_dim, generator=g)
        with torch.no_grad():
            x = m.generate_with_codes(G, z, cat=wanted, generator=g).float()
    else:
        x = run.generator.sample(n, seed=123, labels=wanted.tolist())
    if not _finite(x):
        return {**out, "status": "nan", "error": "non-finite samples"}
    pred = torch.as_tensor(lenet.predict(x))
    conf = np.zeros((k, k), dtype=np.int64)  # [requested class / code, predicted digit]
    for a, b in zip(wanted.tolist(), pred.tolist()):
        conf[a, b] += 1
    out["confusion"] = conf.tolist()
    out["pred_hist"] = np.bincount(pred.numpy(), minlength=k).tolist()
    if t["model"] == "infogan":
        rows, cols = linear_sum_assignment(-conf)
        out["cluster_acc"] = float(conf[rows, cols].sum() / n)
        out["mapping"] = {int(r): int(c) for r, c in zip(rows, cols)}
        rng = np.random.default_rng(0)
        null = []
        for _ in range(200):  # codes shuffled against predictions: what matching alone gives
            perm = rng.permutation(n)
            c2 = np.zeros((k, k), dtype=np.int64)
            np.add.at(c2, (wanted.numpy()[perm], pred.numpy()), 1)
            r2, k2 = linear_sum_assignment(-c2)
            null.append(c2[r2, k2].sum() / n)
        out["null_mean"] = float(np.mean(null))
        out["null_p99"] = float(np.quantile(null, 0.99))
    else:
        out["sample_acc"] = float((pred == wanted).float().mean())
        out["per_class_acc"] = (np.diag(conf) / conf.sum(1)).tolist()
    # a 10 x 10 grid: row = class / code, 10 samples each
    order = torch.cat([torch.nonzero(wanted == c).flatten()[:10] for c in range(k)])
    out["grid"] = _grid_u8(x[order])
    return out


def task_wgan(t: dict[str, Any]) -> dict[str, Any]:
    import gankit

    steps, every = t["steps"], t["every"]
    ov = {**t["base"], **t["width_ov"], "train.ema": False, "train.eval_every": every,
          "train.eval_metrics": ["fid"], "train.eval_n": t["eval_n"],
          "train.eval_features": "lenet-mnist", "train.log_every": every,
          "train.ckpt_every": steps, "train.sample_every": steps}
    with tempfile.TemporaryDirectory() as d:
        run = gankit.train(t["model"], "mnist5k", steps=steps, batch_size=64, seed=t["seed"],
                           out=Path(d) / "run", save=True, progress=False, overrides=ov)
        rows = run.metrics()
    stat = "wasserstein/estimate" if t["model"] in ("wgan", "wgan-gp") else "loss/D"
    logs = {r["step"]: r for r in rows if stat in r}
    evals = {r["step"]: r["eval/fid"] for r in rows if "eval/fid" in r}
    pts = []
    for s in sorted(evals):
        v = logs.get(s, {}).get(stat)
        pts.append({"step": s, "fid": evals[s],
                    "signal": v if isinstance(v, (int, float)) else float("nan"),
                    "d_real": logs.get(s, {}).get("D/real"), "d_fake": logs.get(s, {}).get("D/fake")})
    out: dict[str, Any] = {"stat": stat, "points": pts, "steps": run.trainer.step}
    bad = [k for r in rows for k in _nan_in_log(r)]
    if bad:
        out["status"] = "nan"
        out["error"] = f"non-finite logged stats: {sorted(set(bad))}"
    return out


def _train_for_cpu(model: str, ov: dict[str, Any], budget: float, batch: int, seed: int
                   ) -> tuple[Any, dict[str, Any]]:
    """Train ``model`` on MNIST-5k until this process has spent ``budget`` CPU seconds training.

    Builds the run with one step, then calls ``Trainer.fit`` in chunks sized from the measured
    cost per step so the last chunk ends close to the budget (overshoot < one chunk).
    """
    import gankit

    run = gankit.train(model, "mnist5k", steps=1, batch_size=batch, seed=seed, save=False,
                       progress=False, overrides=ov)
    tr = run.trainer
    c0, w0, s_start = time.process_time(), time.perf_counter(), tr.step
    per_step: float | None = None
    while (used := time.process_time() - c0) < budget:
        rem = budget - used
        n = 2 if per_step is None else max(1, min(500, int(rem / per_step)))
        s0, cs = tr.step, time.process_time()
        tr.fit(tr.step + n)
        per_step = max((time.process_time() - cs) / max(tr.step - s0, 1), 1e-6)
    info = {"steps": tr.step, "train_steps_in_budget": tr.step - s_start,
            "train_cpu_s": round(time.process_time() - c0, 2),
            "train_wall_s": round(time.perf_counter() - w0, 2),
            "n_critic": run.cfg.optim.n_critic, "batch": batch}
    return run, info


def _quality_metrics(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    from gankit.metrics.evaluate import evaluate_sets

    r = evaluate_sets(real, fake, metrics=["fid", "kid", "pr"], features="lenet-mnist",
                      dataset="mnist5k")["results"]
    return {k: float(v) for k, v in r.items()}


def task_quality(t: dict[str, Any]) -> dict[str, Any]:
    ov = {**t["base"], **t["width_ov"]}
    run, info = _train_for_cpu(t["model"], ov, t["budget"], t["batch"], t["seed"])
    out: dict[str, Any] = {**info, "config": {k: v for k, v in ov.items() if k.startswith("model.")}}
    out["img_per_s"] = info["train_steps_in_budget"] * t["batch"] / max(info["train_cpu_s"], 1e-9)
    out["last_log"] = {k: v for k, v in run.trainer.last_log.items() if k.startswith(("loss/", "D/"))}
    bad = _nan_in_log(run.trainer.last_log)
    fake = run.generator.sample(t["n"], seed=1)
    if not _finite(fake) or bad:
        out["status"] = "nan"
        out["error"] = f"non-finite samples or logged stats {bad}"
        return out
    out.update(_quality_metrics(run.data.x, fake))
    out["grid"] = _grid_u8(fake[:36])
    return out


def task_quality_ref(t: dict[str, Any]) -> dict[str, Any]:
    from gankit.data import load_data

    ds = load_data("mnist5k")
    noise = torch.rand(t["n"], 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    lenet = _lenet()
    return {"test": _quality_metrics(ds.x, ds.x_test[:t["n"]]),
            "noise": _quality_metrics(ds.x, noise),
            "lenet_test_acc": float((torch.as_tensor(lenet.predict(ds.x_test)) == ds.y_test)
                                    .float().mean())}


# -- task list -------------------------------------------------------------------------------------
def build_tasks(sections: list[str], S: dict[str, Any], base: dict[str, Any]) -> list[dict[str, Any]]:
    from gankit.registry import MODELS

    tasks: list[dict[str, Any]] = []
    w = S["width"]
    if "modes" in sections:
        for data in S["modes_data"]:
            for label, model, over in S["modes_models"]:
                for seed in range(S["modes_seeds"]):
                    tasks.append({"kind": "modes", "section": "modes", "data": data, "label": label,
                                  "model": model, "overrides": over, "seed": seed,
                                  "steps": S["modes_steps"], "base": base,
                                  "batch": None if "train.batch_size" in over else S["modes_batch"],
                                  "cost": S["modes_steps"] * STEP_COST.get(label, 0.02)})
            for label, cool in (("gan (long, cooled lr)", True),):
                for seed in range(S["modes_seeds"]):
                    tasks.append({"kind": "modes", "section": "modes_long", "data": data,
                                  "label": label, "model": "gan", "overrides": {}, "seed": seed,
                                  "steps": S["modes_long_steps"], "batch": S["modes_batch"],
                                  "cool": cool, "base": base,
                                  "cost": S["modes_long_steps"] * STEP_COST["gan"]})
    if "diagnostics" in sections:
        for label, model, data, steps, over in DIAGNOSTICS:
            steps = min(steps, S.get("diag_max_steps", steps))
            kind = "hand-wgangp" if "hand-written" in label else "modes"
            tasks.append({"kind": kind, "section": "diagnostics", "data": data, "label": label,
                          "model": model, "overrides": over, "seed": 0, "steps": steps,
                          "batch": None if "train.batch_size" in over else S["modes_batch"],
                          "base": base, "log_every": max(steps // 6, 1),
                          "cost": steps * STEP_COST.get(model, 0.02)})
    if "ssl" in sections:
        for seed in range(S["ssl_seeds"]):  # the seed also draws the 100 labelled images
            common = {"section": "ssl", "steps": S["ssl_steps"], "seed": seed, "n_labels": 100,
                      "base": base, "width_ov": cpu_sized("sgan", w)}
            tasks.append({"kind": "ssl-sgan", **common, "cost": S["ssl_steps"] * 0.07})
            tasks.append({"kind": "ssl-clf", **common, "cost": S["ssl_steps"] * 0.02})
    if "conditional" in sections:
        for m in ("cgan", "acgan", "infogan"):
            tasks.append({"kind": "cond", "section": "conditional", "model": m, "seed": 0,
                          "steps": S["cond_steps"], "base": base, "width_ov": cpu_sized(m, w),
                          "cost": S["cond_steps"] * 0.06})
    if "wgan" in sections:
        for m, (steps, every) in S["wgan_runs"].items():
            tasks.append({"kind": "wgan", "section": "wgan", "model": m, "steps": steps,
                          "every": every, "eval_n": S["wgan_eval_n"], "seed": 0, "base": base,
                          "width_ov": cpu_sized(m, w),
                          "cost": steps * {"wgan-gp": 0.3, "wgan": 0.17}.get(m, 0.05)})
    if "quality" in sections:
        tasks.append({"kind": "quality-ref", "section": "quality", "n": S["quality_n"], "cost": 5})
        # the zoo's quality table compares the GANs that sample MNIST-5k images (translators and
        # the non-GAN families have benchmarks of their own: pix2pix.py, vae.py)
        zoo = [e.name for e in MODELS if e.obj.adversarial and "sample" in e.obj.capabilities
               and "images" in e.obj.data_kinds]
        for m in zoo:
            tasks.append({"kind": "quality", "section": "quality", "model": m, "seed": 0,
                          "budget": S["budget"], "batch": S["quality_batch"], "n": S["quality_n"],
                          "base": base, "width_ov": cpu_sized(m, w), "cost": S["budget"] + 12})
    tasks.sort(key=lambda t: -t["cost"])  # longest first: better packing on the workers
    return tasks


# -- aggregation -------------------------------------------------------------------------------------
def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt_ms(xs: list[float], d: int = 1) -> str:
    m, s = mean_std(xs)
    return "—" if math.isnan(m) else f"{m:.{d}f} ± {s:.{d}f}"


def wgan_stats(points: list[dict[str, Any]]) -> dict[str, float]:
    """Spearman rank correlations between a logged loss and FID over evaluation points.

    ``spearman``: all points; ``spearman_2nd_half``: the later half (after FID's initial fall);
    ``spearman_diff``: between consecutive *changes* (Delta loss vs Delta FID), which two curves
    that merely both fall over time do not make positive: a loss that tracks quality moves with
    FID from one evaluation to the next.
    """
    from scipy.stats import spearmanr

    pts = [p for p in points if math.isfinite(p["signal"]) and math.isfinite(p["fid"])]
    out: dict[str, float] = {}

    def rho(a: list[float], b: list[float], key: str) -> None:
        if len(a) >= 3:
            r, pv = spearmanr(a, b)
            out[key], out[key + "_p"] = float(r), float(pv)

    sig, fid = [p["signal"] for p in pts], [p["fid"] for p in pts]
    rho(sig, fid, "spearman")
    h = len(pts) // 2
    rho(sig[h:], fid[h:], "spearman_2nd_half")
    rho(list(np.diff(sig)), list(np.diff(fid)), "spearman_diff")
    return out


def aggregate(results: list[dict[str, Any]], S: dict[str, Any]) -> dict[str, Any]:
    """Raw task results -> the JSON sections (numbers only; samples/grids go to the plots)."""
    out: dict[str, Any] = {}
    by_sec: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_sec.setdefault(r["task"]["section"], []).append(r)

    def strip(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if not k.startswith("samples_") and k != "grid"}

    for sec in ("modes", "modes_long"):
        if sec in by_sec:
            rows: dict[str, dict[str, Any]] = {}
            for r in sorted(by_sec[sec], key=lambda r: r["task"]["seed"]):
                key = f"{r['task']['data']}/{r['task']['label']}"
                rows.setdefault(key, {"data": r["task"]["data"], "label": r["task"]["label"],
                                      "model": r["task"]["model"],
                                      "overrides": r["task"]["overrides"],
                                      "steps": r["task"]["steps"], "runs": []})
                rows[key]["runs"].append({"seed": r["task"]["seed"], **strip(r)})
            out[sec] = {"settings": {"steps": S["modes_steps"] if sec == "modes"
                                     else S["modes_long_steps"], "batch": S["modes_batch"],
                                     "seeds": S["modes_seeds"]}, "rows": rows}
    if "diagnostics" in by_sec:
        out["diagnostics"] = {r["task"]["label"]: {"model": r["task"]["model"],
                                                   "data": r["task"]["data"],
                                                   "steps": r["task"]["steps"],
                                                   "overrides": r["task"]["overrides"], **strip(r)}
                              for r in by_sec["diagnostics"]}
    if "ssl" in by_sec:
        runs: dict[str, list[dict[str, Any]]] = {"ssl-sgan": [], "ssl-clf": []}
        for r in sorted(by_sec["ssl"], key=lambda r: r["task"]["seed"]):
            runs[r["task"]["kind"]].append({"seed": r["task"]["seed"], **strip(r)})
        out["ssl"] = {"runs": runs, "settings": {"steps": S["ssl_steps"], "width": S["width"],
                                                 "n_labels": 100, "seeds": S["ssl_seeds"]}}
    if "conditional" in by_sec:
        out["conditional"] = {r["task"]["model"]: strip(r) for r in by_sec["conditional"]}
        out["conditional"]["settings"] = {"steps": S["cond_steps"], "width": S["width"]}
    if "wgan" in by_sec:
        sec = {}
        for r in by_sec["wgan"]:
            sec[r["task"]["model"]] = {**strip(r), **wgan_stats(r.get("points", []))}
        sec["settings"] = {"runs": {k: list(v) for k, v in S["wgan_runs"].items()},
                           "eval_n": S["wgan_eval_n"], "width": S["width"]}
        out["wgan"] = sec
    if "quality" in by_sec:
        q: dict[str, Any] = {"models": {}}
        for r in by_sec["quality"]:
            if r["task"]["kind"] == "quality-ref":
                q["reference"] = strip(r)
            else:
                q["models"][r["task"]["model"]] = strip(r)
        q["settings"] = {"budget_cpu_s": S["budget"], "batch": S["quality_batch"],
                         "n_fake": S["quality_n"], "n_real": 4000, "width": S["width"]}
        out["quality"] = q
    return out


# -- plots -------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_modes(results: list[dict[str, Any]], out_dir: Path, S: dict[str, Any]) -> Path | None:
    from gankit.data.builtin import grid25_centers, ring8_centers

    rs = [r for r in results if r["task"]["section"] in ("modes", "modes_long")
          and r["task"]["seed"] == 0 and r.get("samples_G")]
    if not rs:
        return None
    labels = [lab for lab, _, _ in S["modes_models"]] + ["gan (long, cooled lr)"]
    plt = _plt()
    fig, axes = plt.subplots(len(S["modes_data"]), len(labels),
                             figsize=(2.3 * len(labels), 2.5 * len(S["modes_data"])), squeeze=False)
    centers = {"ring8": ring8_centers(), "grid25": grid25_centers()}
    for i, data in enumerate(S["modes_data"]):
        for j, lab in enumerate(labels):
            ax = axes[i, j]
            r = next((r for r in rs if r["task"]["data"] == data and r["task"]["label"] == lab), None)
            c = centers[data]
            ax.scatter(c[:, 0], c[:, 1], s=30, c="red", marker="x", zorder=3)
            if r is not None:
                p = np.asarray(r["samples_G"])
                ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.4)
                g = r.get("G") or {}
                ax.set_title(f"{lab}\n{g.get('modes', float('nan')):.0f} modes, "
                             f"{g.get('hq', float('nan')):.0f}% HQ", fontsize=7)
            lim = 1.6 if data == "ring8" else 6
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(data)
    fig.suptitle("1,000 samples of G (seed 0) over the mixture centres (x)", fontsize=9)
    fig.tight_layout()
    p = out_dir / "zoo_modes.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _show_grid(ax: Any, imgs: list, nrow: int) -> None:
    a = np.asarray(imgs, dtype=np.uint8)[:, 0]  # [N, H, W]
    n, h, w = a.shape
    rows = math.ceil(n / nrow)
    canvas = np.full((rows * (h + 1), nrow * (w + 1)), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = a[i]
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_conditional(results: list[dict[str, Any]], out_dir: Path) -> Path | None:
    rs = [r for r in results if r["task"]["section"] == "conditional" and r.get("grid")]
    if not rs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(rs), figsize=(3.6 * len(rs), 4.3), squeeze=False)
    for ax, r in zip(axes[0], rs):
        _show_grid(ax, r["grid"], 10)
        m = r["task"]["model"]
        val = (f"cluster acc {r['cluster_acc']:.2f}" if m == "infogan"
               else f"sample acc {r['sample_acc']:.2f}")
        ax.set_title(f"{m}: row = {'code' if m == 'infogan' else 'class'} 0..9\n{val}", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    p = out_dir / "zoo_conditional.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def plot_quality(results: list[dict[str, Any]], out_dir: Path) -> Path | None:
    rs = sorted([r for r in results if r["task"].get("kind") == "quality"],
                key=lambda r: r["task"]["model"])
    if not rs:
        return None
    plt = _plt()
    cols = 6
    rows = math.ceil(len(rs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, rs):
        m = r["task"]["model"]
        if r.get("grid"):
            _show_grid(ax, r["grid"], 6)
            ax.set_title(f"{m}\n{r['steps']} steps, FID {r.get('fid', float('nan')):.0f}", fontsize=7)
        else:
            ax.text(0.5, 0.5, f"{m}\n{r.get('status')}", ha="center", va="center", fontsize=8)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("36 samples (G_ema, seed 1) after the same CPU budget", fontsize=9)
    fig.tight_layout()
    p = out_dir / "zoo_quality.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def plot_wgan(sec: dict[str, Any], out_dir: Path) -> Path | None:
    models = [m for m in ("wgan-gp", "wgan", "dcgan") if m in sec and sec[m].get("points")]
    if not models:
        return None
    plt = _plt()
    import matplotlib
    import matplotlib.ticker
    fig, axes = plt.subplots(2, len(models), figsize=(4.6 * len(models), 7), squeeze=False)
    for j, m in enumerate(models):
        r = {**sec[m], **wgan_stats(sec[m]["points"])}
        pts = r["points"]
        steps = [p["step"] for p in pts]
        ax = axes[0, j]
        ax.plot(steps, [p["signal"] for p in pts], "o-", color="tab:blue", ms=3)
        ax.set_ylabel(r["stat"], color="tab:blue")
        ax.set_xlabel("generator step")
        ax2 = ax.twinx()
        ax2.plot(steps, [p["fid"] for p in pts], "s--", color="tab:red", ms=3)
        ax2.set_ylabel("FID (lenet-mnist, log scale)", color="tab:red")
        ax2.set_yscale("log")
        ax.set_title(f"{m}: Spearman {r.get('spearman', float('nan')):+.2f}, 2nd half "
                     f"{r.get('spearman_2nd_half', float('nan')):+.2f}, changes "
                     f"{r.get('spearman_diff', float('nan')):+.2f}", fontsize=8)
        ax = axes[1, j]
        sc = ax.scatter([p["fid"] for p in pts], [p["signal"] for p in pts], c=steps, cmap="viridis")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("FID (lenet-mnist, log scale)")
        ax.set_ylabel(r["stat"])
        fig.colorbar(sc, ax=ax, label="step")
    fig.suptitle("Does the critic's / discriminator's loss track sample quality? (MNIST-5k)", fontsize=10)
    fig.tight_layout()
    p = out_dir / "zoo_wgan.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


# -- report ------------------------------------------------------------------------------------------
def _f(v: Any, d: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{d}f}"


def _beats(rem: dict[str, float], base: dict[str, float]) -> bool:
    """A remedy beats the plain GAN when it covers more modes without fewer HQ samples (or the
    same modes with more HQ samples), comparing seed means."""
    return (rem["modes"] > base["modes"] and rem["hq"] >= base["hq"] - 1) or \
        (rem["modes"] >= base["modes"] and rem["hq"] > base["hq"] + 1)


def _row_mean(js: dict[str, Any], sec: str, key: str, which: str = "G",
              what: str = "hq") -> float:
    """Seed mean of one modes-table entry (``nan`` when missing)."""
    row = js.get(sec, {}).get("rows", {}).get(key)
    if not row:
        return float("nan")
    return mean_std([r[which][what] for r in row["runs"] if r.get(which)])[0]


def _diag(js: dict[str, Any], label: str, which: str = "G", what: str = "hq") -> float:
    r = js.get("diagnostics", {}).get(label, {})
    return (r.get(which) or {}).get(what, float("nan"))


def why(js: dict[str, Any], label: str) -> str:
    """Why a remedy does not beat the plain GAN here, written after reading the runs (numbers
    are read from the results; ``diagnostics`` ones appear when that section was run)."""
    m = lambda k, w="G", q="hq": _row_mean(js, "modes", k, w, q)
    d = lambda k, w="G", q="hq": _diag(js, k, w, q)
    if label == "wgan":
        return ("Weight clipping at c = 0.01 with RMSProp at 5e-5 are Arjovsky et al.'s image "
                "settings: a learning rate 4x below the GAN's and a critic whose clipped "
                "weights can hardly draw level sets around ring modes 0.03 wide. On ring8 its "
                "samples sit on the modes *and* on spokes and arcs between them (zoo_modes.png), "
                f"so it covers as many modes ({m('ring8/wgan', q='modes'):.1f}) with fewer HQ "
                f"samples ({m('ring8/wgan'):.1f}% vs {m('ring8/gan'):.1f}%). On grid25, where a "
                "mode is 5x wider, the same critic is enough and WGAN beats the GAN on both "
                f"counts ({m('grid25/wgan', q='modes'):.1f} vs {m('grid25/gan', q='modes'):.1f} "
                f"modes, {m('grid25/wgan'):.1f}% vs {m('grid25/gan'):.1f}% HQ).")
    if label == "wgan-gp":
        txt = ("On points the family uses the settings of Gulrajani et al.'s released toy code "
               "(lambda = 0.1, Adam betas (0.5, 0.9)); their Algorithm 1's image settings "
               "(lambda = 10, beta1 = 0) fail here: the critic's loss is in the data's units "
               "(~0.1 on the ring) while the penalty is not, so at lambda = 10 the penalty holds "
               "the critic at unit slope everywhere, it cannot shape level sets around the modes, "
               "and G wanders as a cloud. ")
        dg = js.get("diagnostics", {})

        def est(label: str) -> list[float]:
            return [h["wasserstein/estimate"] for h in dg.get(label, {}).get("history", [])
                    if isinstance(h.get("wasserstein/estimate"), (int, float))]

        old_l, hand_l = "wgan-gp, image settings", "wgan-gp, image settings, hand-written loop"
        if not math.isnan(d(old_l, q="modes")):
            txt += (f"With the image settings on ring8 (diagnostics, seed 0, 2,000 steps) it covers "
                    f"{d(old_l, q='modes'):.0f} mode(s) with {d(old_l):.1f}% HQ")
            if est(old_l):
                txt += (f" and its logged estimate E[D(real)] - E[D(fake)] averages "
                        f"{statistics.mean(est(old_l)):+.2f} (negative: G's samples score higher "
                        "than the data)")
            if not math.isnan(d(hand_l, q="modes")):
                txt += (f"; a hand-written loop with the same settings gives "
                        f"{d(hand_l, q='modes'):.0f} mode(s), {d(hand_l):.1f}% HQ, so the Trainer "
                        "is not the cause")
            txt += ". "
        nb = "wgan-gp, no batch norm in G"
        if not math.isnan(d(nb, q="modes")):
            txt += (f"Without batch norm in G it covers {d(nb, q='modes'):.0f} modes with "
                    f"{d(nb):.1f}% HQ from G but {d(nb, 'G_ema', 'modes'):.0f} modes with "
                    f"{d(nb, 'G_ema'):.1f}% HQ from its EMA (seed 0; the EMA averages out G's "
                    "jitter around the modes). ")
        txt += (f"On grid25 it covers {m('grid25/wgan-gp', q='modes'):.1f} modes with "
                f"{m('grid25/wgan-gp'):.1f}% HQ against the GAN's "
                f"{m('grid25/gan', q='modes'):.1f} / {m('grid25/gan'):.1f}%.")
        return txt
    if label == "lsgan":
        return ("On ring8 it is within seed noise of the GAN (HQ std over seeds is about 8-9 "
                "points for both): least squares changes how D's loss saturates, not the networks "
                "or the optimiser, and with the same ones the ring outcome varies more between "
                "seeds than between the two losses. On grid25, where the plain GAN misses about "
                f"half the modes at 2,000 steps, it is ahead ({m('grid25/lsgan', q='modes'):.1f} vs "
                f"{m('grid25/gan', q='modes'):.1f} modes).")
    if label == "unrolled":
        txt = ("The points setting of `unrolled` is Metz et al.'s appendix networks (G 2 x 128, "
               "D 1 x 128 ReLU, a 256-d latent, orthogonal init) with the authors' notebook's "
               "batch 512 and Adam 1e-3 for both players, so its rows use batch 512, not 100. ")
        if not math.isnan(d("unrolled K=0", q="modes")):
            txt += (f"Unrolling is what spreads it: with K = 0 the same networks collapse to "
                    f"{d('unrolled K=0', q='modes'):.0f} mode(s), {d('unrolled K=0'):.1f}% HQ "
                    "(ring8, seed 0, 2,000 steps)")
            if not math.isnan(d("unrolled K=5, 4000 steps", q="modes")):
                txt += (f"; K = 5 for 4,000 steps gives "
                        f"{d('unrolled K=5, 4000 steps', q='modes'):.0f} modes, "
                        f"{d('unrolled K=5, 4000 steps'):.1f}% HQ")
            txt += ". "
        if not math.isnan(d("unrolled K=5, lr 1e-4", q="modes")):
            txt += (f"The appendix's lr 1e-4 is too slow for a run this short: "
                    f"{d('unrolled K=5, lr 1e-4', q='modes'):.0f} mode(s), "
                    f"{d('unrolled K=5, lr 1e-4'):.1f}% HQ after 2,000 steps (five unrolled steps "
                    "of 1e-4 barely move D, so G gets the plain GAN's gradient). ")
        if not math.isnan(d("unrolled K=5, batch 100", q="modes")):
            txt += (f"The batch sets the precision: at batch 100 it covers "
                    f"{d('unrolled K=5, batch 100', q='modes'):.0f} modes with "
                    f"{d('unrolled K=5, batch 100'):.1f}% HQ. ")
        txt += ("VEEGAN's Table 1 shows the same trade: the unrolled GAN covers most modes "
                "with fewer HQ samples than the GAN (7.6 modes, 35.6% on the ring; 16% on the "
                "grid), after many more steps than here.")
        return txt
    if label == "gan+mbd":
        return ("On ring8 the plain GAN already covers ~7 of 8 modes at 2,000 steps, so there is "
                "little collapse to prevent, and minibatch features cost precision: D rewards "
                "diverse batches, which also rewards samples spread along the ring between modes "
                f"({m('ring8/gan+mbd'):.1f}% vs {m('ring8/gan'):.1f}% HQ). On grid25, where the "
                "plain GAN misses about half the modes, it helps on both counts "
                f"({m('grid25/gan+mbd', q='modes'):.1f} vs {m('grid25/gan', q='modes'):.1f} modes, "
                f"{m('grid25/gan+mbd'):.1f}% vs {m('grid25/gan'):.1f}% HQ). PacGAN's table (row "
                "recalled) shows the same cost on the ring: 4.3 modes / 36.6% HQ against their "
                "GAN's 6.3 / 98.2%.")
    return ""


def render(js: dict[str, Any], meta: dict[str, Any]) -> str:
    sys.path.insert(0, str(HERE))
    import modes as modes_bench

    A = analysis(js)
    L: list[str] = ["# The model zoo, measured", ""]
    L += [(f"Regenerate: `python benchmarks/zoo.py` (all sections, `--jobs 2`); one section: "
          f"`python benchmarks/zoo.py --only SECTION` with SECTION in {', '.join(SECTIONS)}; "
          f"smoke run: `--quick`."), ""]
    L += [(f"Machine: {meta.get('machine', '?')}; torch {meta.get('torch', '?')}; every training on "
          f"one thread, {meta.get('jobs', '?')} at a time. Last full run: "
          f"{meta.get('total_wall_s', float('nan')) / 60:.1f} min wall "
          f"({meta.get('finished', '?')}). Conv families use width "
          f"{meta.get('width', '?')} (DCGAN's default is 64) so that a CPU run trains long enough "
          f"to mean something; `gan` on images is its MLP (2 x 512). The doctor "
          f"(`train.doctor`) is off in every run."), ""]

    # 1. modes ------------------------------------------------------------------------------------
    if "modes" in js:
        sec = js["modes"]
        st = sec["settings"]
        L += ["## 1. Mode collapse, measured (ring8, grid25)", "",
              (f"PacGAN protocol: 2,500 samples from G, high quality (HQ) = within 3 sigma of the "
              f"nearest centre (sigma 0.01 on ring8, 0.05 on grid25), a mode is covered with >= 1 HQ "
              f"sample; KL = KL(HQ samples over modes || uniform). {st['seeds']} seeds, "
              f"{st['steps']} generator steps, batch {st['batch']} (`unrolled`: 512, its point default), each family's default "
              f"optimiser (mean ± std over seeds). The same run is evaluated with the raw G and "
              f"with its EMA (decay 0.999, the trainer's default; G's training is identical)."), ""]
        for data in ("ring8", "grid25"):
            rows = {k: v for k, v in sec["rows"].items() if v["data"] == data}
            if not rows:
                continue
            L += [f"### {data}", "",
                  "| model | modes covered | % high quality | KL | modes (G_ema) | % HQ (G_ema) | CPU s/run |",
                  "|---|---|---|---|---|---|---|"]
            for v in rows.values():
                runs = v["runs"]
                ok = [r for r in runs if r.get("G")]

                def g(w: str, k: str, ok: list = ok) -> list[float]:
                    return [r[w][k] for r in ok if r.get(w)]

                status = {r.get("status") for r in runs} - {"ok"}
                note = f" ({', '.join(sorted(status))}: {len(runs) - len(ok)} of {len(runs)})" \
                    if status else ""
                L.append(f"| gankit `{v['label']}`{note} | {fmt_ms(g('G', 'modes'))} | "
                         f"{fmt_ms(g('G', 'hq'))} | {fmt_ms(g('G', 'kl'), 2)} | "
                         f"{fmt_ms(g('G_ema', 'modes'))} | {fmt_ms(g('G_ema', 'hq'))} | "
                         f"{statistics.mean(r['cpu_s'] for r in runs):.0f} |")
            for p in modes_bench.PUBLISHED:
                if p["data"] == data:
                    L.append(f"| {p['source']}: {p['model']} (published{p.get('flag', '')}) | "
                             f"{p['modes']} | {p['hq']} | {p.get('kl', '')} | | | |")
            L.append("")
        L += ["Published rows: " + modes_bench.PUBLISHED_NOTE, ""]
        if "modes_long" in js:
            lg = js["modes_long"]
            n_long = lg["settings"]["steps"]
            L += [f"### Longer and cooled: the plain `gan`, {n_long} steps", "",
                  (f"Same protocol and seeds; learning rate 2e-4 decayed linearly to 0 over the "
                  f"run (a callback of this script), evaluated with G and G_ema. The "
                  f"constant-rate row at {n_long} steps is `benchmarks/results/modes.json` "
                  f"(`python benchmarks/modes.py --models gan --steps 5000`: same seeds, batch "
                  f"and protocol, EMA off, so G only), when that file is present."), "",
                  "| data | schedule | modes covered | % high quality | modes (G_ema) | % HQ (G_ema) | CPU s/run |",
                  "|---|---|---|---|---|---|---|"]
            ext = {}
            mj = HERE / "results" / "modes.json"
            if n_long == 5000 and mj.exists():
                ext = json.loads(mj.read_text())
            for data in ("ring8", "grid25"):
                if f"{data}/gan" in ext:
                    e = ext[f"{data}/gan"]
                    L.append(f"| {data} | constant 2e-4 (modes.json) | {fmt_ms([r['modes'] for r in e])} | "
                             f"{fmt_ms([r['hq'] for r in e])} | — | — | "
                             f"{statistics.mean(r['seconds'] for r in e):.0f} (wall) |")
                for v in lg["rows"].values():
                    if v["data"] != data:
                        continue
                    ok = [r for r in v["runs"] if r.get("G")]
                    L.append(f"| {data} | 2e-4 -> 0 linearly | "
                             f"{fmt_ms([r['G']['modes'] for r in ok])} | {fmt_ms([r['G']['hq'] for r in ok])} | "
                             f"{fmt_ms([r['G_ema']['modes'] for r in ok if r.get('G_ema')])} | "
                             f"{fmt_ms([r['G_ema']['hq'] for r in ok if r.get('G_ema')])} | "
                             f"{statistics.mean(r['cpu_s'] for r in v['runs']):.0f} |")
            L.append("")
        # remedies against the plain GAN, per dataset; a paragraph for each one that fails
        notes = []
        labels = list(dict.fromkeys(v["label"] for v in sec["rows"].values()))
        for lab in labels:
            if lab == "gan":
                continue
            parts, fails = [], False
            for data in ("ring8", "grid25"):
                rk, bk = sec["rows"].get(f"{data}/{lab}"), sec["rows"].get(f"{data}/gan")
                if not rk or not bk:
                    continue
                rs = {k: mean_std([r["G"][k] for r in rk["runs"] if r.get("G")]) for k in ("modes", "hq")}
                bs = {k: mean_std([r["G"][k] for r in bk["runs"] if r.get("G")]) for k in ("modes", "hq")}
                rm, bm = {k: v[0] for k, v in rs.items()}, {k: v[0] for k, v in bs.items()}
                if any(math.isnan(x) for x in rm.values()):
                    parts.append(f"{data}: no finite result (see Problems)")
                    fails = True
                    continue
                ok = _beats(rm, bm)
                fails |= not ok
                noise = all(abs(rm[k] - bm[k]) <= max(rs[k][1], bs[k][1]) for k in rm)
                verdict = "beats it" if ok else ("does not beat it (within seed noise)" if noise
                                                 else "does not beat it")
                parts.append(f"{data}: {verdict}, {rm['modes']:.1f} vs {bm['modes']:.1f} modes, "
                             f"{rm['hq']:.1f}% vs {bm['hq']:.1f}% HQ")
            if fails:
                notes.append(f"- **`{lab}` vs `gan`** — {'; '.join(parts)}. {why(js, lab)}")
        if notes:
            L += ["### Where a remedy does not beat the plain GAN, and why", ""] + notes + [""]
        L += ["![modes](zoo_modes.png)", ""]
        if "diagnostics" in js:
            L += render_diagnostics(js["diagnostics"])
        L += [A.get("modes", ""), ""]

    # 2. ssl --------------------------------------------------------------------------------------
    if "ssl" in js:
        s = js["ssl"]
        st = s["settings"]
        L += ["## 2. Semi-supervised: `sgan` with 100 labels vs the same D trained on the labels alone", "",
              (f"MNIST-5k: 100 class-balanced labelled training images (seed s draws the subset, "
              f"`choose_labelled`, and the initial weights; the same for both models of a seed), "
              f"the 4,000 training images unlabelled for `sgan`; {st.get('seeds', 1)} seeds; "
              f"{st['steps']} steps of batch 64; D = DCGAN body (width {st['width']}) + 10-way head, "
              f"identical initial weights, Adam 2e-4 (0.5, 0.999) for both. The classifier draws its "
              f"64 labelled examples per step with replacement from the 100, as SGAN's supervised "
              f"term does. Test accuracy on the 1,000 test images, batch norm in eval mode; the "
              f"second column re-estimates batch-norm statistics on the 4,000 unlabelled training "
              f"images first (a diagnostic: SGAN's running statistics also see fakes)."), "",
              "| model | test accuracy | test acc. (BN re-estimated) | per seed | steps | CPU s/run |",
              "|---|---|---|---|---|---|"]
        runs = s["runs"]
        for k, name in (("ssl-sgan", "`sgan` (100 labels + 4,000 unlabelled, feature matching G)"),
                        ("ssl-clf", "same D, 100 labels only")):
            rs = runs.get(k, [])
            bad = [r for r in rs if r.get("status", "ok") != "ok"]
            ok = [r for r in rs if r.get("status", "ok") == "ok"]
            if bad:
                L.append(f"| {name} | {bad[0]['status']}: {bad[0].get('error', '')[:80]} | | | | |")
            if ok:
                per_seed = ", ".join(f"{100 * r['test_acc']:.1f}" for r in ok)
                L.append(f"| {name} | {fmt_ms([100 * r['test_acc'] for r in ok])}% | "
                         f"{fmt_ms([100 * r['test_acc_bn_recal'] for r in ok])}% | "
                         f"{per_seed} | {ok[0]['steps']} | "
                         f"{statistics.mean(r['cpu_s'] for r in ok):.0f} |")
        pairs = [(a, b) for a in runs.get("ssl-sgan", []) for b in runs.get("ssl-clf", [])
                 if a["seed"] == b["seed"] and "test_acc" in a and "test_acc" in b]
        same = all(a.get("labelled_idx") == b.get("labelled_idx") for a, b in pairs)
        if pairs:
            d = [100 * (a["test_acc"] - b["test_acc"]) for a, b in pairs]
            L += ["", (f"Paired difference sgan - classifier, per seed: "
                      f"{', '.join(f'{x:+.1f}' for x in d)} points (mean {statistics.mean(d):+.1f}).")]
        L += ["", f"Same labelled subset in each pair: {'yes' if same else 'NO (see Problems)'}.", "",
              A.get("ssl", ""), ""]

    # 3. conditional -------------------------------------------------------------------------------
    if "conditional" in js:
        c = js["conditional"]
        st = c["settings"]
        ref = js.get("quality", {}).get("reference", {}).get("lenet_test_acc")
        L += ["## 3. Conditional control", "",
              f"{st['steps']} steps, batch 64, width {st['width']}, samples from G_ema. 1,000 samples, "
              f"100 per requested class (cgan, acgan) or per categorical code (infogan), classified "
              f"by the shipped `lenet-mnist`"
              + (f" (its accuracy on the real test images: {100 * ref:.1f}%)" if ref else "")
              + ". InfoGAN's codes are matched one-to-one to lenet's digits by the Hungarian "
              "algorithm; the null is the same matching with the codes shuffled (200 draws).", "",
              "| model | measure | value | worst class / code | CPU s |", "|---|---|---|---|---|"]
        for m in ("cgan", "acgan", "infogan"):
            r = c.get(m)
            if r is None:
                continue
            if r.get("status", "ok") != "ok":
                L.append(f"| `{m}` | {r.get('status')} | {r.get('error', '')[:80]} | | |")
                continue
            conf = np.asarray(r["confusion"])
            if m == "infogan":
                per = [conf[int(a), int(b)] / conf[int(a)].sum() for a, b in r["mapping"].items()]
                L.append(f"| `infogan` | cluster accuracy (best code->digit matching) | "
                         f"{100 * r['cluster_acc']:.1f}% (null {100 * r['null_mean']:.1f}%, "
                         f"99th pct {100 * r['null_p99']:.1f}%) | {100 * min(per):.0f}% | {r['cpu_s']:.0f} |")
            else:
                worst = int(np.argmin(r["per_class_acc"]))
                L.append(f"| `{m}` | sample accuracy | {100 * r['sample_acc']:.1f}% | "
                         f"{100 * r['per_class_acc'][worst]:.0f}% (digit {worst}) | {r['cpu_s']:.0f} |")
        if "infogan" in c and "mapping" in c["infogan"]:
            mp_ = c["infogan"]["mapping"]
            L += ["", "InfoGAN code -> digit: " + ", ".join(f"{k}->{v}" for k, v in sorted(mp_.items(), key=lambda kv: int(kv[0]))),
                  f"; lenet's predicted-digit histogram of its 1,000 samples: {c['infogan']['pred_hist']}."]
        L += ["", "![conditional](zoo_conditional.png)", "", A.get("conditional", ""), ""]

    # 4. wgan -------------------------------------------------------------------------------------
    if "wgan" in js:
        w = js["wgan"]
        st = w["settings"]
        L += ["## 4. WGAN's claim: the critic's estimate tracks sample quality", "",
              (f"MNIST-5k, width {st['width']}, batch 64, EMA off (so FID is measured on the same G the "
              f"critic sees), FID with `lenet-mnist` on {st['eval_n']} samples vs {st['eval_n']} "
              f"training images every k steps (`train.eval_every`); the loss is the mean over the "
              f"k steps before each evaluation (`train.log_every = k`). Spearman rank correlation "
              f"between the loss and FID over the evaluation points: positive = the loss falls "
              f"when FID falls. The second-half column drops the first half of the points (the "
              f"initial collapse of FID from noise, which any monotone trend correlates with)."), "",
              ("| model | signal | steps (every) | points | Spearman rho (p) | 2nd half rho (p) | "
              "rho of changes (p) | FID first -> last (min) | CPU s |"),
              "|---|---|---|---|---|---|---|---|---|"]
        for m in ("wgan-gp", "wgan", "dcgan"):
            r = w.get(m)
            if r is None:
                continue
            if r.get("status", "ok") not in ("ok",):
                L.append(f"| `{m}` | {r.get('status')} | {r.get('error', '')[:90]} | | | | | | |")
                if not r.get("points"):
                    continue
            pts = r["points"]
            r = {**r, **wgan_stats(pts)}
            fids = [p["fid"] for p in pts]
            L.append(f"| `{m}` | `{r['stat']}` | {r['steps']} ({st['runs'][m][1]}) | {len(pts)} | "
                     f"{_f(r.get('spearman'))} ({_f(r.get('spearman_p'), 3)}) | "
                     f"{_f(r.get('spearman_2nd_half'))} ({_f(r.get('spearman_2nd_half_p'), 3)}) | "
                     f"{_f(r.get('spearman_diff'))} ({_f(r.get('spearman_diff_p'), 3)}) | "
                     f"{fids[0]:.1f} -> {fids[-1]:.1f} ({min(fids):.1f}) | {r['cpu_s']:.0f} |")
        L += ["", "![wgan](zoo_wgan.png)", "", A.get("wgan", ""), ""]

    # 5. quality ----------------------------------------------------------------------------------
    if "quality" in js:
        q = js["quality"]
        st = q["settings"]
        L += ["## 5. Sample quality after the same CPU budget (MNIST-5k)", "",
              (f"Every registered family, default hyper-parameters except the width "
              f"({st['width']}), batch {st['batch']}, seed 0, trained until its process had used "
              f"{st['budget_cpu_s']:.0f} CPU seconds (one thread; `time.process_time`, so load "
              f"from other processes does not shorten a budget; chunks of `Trainer.fit`). "
              f"Steps = generator steps reached (D steps = steps x n_critic); img/s = generator "
              f"steps x batch / CPU s. {st['n_fake']} samples of G_ema (seed 1) against the "
              f"{st['n_real']} training images, `lenet-mnist` features: FID, KID (100 subsets; "
              f"lenet's 128-d features are not normalised, so KID is on a large scale: real test "
              f"images ~0, noise ~360), precision/recall (k = 3). Sorted by FID."), "",
              "| model | steps | D steps | CPU s (wall s) | img/s | FID | KID | precision | recall | status |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        rows = sorted(q["models"].items(), key=lambda kv: kv[1].get("fid", float("inf")))
        for m, r in rows:
            if r.get("status") == "crash":
                L.append(f"| `{m}` | | | | | | | | | crash: {r.get('error', '')[:100]} |")
                continue
            L.append(f"| `{m}` | {r['steps']} | {r['steps'] * r['n_critic']} | "
                     f"{r['train_cpu_s']:.0f} ({r['train_wall_s']:.0f}) | {r['img_per_s']:.0f} | "
                     f"{_f(r.get('fid'), 1)} | {_f(r.get('kid_mean'), 1)} | "
                     f"{_f(r.get('precision'))} | {_f(r.get('recall'))} | {r.get('status')} |")
        ref = q.get("reference")
        if ref and ref.get("status", "ok") == "ok":
            for name, k in (("real test images (1,000)", "test"), ("uniform noise (1,000)", "noise")):
                v = ref[k]
                L.append(f"| *{name}* | | | | | {v['fid']:.1f} | {v['kid_mean']:.1f} | "
                         f"{v['precision']:.2f} | {v['recall']:.2f} | reference |")
        L += ["", "![quality](zoo_quality.png)", "", A.get("quality", ""), ""]

    # problems -------------------------------------------------------------------------------------
    L += ["## Problems found", ""] + (meta.get("problems") or ["- none detected automatically"]) + [""]
    L += [A.get("problems", ""), ""]
    return "\n".join(x for x in L) + "\n"


def render_diagnostics(dg: dict[str, Any]) -> list[str]:
    """The follow-up runs (``--only diagnostics``): one seed each, ring8, same protocol."""
    L = ["### Diagnostics of surprising rows (`python benchmarks/zoo.py --only diagnostics`)", "",
         ("One seed (0), ring8, batch 100 (the `unrolled` rows 512 unless named), same protocol. `estimate` is the logged critic "
         "estimate E[D(real)] - E[D(fake)] (mean over each logging interval, measured before "
         "each critic step); a critic that is ahead of the generator keeps it positive."), "",
         "| run | steps | modes | % HQ | modes (G_ema) | % HQ (G_ema) | `wasserstein/estimate` over training |",
         "|---|---|---|---|---|---|---|"]
    for label, r in dg.items():
        if r.get("status", "ok") != "ok" and not r.get("G"):
            L.append(f"| {label} | {r['steps']} | {r.get('status')}: {r.get('error', '')[:80]} | | | | |")
            continue
        g, e = r.get("G") or {}, r.get("G_ema") or {}
        est = [h.get("wasserstein/estimate") for h in r.get("history", [])]
        est_s = ", ".join(f"{x:+.2g}" for x in est if isinstance(x, (int, float))) or "—"
        L.append(f"| {label} | {r['steps']} | {_f(g.get('modes'), 0)} | {_f(g.get('hq'))} | "
                 f"{_f(e.get('modes'), 0)} | {_f(e.get('hq'))} | {est_s} |")
    return L + [""]


def analysis(js: dict[str, Any]) -> dict[str, str]:
    """Interpretation of each section, written after reading a full run; every number is read
    from the results so a rerun updates it (the wording assumes the qualitative outcome)."""
    A: dict[str, str] = {}
    m = lambda k, w="G", q="hq": _row_mean(js, "modes", k, w, q)
    if "modes" in js:
        lg = lambda k, w="G", q="hq": _row_mean(js, "modes_long", k, w, q)
        mj = HERE / "results" / "modes.json"
        const = json.loads(mj.read_text()) if mj.exists() else {}
        c5 = {d: mean_std([r["hq"] for r in const.get(f"{d}/gan", [])])[0] for d in ("ring8", "grid25")}
        A["modes"] = (
            "**Why our plain GAN has far fewer high-quality samples than PacGAN's (98.2% on the "
            "ring).** Measured, in order of effect on ring8: (1) *the learning-rate schedule*: "
            "a constant 2e-4 (Adam, beta1 0.5) keeps G jittering around each mode by more than "
            "3 sigma (0.03); decaying it linearly to 0 over 5,000 steps raises ring8 HQ from "
            f"{c5['ring8']:.1f}% (constant, modes.json) to {lg('ring8/gan (long, cooled lr)'):.1f}% "
            "with all 8 modes kept. (2) *EMA*: at 2,000 steps the EMA of G lifts ring8 HQ from "
            f"{m('ring8/gan'):.1f}% to {m('ring8/gan', 'G_ema'):.1f}% and covers all 8 modes "
            "(it averages the jitter away); after a cooled schedule it adds nothing "
            f"({lg('ring8/gan (long, cooled lr)', 'G_ema'):.1f}%), G has stopped moving; on grid25 "
            f"at 2,000 steps it hurts ({m('grid25/gan'):.1f}% -> {m('grid25/gan', 'G_ema'):.1f}%) "
            "because G is still moving mass between modes and the average lands between them. "
            "(3) *length and networks*: PacGAN train 400,000 generator steps (80x our 5,000) with "
            "a maxout D, Adam 1e-4 and beta1 0.8; on grid25 cooling barely helps at 5,000 steps "
            f"({c5['grid25']:.1f}% -> {lg('grid25/gan (long, cooled lr)'):.1f}%), so there the gap "
            "is length and architecture, which this budget cannot test. The published GANs "
            "disagree with each other too (VEEGAN's collapsed to 1 ring mode at 99.3% HQ, PacGAN's "
            "covers 6.3): on these mixtures collapse depends on networks and optimiser as much as "
            "on the loss. Our plain GAN never collapsed to a single mode.")
    ssl = js.get("ssl", {}).get("runs", {})
    pairs = [(a, b) for a in ssl.get("ssl-sgan", []) for b in ssl.get("ssl-clf", [])
             if a["seed"] == b["seed"] and "test_acc" in a and "test_acc" in b]
    if pairs:
        d = [100 * (a["test_acc"] - b["test_acc"]) for a, b in pairs]
        n_pos = sum(x > 0 for x in d)
        st = js["ssl"]["settings"]
        A["ssl"] = (
            f"SGAN beats the same D trained on the labels alone in {n_pos} of {len(d)} seeds, by "
            f"{statistics.mean(d):+.1f} points on average: the real/fake game on the 4,000 "
            "unlabelled images shapes D's features (Odena 2016; Salimans et al. 2016 §5). Both "
            "stay far below Salimans et al.'s result (under 1% test error with 100 labels and all "
            f"60,000 MNIST images, with much longer training): here {st['steps']} steps x 64 = "
            f"{st['steps'] * 64 / 4000:.0f} passes over 4,000 images at width {st['width']} on one "
            "thread. The direction of the claim reproduces; its size needs far more training. "
            "Re-estimating batch-norm statistics on real images changes little, so SGAN's running "
            "statistics mixing in fakes is not what limits it.")
    c = js.get("conditional", {})
    if all(k in c and c[k].get("status", "ok") == "ok" for k in ("cgan", "acgan", "infogan")):
        cg, ac, ig = c["cgan"], c["acgan"], c["infogan"]
        conf = np.asarray(ig["confusion"])
        dom = np.bincount(conf.argmax(1), minlength=10)
        errs = []
        for name, r in (("cgan", cg), ("acgan", ac)):
            cf = np.asarray(r["confusion"])
            worst = int(np.argmin(np.diag(cf) / cf.sum(1)))
            wrong = cf.sum(0) - np.diag(cf)
            errs.append(f"`{name}`: worst requested digit {worst} "
                        f"({100 * cf[worst, worst] / cf[worst].sum():.0f}%), and "
                        f"{100 * wrong.max() / wrong.sum():.0f}% of its errors are read as "
                        f"{int(wrong.argmax())}")
        merged = [int(k) for k in np.nonzero(dom > 1)[0]]
        A["conditional"] = (
            f"After {c['settings']['steps']} steps (one seed) both conditional models follow the "
            f"requested class for most samples (cgan {100 * cg['sample_acc']:.1f}%, acgan "
            f"{100 * ac['sample_acc']:.1f}%; chance is 10%). AC-GAN's auxiliary classifier pushes G "
            "towards class-recognisable images, as Odena et al. argue; its edge over CGAN here is "
            f"one seed. Errors are not uniform ({'; '.join(errs)}): badly drawn strokes fall "
            "into a few of lenet's classes (zoo_conditional.png). InfoGAN's categorical code is not yet a digit "
            f"label: the best code-to-digit matching scores {100 * ig['cluster_acc']:.1f}% against "
            f"{100 * ig['null_mean']:.1f}% for shuffled codes (99th percentile "
            f"{100 * ig['null_p99']:.1f}%), so the code carries digit information, but several codes "
            f"draw the same digit (digits {merged} are the majority class of more than one code) "
            "and some digits belong to no code. Chen et al. report the code classifying MNIST "
            "with about 5% error after full training; 1,000 steps at width 32 is far from that.")
    w = js.get("wgan", {})
    if all(k in w and w[k].get("points") for k in ("wgan-gp", "dcgan")):
        st = {k: wgan_stats(w[k]["points"]) for k in ("wgan-gp", "wgan", "dcgan") if k in w}
        g, dc = st["wgan-gp"], st["dcgan"]
        txt = (
            f"WGAN-GP's estimate falls as FID falls (rho {g.get('spearman', float('nan')):+.2f} over "
            f"all points, {g.get('spearman_2nd_half', float('nan')):+.2f} over the second half, "
            f"{g.get('spearman_diff', float('nan')):+.2f} between consecutive changes). The DCGAN "
            "discriminator's loss does the opposite: it *rises* while FID falls (rho "
            f"{dc.get('spearman', float('nan')):+.2f}), because D's task gets harder as G "
            "improves, and later it is unrelated to FID (second half "
            f"{dc.get('spearman_2nd_half', float('nan')):+.2f}, changes "
            f"{dc.get('spearman_diff', float('nan')):+.2f}). ")
        if "wgan" in st:
            ww = st["wgan"]
            txt += (
                "With weight clipping (`wgan`) the estimate first rises while the clipped critic "
                "grows into its weight box, then falls with FID (all points "
                f"{ww.get('spearman', float('nan')):+.2f}, second half "
                f"{ww.get('spearman_2nd_half', float('nan')):+.2f}, changes "
                f"{ww.get('spearman_diff', float('nan')):+.2f}): the estimate is comparable "
                "over time only once the critic has caught up, as Arjovsky et al. note. ")
        txt += (
            "Caveats: 10 evaluation points per run, one seed, and short runs in which FID falls "
            "almost monotonically, so two curves that both fall over time get |rho| near 1 over "
            "the whole run; the correlation of consecutive changes is the stricter test, and with "
            "9 changes its p-values are large. On the 2-D mixtures, with these image settings "
            "(lambda = 10) the WGAN-GP critic never got ahead of its generator and its estimate "
            "was negative (diagnostics in section 1): the estimate is only meaningful when the "
            "critic is near its optimum.")
        A["wgan"] = txt
    q = js.get("quality", {})
    if q.get("models") and q.get("reference"):
        noise = q["reference"]["noise"]["fid"]
        worse = sorted(k for k, r in q["models"].items() if r.get("fid", float("inf")) > noise)
        best = sorted(q["models"].items(), key=lambda kv: kv[1].get("fid", float("inf")))[:4]
        steps = {k: r.get("steps", 0) for k, r in q["models"].items()}
        best_s = ", ".join(f"`{k}` {r['fid']:.0f}" for k, r in best)
        one_d = ("infogan", "acgan", "fgan", "dcgan", "cgan", "sgan", "lsgan")
        one = [steps[k] for k in one_d if k in steps]
        worse_s = ", ".join(f"`{k}`" for k in worse) or "none"
        budget = q["settings"]["budget_cpu_s"]
        fids = {k: r.get("fid", float("inf")) for k, r in q["models"].items()}
        costly = [k for k in ("wgan", "wgan-gp", "sngan", "began", "ebgan", "unrolled")
                  if k in steps]
        cheap_best = [k for k, _ in best if k in one_d]
        uncond = sorted((k for k in fids if k not in ("acgan", "cgan")), key=fids.get)
        far = sorted((k for k in costly if fids[k] > 0.5 * noise), key=fids.get)
        A["quality"] = (
            f"At {budget:.0f} CPU seconds the ranking follows the cost of a step as much as the "
            f"method. The best FIDs ({best_s}) belong to families with DCGAN networks and one D "
            f"step per G step ({', '.join(f'`{k}`' for k in cheap_best)}), which reach "
            f"{min(one)}-{max(one)} steps; `acgan` and `cgan` are also told the class of every "
            "sample, which the unconditional families must discover. Among the unconditional "
            f"ones `{uncond[0]}` is first"
            + (" (its generator's learning rate is 1e-3, the paper's, 5x the others')"
               if uncond[0] == "infogan" else "") + ". "
            "Families that pay per step (5 critic steps: `wgan`, `wgan-gp`, `sngan`; an "
            "autoencoder D at full resolution: `began`, `ebgan`; 5 unrolled D updates: "
            "`unrolled`) reach "
            f"{min(steps[k] for k in costly)}-{max(steps[k] for k in costly)} steps"
            + (" (a step costs "
               + ", ".join(f"`{k}` {steps['dcgan'] / max(steps[k], 1):.0f}x"
                           for k in sorted(costly, key=steps.get))
               + " DCGAN's at this width; `sngan`, `began` and `ebgan` are FLOP-bound, "
               "`benchmarks/results/family_speed.md`)" if "dcgan" in steps else "")
            + (f"; {worse_s} are still above uniform noise's FID ({noise:.0f})" if worse else
               f"; all are below uniform noise's FID ({noise:.0f})")
            + (f", and {', '.join(f'`{k}` ({fids[k]:.0f})' for k in far)} remain above half of it"
               if far else "") + ". "
            "This inverts the papers' ranking (WGAN-GP, SNGAN, BEGAN beat DCGAN at convergence), "
            f"which is about 10^5 steps on GPUs, not {budget:.0f} CPU seconds. "
            f"The MLP `gan` takes {steps.get('gan', 0)} steps, the most, but draws speckled digits. "
            "**Precision is unreliable here**: uniform noise gets precision "
            f"{q['reference']['noise']['precision']:.2f} with lenet features, because noise "
            "images map to a tight cluster near the origin of the feature space that falls inside "
            "the 3-NN balls of a few outlying real images; precision near 1 with recall near 0 "
            "means collapsed or noise-like samples, not good ones. Read FID, KID and recall.")
    A["problems"] = PROBLEMS_TEXT
    return A


# Problems found while building this benchmark (not detectable from the results alone).
PROBLEMS_TEXT = """Found by hand while building and running this benchmark:

- **FIXED: `gankit.registry.FEATURES` was empty in a fresh process** until `gankit.metrics` was
  imported (`FEATURES.get('lenet-mnist')` raised "unknown feature extractor"; the first smoke run
  of this script crashed `acgan`'s conditional task on it). Registries now import the module
  that fills them on first lookup.
- **Precision with `lenet-mnist` rewards noise**: uniform noise scores precision 1.00, recall
  0.00 against the MNIST-5k training images (section 5), so precision is near 1 for every
  untrained generator. Reproduce: `python benchmarks/eval_table.py` (its noise row) or
  `from gankit.metrics import precision_recall` on lenet features of `torch.rand(1000, 1, 28,
  28) * 2 - 1`.
- **FIXED: WGAN-GP's critic lost on ring8**: with Algorithm 1's image settings (lambda = 10,
  beta1 = 0) the logged `wasserstein/estimate` stayed negative and G wandered as a cloud, in the
  Trainer and in a hand-written loop alike. `wgan-gp` now defaults to the authors' toy-code
  settings on points (lambda = 0.1, betas (0.5, 0.9); `ModelFamily.data_defaults`); the old
  behaviour is the diagnostics row "wgan-gp, image settings". Likewise `unrolled` now defaults
  to Adam 1e-3 and batch 512 on points (its row "K=5, lr 1e-4" shows the old setting).
- **`train.doctor` is on by default** (`config.py`): every run gets sample probes every 250
  steps and may be rolled back with lower learning rates on divergence, which changes the cost
  and possibly the result of a benchmark run; every run here sets `train.doctor=false`
  (`--doctor` keeps it on). Not a bug, but benchmarks and papers' settings need it off.
- **KID with `lenet-mnist` is on a large scale** (noise ~360, real test images ~-2): lenet's
  features are not normalised, so KID values are not comparable to Inception-KID values."""




def find_problems(js: dict[str, Any]) -> list[str]:
    """Crashes, NaNs and inconsistencies, each with a command to reproduce it."""
    out = []

    def add(where: str, r: dict[str, Any], cmd: str) -> None:
        if r.get("status", "ok") != "ok":
            out.append(f"- **{where}**: {r['status']} — `{r.get('error', '')[:300]}`. Reproduce: `{cmd}`")

    for sec in ("modes", "modes_long"):
        for v in js.get(sec, {}).get("rows", {}).values():
            for r in v["runs"]:
                ov = " ".join(f"--set {k}={json.dumps(x)}" for k, x in v["overrides"].items())
                add(f"{sec} {v['data']} {v['label']} seed {r['seed']}", r,
                    f"gankit train {v['model']} --data {v['data']} --steps {v['steps']} "
                    f"--batch-size 100 --seed {r['seed']} {ov}".strip())
    ssl_runs = js.get("ssl", {}).get("runs", {})
    for k, rs in ssl_runs.items():
        for r in rs:
            add(f"ssl {k} seed {r['seed']}", r, "python benchmarks/zoo.py --only ssl")
    for a in ssl_runs.get("ssl-sgan", []):
        for b in ssl_runs.get("ssl-clf", []):
            if a["seed"] == b["seed"] and a.get("labelled_idx") != b.get("labelled_idx"):
                out.append(f"- **ssl seed {a['seed']}**: the SGAN run and the classifier used "
                           f"different labelled subsets. Reproduce: `python benchmarks/zoo.py --only ssl`")
    for m, r in js.get("conditional", {}).items():
        if m != "settings":
            add(f"conditional {m}", r, "python benchmarks/zoo.py --only conditional")
    for m, r in js.get("wgan", {}).items():
        if m != "settings":
            add(f"wgan {m}", r, "python benchmarks/zoo.py --only wgan")
    for m, r in js.get("quality", {}).get("models", {}).items():
        w = r.get("config", {})
        sets = " ".join(f"--set {k}={v}" for k, v in w.items())
        add(f"quality {m}", r, f"gankit train {m} --data mnist5k --steps {r.get('steps', 100)} "
                               f"{sets}".strip())
    return out


# -- main ---------------------------------------------------------------------------------------------
def run_all(tasks: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    results = []
    t0 = time.perf_counter()

    def show(r: dict[str, Any]) -> None:
        t = r["task"]
        what = " ".join(str(t[k]) for k in ("section", "data", "label", "model", "seed") if k in t)
        extra = r.get("error", "")[:120] if r.get("status") != "ok" else ""
        print(f"[{time.perf_counter() - t0:7.0f} s] {len(results):3d}/{len(tasks)} {what}: "
              f"{r.get('status')} {r['cpu_s']:.0f} CPU s {extra}", flush=True)

    if jobs <= 1:
        for t in tasks:
            results.append(run_task(t))
            show(results[-1])
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(jobs, initializer=_init_worker) as pool:
            for r in pool.imap_unordered(run_task, tasks):
                results.append(r)
                show(r)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=SECTIONS + EXTRA_SECTIONS,
                    help="run only this section (repeatable); merged into the existing JSON")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, output to /tmp")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once (each on one thread)")
    ap.add_argument("--budget", type=float, default=None, help="CPU s per model (quality section)")
    ap.add_argument("--doctor", action="store_true", help="leave train.doctor on")
    ap.add_argument("--out", type=Path, default=None,
                    help="zoo.md path (default benchmarks/results/zoo.md; --quick: a temp folder)")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite zoo.md from the existing zoo.json (no training)")
    a = ap.parse_args()
    _init_worker()
    S = dict(QUICK if a.quick else FULL)
    if a.budget is not None:
        S["budget"] = a.budget
    out_md = a.out or (Path(tempfile.gettempdir()) / "gankit-zoo-quick" / "zoo.md" if a.quick
                       else HERE / "results" / "zoo.md")
    out_dir = out_md.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    out_json = out_md.with_suffix(".json")
    if a.render_only:
        js = json.loads(out_json.read_text())
        js["meta"]["problems"] = find_problems(js)
        if "wgan" in js:
            plot_wgan(js["wgan"], out_dir)
        out_md.write_text(render(js, js["meta"]))
        print(f"wrote {out_md}")
        return
    sections = list(a.only or SECTIONS)
    base = _base_overrides(a.doctor)
    tasks = build_tasks(sections, S, base)
    print(f"{len(tasks)} tasks, {a.jobs} jobs, sections {sections}, out {out_md}", flush=True)
    t0 = time.perf_counter()
    results = run_all(tasks, a.jobs)
    wall = time.perf_counter() - t0
    new = aggregate(results, S)
    js = json.loads(out_json.read_text()) if (a.only and out_json.exists()) else {}
    meta = js.get("meta", {})
    js.update(new)
    if "modes" in sections and "modes_long" not in new:
        js.pop("modes_long", None)
    meta.update({"machine": f"{platform.platform()}, {os.cpu_count()} cores",
                 "torch": torch.__version__, "python": platform.python_version(),
                 "jobs": a.jobs, "width": S["width"], "quick": a.quick,
                 "settings": {k: v for k, v in S.items() if k != "modes_models"},
                 "modes_models": [[lab, m, ov] for lab, m, ov in S["modes_models"]]})
    meta.setdefault("section_wall_s", {})
    for s in sections:
        meta["section_wall_s"][s] = round(wall, 1)  # sections of one invocation share the pool
    if not a.only:
        meta["total_wall_s"] = round(wall, 1)
        meta["finished"] = time.strftime("%Y-%m-%d %H:%M")
    meta["task_cpu_s"] = {**meta.get("task_cpu_s", {}), **{
        s: round(sum(r["cpu_s"] for r in results if r["task"]["section"].startswith(s)), 1)
        for s in sections}}
    if a.only:
        meta.setdefault("extra_runs", {})
        meta["extra_runs"][",".join(sections)] = {"wall_s": round(wall, 1),
                                                  "finished": time.strftime("%Y-%m-%d %H:%M")}
    meta["problems"] = find_problems(js)
    js["meta"] = meta
    out_json.write_text(json.dumps(js, indent=1, default=float) + "\n")
    plots = [plot_modes(results, out_dir, S), plot_conditional(results, out_dir),
             plot_quality(results, out_dir), plot_wgan(js.get("wgan", {}), out_dir)
             if "wgan" in sections else None]
    out_md.write_text(render(js, meta))
    print(f"wrote {out_md}, {out_json}, {[str(p) for p in plots if p]} in {wall / 60:.1f} min",
          flush=True)
    for p in meta["problems"]:
        print(p)


if __name__ == "__main__":
    main()
