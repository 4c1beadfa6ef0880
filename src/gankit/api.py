"""The Python API: ``train``, ``resume``, ``load``, ``evaluate_run``. The CLI is a thin layer
over these."""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import Config, load_config_file, parse_overrides, resolve_config
from .data import Dataset, load_data
from .errors import CheckpointError, ConfigError, Interrupted
from .models import ModelFamily, get_family
from .models.custom import GAN
from .rundir import RunDir
from .train import checkpoint as ckpt
from .train.callbacks import Evaluator, MetricsLogger, SampleGrids, evaluate_model
from .train.distributed import init_distributed
from .train.trainer import Callback, FamilyBuffers, Trainer, pick_device
from .trained import WEIGHTS, Sampler, TrainedModel, build_model  # noqa: F401  (the API)


@dataclass
class Run:
    """A training run: its directory, config, model and trainer."""

    run_dir: Path | None
    cfg: Config
    model: ModelFamily
    trainer: Trainer
    data: Dataset

    @property
    def generator(self) -> TrainedModel:
        """The trained model with its EMA weights (sample, translate, ... as it can)."""
        return TrainedModel(self.model, self.trainer.device, self.trainer.sampling_nets())

    def metrics(self) -> list[dict[str, Any]]:
        return RunDir(self.run_dir).read("metrics") if self.run_dir else []


def _layers(config: str | Path | dict | None, overrides: dict | list[str] | None,
            flags: dict[str, Any]) -> list[dict[str, Any]]:
    layers: list[dict[str, Any]] = []
    if isinstance(config, (str, Path)):
        layers.append(load_config_file(config))
    elif isinstance(config, dict):
        layers.append(config)
    if isinstance(overrides, list):
        layers.append(parse_overrides(overrides))
    elif isinstance(overrides, dict):
        layers.append(parse_overrides([f"{k}={json.dumps(v)}" for k, v in overrides.items()])
                      if any("." in k for k in overrides) else overrides)
    layers.append(flags)
    return layers


def default_out(model: str, data: str) -> Path:
    stem = Path(data.split(":", 1)[-1]).name if ("/" in data or "." in data or ":" in data) \
        else data
    # one stamp for all the processes of a --devices launch (they may start seconds apart)
    stamp = os.environ.get("GANKIT_RUN_STAMP") or time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{model}-{stem}-{stamp}"


def _callbacks(run_dir: Path | None, cfg: Config, total: int, progress: bool,
               ds: Dataset, model: ModelFamily) -> list[Callback]:
    cbs: list[Callback] = [MetricsLogger(run_dir, cfg.train.log_every, total,
                                         progress and cfg.train.progress, data=ds)]
    if cfg.train.doctor:  # right after the logger: it reads the records that logger logs
        from .doctor import Doctor

        cbs.append(Doctor(run_dir, ds, total, progress and cfg.train.progress))
    if run_dir is not None and model.capabilities & {"sample", "translate", "segment"}:
        cbs.append(SampleGrids(run_dir, cfg.train.sample_every, ds))
    if cfg.train.eval_every > 0:
        cbs.append(Evaluator(run_dir, ds))
    trackers = [*cfg.train.trackers, *(["tensorboard"] if cfg.train.tensorboard else [])]
    if run_dir is not None and set(trackers) - {"jsonl"}:
        from .tracking import Tracking

        cbs.append(Tracking(run_dir, trackers))  # csv, tensorboard, wandb, mlflow
    return cbs


