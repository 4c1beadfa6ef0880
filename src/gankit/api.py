"""The Python API: ``train``, ``resume``, ``load``. The CLI is a thin layer over these."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import __version__
from .config import Config, load_config_file, parse_overrides, resolve_config
from .data import Dataset, load_data
from .errors import CheckpointError, ConfigError, Interrupted
from .models import ModelFamily, get_family
from .models.custom import GAN
from .train import checkpoint as ckpt
from .train.callbacks import Evaluator, MetricsLogger, SampleGrids, read_metrics
from .train.distributed import init_distributed
from .train.trainer import Callback, Trainer, pick_device


class Sampler:
    """A trained generator: ``sample(n, seed=, labels=, truncation=)``."""

    def __init__(self, model: ModelFamily, G: nn.Module, device: torch.device) -> None:
        self.model = model
        self.G = G.eval()
        self.device = device

    @property
    def conditional(self) -> bool:
        return self.model.conditional

    @torch.inference_mode()
    def sample(self, n: int, *, seed: int | None = None, labels: Any = None,
               truncation: float | None = None, batch_size: int = 500) -> Tensor:
        """``n`` samples on the CPU: images ``[n, C, H, W]`` in [-1, 1] or points ``[n, D]``.

        ``labels`` (conditional models): an int for one class, or a sequence of ``n`` ints;
        default cycles through the classes. ``truncation``: latent components with
        ``|z| > truncation`` are redrawn (the truncation trick, Brock et al. 2019).
        """
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        gen = torch.Generator(self.device)
        # No seed: fresh entropy, without reseeding torch's global generator as torch.seed() would.
        gen.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(7), "little"))
        c = self._labels(n, labels)
        out = []
        for i in range(0, n, batch_size):
            m = min(batch_size, n - i)
            z = self.model.sample_latent(m, gen, self.device)
            if truncation is not None:
                if truncation <= 0:
                    raise ConfigError("truncation must be > 0")
                while True:
                    bad = z.abs() > truncation
                    if not bad.any():
                        break
                    z = torch.where(bad, self.model.sample_latent(m, gen, self.device), z)
            ci = None if c is None else c[i:i + m]
            out.append(self.model.generate(self.G, z, ci).float().cpu())
        return torch.cat(out)

    def _labels(self, n: int, labels: Any) -> Tensor | None:
        if not self.conditional:
            if labels is not None:
                raise ConfigError("this model is unconditional: labels cannot be chosen")
            return None
        k = self.model.num_classes
        if labels is None:
            c = torch.arange(n) % k
        elif isinstance(labels, int):
            c = torch.full((n,), labels)
        else:
            c = torch.as_tensor(list(labels), dtype=torch.int64)
            if c.shape != (n,):
                raise ConfigError(f"labels must be one int or {n} ints, got {tuple(c.shape)}")
        if c.min() < 0 or c.max() >= k:
            raise ConfigError(f"labels must lie in [0, {k - 1}]")
        return c.to(self.device, torch.int64)


@dataclass
class Run:
    """A training run: its directory, config, model and trainer."""

    run_dir: Path | None
    cfg: Config
    model: ModelFamily
    trainer: Trainer
    data: Dataset

    @property
    def generator(self) -> Sampler:
        return Sampler(self.model, self.trainer.G_sample, self.trainer.device)

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.run_dir) if self.run_dir else []


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
    stem = Path(data).name if ("/" in data or "." in data) else data
    return Path("runs") / f"{model}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _write_run_files(run_dir: Path, cfg: Config, ds: Dataset, status: str) -> None:
    ckpt.atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    write_status(run_dir, status, data_info=ds.describe())


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    p = run_dir / "run.json"
    info = json.loads(p.read_text()) if p.exists() else {
        "gankit": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    info.update(extra)
    info["status"] = status
    ckpt.atomic_write_text(p, json.dumps(info, indent=2) + "\n")


def _callbacks(run_dir: Path | None, cfg: Config, total: int, progress: bool,
               ds: Dataset) -> list[Callback]:
    cbs: list[Callback] = [MetricsLogger(run_dir, cfg.train.log_every, total,
                                         progress and cfg.train.progress, cfg.train.tensorboard)]
    if cfg.train.doctor:  # right after the logger: it reads the record just logged
        from .doctor import Doctor

        cbs.append(Doctor(run_dir, ds, total, progress and cfg.train.progress))
    if run_dir is not None:
        cbs.append(SampleGrids(run_dir, cfg.train.sample_every))
    if cfg.train.eval_every > 0:
        cbs.append(Evaluator(run_dir, ds))
    return cbs


def _fit(trainer: Trainer, run_dir: Path | None, steps: int | None) -> None:
    main = trainer.dist.is_main and run_dir is not None
    try:
        trainer.fit(steps)
    except KeyboardInterrupt:
        if main:
            write_status(run_dir, "interrupted", step=trainer.step)
        if run_dir is not None:
            raise Interrupted(run_dir, trainer.step) from None
        raise
    except BaseException:
        if main:
            write_status(run_dir, "failed", step=trainer.step)
        raise
    if main:
        write_status(run_dir, "finished", step=trainer.step)


def train(model: str | ModelFamily = "dcgan", data: str | Dataset = "mnist5k", *,
          steps: int | None = None, batch_size: int | None = None, seed: int | None = None,
          out: str | Path | None = None, config: str | Path | dict | None = None,
          overrides: dict | list[str] | None = None, callbacks: list[Callback] | None = None,
          progress: bool = True, save: bool = True) -> Run:
    """Train a registered model (by name) or a :class:`gankit.GAN` of your networks.

    ``overrides`` are config keys, as ``["optim.lr_g=1e-4"]`` or ``{"optim.lr_g": 1e-4}``.
    With ``save=False`` nothing is written to disk. Returns a :class:`Run`; the trained
    generator is ``run.generator`` (G_ema when EMA is on)::

        run = gankit.train("dcgan", "mnist5k", steps=2000)
        x = run.generator.sample(64, seed=0)   # [64, 1, 28, 28] in [-1, 1]
    """
    flags: dict[str, Any] = {}
    t = {k: v for k, v in (("steps", steps), ("batch_size", batch_size), ("seed", seed))
         if v is not None}
    if t:
        flags["train"] = t
    if isinstance(data, str):
        flags.setdefault("data", {})["name"] = data
    name = "custom" if isinstance(model, GAN) else model
    if not isinstance(name, str):
        raise ConfigError("model must be a registered name or a gankit.GAN")
    if isinstance(model, GAN):
        base = {"model": {k: v for k, v in model.cfg.model.items() if k != "name"},
                "loss": model.cfg.loss.model_dump()}
        layers = [base, *_layers(config, overrides, flags)]
    else:
        layers = _layers(config, overrides, flags)
    cfg = resolve_config(name, *layers)
    ds = data if isinstance(data, Dataset) else load_data(
        cfg.data.name, image_size=cfg.data.image_size, channels=cfg.data.channels,
        seed=cfg.train.seed)
    if isinstance(data, Dataset):
        cfg.data.name = data.name
    info = ds.describe()
    if isinstance(model, GAN):
        model.bind(cfg, info)
        fam: ModelFamily = model
    else:
        torch.manual_seed(cfg.train.seed)  # network initialisation
        fam = get_family(name)(cfg, info)
    dist_info = init_distributed(pick_device(cfg.train.device).type)
    run_dir = None
    if save:
        run_dir = Path(out) if out is not None else default_out(name, cfg.data.name)
        if dist_info.is_main:
            if run_dir.exists() and any(run_dir.iterdir()):
                raise ConfigError(f"{run_dir} already exists and is not empty; choose another "
                                  f"--out or continue it with: gankit resume {run_dir}")
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_run_files(run_dir, cfg, ds, "running")
    total = cfg.train.steps
    tr = Trainer(cfg, fam, ds, run_dir, [*_callbacks(run_dir, cfg, total, progress, ds),
                                         *(callbacks or [])], dist_info)
    _fit(tr, run_dir, total)
    return Run(run_dir, cfg, fam, tr, ds)


def _read_config(run_dir: Path) -> tuple[Config, dict[str, Any]]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no such run directory: {run_dir}")
    try:
        raw = json.loads((run_dir / "config.json").read_text())
        info = json.loads((run_dir / "run.json").read_text())["data_info"]
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir} is not a gankit run directory (config.json/run.json "
                              f"missing)") from None
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{run_dir}: corrupt config.json/run.json ({e})") from None
    if raw["model"]["name"] == "custom":
        raise CheckpointError("runs of custom networks are resumed/loaded from Python: rebuild "
                              "your gankit.GAN and call gankit.load(run_dir, model=...)")
    return resolve_config(raw["model"]["name"], raw), info


def resume(run_dir: str | Path, *, steps: int | None = None, progress: bool = True,
           callbacks: list[Callback] | None = None) -> Run:
    """Continue a run from its latest checkpoint; with the same seed the result is bit-identical
    (on CPU) to a run that was never interrupted. ``steps`` raises the total."""
    run_dir = Path(run_dir)
    cfg, info = _read_config(run_dir)
    folder = ckpt.latest_checkpoint(run_dir)
    if steps is not None:
        cfg.train.steps = steps
        ckpt.atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    ds = load_data(cfg.data.name, image_size=cfg.data.image_size, channels=cfg.data.channels,
                   seed=cfg.train.seed)
    if ds.describe()["shape"] != info["shape"]:
        raise CheckpointError(f"the data '{cfg.data.name}' now has shape {ds.describe()['shape']}, "
                              f"the run was trained on {info['shape']}")
    torch.manual_seed(cfg.train.seed)
    fam = get_family(cfg.model["name"])(cfg, info)
    dist_info = init_distributed(pick_device(cfg.train.device).type)
    tr = Trainer(cfg, fam, ds, run_dir, [*_callbacks(run_dir, cfg, cfg.train.steps, progress, ds),
                                         *(callbacks or [])], dist_info)
    tr.load_checkpoint(folder)
    if dist_info.is_main:
        write_status(run_dir, "running")
    _fit(tr, run_dir, cfg.train.steps)
    return Run(run_dir, cfg, fam, tr, ds)


def load(run_dir: str | Path, *, weights: str = "G_ema", device: str = "cpu",
         model: ModelFamily | None = None) -> Sampler:
    """The generator of a run's latest checkpoint (safetensors only, never pickle).

    ``weights``: ``G_ema`` (default; falls back to ``G`` when the run had no EMA) or ``G``.
    ``model``: your :class:`gankit.GAN` for runs of custom networks.
    """
    run_dir = Path(run_dir)
    folder = ckpt.latest_checkpoint(run_dir)
    dev = pick_device(device)
    if model is None:
        cfg, info = _read_config(run_dir)
        model = get_family(cfg.model["name"])(cfg, info)
    if weights not in ("G_ema", "G"):
        raise ConfigError(f"weights must be G_ema or G, got '{weights}'")
    path = folder / f"{weights}.safetensors"
    if weights == "G_ema" and not path.exists():
        path = folder / "G.safetensors"
    ckpt.load_into(model.G, path)
    model.to(dev)
    return Sampler(model, model.G, dev)
