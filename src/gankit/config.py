"""Typed configuration.

A run is described by one :class:`Config`. Values are resolved in this order, later winning:
built-in defaults < the model family's own defaults (``ModelFamily.defaults``) < a YAML/JSON file
(``--config``) < ``--set a.b=c`` overrides < explicit CLI flags. Unknown keys are errors with a
"did you mean"; the resolved config is saved as ``config.json`` in the run directory.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .errors import ConfigError
from .registry import did_you_mean


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Which data and how it is shaped."""

    name: str = "mnist5k"
    # resize images to image_size x image_size (None: the data's size if the model takes it,
    # else a default chosen from the data; see gankit.data.sizes)
    image_size: int | None = None
    channels: Literal[1, 3] | None = None  # force grayscale / RGB
    # stream folders/zips/prepared sets through a DataLoader instead of decoding them into
    # memory: auto = when the decoded float32 images exceed gankit.data.STREAM_THRESHOLD
    stream: Literal["auto"] | bool = "auto"
    workers: int | None = None  # DataLoader worker processes of a streamed set (None: auto)
    # NIfTI/DICOM volumes (gankit.data.medical): intensity window, a preset (brain, soft-tissue,
    # lung, bone, ...) or WIDTH/LEVEL in HU such as 400/40 (None: per-volume percentiles); the
    # orientation of the 2-D slices; whether slices of background only are dropped
    window: str | None = None
    slice_axis: Literal["axial", "coronal", "sagittal"] = "axial"
    skip_empty: bool = True

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be a positive number of pixels")
        return v

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v: Any) -> str | None:
        """Checked when the config is resolved: a misspelt preset fails before any data is
        read. A [W, L] pair is kept as the text W/L."""
        if v is None:
            return None
        if isinstance(v, (list, tuple)):
            v = "/".join(str(x) for x in v)
        from .data.medical import parse_window
        from .errors import DataError

        try:
            parse_window(str(v))
        except DataError as e:
            raise ValueError(str(e)) from None
        return str(v)

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError("must be >= 0")
        return v