def _fit(trainer: Trainer, run_dir: Path | None, steps: int | None) -> None:
    main = trainer.dist.is_main and run_dir is not None
    rd = RunDir(run_dir) if run_dir is not None else None

    def status(s: str) -> None:
        if main:
            with contextlib.suppress(OSError):  # a full disk must not hide the first error
                rd.write_status(s, step=trainer.step,  # type: ignore[union-attr]
                                checkpoint_step=trainer.saved_step, seconds=trainer.seconds)

    try:
        trainer.fit(steps)
    except KeyboardInterrupt:
        status("interrupted")
        if run_dir is not None:
            raise Interrupted(run_dir, trainer.step, trainer.saved_step) from None
        raise
    except BaseException:
        status("failed")
        raise
    if main:
        rd.write_status("finished", step=trainer.step,  # type: ignore[union-attr]
                        checkpoint_step=trainer.saved_step, seconds=trainer.seconds,
                        stopped_by=trainer.stopped_by or "steps")


def _check_out(run_dir: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that cannot hold a new run, before anything is built or written.

    ``overwrite`` replaces a run directory that holds no checkpoint of a trained step (one that
    failed or was stopped before its first, or holds only the step-0 one); a run with trained
    checkpoints is never overwritten, and neither is a folder that is not a gankit run.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; give a folder for the run")
    for parent in run_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {run_dir}: {parent} is a file, not a folder")
            break
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    rd = RunDir(run_dir)
    if not (rd.exists() or rd.run_json.exists()):
        raise ConfigError(f"{run_dir} already exists, is not empty and is not a gankit run; "
                          f"choose another --out")
    if ckpt.has_checkpoint(run_dir, trained=True):
        if overwrite:
            raise ConfigError(f"--overwrite refused: {run_dir} holds checkpoints; continue it "
                              f"with: gankit resume {run_dir}, or choose another --out")
        raise ConfigError(f"{run_dir} already holds a run; continue it with: gankit resume "
                          f"{run_dir}, or choose another --out")
    if not overwrite:
        try:
            status = rd.read_info().get("status", "unknown")
        except CheckpointError:
            status = "unknown"
        raise ConfigError(f"{run_dir} holds a run with no trained checkpoint (status "
                          f"{status}); start again there with --overwrite, or continue its "
                          f"saved config with: gankit resume {run_dir}")


@contextlib.contextmanager
def _run_dir_for_writing(run_dir: Path, overwrite: bool):  # type: ignore[no-untyped-def]
    """Create ``run_dir``, hold its lock, and (``overwrite``) empty it; a folder this call
    created is removed again when it cannot be used. Errors are one-line ConfigErrors."""
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the run directory {run_dir} "
                          f"({e.strerror or e})") from None
    rd = RunDir(run_dir)
    try:
        lock = rd.locked()
        lock.__enter__()
    except OSError as e:
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise ConfigError(f"cannot write in the run directory {run_dir} "
                          f"({e.strerror or e})") from None
    try:
        if overwrite:
            import shutil

            for p in run_dir.iterdir():
                if p != rd.lock_file:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        yield rd
    finally:
        lock.__exit__(None, None, None)


def _load_data(cfg: Config, announce: bool = False) -> Dataset:
    """The data of ``cfg``, at an image size the model takes: an explicit ``data.image_size``
    is checked before anything is read; without one, a size is chosen from the data and
    recorded in ``cfg.data.image_size`` (and so in the run's config)."""
    name = cfg.model["name"]
    sizes = get_family(name).valid_image_sizes(cfg)
    if cfg.data.image_size is not None:
        sizes.check(cfg.data.image_size, name)
    ds = load_data(cfg.data.name, image_size=cfg.data.image_size, channels=cfg.data.channels,
                   seed=cfg.train.seed, sizes=sizes, model=name, stream=cfg.data.stream,
                   workers=cfg.data.workers, window=cfg.data.window,
                   slice_axis=cfg.data.slice_axis, skip_empty=cfg.data.skip_empty)
    if cfg.data.image_size is None and "image_size_note" in ds.info:
        cfg.data.image_size = ds.resolution
        if announce:
            import click

            click.echo(f"data: {ds.name}, {ds.info['image_size_note']}", err=True)
    return ds


