"""``gankit bench``: generative models side by side, on one dataset, under one training budget.

Every (model, seed) is trained by the ordinary Trainer until a time budget is spent
(``train.max_seconds`` of wall or CPU time, ``train.budget_kind``), then evaluated with one
protocol on the held-out split of the data:

* sample quality and diversity from ``n`` samples against ``n`` test examples, with gankit's
  metrics (:func:`gankit.metrics.evaluate.evaluate_sets`): lenet FID / KID and improved
  precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020) on
  digits; modes covered, high-quality fraction and KL of the mode histogram to uniform on the
  toy mixtures (ring8, grid25);
* the held-out negative log-likelihood where the family has ``log_prob``, through its
  ``likelihood()`` declaration (:mod:`gankit.likelihood`): bits per dimension for binary and
  dequantized 8-bit images, nats per point for continuous data, labelled exact / bound /
  estimate;
* the Parzen-window log-likelihood of Breuleux et al. 2009 as used in Goodfellow et al. 2014
  (Table 1): a Gaussian kernel on each sample, the bandwidth chosen on a validation half of the
  test split and the mean log-likelihood reported on the other half (images scaled to [0, 1]).
  Theis et al. 2016 showed that this estimate is unreliable in high dimension: it can rank
  models opposite to their true likelihoods, so the leaderboard prints that caveat beside it;
* a sharpness statistic, the mean variance of the Laplacian of the samples
  (:func:`gankit.metrics.paired.laplacian_variance`), with the data's own value as reference;
* cost: sampling time per example, training time and steps done within the budget, and the
  number of parameters of the trained networks.

A reference row scores ``n`` training examples with the same protocol (the floor of FID, the
data's sharpness). The bench folder holds ``bench.json`` (everything, per seed), one gankit run
per (model, seed) under ``runs/``, a sample picture per entry under ``samples/``,
``leaderboard.md`` and ``leaderboard.html``. It is resumable: a bench run again on its folder
keeps every evaluated entry, resumes an interrupted training from its checkpoint (``gankit
resume``), and evaluates what was trained but not yet evaluated.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError, DataError

__all__ = ["COLUMNS", "THEIS_CAVEAT", "BenchSpec", "leaderboard_rows", "parse_budget",
           "parse_seeds", "parse_sets", "parzen_log_likelihood", "parzen_select", "render_html",
           "render_markdown", "run_bench", "theis_findings"]

#: The caveat printed beside every Parzen number.
THEIS_CAVEAT = ("Parzen-window estimates are unreliable in high dimension: Theis et al. 2016 "
                "show they can rank models opposite to their true log-likelihoods (a k-means "
                "of the training set beats the true model); read them as the historical "
                "protocol of Goodfellow et al. 2014, not as likelihoods.")

#: Maximum steps of a budgeted training (the budget stops it long before).
DEFAULT_MAX_STEPS = 1_000_000

# (result key, column header, direction, format): the leaderboard's columns, in order; a column
# is shown when some entry has a value for it. Direction: "↓" lower is better, "↑" higher is
# better, "" neither (cost or descriptive).
COLUMNS: list[tuple[str, str, str, str]] = [
    ("fid", "FID", "↓", ".2f"),
    ("kid_mean", "KID", "↓", ".4f"),
    ("precision", "precision", "↑", ".3f"),
    ("recall", "recall", "↑", ".3f"),
    ("density", "density", "↑", ".3f"),
    ("coverage", "coverage", "↑", ".3f"),
    ("modes_covered", "modes", "↑", ".1f"),
    ("high_quality_frac", "high-quality", "↑", ".3f"),
    ("kl_to_uniform", "KL(modes, uniform)", "↓", ".3f"),
    ("nll_bpd", "NLL bits/dim", "↓", ".3f"),
    ("nll_nats", "NLL nats", "↓", ".2f"),
    ("parzen_ll", "Parzen LL nats*", "↑", ".1f"),
    ("sharpness", "sharpness", "≈ data", ".4f"),
    ("sample_ms", "sample ms/ex", "↓", ".3f"),
    ("train_seconds", "train s", "", ".0f"),
    ("steps", "steps", "", ".0f"),
    ("params", "params", "", ",.0f"),
]
DIRECTION_TEXT = {"↓": "lower is better", "↑": "higher is better",
                  "≈ data": "closer to the data's value is better (higher: sharper)",
                  "": "cost, for reading the others"}


# -------------------------------------------------------------------------------------------
# the spec
# -------------------------------------------------------------------------------------------

def parse_budget(text: str | float) -> float:
    """``"120s"``, ``"2m"``, ``"1.5h"`` or a number of seconds -> seconds (> 0)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        secs = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h)?\s*", str(text))
        if m is None:
            raise ConfigError(f"--budget '{text}' is not a duration (e.g. 120s, 2m, 1.5h)")
        secs = float(m.group(1)) * {"s": 1, "sec": 1, None: 1, "m": 60, "min": 60,
                                    "h": 3600}[m.group(2)]
    if not secs > 0 or not math.isfinite(secs):
        raise ConfigError(f"--budget must be a positive duration, got '{text}'")
    return secs


