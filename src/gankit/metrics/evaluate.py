"""Evaluation with a recorded protocol: a run, or any two sample sets.

``evaluate_sets`` embeds both sets with one feature extractor, computes the requested metrics from
the registry and returns the values together with the protocol (extractor and checksum, sample
counts, split, seed, each metric's settings). Features of real data are cached on disk, keyed by
everything that determines them. ``evaluate_run`` samples a run's generator and compares it with
the run's dataset; the CLI ``gankit eval`` writes the result to ``eval.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..registry import FEATURES, METRICS
from . import extractors as _extractors  # noqa: F401  (registers the extractors)
from .memorization import memorization_report
from .modes import stacked_mnist_modes

LOWER_IS_BETTER = {"fid", "fid_inf", "kid_mean", "kl_to_uniform", "stacked_kl_to_uniform", "l1",
                   "mae"}
#: Results of :func:`gankit.metrics.paired.paired_report` that are not registered metrics: a
#: translating run evaluated with one of these names gets the whole paired report.
REPORT_METRICS = ("l1", "sharpness", "label_acc")
#: Metrics computed here rather than from the METRICS registry: they need more than two feature
#: arrays (a held-out set, per-channel classification, or the generator itself).
SET_METRICS = {
    "mem": "memorisation: sample->train vs heldout->train nearest-neighbour distances (Meehan et al. 2020)",
    "stacked-modes": "Stacked MNIST modes covered of 1,000 and KL to uniform (Metz et al. 2017)",
}
RUN_METRICS = {
    "cas": "classification accuracy score: classifier trained on samples, tested on real (Ravuri & Vinyals 2019)",
    "aug": "augmentation gain: small real labelled set vs plus synthetic samples",
}


def cache_dir() -> Path:
    """Where real-data features are cached: ``$GANKIT_CACHE`` or ``~/.cache/gankit``."""
    return Path(os.environ.get("GANKIT_CACHE", Path.home() / ".cache" / "gankit")) / "features"


def default_features(x: torch.Tensor, dataset: str | None = None,
                     info: dict[str, Any] | None = None) -> str:
    """The extractor the data's metadata names (``info["features"]``, from its registry entry),
    when it fits the samples' shape; else ``raw`` for points and ``random-cnn`` for images.

    ImageNet Inception features on 28x28 digits are meaningless; for other images the random CNN
    of Naeem et al. 2020 is used unless the user supplies Inception weights (``--features
    inception-v3 --inception-weights PATH``).
    """
    if x.dim() == 2:
        return "raw"
    want = (info or {}).get("features")
    if want is None and dataset is not None:
        from ..data import dataset_meta

        want = dataset_meta(dataset).get("features")
    if want == "lenet-mnist" and x.shape[1] != 1:
        want = None  # the digit classifier reads one channel
    return want or "random-cnn"


def default_metrics(x: torch.Tensor, toy: bool, info: dict[str, Any] | None = None) -> list[str]:
    """The set metrics the data's metadata names, else modes + precision/recall for toy
    mixtures and FID, KID, precision/recall, density/coverage for everything else."""
    named = [m for m in (info or {}).get("metrics") or [] if m in METRICS or m in SET_METRICS]
    if named:
        return named
    if toy:
        return ["modes", "pr"]
    return ["fid", "kid", "pr", "dc"]


def _subsample(x: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """``n`` rows of ``x`` drawn with ``seed`` (all of them when ``n`` is larger); a streamed
    image store (gankit.data.store) reads only those rows."""
    if n is None or n >= len(x):
        return x if torch.is_tensor(x) else x[:]
    g = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=g)[:n]]


def _embed(ext: Any, x: torch.Tensor, want_logits: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if want_logits:
        return ext.features_and_logits(x)
    return ext.features(x), None


def cached_real_features(ext: Any, x: torch.Tensor, key: dict[str, Any] | None,
                         want_logits: bool) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Features (and logits) of real data, from the on-disk cache when ``key`` is given."""
    if key is None:
        return (*_embed(ext, x, want_logits), None)
    full = {**key, "extractor": ext.name, "checksum": ext.checksum, "n": len(x),
            "shape": list(x.shape[1:])}
    digest = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / f"{key.get('dataset', 'data')}-{ext.name}-{digest}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if not want_logits or "logits" in z:
                    return z["feats"], (z["logits"] if want_logits else None), str(path)
        except (OSError, ValueError):
            pass  # unreadable cache entry: recompute and overwrite
    feats, logits = _embed(ext, x, want_logits or ext.is_classifier)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    arrays = {"feats": feats} | ({"logits": logits} if logits is not None else {})
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return feats, (logits if want_logits else None), str(path)