def absolute_data(spec: str) -> str:
    """``spec`` with a path made absolute (``paired:``/``unpaired:`` prefixes kept), so the
    run can be resumed from any working directory; a built-in name is returned as it is."""
    prefix, _, rest = spec.partition(":") if spec.startswith(("paired:", "unpaired:")) \
        else ("", "", spec)
    from .data import DATASETS

    path = Path(rest).expanduser()
    if spec in DATASETS or not path.exists():
        return spec
    return f"{prefix}:{path.resolve()}" if prefix else str(path.resolve())


def init_from(model: ModelFamily, source: str | Path, names: list[str] | None = None,
              weights: str = "ema") -> list[str]:
    """Initialise networks of ``model`` from another run's latest checkpoint (two-stage
    training: an encoder trained against a frozen generator, a second stage from a first).

    ``names`` default to every network both models have; ``weights="ema"`` takes the source's
    EMA copy where it has one. Returns the names loaded.
    """
    src = RunDir(source)
    folder = ckpt.latest_checkpoint(src.path)
    own = {**model.networks(), **model.frozen_networks()}
    saved = {p.stem for p in folder.glob("*.safetensors")} | \
        ({p.stem for p in src.frozen.glob("*.safetensors")} if src.frozen.exists() else set())
    if names is None:
        names = [k for k in own if k in saved]
        if not names:
            raise ConfigError(f"train.init_from: {source} has no network of this model "
                              f"({', '.join(own)}); it has {', '.join(sorted(saved))}")
    for k in names:
        if k not in own:
            raise ConfigError(f"train.init_nets: model '{model.name}' has no network '{k}'; its "
                              f"networks: {', '.join(own)}")
        for path in ((folder / f"{k}_ema.safetensors") if weights == "ema" else None,
                     folder / f"{k}.safetensors", src.frozen / f"{k}.safetensors"):
            if path is not None and path.exists():
                ckpt.load_into(own[k], path)
                break
        else:
            raise ConfigError(f"train.init_from: {source} holds no weights of network '{k}'")
    return names