class LossConfig(_Section):
    """Adversarial loss and regularisers (seed 000 §3.5-3.6; chapter 002 §5)."""

    name: str = "nonsaturating"  # a LOSSES entry: minimax, nonsaturating, lsgan, wasserstein, hinge
    gp: str | None = None  # a penalty REGULARIZERS entry: wgan-gp, dragan, r1
    lambda_gp: float = 10.0
    gp_every: int = 1  # lazy regularisation (StyleGAN2): penalty every k steps, weight x k
    clip: float | None = None  # WGAN weight clipping of D after each D step

    @field_validator("lambda_gp")
    @classmethod
    def _weight(cls, v: float) -> float:
        if not 0 <= v < float("inf"):
            raise ValueError("must be a finite number >= 0")
        return v

    @field_validator("clip")
    @classmethod
    def _clip(cls, v: float | None) -> float | None:
        return _positive(v)

    @field_validator("gp_every")
    @classmethod
    def _pos(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v


Schedule = Literal["constant", "linear", "cosine"]
Optimizer = Literal["adam", "adamw", "rmsprop", "sgd"]


class NetOptimConfig(_Section):
    """Overrides of one network's optimizer (``optim.nets.<name>.*``); unset keys keep the
    family's spec."""

    name: Optimizer | None = None
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    eps: float | None = None
    schedule: Schedule | None = None
    warmup: int | None = None
    decay_start: int | None = None
    min_lr_ratio: float | None = None

    @field_validator("lr", "eps")
    @classmethod
    def _pos(cls, v: float | None) -> float | None:
        return _positive(v)

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        return _betas(v)

    @field_validator("weight_decay", "warmup")
    @classmethod
    def _nonneg(cls, v: float | None) -> float | None:
        if v is not None and v < 0:
            raise ValueError("must be >= 0")
        return v


def _betas(v: tuple[float, float] | None) -> tuple[float, float] | None:
    """Adam's (beta1, beta2): each in [0, 1)."""
    if v is not None and not all(0.0 <= b < 1.0 for b in v):
        raise ValueError("each beta must be in [0, 1), e.g. [0.5, 0.999]")
    return v


def _positive(v: float | None) -> float | None:
    """Learning rates and epsilons: finite and > 0 (a negative rate ascends the loss)."""
    if v is not None and not (v > 0 and v != float("inf")):
        raise ValueError("must be a positive finite number")
    return v


class OptimConfig(_Section):
    """Per-network optimisers and learning-rate schedules.

    GAN families give G-side networks ``lr_g``/``betas_g`` and the others ``lr_d``/``betas_d``
    (TTUR: Heusel et al. 2017 use lr_d > lr_g); families without a discriminator use ``lr`` and
    ``betas``, which, when set, also override both sides of a GAN. ``nets.<name>.*`` overrides
    any setting for one network (``optim.nets.Q.lr=1e-3``). The schedule multiplies every rate
    by a factor of the step (:class:`gankit.train.optim.Schedule`).
    """

    name: Optimizer = "adam"
    lr: float | None = None
    betas: tuple[float, float] | None = None
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas_g: tuple[float, float] = (0.5, 0.999)
    betas_d: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    schedule: Schedule = "constant"
    warmup: int = 0  # steps of linear learning-rate warm-up
    decay_start: int | None = None  # linear schedule: first step of the decay (None: steps / 2)
    min_lr_ratio: float = 0.0  # the rate at the end of a linear/cosine schedule, x lr
    nets: dict[str, NetOptimConfig] = {}
    n_critic: int = 1  # k discriminator steps per generator step (Goodfellow et al. 2014, Alg. 1)
    grad_accum: int = 1  # micro-batches per optimizer step

    @field_validator("n_critic", "grad_accum")
    @classmethod
    def _pos(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("warmup", "weight_decay")
    @classmethod
    def _nonneg(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("lr", "lr_g", "lr_d", "eps")
    @classmethod
    def _rate(cls, v: float | None) -> float | None:
        return _positive(v)

    @field_validator("betas", "betas_g", "betas_d")
    @classmethod
    def _betas(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        return _betas(v)

    @field_validator("min_lr_ratio")
    @classmethod
    def _ratio(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError("must be in [0, 1]")
        return v


#: ``train.trackers``: where a run's records go besides its own files (``gankit.tracking``)
TRACKER_NAMES = ("jsonl", "csv", "tensorboard", "wandb", "mlflow")


def check_trackers(names: list[str]) -> list[str]:
    """Validate ``train.trackers`` names (ValueError naming the known ones); duplicates drop."""
    out: list[str] = []
    for n in names:
        if n not in TRACKER_NAMES:
            raise ValueError(f"unknown tracker '{n}'{did_you_mean(n, list(TRACKER_NAMES))}; "
                             f"trackers: {', '.join(TRACKER_NAMES)}")
        if n not in out:
            out.append(n)
    return out


class TrainConfig(_Section):
    """The training loop."""

    steps: int = 2000  # generator steps
    # a time budget: the run stops cleanly (with a checkpoint) once it has trained this many
    # seconds of budget_kind time (wall: elapsed; cpu: this process's CPU time), summed over
    # resumes; the steps done are recorded in run.json (gankit bench trains under one budget)
    max_seconds: float | None = None
    budget_kind: Literal["wall", "cpu"] = "wall"
    batch_size: int = 64  # global batch (split over processes under torchrun)
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1 ...
    amp: Literal["none", "bf16", "fp16"] = "none"
    ema: bool = True
    ema_decay: float = 0.999
    ema_start: int = 0  # step from which G_ema tracks G (copied before)
    reuse_fake: bool = True  # G step reuses the fake batch of the last D step (classic DCGAN loop)
    channels_last: bool = False
    compile: bool = False  # torch.compile every trained network (opt-in; see benchmarks)
    # two-stage training: start from another run's networks (recorded here, absolute path)
    init_from: str | None = None  # a run directory
    init_nets: list[str] | None = None  # which networks (None: every one both models have)
    init_weights: Literal["ema", "raw"] = "ema"  # the source's EMA copies where it has them
    freeze: list[str] = []  # trained networks to keep fixed (never optimised, saved once)
    log_every: int = 50
    sample_every: int = 500
    ckpt_every: int = 500
    keep_ckpts: int = 2
    progress: bool = True
    tensorboard: bool = False  # the same as adding "tensorboard" to trackers
    # experiment trackers (gankit.tracking): jsonl (metrics.jsonl etc., always written), csv,
    # tensorboard, wandb, mlflow
    trackers: list[str] = ["jsonl"]
    threads: int | None = None  # CPU intra-op threads (None: from the CPUs available; threads.py)
    # evaluation during training (gankit.metrics.evaluate); 0 = off
    eval_every: int = 0
    eval_metrics: list[str] | None = None  # default by data: fid,kid,pr,dc or modes,pr
    eval_n: int = 2000
    eval_features: str | None = None  # default by data: lenet-mnist, random-cnn, raw
    best_metric: str | None = None  # result key kept best in best/ (default: first one)
    # the GAN doctor (gankit.doctor): live diagnoses in diagnostics.jsonl, divergence rollback
    doctor: bool = True
    doctor_every: int = 250  # steps between sample probes (diversity, coverage, precision/recall)
    doctor_lr_factor: float = 0.5  # learning rates x this at each rollback after divergence
    doctor_max_rollbacks: int = 3  # then the run stops with an error

    @field_validator("steps", "batch_size", "log_every", "sample_every", "ckpt_every", "keep_ckpts",
                     "doctor_every", "eval_n")
    @classmethod
    def _pos(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("max_seconds")
    @classmethod
    def _seconds(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError("must be > 0 seconds (or null: no time budget)")
        return v

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1 (or null: chosen from the available CPUs)")
        return v

    @field_validator("trackers")
    @classmethod
    def _trackers(cls, v: list[str]) -> list[str]:
        return check_trackers(v)

    @field_validator("ema_decay")
    @classmethod
    def _ema(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError("must be in [0, 1) (e.g. 0.999)")
        return v

    @field_validator("ema_start", "eval_every")
    @classmethod
    def _nonneg_steps(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("eval_metrics")
    @classmethod
    def _metrics(cls, v: list[str] | None) -> list[str] | None:
        """Checked here, not after training: a misspelt name fails before any step."""
        if v is not None:
            from .metrics.evaluate import check_metric_names

            try:
                check_metric_names(v, allow_run=False)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("doctor_lr_factor")
    @classmethod
    def _factor(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError("must be in (0, 1)")
        return v

    @field_validator("doctor_max_rollbacks")
    @classmethod
    def _nonneg(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0")
        return v


class TricksConfig(_Section):
    """Stabilisation tricks, all off by default and combinable (seed 000 §3.5 Box 4; deck 003).

    Semantics and sources in :mod:`gankit.tricks`. They apply to every family that trains with
    ``adversarial_phases``; the D-layer ones need a DCGAN/MLP discriminator.
    """

    label_smoothing: float = 0.0  # s: real target 1 - s in D's BCE (Salimans et al. 2016 §3.4)
    instance_noise: float = 0.0  # sigma0 of the noise added to D's inputs (Sønderby et al. 2017)
    instance_noise_anneal: int = 0  # steps over which sigma falls linearly to 0 (0: constant)
    feature_matching: bool = False  # G matches D's mean features (Salimans et al. 2016 §3.1)
    minibatch_discrimination: int = 0  # B kernels before D's head (Salimans et al. 2016 §3.2)
    minibatch_discrimination_dim: int = 5  # C, dimension of each kernel
    minibatch_stddev: int = 0  # group size of ProGAN's minibatch std layer (Karras et al. 2018)
    historical_averaging: float = 0.0  # lambda of ||theta - mean past theta||^2 (Salimans §3.3)
    d_dropout: float = 0.0  # dropout after D's activations (Goodfellow et al. 2014)
    d_every: int = 1  # the D phase runs every k steps only
    freeze_d_when_acc_above: float | None = None  # skip D steps while its running accuracy > a
    freeze_d_decay: float = 0.9  # EMA decay of D's running accuracy
    freeze_d_check_every: int | None = None  # steps between freeze decisions (None: log_every)
    diffaugment: str = ""  # e.g. "color,translation,cutout" (Zhao et al. 2020)
    orthogonal_reg: float = 0.0  # beta of BigGAN's ||W W^T (1 - I)||_F^2 on G (Brock et al. 2019)
    consensus: float = 0.0  # gamma of consensus optimisation (Mescheder et al. 2017)

    @field_validator("label_smoothing", "d_dropout")
    @classmethod
    def _unit(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError("must be in [0, 1)")
        return v

    @field_validator("instance_noise", "historical_averaging", "orthogonal_reg", "consensus")
    @classmethod
    def _nonneg(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("instance_noise_anneal", "minibatch_discrimination")
    @classmethod
    def _nonneg_int(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0 (0 = off)")
        return v

    @field_validator("minibatch_discrimination_dim", "d_every", "freeze_d_check_every")
    @classmethod
    def _pos(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("minibatch_stddev")
    @classmethod
    def _group(cls, v: int) -> int:
        if v < 0 or v == 1:
            raise ValueError("must be 0 (off) or a group size >= 2")
        return v

    @field_validator("freeze_d_when_acc_above")
    @classmethod
    def _acc(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError("must be an accuracy in [0, 1]")
        return v

    @field_validator("freeze_d_decay")
    @classmethod
    def _decay(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError("must be in [0, 1)")
        return v

    @field_validator("diffaugment")
    @classmethod
    def _policy(cls, v: str) -> str:
        from .nn.augment import parse_policy

        return ",".join(parse_policy(v))


class Config(_Section):
    """The whole, resolved description of a run."""

    model: dict[str, Any] = {"name": "dcgan"}
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    tricks: TricksConfig = TricksConfig()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())


SECTIONS: dict[str, type[_Section]] = {
    "data": DataConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "tricks": TricksConfig,
}


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value: YAML scalars/lists, plus ``1e-4``-style floats YAML 1.1 misses."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", ...]`` -> nested dict; raises ConfigError on malformed items."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, _, val = item.partition("=")
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"--set key must look like section.key (e.g. optim.lr_g), got '{key}'")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise ConfigError(f"--set '{key}' conflicts with another override")
        d[parts[-1]] = parse_value(val)
    return out


def deep_merge(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        d = yaml.safe_load(p.read_bytes().decode("utf-8"))  # JSON is YAML too
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (a YAML/JSON config is UTF-8 text)") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot be read ({e.strerror or e})") from None
    except (yaml.YAMLError, RecursionError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{p}: not valid YAML/JSON ({first})") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections")
    for sec, val in d.items():
        if not isinstance(sec, str):
            raise ConfigError(f"{p}: section names are words (model, data, ...), got {sec!r}")
        if val is not None and not isinstance(val, dict):
            raise ConfigError(f"{p}: section '{sec}' must be a mapping of keys, got "
                              f"{_short(val)} (e.g. '{sec}:' then indented 'name: ...')")
    return {k: v for k, v in d.items() if v is not None}


def _short(v: Any, n: int = 60) -> str:
    """``repr(v)`` on one line, cut to ``n`` characters (for error messages)."""
    r = repr(v).replace("\n", " ")
    return r if len(r) <= n else r[:n - 3] + "..."


def _check_keys(raw: dict[str, Any], model_fields: dict[str, Any]) -> None:
    """Reject unknown sections/keys with a suggestion before pydantic sees them."""
    sections = ["model", *SECTIONS]
    for sec, val in raw.items():
        if not isinstance(sec, str):
            raise ConfigError(f"config section names are words, got {_short(sec)}")
        if sec not in sections:
            raise ConfigError(f"unknown config section '{sec}'{did_you_mean(sec, sections)}; "
                              f"sections: {', '.join(sections)}")
        if not isinstance(val, dict):
            raise ConfigError(f"config section '{sec}' must be a mapping, got {_short(val)}")
        fields = list(model_fields) + ["name"] if sec == "model" else list(SECTIONS[sec].model_fields)
        for k in val:
            if not isinstance(k, str):
                raise ConfigError(f"config keys of '{sec}' are words, got {_short(k)}")
            if k not in fields:
                raise ConfigError(f"unknown config key '{sec}.{k}'{did_you_mean(k, fields)}; "
                                  f"keys of '{sec}': {', '.join(sorted(fields))}")
        if sec == "optim" and "nets" in val:
            nets = val["nets"]
            if not isinstance(nets, dict) or not all(isinstance(v, dict) for v in nets.values()):
                raise ConfigError("optim.nets maps network names to settings, e.g. "
                                  "optim.nets.Q.lr=1e-3")
            keys = list(NetOptimConfig.model_fields)
            for net, over in nets.items():
                for k in over:
                    if k not in keys:
                        raise ConfigError(f"unknown config key 'optim.nets.{net}.{k}'"
                                          f"{did_you_mean(k, keys)}; keys: {', '.join(keys)}")


def _format_validation(e: ValidationError, prefix: str = "") -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    msg = str(err["msg"]).splitlines()[0].removeprefix("Value error, ")
    if not loc:  # a rule over several keys (a model validator)
        return f"invalid {prefix.rstrip('.') or 'config'} config: {msg}"
    return f"invalid config value for '{prefix}{loc}': {msg} (got {_short(err.get('input'))})"


def resolve_config(model: str | type | None, *layers: dict[str, Any]) -> Config:
    """Build a validated Config from override layers (earliest lowest).

    The model family is ``model`` (a registered name, or a family class such as
    :class:`gankit.GAN`) or the last layer's ``model.name``; its ``defaults`` are applied under
    the user's layers, its ``Params`` validate ``model.*`` and its ``validate_config`` checks the
    rules that span sections.
    """
    from .registry import MODELS

    if isinstance(model, type):
        family: Any = model
        name = getattr(model, "family_name", model.__name__.lower())
    else:
        name = model
        if name is None:
            for layer in layers:
                name = (layer.get("model") or {}).get("name", name)
        if name is None:
            raise ConfigError("no model given")
        family = MODELS.get(name)
    merged: dict[str, Any] = deep_merge({"model": {"name": name}}, family.defaults)
    for layer in layers:
        _check_keys(layer, family.Params.model_fields)
        merged = deep_merge(merged, layer)
    merged["model"]["name"] = name
    params = {k: v for k, v in merged["model"].items() if k != "name"}
    try:
        p = family.Params(**params)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, "model.")) from None
    merged["model"] = {"name": name, **json.loads(p.model_dump_json())}
    try:
        cfg = Config(**merged)
    except ValidationError as e:
        raise ConfigError(_format_validation(e)) from None
    family.validate_config(cfg)  # cross-section rules (e.g. label smoothing needs BCE)
    return cfg