def parse_seeds(text: str | list[int] | int) -> list[int]:
    """``"0,1,2"`` (or a list) -> distinct non-negative seeds in the given order."""
    items = text if isinstance(text, list) else [s for s in str(text).split(",") if s.strip()]
    out: list[int] = []
    for s in items:
        try:
            v = int(str(s).strip())
        except ValueError:
            raise ConfigError(f"--seeds '{text}': '{s}' is not an integer") from None
        if v < 0:
            raise ConfigError(f"--seeds '{text}': seeds must be >= 0")
        if v not in out:
            out.append(v)
    if not out:
        raise ConfigError("--seeds names no seed (e.g. --seeds 0,1,2)")
    return out


def parse_sets(items: list[str] | dict[str, Any] | None, models: list[str]) -> dict[str, list[str]]:
    """Per-model settings: ``MODEL:key=value`` for one model, ``key=value`` for every model
    (a YAML bench config may give ``{MODEL: {key: value}}`` or ``{MODEL: [key=value]}``; the
    model ``all`` means every model). Keys are config keys (``model.width=32``), or
    ``sample.OPTION`` / ``log_prob.OPTION`` for the options of the family's ``sample`` /
    ``log_prob`` (``vae:log_prob.k=100``). Returns ``{model: [key=value, ...]}``, general
    settings first."""
    pairs: list[tuple[str | None, str]] = []
    if isinstance(items, dict):
        for m, v in items.items():
            m = None if m in ("all", "*") else str(m)
            vals = v if isinstance(v, list) else [f"{k}={json.dumps(x)}" for k, x in
                                                  (v or {}).items()]
            pairs += [(m, str(x)) for x in vals]
    else:
        for it in items or []:
            head, eq, _ = it.partition("=")
            if not eq:
                raise ConfigError(f"--set expects [MODEL:]key=value, got '{it}'")
            m, colon, key = head.partition(":")
            pairs.append((m.strip(), f"{key.strip()}={it.partition('=')[2]}") if colon
                         else (None, it))
    out: dict[str, list[str]] = {m: [] for m in models}
    for m, kv in pairs:
        if m is not None and m not in out:
            raise ConfigError(f"--set {m}:{kv}: '{m}' is not among the benched models "
                              f"({', '.join(models)})")
        for k in ([m] if m is not None else models):
            out[k].append(kv)
    return out