def train(model: str | ModelFamily = "dcgan", data: str | Dataset = "mnist5k", *,
          steps: int | None = None, batch_size: int | None = None, seed: int | None = None,
          out: str | Path | None = None, config: str | Path | dict | None = None,
          overrides: dict | list[str] | None = None, callbacks: list[Callback] | None = None,
          progress: bool = True, save: bool = True, init_from_run: str | Path | None = None,
          overwrite: bool = False) -> Run:
    """Train a registered model (by name) or a :class:`gankit.GAN` of your networks.

    ``overrides`` are config keys, as ``["optim.lr_g=1e-4"]`` or ``{"optim.lr_g": 1e-4}``.
    With ``save=False`` nothing is written to disk. ``init_from_run`` starts from another run's
    networks (``train.init_from``; ``train.init_nets``/``train.freeze`` choose and freeze them).
    ``overwrite`` reuses an ``out`` that holds a run without a checkpoint of any trained step
    (one that failed or was stopped before its first); a run with one is refused. The run directory is
    locked while training (``.lock``: a second writer is refused).
    Returns a :class:`Run`; the trained model is ``run.generator`` (EMA weights)::

        run = gankit.train("dcgan", "mnist5k", steps=2000)
        x = run.generator.sample(64, seed=0)   # [64, 1, 28, 28] in [-1, 1]
    """
    flags: dict[str, Any] = {}
    t: dict[str, Any] = {k: v for k, v in (("steps", steps), ("batch_size", batch_size),
                                           ("seed", seed)) if v is not None}
    if init_from_run is not None:
        t["init_from"] = str(init_from_run)
    if t:
        flags["train"] = t
    if isinstance(data, str):
        flags.setdefault("data", {})["name"] = data
    if isinstance(model, GAN):
        base = {"model": {k: v for k, v in model.cfg.model.items() if k != "name"},
                "loss": model.cfg.loss.model_dump()}
        cfg = resolve_config(type(model), base, *_layers(config, overrides, flags))
    elif isinstance(model, str):
        cfg = resolve_config(model, *_layers(config, overrides, flags))
    else:
        raise ConfigError("model must be a registered name or a gankit.GAN")
    if cfg.train.init_from is not None:
        src = Path(cfg.train.init_from).expanduser().resolve()
        if not RunDir(src).exists():
            raise ConfigError(f"train.init_from: {cfg.train.init_from} is not a gankit run "
                              f"directory")
        cfg.train.init_from = str(src)  # recorded absolute: the run can be rebuilt from anywhere
    if isinstance(data, str):
        cfg.data.name = absolute_data(cfg.data.name)  # recorded absolute, like init_from
    ds = data if isinstance(data, Dataset) else _load_data(cfg, announce=True)
    if isinstance(data, Dataset):
        cfg.data.name = data.name
    info = ds.describe()
    if isinstance(model, GAN):
        model.bind(cfg, info)
        fam: ModelFamily = model
    else:
        fam = build_model(cfg, info)
    if cfg.train.init_from is not None:
        init_from(fam, cfg.train.init_from, cfg.train.init_nets, cfg.train.init_weights)
    dist_info = init_distributed(pick_device(cfg.train.device).type)
    run_dir = None
    if save:
        name = cfg.model["name"]
        run_dir = Path(out) if out is not None else default_out(name, cfg.data.name)
        if dist_info.is_main:
            _check_out(run_dir, overwrite)
    total = cfg.train.steps
    # Build (and so validate) everything before the run directory exists: a config the
    # networks, phases or optimizers refuse leaves nothing behind to block --out.
    tr = Trainer(cfg, fam, ds, run_dir, [*_callbacks(run_dir, cfg, total, progress, ds, fam),
                                         *(callbacks or [])], dist_info)
    with contextlib.ExitStack() as stack:
        if run_dir is not None and dist_info.is_main:
            rd = stack.enter_context(_run_dir_for_writing(run_dir, overwrite))
            rd.write_config(cfg.to_dict())
            rd.write_status("running", data_info=info, world=dist_info.world)
        _fit(tr, run_dir, total)
    return Run(run_dir, cfg, fam, tr, ds)


def _read_config(run_dir: Path) -> tuple[Config, dict[str, Any]]:
    rd = RunDir(run_dir)
    raw = rd.read_config()
    info = rd.data_info()
    if raw["model"].get("name") == "custom":
        raise CheckpointError("runs of custom networks are resumed/loaded from Python: rebuild "
                              "your gankit.GAN and call gankit.load(run_dir, model=...)")
    return resolve_config(raw["model"]["name"], raw), info