def evaluate_sets(real: torch.Tensor, fake: torch.Tensor, *, metrics: list[str] | None = None,
                  features: str | None = None, feature_options: dict[str, Any] | None = None,
                  dataset: str | None = None, info: dict[str, Any] | None = None,
                  real_key: dict[str, Any] | None = None, seed: int = 0,
                  heldout: torch.Tensor | None = None) -> dict[str, Any]:
    """Compare ``real`` and ``fake`` sample sets (``[N, C, H, W]`` in [-1, 1] or ``[N, D]``).

    Returns ``{"results": {name: value}, "protocol": {...}}``. ``info`` may carry ``centers`` and
    ``sigma`` for the ``modes`` metric (ring8/grid25).
    """
    if real.shape[1:] != fake.shape[1:]:
        raise DataError(f"real samples have shape {list(real.shape[1:])} but fake samples "
                        f"{list(fake.shape[1:])}; resize one of them (e.g. --image-size)")
    info = info or {}
    toy = "centers" in info
    names = metrics or default_metrics(real, toy, info)
    check_metric_names(names, allow_run=False)
    special = [n for n in names if n in SET_METRICS]
    names = [n for n in names if n not in SET_METRICS]
    feat_name = features or default_features(real, dataset, info)
    ext = FEATURES.get(feat_name)(**(feature_options or {}))
    needs = {METRICS.get(n).needs for n in names} | ({"features"} if "mem" in special else set())
    want_logits = "logits" in needs
    if want_logits and not ext.is_classifier:
        raise ConfigError(f"metric 'is' needs class logits; extractor '{feat_name}' has none "
                          f"(use lenet-mnist for digits or inception-v3 with its weights)")
    t0 = time.perf_counter()
    results: dict[str, float] = {}
    protocol: dict[str, Any] = {"features": ext.protocol(), "n_real": len(real),
                                "n_fake": len(fake), "seed": seed, "metrics": {}}
    if needs & {"features", "logits"}:
        rf, _, cache = cached_real_features(ext, real, real_key, False)
        ff, fl = _embed(ext, fake, want_logits)
        protocol["real_feature_cache"] = cache
    for n in names:
        m = METRICS.get(n)
        protocol["metrics"][n] = m.protocol
        if m.needs == "scores":
            raise ConfigError(f"metric '{n}' ranks anomaly scores against labels: evaluate a "
                              f"run whose model scores (gankit eval RUN --metrics {n})")
        if m.needs == "paired":
            # two sets compared row by row (e.g. a folder of outputs and one of targets, both
            # in sorted order): the same count, and _subsample kept the pairing
            from .medical import check_paired

            check_paired(n, fake, real)
            results |= m(real, fake)
        elif m.needs == "points":
            if not toy:
                raise ConfigError(f"metric '{n}' needs a toy mixture with known modes "
                                  f"(ring8, grid25)")
            results |= m(None, fake.numpy(), centers=np.asarray(info["centers"]),
                         sigma=float(info["sigma"]))
        elif m.needs == "logits":
            results |= m(None, fl)
        else:
            results |= m(rf, ff)
    if "mem" in special:
        if heldout is None:
            raise ConfigError("metric 'mem' needs held-out real data (a dataset with a test split)")
        results |= {f"mem_{k}": float(v) for k, v in
                    memorization_report(ff, rf, ext.features(heldout)).items()
                    if isinstance(v, (int, float, bool, np.floating, np.bool_))}
        protocol["metrics"]["mem"] = {"space": feat_name, "n_heldout": len(heldout)}
    if "stacked-modes" in special:
        results |= stacked_modes(fake)
        protocol["metrics"]["stacked-modes"] = {"classifier": "lenet-mnist per channel"}
    protocol["seconds"] = round(time.perf_counter() - t0, 3)
    return {"results": results, "protocol": protocol}