@dataclass
class BenchSpec:
    """What a bench trains and how it evaluates (``bench.json``'s ``spec``).

    ``budget`` seconds of ``budget_kind`` time (``wall`` or ``cpu``) per (model, seed), capped
    at ``max_steps`` steps; ``n`` samples against ``n`` test examples for the sample metrics
    and the Parzen kernels; ``nll_n`` test examples for the likelihood; ``sets`` the per-model
    settings of :func:`parse_sets`.
    """

    data: str
    models: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    budget: float = 120.0
    budget_kind: str = "wall"
    max_steps: int = DEFAULT_MAX_STEPS
    n: int = 1000
    nll_n: int = 1000
    sets: dict[str, list[str]] = field(default_factory=dict)
    eval_seed: int = 0

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("--models names no model (e.g. --models dcgan,vae)")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"--models names a model twice: {','.join(self.models)}")
        if self.budget_kind not in ("wall", "cpu"):
            raise ConfigError(f"--budget-kind must be wall or cpu, got '{self.budget_kind}'")
        for k in ("max_steps", "n", "nll_n"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{k.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.n < 10:
            raise ConfigError(f"n must be >= 10 samples for the set metrics, got {self.n}")
        self.sets = {m: list(self.sets.get(m, [])) for m in self.models}

    def shared(self) -> dict[str, Any]:
        """What every entry of a bench folder must share (its evaluations compare)."""
        return {k: getattr(self, k) for k in ("data", "budget", "budget_kind", "max_steps",
                                               "n", "nll_n", "eval_seed")}

    def split_sets(self, model: str) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        """``(config overrides, sample options, log_prob options)`` of ``model``."""
        from .config import parse_value

        over, samp, lp = [], {}, {}
        for kv in self.sets.get(model, []):
            key, _, val = kv.partition("=")
            if key.startswith("sample."):
                samp[key[7:]] = parse_value(val)
            elif key.startswith("log_prob."):
                lp[key[9:]] = parse_value(val)
            else:
                over.append(kv)
        return over, samp, lp


# -------------------------------------------------------------------------------------------
# Parzen windows (Breuleux et al. 2009; Goodfellow et al. 2014)
# -------------------------------------------------------------------------------------------

def _sq_dists(x: Tensor, c: Tensor, chunk: int = 512) -> Tensor:
    """Squared Euclidean distances ``[len(x), len(c)]`` in float64."""
    x, c = x.double().flatten(1), c.double().flatten(1)
    cn = (c * c).sum(1)
    out = []
    for i in range(0, len(x), chunk):
        xi = x[i:i + chunk]
        out.append(((xi * xi).sum(1, keepdim=True) + cn - 2 * xi @ c.T).clamp_min(0))
    return torch.cat(out)


def _parzen_from_d2(d2: Tensor, dims: int, sigma: float) -> Tensor:
    n = d2.shape[1]
    return (torch.logsumexp(-d2 / (2 * sigma ** 2), 1) - math.log(n)
            - 0.5 * dims * math.log(2 * math.pi * sigma ** 2))


def parzen_log_likelihood(centers: Tensor, x: Tensor, sigma: float) -> Tensor:
    """``log p(x_j)`` ``[len(x)]`` in nats under the Gaussian kernel density of ``centers``:
    ``p(x) = (1/n) sum_i N(x; c_i, sigma^2 I)`` (rows flattened)."""
    if sigma <= 0:
        raise ConfigError(f"sigma must be > 0, got {sigma}")
    dims = int(np.prod(x.shape[1:]))
    return _parzen_from_d2(_sq_dists(x, centers), dims, float(sigma))


def parzen_select(centers: Tensor, val: Tensor, test: Tensor,
                  sigmas: np.ndarray | list[float]) -> dict[str, Any]:
    """The Parzen-window protocol: the bandwidth among ``sigmas`` with the highest mean
    log-likelihood of ``val``, then the mean (and standard error) on ``test``."""
    dims = int(np.prod(test.shape[1:]))
    d2v, d2t = _sq_dists(val, centers), _sq_dists(test, centers)
    sig = [float(s) for s in sigmas]
    val_ll = [float(_parzen_from_d2(d2v, dims, s).mean()) for s in sig]
    best = int(np.argmax(val_ll))
    lt = _parzen_from_d2(d2t, dims, sig[best])
    return {"parzen_ll": float(lt.mean()), "parzen_se": float(lt.std() / math.sqrt(len(lt))),
            "parzen_sigma": sig[best], "parzen_sigma_at_edge": best in (0, len(sig) - 1)}


def _parzen_space(x: Tensor) -> Tensor:
    """Images to [0, 1] (the scale of Goodfellow et al. 2014's MNIST numbers), flattened;
    points unchanged."""
    return ((x.float() + 1) / 2).flatten(1) if x.dim() > 2 else x.float()


def _sigma_grid(x_test: Tensor) -> np.ndarray:
    if x_test.dim() > 2:
        return np.geomspace(0.02, 1.0, 21)
    scale = float(x_test.float().std(0).pow(2).mean().sqrt())
    return np.geomspace(1e-3, 1.0, 31) * scale


# -------------------------------------------------------------------------------------------
# evaluation of one model
# -------------------------------------------------------------------------------------------

def param_count(model: Any) -> int:
    """Parameters of the family's networks, trained and frozen (EMA copies not counted)."""
    nets = {**model.networks(), **model.frozen_networks()}
    return int(sum(p.numel() for net in nets.values() for p in net.parameters()))


def _real_sets(ds: Any, spec: BenchSpec) -> dict[str, Tensor]:
    from .metrics.evaluate import _subsample

    if ds.x_test is None:
        raise DataError(f"gankit bench evaluates on held-out data; '{ds.name}' has no test split")
    x_test = ds.x_test if torch.is_tensor(ds.x_test) else torch.as_tensor(ds.x_test[:])
    n = min(spec.n, len(x_test))
    half = len(x_test) // 2
    return {"real": _subsample(x_test, n, spec.eval_seed), "nll": x_test[:spec.nll_n],
            "parzen_val": x_test[:half], "parzen_test": x_test[half:],
            "train": _subsample(ds.x, n, spec.eval_seed)}


def evaluate_samples(fake: Tensor, ds: Any, spec: BenchSpec, real: dict[str, Tensor]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sample metrics of ``fake`` (set metrics, Parzen, sharpness): (results, protocol)."""
    from .metrics.evaluate import default_metrics, evaluate_sets

    info = ds.info
    names = default_metrics(real["real"], "centers" in info, info)
    if "centers" in info and "dc" not in names:
        names = [*names, "dc"]
    key = {"dataset": ds.name, "split": "test", "seed": spec.eval_seed, "bench": True}
    ev = evaluate_sets(real["real"], fake, metrics=names, dataset=ds.name, info=info,
                       real_key=key, seed=spec.eval_seed)
    res = dict(ev["results"])
    prot = dict(ev["protocol"])
    prot.pop("real_feature_cache", None)
    prot.pop("seconds", None)
    pz = parzen_select(_parzen_space(fake), _parzen_space(real["parzen_val"]),
                       _parzen_space(real["parzen_test"]), _sigma_grid(real["parzen_test"]))
    res |= pz
    if fake.dim() == 4 and min(fake.shape[-2:]) >= 3:
        from .metrics.paired import laplacian_variance

        res["sharpness"] = float(laplacian_variance(fake.clamp(-1, 1)).mean())
    return res, prot


def evaluate_entry(trained: Any, ds: Any, spec: BenchSpec, real: dict[str, Tensor],
                   sample_opts: dict[str, Any], lp_opts: dict[str, Any],
                   picture: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate a trained model: its samples (:func:`evaluate_samples`), sampling time, its
    held-out likelihood where it has one. Returns (results, protocol)."""
    from .likelihood import bits_per_dim

    fam = trained.model
    n = len(real["real"])
    t0 = time.perf_counter()
    fake = trained.sample(n, seed=spec.eval_seed, **sample_opts)
    res: dict[str, Any] = {"sample_ms": 1000 * (time.perf_counter() - t0) / n}
    prot: dict[str, Any] = {"sampling": {"n": n, "seed": spec.eval_seed, "options": sample_opts,
                                         "timer": "wall clock of trained.sample(n), one process"}}
    if not torch.isfinite(fake).all():  # a diverged training: on the board, without metrics
        bad = int((~torch.isfinite(fake.flatten(1))).any(1).sum())
        res["failed"] = f"{bad} of {n} samples are not finite (the training diverged)"
        return res, prot
    if picture is not None:
        from .train.callbacks import save_samples

        picture.parent.mkdir(parents=True, exist_ok=True)
        save_samples(fake[:64] if fake.dim() > 2 else fake, picture,
                     real=None if fake.dim() > 2 else real["real"])
    more, sprot = evaluate_samples(fake, ds, spec, real)
    res |= more
    prot |= sprot
    if "log_prob" in fam.capabilities:
        x = real["nll"]
        lp = trained.log_prob(x, seed=spec.eval_seed, **lp_opts).double()
        lik = fam.likelihood()
        dims = int(np.prod(x.shape[1:]))
        res["nll_nats"] = float(-lp.mean())
        if lik["space"] != "continuous":
            res["nll_bpd"] = bits_per_dim(lp, dims, lik["space"])
        res["nll_kind"] = lik["kind"]
        res["nll_space"] = lik["space"]
        prot["nll"] = {"n": len(x), "split": "test (first examples)", "options": lp_opts,
                       **lik}
    return res, prot


# -------------------------------------------------------------------------------------------
# the bench folder
# -------------------------------------------------------------------------------------------

def _entry_name(model: str, seed: int) -> str:
    return f"{model}-seed{seed}"


def _read_bench(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not a readable bench.json ({e}); choose another --out") \
            from None
    if not isinstance(data, dict) or "spec" not in data or "entries" not in data:
        raise ConfigError(f"{path} is not a gankit bench file; choose another --out")
    return data


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the bench")
    if out.exists() and any(out.iterdir()) and not (out / "bench.json").exists():
        raise ConfigError(f"{out} already exists, is not empty and holds no bench.json; choose "
                          f"another --out")
    from .outputs import check_target

    check_target(out)


def _validate(spec: BenchSpec) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Build every model's config and data before training anything: unknown models, models
    that cannot sample, bad settings and data the models disagree on are one-line errors.
    Returns the data (as the first model sees it) and per model its settings."""
    from .api import _load_data, absolute_data
    from .config import parse_overrides, resolve_config
    from .models import get_family
    from .trained import build_model

    ds0, shape0, per = None, None, {}
    for m in spec.models:
        fam_cls = get_family(m)
        if "sample" not in fam_cls.capabilities:
            can = ", ".join(sorted(fam_cls.capabilities)) or "nothing beyond training"
            raise ConfigError(f"model '{m}' cannot sample (it can: {can}); gankit bench compares "
                              f"models that sample")
        over, samp, lp = spec.split_sets(m)
        if lp and "log_prob" not in fam_cls.capabilities:
            raise ConfigError(f"--set {m}:log_prob.*: model '{m}' has no log_prob")
        cfg = resolve_config(m, parse_overrides(over),
                             {"data": {"name": absolute_data(spec.data)},
                              "train": {"steps": spec.max_steps, "max_seconds": spec.budget,
                                        "budget_kind": spec.budget_kind}})
        ds = _load_data(cfg)
        shape = tuple(ds.describe()["shape"])
        if shape0 is None:
            ds0, shape0 = ds, shape
        elif shape != shape0:
            raise DataError(f"data mismatch: '{spec.models[0]}' sees {spec.data} at shape "
                            f"{list(shape0)} but '{m}' at {list(shape)}; give every model one "
                            f"--set data.image_size=N")
        fam = build_model(cfg, ds.describe())  # the data-kind checks of the family
        per[m] = {"overrides": over, "sample": samp, "log_prob": lp,
                  "params": param_count(fam)}
    return ds0, per


def _train_entry(spec: BenchSpec, m: str, seed: int, run_dir: Path, settings: dict[str, Any],
                 say: Callable[[str], None]) -> dict[str, Any]:
    """Train (or resume, or keep) the run of (m, seed); return its training record."""
    from .api import resume, train
    from .rundir import RunDir
    from .train import checkpoint as ckpt

    rd = RunDir(run_dir)
    info = rd.read_info() if rd.run_json.exists() else {}
    if info.get("status") == "finished" and ckpt.has_checkpoint(run_dir, trained=True):
        say(f"  trained already ({info.get('step')} steps)")
    elif ckpt.has_checkpoint(run_dir, trained=True):
        say(f"  resuming the interrupted training from step "
            f"{ckpt.read_state(ckpt.latest_checkpoint(run_dir, quiet=True))['step']}")
        resume(run_dir, progress=False)
    else:
        if run_dir.exists():  # a training killed before its first checkpoint: start it again
            import shutil

            shutil.rmtree(run_dir)
        over = [*settings["overrides"], f"train.max_seconds={spec.budget}",
                f"train.budget_kind={spec.budget_kind}"]
        if not any(o.startswith("train.doctor=") for o in over):
            over.append("train.doctor=false")  # probes and rollbacks would spend the budget
        train(m, spec.data, steps=spec.max_steps, seed=seed, out=run_dir, overrides=over,
              progress=False)
    info = rd.read_info()
    secs = info.get("seconds", {})
    return {"steps": int(info.get("step", 0)), "stopped_by": info.get("stopped_by"),
            "seconds_wall": float(secs.get("wall", math.nan)),
            "seconds_cpu": float(secs.get("cpu", math.nan))}


def run_bench(spec: BenchSpec, out: str | Path, *, say: Callable[[str], None] | None = None
              ) -> dict[str, Any]:
    """Run (or continue) the bench ``spec`` in folder ``out``; write ``bench.json``,
    ``leaderboard.md`` and ``leaderboard.html``; return the bench data."""
    from .api import load
    from .rundir import atomic_write_json

    say = say or (lambda s: None)
    out = Path(out)
    _check_out(out)
    path = out / "bench.json"
    data = _read_bench(path)
    if data is not None:
        old = data["spec"]
        diff = [k for k, v in spec.shared().items() if old.get(k) != v]
        if diff:
            k = diff[0]
            raise ConfigError(f"{out} holds a bench with {k}={old.get(k)!r}, not {spec.shared()[k]!r};"
                              f" continue it with the same settings or choose another --out")
    ds, per = _validate(spec)
    real = _real_sets(ds, spec)
    if data is None:
        data = {"spec": {}, "entries": {}, "reference": None}
    for e in data["entries"].values():
        m = e["model"]
        if m in per and e.get("sets", per[m]["overrides"]) != spec.sets[m]:
            raise ConfigError(f"{out} holds '{m}' benched with other settings "
                              f"({'; '.join(e.get('sets', [])) or 'none'}); choose another --out")
    models = list(dict.fromkeys([*data["spec"].get("models", []), *spec.models]))
    seeds = sorted({*data["spec"].get("seeds", []), *spec.seeds})
    data["spec"] = {**asdict(spec), "models": models, "seeds": seeds,
                    "sets": {**data["spec"].get("sets", {}), **spec.sets}}

    def save() -> None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, data)

    if data.get("reference") is None:
        say(f"reference: {len(real['train'])} training examples of {ds.name} against the test split")
        res, prot = evaluate_samples(real["train"], ds, spec, real)
        data["reference"] = {"results": res, "protocol": prot}
        save()
    todo = [(m, s) for m in spec.models for s in spec.seeds]
    for i, (m, s) in enumerate(todo, 1):
        name = _entry_name(m, s)
        entry = data["entries"].get(name)
        if entry is not None and entry.get("results") is not None:
            say(f"[{i}/{len(todo)}] {m} seed {s}: kept (evaluated before)")
            continue
        say(f"[{i}/{len(todo)}] {m} seed {s}: training for {spec.budget:g} s of "
            f"{spec.budget_kind} time")
        run_dir = out / "runs" / name
        tr = _train_entry(spec, m, s, run_dir, per[m], say)
        say(f"  {tr['steps']} steps in {tr['seconds_' + spec.budget_kind]:.1f} s "
            f"{spec.budget_kind} (stopped by {tr['stopped_by']}); evaluating")
        entry = {"model": m, "seed": s, "run": f"runs/{name}", "sets": spec.sets[m],
                 "params": per[m]["params"], "train": tr, "results": None}
        data["entries"][name] = entry
        save()
        trained = load(run_dir)
        picture = out / "samples" / f"{name}.png"
        res, prot = evaluate_entry(trained, ds, spec, real, per[m]["sample"], per[m]["log_prob"],
                                   picture)
        res |= {"steps": tr["steps"], "train_seconds": tr["seconds_" + spec.budget_kind],
                "params": per[m]["params"]}
        entry |= {"results": res, "protocol": prot, "samples": f"samples/{name}.png"}
        save()
        say("  " + _summary(res))
    feats = data["reference"]["protocol"].get("features", {}).get("extractor")
    data["protocol"] = protocol_text(data["spec"], feats)
    save()
    write_leaderboards(data, out)
    return data


def _summary(res: dict[str, Any]) -> str:
    if res.get("failed"):
        return f"failed: {res['failed']}"
    parts = []
    for key, head, _, fmt in COLUMNS:
        v = res.get(key)
        if isinstance(v, (int, float)) and key not in ("steps", "params", "train_seconds"):
            parts.append(f"{head.rstrip('*')} {format(v, fmt)}")
    return ", ".join(parts)


def protocol_text(spec: dict[str, Any], features: str | None = None) -> list[str]:
    """The evaluation protocol, one sentence a line (printed in both leaderboards);
    ``features``: the extractor the sample metrics used."""
    feats = f"{features} features" if features else "the data's default features"
    return [
        (f"Data: {spec['data']}; every (model, seed) trained by the gankit Trainer for "
        f"{spec['budget']:g} s of {spec['budget_kind']} time (train.max_seconds; steps capped "
        f"at {spec['max_steps']}), everything the training loop does counted; the gankit "
        f"doctor is off (its probes would spend the budget)."),
        (f"Sample metrics: {spec['n']} samples (seed {spec['eval_seed']}, the EMA weights where "
        f"kept) against up to {spec['n']} examples of the test split, {feats} "
        f"(gankit.metrics.evaluate); precision/recall k=3, density/coverage k=5."),
        (f"NLL: the family's log_prob on the first {spec['nll_n']} test examples, in its "
        f"likelihood space (gankit.likelihood: binary on one fixed binarisation, dequantized "
        f"8-bit, continuous); bits/dim for images, nats per example otherwise; the kind "
        f"(exact, bound, estimate) is printed with it."),
        ("Parzen: Gaussian kernels on the samples (images scaled to [0, 1]), the bandwidth "
        "chosen on the first half of the test split, the mean log-likelihood reported on the "
        "second half (Breuleux et al. 2009; Goodfellow et al. 2014, Table 1)."),
        ("Sharpness: mean variance of the 4-neighbour Laplacian of the samples (valid "
        "padding, [-1, 1] images); sampling time: wall clock per sample of one call."),
        ("Reference row: training examples scored as if they were samples. Params: every "
         "network of the family (a GAN's discriminator included)."),
    ]


# -------------------------------------------------------------------------------------------
# the leaderboards
# -------------------------------------------------------------------------------------------

def _agg(vals: list[float]) -> tuple[float, float | None]:
    arr = np.asarray(vals, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def leaderboard_rows(data: dict[str, Any]) -> tuple[list[tuple[str, str, str, str]],
                                                     list[dict[str, Any]]]:
    """The shown columns and one row per model: ``{"model", "seeds", "cells": {key: (mean,
    std | None)}, "nll_kind"}``, models in the bench's order, the reference row last."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for e in data["entries"].values():
        if e.get("results") is not None:
            by_model.setdefault(e["model"], []).append(e)
    rows = []
    for m in [m for m in data["spec"]["models"] if m in by_model]:
        es = sorted(by_model[m], key=lambda e: e["seed"])
        cells = {}
        for key, *_ in COLUMNS:
            vals = [e["results"].get(key) for e in es]
            vals = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if vals and len(vals) == len(es):
                mean, std = _agg(vals)
                cells[key] = (mean, None if key in NO_STD else std)
        kinds = {e["results"].get("nll_kind") for e in es} - {None}
        failed = sum(bool(e["results"].get("failed")) for e in es)
        rows.append({"model": m, "seeds": [e["seed"] for e in es], "cells": cells,
                     "nll_kind": "/".join(sorted(kinds)) or None, "failed": failed})
    ref = data.get("reference")
    if ref is not None:
        cells = {k: (float(v), None) for k, v in ref["results"].items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        rows.append({"model": "training data (reference)", "seeds": [], "cells": cells,
                     "nll_kind": None, "reference": True})
    present = {k for r in rows for k in r["cells"]} | {
        k for es in by_model.values() for e in es for k in e["results"]}
    shown = [c for c in COLUMNS if c[0] in present]
    return shown, rows


#: Columns shown without a spread over seeds (the same for every seed).
NO_STD = {"params"}
def row_label(row: dict[str, Any]) -> str:
    """The model column: the name, and how many seeds diverged (their metrics are missing)."""
    k = row.get("failed")
    return row["model"] + (f" (diverged: {k} of {len(row['seeds'])} seeds)" if k else "")


KIND_SHORT = {"exact": "exact", "lower-bound": "bound", "estimate": "estimate"}


def cell_text(row: dict[str, Any], col: tuple[str, str, str, str]) -> str:
    key, _, _, fmt = col
    if key not in row["cells"]:
        return "-"
    mean, std = row["cells"][key]
    text = format(mean, fmt) + (f" ± {format(std, fmt)}" if std is not None else "")
    if key in ("nll_bpd", "nll_nats") and row.get("nll_kind"):
        text += f" ({KIND_SHORT.get(row['nll_kind'], row['nll_kind'])})"
    return text


def theis_findings(data: dict[str, Any]) -> list[str]:
    """Theis et al. 2016's point from the leaderboard's own numbers: pairs of models where the
    one with the better held-out likelihood has the worse sample quality (FID, or the modes
    metric on toy data), and where the Parzen estimate ranks two models opposite to their
    likelihoods; or, when no pair shows it, why not."""
    _, rows = leaderboard_rows(data)
    rows = [r for r in rows if not r.get("reference")]
    qual = "fid" if any("fid" in r["cells"] for r in rows) else "kl_to_uniform"
    qual_name = "FID" if qual == "fid" else "KL of the mode histogram to uniform"
    nll = "nll_bpd" if any("nll_bpd" in r["cells"] for r in rows) else "nll_nats"
    with_nll = [r for r in rows if nll in r["cells"] and qual in r["cells"]]
    out = []
    if len(with_nll) < 2:
        have = ", ".join(r["model"] for r in with_nll) or "none"
        out.append(f"Not demonstrable here: a held-out likelihood next to a sample metric needs "
                   f"two models with log_prob; this bench has {len(with_nll)} ({have}).")
    else:
        found = False
        for a in with_nll:
            for b in with_nll:
                la, lb = a["cells"][nll][0], b["cells"][nll][0]
                qa, qb = a["cells"][qual][0], b["cells"][qual][0]
                if la < lb and qa > qb:
                    found = True
                    unit = "bits/dim" if nll == "nll_bpd" else "nats"
                    out.append(f"{a['model']} has the better held-out likelihood ({la:.3f} vs "
                               f"{lb:.3f} {unit}) but the worse {qual_name} ({qa:.3g} vs "
                               f"{qb:.3g}) than {b['model']}: likelihood and sample quality "
                               f"disagree (Theis et al. 2016).")
        if not found:
            out.append(f"No pair shows it: among {', '.join(r['model'] for r in with_nll)} the "
                       f"better held-out likelihood goes with the better {qual_name}.")
    pz = [r for r in with_nll if "parzen_ll" in r["cells"]]
    for a in pz:
        for b in pz:
            if a["cells"][nll][0] < b["cells"][nll][0] and \
                    a["cells"]["parzen_ll"][0] < b["cells"]["parzen_ll"][0]:
                out.append(f"Parzen ranks {b['model']} above {a['model']} "
                           f"({b['cells']['parzen_ll'][0]:.2f} vs "
                           f"{a['cells']['parzen_ll'][0]:.2f} nats) although {a['model']} has "
                           f"the better likelihood.")
    gan_like = [r for r in rows if nll not in r["cells"] and "parzen_ll" in r["cells"]]
    lik = [r for r in rows if nll in r["cells"] and "parzen_ll" in r["cells"]]
    for g in gan_like:
        for r in lik:
            if g["cells"]["parzen_ll"][0] > r["cells"]["parzen_ll"][0]:
                out.append(f"Parzen ranks {g['model']} (no likelihood of its own) above "
                           f"{r['model']} ({g['cells']['parzen_ll'][0]:.2f} vs "
                           f"{r['cells']['parzen_ll'][0]:.2f} nats), as Goodfellow et al. "
                           f"2014's Table 1 ranks its GAN above a DBN - a ranking no likelihood "
                           f"of the GAN can check.")
    return out


#: The leaderboards' reading key.
LEGEND = ("Mean ± sample standard deviation over seeds where there are several. Directions: "
          + "; ".join(f"{d} {t}" for d, t in DIRECTION_TEXT.items() if d)
          + "; no arrow: " + DIRECTION_TEXT[""] + ".")


def markdown_table(data: dict[str, Any]) -> list[str]:
    """The leaderboard as Markdown table lines (models x shown columns, reference row last)."""
    cols, rows = leaderboard_rows(data)
    head = ["model", "seeds", *[f"{h} {d}".rstrip() for _, h, d, _ in cols]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in rows:
        seeds = ",".join(str(s) for s in r["seeds"]) or "-"
        lines.append("| " + " | ".join([row_label(r), seeds, *[cell_text(r, c) for c in cols]])
                     + " |")
    return lines


def render_markdown(data: dict[str, Any]) -> str:
    """``leaderboard.md``: the models x metrics table (mean ± sample std over seeds), each
    column's direction, the protocol, the Parzen caveat and the Theis et al. reading."""
    spec = data["spec"]
    lines = [(f"# gankit bench: {spec['data']}, {spec['budget']:g} s of {spec['budget_kind']} "
             f"time per model"), "", *markdown_table(data), "", LEGEND, "",
             f"\\* {THEIS_CAVEAT}", "", "## Protocol", ""]
    lines += [f"- {p}" for p in data.get("protocol") or protocol_text(spec)]
    lines += ["", "## Theis et al. 2016: likelihood and sample quality", ""]
    lines += [f"- {t}" for t in theis_findings(data)]
    return "\n".join(lines) + "\n"


def render_html(data: dict[str, Any], out: Path) -> str:
    """``leaderboard.html`` in the style of the run report (its CSS and table macro)."""
    from .report import _template

    spec = data["spec"]
    cols, rows = leaderboard_rows(data)
    table = {"head": ["model", "seeds", *[f"{h} {d}".rstrip() for _, h, d, _ in cols]],
             "rows": [{"cells": [{"text": row_label(r), "num": False},
                                 {"text": ",".join(map(str, r["seeds"])) or "-", "num": False},
                                 *[{"text": cell_text(r, c), "num": True} for c in cols]],
                       "changed": bool(r.get("reference"))} for r in rows]}
    per_seed = []
    for name, e in sorted(data["entries"].items()):
        res = e.get("results") or {}
        per_seed.append({"cells": [{"text": name, "num": False}] + [
            {"text": format(res[k], f) if isinstance(res.get(k), (int, float)) else "-",
             "num": True} for k, _, _, f in cols], "changed": False})
    samples = []
    for name, e in sorted(data["entries"].items()):
        p = out / e.get("samples", f"samples/{name}.png")
        if p.exists():
            samples.append({"name": name,
                            "png": base64.b64encode(p.read_bytes()).decode("ascii")})
    ctx = {"title": f"gankit bench: {spec['data']}",
           "sub": f"{spec['budget']:g} s of {spec['budget_kind']} time per model, seeds "
                  f"{', '.join(map(str, spec['seeds']))}",
           "badges": [f"data: {spec['data']}", f"models: {', '.join(spec['models'])}",
                      f"budget: {spec['budget']:g} s {spec['budget_kind']}",
                      f"n = {spec['n']} samples"],
           "table": table, "directions": [(d or "no arrow", t) for d, t in DIRECTION_TEXT.items()],
           "caveat": THEIS_CAVEAT, "theis": theis_findings(data),
           "protocol": data.get("protocol") or protocol_text(spec),
           "per_seed": {"head": ["entry", *[h for _, h, _, _ in cols]], "rows": per_seed},
           "samples": samples, "spec": json.dumps(spec, indent=2),
           "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    return _template("bench.html.j2").render(**ctx)


def write_leaderboards(data: dict[str, Any], out: Path) -> None:
    from .rundir import atomic_write_text

    atomic_write_text(out / "leaderboard.md", render_markdown(data))
    atomic_write_text(out / "leaderboard.html", render_html(data, out))