def resume(run_dir: str | Path, *, steps: int | None = None, progress: bool = True,
           callbacks: list[Callback] | None = None, data: str | None = None) -> Run:
    """Continue a run from its newest intact checkpoint; with the same seed and number of
    processes the result is bit-identical (on CPU) to a run that was never interrupted.

    ``steps`` raises the total; ``data`` gives the run's data at a new place (it must have the
    run's shape; the new place is recorded). Everything is checked (config, checkpoint, data,
    steps) before anything is written: a refused resume leaves the run directory as it was. The
    run directory is locked while training, so a run still training is refused. A damaged
    newest checkpoint is skipped for the newest intact one (one line on stderr says so); a run
    that stopped before its first checkpoint is trained again from step 0 with its saved
    config. A different number of processes than the checkpoint's (``--devices``) continues
    from the same weights, optimizer state, step and data position, but not bit for bit
    (:meth:`Trainer.load_checkpoint`).
    """
    run_dir = Path(run_dir)
    cfg, info = _read_config(run_dir)
    if data is not None:
        cfg.data.name = absolute_data(data)
    dist_info = init_distributed(pick_device(cfg.train.device).type)
    with contextlib.ExitStack() as stack:
        if dist_info.is_main:
            stack.enter_context(_locked(run_dir))
        folder: Path | None
        if ckpt.has_checkpoint(run_dir):
            folder = ckpt.latest_checkpoint(run_dir)
            at = ckpt.read_state(folder)["step"]
        else:
            folder, at = None, 0
            if dist_info.is_main:
                print(f"note: {run_dir} has no checkpoint (it stopped before its first); "
                      f"training it again from step 0 with its saved config", file=sys.stderr)
        if steps is not None:
            if steps < at:
                raise ConfigError(f"--steps {steps} is below the step of the checkpoint ({at}); "
                                  f"give a total of at least {at}")
            try:
                cfg.train.steps = steps
            except ValidationError as e:
                raise ConfigError(f"--steps {steps}: {e.errors()[0]['msg']}") from None
        ds = _load_data(cfg)
        if ds.describe()["shape"] != info["shape"]:
            raise CheckpointError(f"the data '{cfg.data.name}' now has shape "
                                  f"{ds.describe()['shape']}, the run was trained on "
                                  f"{info['shape']}")
        fam = build_model(cfg, info)
        tr = Trainer(cfg, fam, ds, run_dir, [*_callbacks(run_dir, cfg, cfg.train.steps, progress,
                                                         ds, fam), *(callbacks or [])], dist_info)
        if folder is not None:
            tr.load_checkpoint(folder)
        # Everything is validated: only now is the run directory written.
        if dist_info.is_main:
            rd = RunDir(run_dir)
            if steps is not None or data is not None:
                rd.write_config(cfg.to_dict())
            rd.write_status("running", world=dist_info.world)
        _fit(tr, run_dir, cfg.train.steps)
    return Run(run_dir, cfg, fam, tr, ds)


@contextlib.contextmanager
def _locked(run_dir: Path):  # type: ignore[no-untyped-def]
    """The run directory's writer lock, an unwritable folder as a one-line error."""
    try:
        lock = RunDir(run_dir).locked()
        lock.__enter__()
    except OSError as e:
        raise ConfigError(f"cannot write in the run directory {run_dir} "
                          f"({e.strerror or e})") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def load(run_dir: str | Path, *, weights: str = "ema", device: str = "cpu",
         model: ModelFamily | None = None) -> TrainedModel:
    """The whole trained model of a run (safetensors only, never pickle), in eval mode.

    ``weights`` (which checkpoint, which copy): ``ema`` (default: the latest intact checkpoint,
    every network's EMA copy substituted where the run kept one), ``raw`` (the latest intact
    checkpoint, the trained weights), ``last`` (another name for ``ema``: the latest checkpoint
    as the run samples it, the counterpart of ``best``) or ``best`` (those the evaluator kept,
    ``train.eval_every``, EMA copies where kept); ``G_ema``/``G`` are accepted for
    ``ema``/``raw``. Checkpoints are verified against their checksums; a damaged newest one is
    skipped for the newest intact one (one line on stderr). Every network is loaded, frozen
    ones and the family's own buffers included. ``model``: your :class:`gankit.GAN` for runs
    of custom networks. ``run_dir`` may also
    be a folder written by ``gankit export``.
    """
    from .exported import is_export, load_export

    if model is None and is_export(run_dir):
        return load_export(run_dir, weights=weights, device=device)
    rd = RunDir(run_dir)
    if weights not in WEIGHTS:
        raise ConfigError(f"weights must be ema, raw, last or best, got '{weights}'")
    kind = WEIGHTS[weights]
    latest = ckpt.latest_checkpoint(rd.path) if kind != "best" else None
    folder = rd.best if kind == "best" else latest
    if kind == "best" and not (folder / "best.json").exists():
        raise CheckpointError(f"{rd.path} has no best weights (train with --eval-every N to keep "
                              f"them)")
    dev = pick_device(device)
    if model is None:
        cfg, info = _read_config(rd.path)
        model = build_model(cfg, info)
    frozen = {**model.frozen_networks(),
              **{k: n for k, n in model.networks().items() if k in model.cfg.train.freeze}}
    for k, net in model.networks().items():
        if k in frozen:
            continue
        path = folder / f"{k}.safetensors"
        ema = folder / f"{k}_ema.safetensors"
        if kind in ("ema", "best") and ema.exists():
            path = ema
        if not path.exists() and kind == "best":
            raise CheckpointError(f"{folder} holds no weights of network {k}")
        ckpt.load_into(net, path)
    for k, net in frozen.items():
        ckpt.load_into(net, rd.frozen / f"{k}.safetensors")
    if model.family_buffers():
        latest = latest or ckpt.latest_checkpoint(rd.path)
        ckpt.load_into(FamilyBuffers(model), latest / "family.safetensors")
    model.to(dev).eval()
    return TrainedModel(model, dev)