def paired_metrics(names: list[str] | None) -> list[str]:
    """The registered metrics among ``names`` that compare each output with its target
    (``needs == "paired"``: psnr, ssim, mae, ncc, dice, jaccard)."""
    return [k for k in names or [] if k in METRICS and METRICS.get(k).needs == "paired"]


def score_auroc(model: Any, ds: Any, *, n: int, seed: int,
                nets: dict[str, Any] | None = None) -> dict[str, Any]:
    """Image AUROC of a scoring model (``score`` capability, e.g. f-AnoGAN's anomaly score) on
    the held-out split: up to ``n`` test images scored from ``seed`` against their labels,
    ``info["anomaly_test"]`` (bool per test image, True = abnormal) or, for a dataset of two
    classes, ``y_test`` (1 = positive)."""
    if "score" not in model.capabilities:
        raise ConfigError(f"metric 'auroc' ranks anomaly scores; model '{model.name}' cannot "
                          f"score")
    x = ds.x_test
    labels = ds.info.get("anomaly_test")
    if labels is None and ds.y_test is not None and ds.num_classes == 2:
        labels = ds.y_test
    if x is None or labels is None:
        raise ConfigError(f"metric 'auroc' needs held-out images with normal/abnormal labels "
                          f"(info['anomaly_test'] or a two-class y_test); '{ds.name}' has none")
    labels = torch.as_tensor(labels).reshape(-1)
    if len(labels) != len(x):
        raise DataError(f"'{ds.name}': {len(labels)} anomaly labels for {len(x)} test images")
    m = min(n, len(x))
    scores = model.infer("score", x[:m], seed, nets=nets).reshape(m, -1)
    if scores.shape[1] != 1:
        raise DataError(f"model '{model.name}' gives {scores.shape[1]} scores per image; auroc "
                        f"ranks one")
    from .medical import AUROC_PROTOCOL, scored_auroc

    res = scored_auroc(labels[:m], scores[:, 0])
    return {"results": res, "protocol": {"auroc": {**AUROC_PROTOCOL, "n": m, "seed": seed,
                                                   "n_positive": int(labels[:m].sum()),
                                                   "split": "test"}}}


def check_metric_names(names: list[str], allow_run: bool) -> None:
    """Fail on an unknown metric name before any work, listing every choice."""
    extra = set(SET_METRICS) | (set(RUN_METRICS) if allow_run else set())
    for n in names:
        if n not in extra and n not in METRICS:
            from ..registry import did_you_mean

            choices = sorted(set(METRICS.names()) | extra)
            raise ConfigError(f"unknown metric '{n}'{did_you_mean(n, choices)}; choices: "
                              f"{', '.join(choices)}" + ("" if allow_run or n not in RUN_METRICS
                                                         else " (cas/aug need a run directory)"))


def stacked_modes(fake: torch.Tensor) -> dict[str, float]:
    """Stacked MNIST modes: each channel classified by ``lenet-mnist``."""
    if fake.dim() != 4 or fake.shape[1] != 3:
        raise ConfigError("stacked-modes needs 3-channel images (the stackedmnist dataset)")
    ext = FEATURES.get("lenet-mnist")()
    pred = np.stack([ext.predict(fake[:, i:i + 1]) for i in range(3)], 1)  # [N, 3]
    s = stacked_mnist_modes(pred)
    return {"stacked_modes_covered": float(s["modes_covered"]),
            "stacked_kl_to_uniform": float(s["kl_to_uniform"])}


def better(metric: str, new: float, old: float | None) -> bool:
    """Whether ``new`` improves on ``old`` for a result key (FID/KID/KL: lower is better)."""
    if old is None or not np.isfinite(old):
        return bool(np.isfinite(new))
    return new < old if metric in LOWER_IS_BETTER else new > old