def evaluate_run(run_dir: str | Path, *, metrics: list[str] | None = None, n: int = 5000,
                 features: str | None = None, feature_options: dict[str, Any] | None = None,
                 split: str = "train", seed: int = 0, weights: str = "ema",
                 write: bool = True) -> dict[str, Any]:
    """Evaluate a run's model against its dataset's ``split`` (``gankit eval RUN``).

    Generative models: ``n`` samples from ``seed`` against ``n`` real samples; translators: the
    held-out inputs translated and compared with their targets. Run-level metrics (``cas``,
    ``aug``) train a classifier on the samples. The result, with its protocol, is written to
    ``eval.json`` unless ``write`` is false.
    """
    from .metrics.evaluate import RUN_METRICS, check_metric_names, default_metrics

    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"n (the number of samples) must be a positive integer, got {n!r}")
    rd = RunDir(run_dir)
    cfg, info = _read_config(rd.path)
    ds = _load_data(cfg)
    if list(ds.shape) != list(info["shape"]):
        raise ConfigError(f"'{ds.name}' now has shape {list(ds.shape)}; the run was trained on "
                          f"{info['shape']}")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be train or test, got '{split}'")
    trained = load(rd.path, weights=weights)
    fam = trained.model
    if "sample" not in fam.capabilities:
        res = evaluate_model(fam, ds, n=n, seed=seed, metrics=metrics, features=features,
                             feature_options=feature_options)
    else:
        real = ds.x if split == "train" else ds.x_test
        if real is None:
            raise ConfigError(f"dataset '{ds.name}' has no test split; use --split train")
        names = metrics or default_metrics(real, "centers" in ds.info, ds.info)
        check_metric_names(names, allow_run=True)
        run_names = [m for m in names if m in RUN_METRICS]
        set_names = [m for m in names if m not in RUN_METRICS]
        heldout = ds.x_test if (split == "train" and "mem" in set_names) else None
        if heldout is None and "mem" in set_names:
            raise ConfigError("metric 'mem' compares with held-out data: use --split train")
        res = {"results": {}, "protocol": {"n_fake": n, "seed": seed, "metrics": {}}}
        if set_names:
            res = evaluate_model(fam, ds, n=n, seed=seed, metrics=set_names, features=features,
                                 feature_options=feature_options, split=split, heldout=heldout,
                                 image_size=cfg.data.image_size)
        from .metrics.utility import augmentation_gain, classification_accuracy_score

        for m in run_names:
            fn = classification_accuracy_score if m == "cas" else augmentation_gain
            res["results"] |= fn(trained, ds, seed=seed)
            res["protocol"]["metrics"][m] = {"classifier": "LeNet from scratch, Adam 1e-3, seeded",
                                             "test": f"{ds.name} test split"}
    res["protocol"] |= {"run": str(rd.path), "weights": weights, "dataset": ds.name,
                        "split": res["protocol"].get("split", split),  # translators: held out
                        "checkpoint": (rd.best if WEIGHTS[weights] == "best"
                                       else ckpt.latest_checkpoint(rd.path, quiet=True)).name}
    if write:
        from .rundir import atomic_write_json

        atomic_write_json(rd.eval_json, res)
    return res
