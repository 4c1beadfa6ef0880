"""Portable exports of a trained model (``gankit export RUN --out DIR``).

An export is a folder that holds everything needed to use the model and nothing of the
training state, in the spirit of a diffusers/Hugging Face model folder::

    DIR/gankit-export.json     the manifest: format version, model, weights kind, step, data
                               description, network list, SHA-256 of every file, ONNX check
    DIR/config.json            the resolved config of the run
    DIR/weights/{net}.safetensors   every network (EMA copies where kept, --weights)
    DIR/weights/family.safetensors  the family's own buffers (BEGAN's k_t, ...), if any
    DIR/README.md              the model card
    DIR/samples.png            a sample grid (referenced from the card)
    DIR/model.onnx             with --onnx: the sampling network

``gankit.load(DIR)`` (and ``gankit sample/translate DIR``) recognise the folder by its
manifest and rebuild the model from the config and the data description alone: no data, no
checkpoint, no pickled code (safetensors only; every file's checksum is verified on load).
The folder is written beside its destination and renamed into place, so an interrupted export
leaves nothing that looks complete.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .errors import CheckpointError, ConfigError
from .exported import (  # noqa: F401  (is_export, load_export: part of this module's API)
    EXPORT_FORMAT,
    EXPORT_MANIFEST,
    _all_networks,
    _read_json,
    is_export,
    load_export,
    read_manifest,
)
from .models.base import CapabilityError, GANFamily, ModelFamily
from .rundir import RunDir, atomic_write_json, sha256_file

__all__ = ["EXPORT_FORMAT", "EXPORT_MANIFEST", "ONNX_TOLERANCE", "export_onnx", "export_run",
           "is_export", "load_export", "model_card"]

#: Largest absolute difference (images in [-1, 1]) accepted between ONNX Runtime and PyTorch on
#: the check batch: float32 kernels differ by rounding only (typically ~1e-6).
ONNX_TOLERANCE = 1e-4


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

def export_run(run_dir: str | Path, out: str | Path, *, weights: str = "ema",
               onnx: bool = False, seed: int = 0, n_samples: int = 64) -> dict[str, Any]:
    """Export the model of ``run_dir`` to the folder ``out`` (see the module docstring).

    ``weights``: ``ema`` (the sampling weights: EMA copies where the run kept them), ``raw`` or
    ``best`` (those kept by ``train.eval_every``). ``onnx`` adds ``model.onnx`` of the sampling
    network, checked against PyTorch with ONNX Runtime (:func:`export_onnx`). Returns the
    manifest. ``out`` must not exist or be empty.
    """
    from .api import load
    from .train import checkpoint as ckpt
    from .trained import WEIGHTS

    rd = RunDir(run_dir)
    raw_cfg = rd.read_config()
    if raw_cfg["model"].get("name") == "custom":
        raise ConfigError("runs of custom networks (gankit.GAN) cannot be exported: their code is "
                          "yours, not gankit's; save their state_dict from Python")
    if weights not in WEIGHTS:
        raise ConfigError(f"weights must be ema, raw, last or best, got '{weights}'")
    kind = WEIGHTS[weights]
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty folder; choose another --out")
    trained = load(rd.path, weights=weights)
    model = trained.model
    folder = rd.best if kind == "best" else ckpt.latest_checkpoint(rd.path)
    state = ckpt.read_state(ckpt.latest_checkpoint(rd.path)) if kind != "best" else {}
    best = _read_json(rd.best / "best.json")
    step = int(best.get("step", 0)) if kind == "best" and best else int(state.get("step", 0))

    if out.exists():
        out.rmdir()  # empty: replaced by the finished folder below
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "weights").mkdir(parents=True)
    try:
        nets = _all_networks(model)
        ema_names = set(getattr(model, "ema_networks", ()))
        net_rows: dict[str, Any] = {}
        for name, net in nets.items():
            save_file(_state(net), tmp / "weights" / f"{name}.safetensors")
            used_ema = kind in ("ema", "best") and name in ema_names and \
                (folder / f"{name}_ema.safetensors").exists()
            net_rows[name] = {"parameters": sum(p.numel() for p in net.parameters()),
                              "weights": "ema" if used_ema else "raw",
                              "frozen": name in model.frozen_networks()}
        if model.family_buffers():
            save_file({k: v.detach().contiguous().cpu() for k, v in model.family_buffers().items()},
                      tmp / "weights" / "family.safetensors")
        cfg = model.cfg.to_dict()
        atomic_write_json(tmp / "config.json", cfg)
        grid = _sample_grid(trained, rd, tmp / "samples.png", seed, n_samples)
        evals = {"eval": _read_json(rd.eval_json), "best": best}
        manifest: dict[str, Any] = {
            "format": "gankit-export", "version": EXPORT_FORMAT, "model": model.name,
            "weights": kind, "step": step, "source_run": str(rd.path.resolve()),
            "checkpoint": folder.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "torch": torch.__version__, "gankit": _version(), "data_info": model.info,
            "networks": net_rows, "capabilities": sorted(model.capabilities),
            "conditional": model.conditional, "samples": grid.name if grid else None,
        }
        if onnx:
            manifest["onnx"] = export_onnx(trained, tmp / "model.onnx", seed=seed)
        (tmp / "README.md").write_text(model_card(manifest, cfg, evals, rd.read_info()))
        manifest["files"] = {str(p.relative_to(tmp)): sha256_file(p)
                             for p in sorted(tmp.rglob("*")) if p.is_file()}
        atomic_write_json(tmp / EXPORT_MANIFEST, manifest)
        _shareable(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _shareable(folder: Path) -> None:
    """Ordinary permissions (as the umask allows): temporary-file writers create files readable
    by their owner only, and an export is meant to be shared."""
    mask = os.umask(0o022)
    os.umask(mask)
    for p in [folder, *folder.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gankit")
    except PackageNotFoundError:
        return "unknown"


def _sample_grid(trained: Any, rd: RunDir, path: Path, seed: int, n: int) -> Path | None:
    """A fresh grid from the exported weights for generative models; for translators (which
    need inputs) the run's newest preview grid of (input, output, target) rows."""
    from .train.callbacks import save_samples

    if "sample" in trained.capabilities:
        save_samples(trained.sample(n, seed=seed), path, nrow=8 if trained.conditional else None)
        return path
    grids = sorted(rd.samples.glob("step_*.png")) if rd.samples.is_dir() else []
    if grids:
        shutil.copyfile(grids[-1], path)
        return path
    return None


# ---------------------------------------------------------------------------------------------
# the model card
# ---------------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def model_card(manifest: dict[str, Any], cfg: dict[str, Any], evals: dict[str, Any],
               run_info: dict[str, Any]) -> str:
    """The README.md of an export: what the model is, what it was trained on and how, how well
    it did (where evaluated), and how to use it."""
    from .config import TricksConfig
    from .registry import MODELS
    from .tricks import active

    name = manifest["model"]
    desc = MODELS.entry(name).description if name in MODELS else ""
    info = manifest["data_info"]
    t, o, loss = cfg.get("train", {}), cfg.get("optim", {}), cfg.get("loss", {})
    lines = [f"# {name}: {desc}" if desc else f"# {name}", "",
             (f"A `gankit` model exported from the run `{manifest['source_run']}` at step "
             f"{manifest['step']} ({manifest['weights']} weights). "
             f"It can: {', '.join(manifest['capabilities']) or 'nothing beyond training'}."), ""]
    if manifest.get("samples"):
        lines += [f"![samples from the exported weights]({manifest['samples']})", ""]
    lines += ["## Data", "",
              (f"- dataset: `{cfg.get('data', {}).get('name', info.get('name'))}` "
              f"({info.get('n', '?')} training samples, kind {info.get('kind', '?')})"),
              f"- sample shape: {info.get('shape')}"
              + (f", input shape {info['a_shape']} ({info.get('pairing')})"
                 if "a_shape" in info else ""),
              f"- classes: {info.get('num_classes', 0)}"
              + (" (the model is conditional: choose them with `labels`)"
                 if manifest.get("conditional") else ""), ""]
    tricks = active(TricksConfig(**cfg.get("tricks", {})))
    trick_text = ", ".join(f"{k}={_fmt(cfg['tricks'][k])}" for k in tricks) or "none"
    opt = (f"{o.get('name', 'adam')}, lr {_fmt(o['lr'])}" if o.get("lr") is not None else
           f"{o.get('name', 'adam')}, lr G {_fmt(o.get('lr_g'))} / D {_fmt(o.get('lr_d'))}, "
           f"betas G {_fmt(o.get('betas_g'))} / D {_fmt(o.get('betas_d'))}")
    lines += ["## Training procedure", "",
              f"- steps: {t.get('steps')} planned, weights taken at step {manifest['step']}",
              f"- batch size: {t.get('batch_size')}",
              f"- loss: {loss.get('name')}" + (f", penalty {loss['gp']} (lambda "
                                               f"{_fmt(loss.get('lambda_gp'))})"
                                               if loss.get("gp") else ""),
              (f"- optimiser: {opt}; {o.get('n_critic', 1)} D step(s) per G step; schedule "
              f"{o.get('schedule', 'constant')}"),
              "- EMA of the sampling networks: "
              + (f"decay {t.get('ema_decay')}" if t.get("ema") else "off"),
              f"- tricks: {trick_text}",
              f"- seed: {t.get('seed')}; precision {t.get('amp', 'none')}",
              (f"- trained with gankit {run_info.get('gankit', '?')}, torch "
              f"{run_info.get('torch', '?')}"), "",
              "Networks:", "", "| network | parameters | weights |", "|---|---|---|"]
    for k, r in manifest["networks"].items():
        lines.append(f"| {k} | {r['parameters']:,} | {r['weights']}"
                     f"{' (frozen)' if r.get('frozen') else ''} |")
    lines += ["", "## Evaluation", ""]
    ev, best = evals.get("eval") or {}, evals.get("best") or {}
    if ev.get("results"):
        p = ev.get("protocol", {})
        feats = (p.get("features") or {}).get("extractor", "-")
        lines += [(f"From `gankit eval` (features {feats}, {p.get('n_fake', '?')} generated vs "
                  f"{p.get('n_real', '?')} real samples, seed {p.get('seed', '?')}, weights "
                  f"{p.get('weights', '?')}):"), "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in ev["results"].items()
                  if isinstance(v, (int, float))]
        lines.append("")
    if best:
        lines += [(f"Best during training (`train.eval_every`): {best.get('metric')} = "
                  f"{_fmt(best.get('value'))} at step {best.get('step')}."), ""]
    if not ev.get("results") and not best:
        lines += [("Not evaluated: the run has no eval.json and kept no best weights. Quality is "
                  "unmeasured; run `gankit eval RUN` before relying on this model."), ""]
    if manifest.get("onnx"):
        ox = manifest["onnx"]
        size = ("any batch size" if ox["batch"] == "dynamic" else
                f"a fixed batch of {ox['batch']} (its normalisation uses the batch's statistics)")
        lines += ["## ONNX", "",
                  (f"`model.onnx` (opset {ox['opset']}): inputs "
                   f"{', '.join(f'{k} {v}' for k, v in ox['input_specs'].items())} -> "
                  f"{ox['output']}, {size}. Checked against PyTorch with ONNX Runtime on "
                  f"batches of {' and '.join(map(str, ox['checked_batches']))}: max abs "
                  f"difference {ox['max_abs_diff']:.3g} (tolerance {ox['tolerance']:g})."), "",
                  "```python", "import onnxruntime as ort",
                  "sess = ort.InferenceSession(\"THIS_FOLDER/model.onnx\")",
                  f"out = sess.run(None, {{{', '.join(repr(k) + ': ...' for k in ox['inputs'])}}})[0]",
                  "```", ""]
    can = set(manifest["capabilities"])
    lines += ["## Use", "", "```python", "import gankit", "",
              "model = gankit.load(\"THIS_FOLDER\")"]
    if "sample" in can:
        lines.append("x = model.sample(16, seed=0)  # images in [-1, 1], [16, C, H, W]"
                     if info.get("is_image") else "x = model.sample(16, seed=0)  # [16, D]")
    if "translate" in can:
        lines.append("y = model.translate(x)  # x: input-domain images in [-1, 1]")
    lines += ["```", "", "```sh"]
    if "sample" in can:
        lines.append("gankit sample THIS_FOLDER --n 64 --out samples.png")
        if info.get("is_image"):
            lines.append("gankit sample THIS_FOLDER --interpolate 8 --out walk.png  # + walk.gif")
    if "translate" in can:
        lines.append("gankit translate THIS_FOLDER --input images/ --out translated/")
    lines += ["```", "", "Files: `config.json` (resolved config), `weights/*.safetensors`, "
              f"`{EXPORT_MANIFEST}` (manifest with SHA-256 checksums)"
              + (", `model.onnx`" if manifest.get("onnx") else "") + ".", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------

class _Sampler(nn.Module):
    """The sampling network as a module of plain tensors, for ``torch.onnx.export``."""

    def __init__(self, model: ModelFamily, mode: str) -> None:
        super().__init__()
        self.model = model
        self.mode = mode

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        m = self.model
        if self.mode == "gan":
            return m.generate(m.G, x, c)  # type: ignore[attr-defined]
        if self.mode == "decode":
            return m.decode(x, mean=True)  # type: ignore[call-arg]
        if c is not None:  # a stochastic translator's code (augmented CycleGAN)
            return m.translate(x, z=c)
        return m.translate(x)


def _onnx_inputs(model: ModelFamily, n: int, seed: int
                 ) -> tuple[str, tuple[torch.Tensor, ...], list[str]]:
    if not type(model).sampling_network:
        raise CapabilityError(f"model '{model.name}' has no sampling network to export to ONNX "
                              f"(it samples iteratively or without a network)")
    g = torch.Generator().manual_seed(seed)
    if "sample" in model.capabilities and isinstance(model, GANFamily):
        z = model.sample_latent(n, g)
        if model.conditional:
            return "gan", (z, torch.arange(n) % model.num_classes), ["z", "labels"]
        return "gan", (z,), ["z"]
    if "sample" in model.capabilities and "decode" in model.capabilities:
        return "decode", (torch.randn(n, int(model.latent_dim), generator=g),), ["z"]
    if "translate" in model.capabilities:
        shape = model.info.get("a_shape") or model.info["shape"]
        if getattr(getattr(model, "p", None), "test_dropout", False):
            raise CapabilityError(f"model '{model.name}' draws dropout masks when it translates "
                                  f"(model.test_dropout), which ONNX does not reproduce")
        image = torch.rand(n, *shape, generator=g) * 2 - 1
        code = int(getattr(model, "translate_code_dim", 0))  # translators that take a code z
        if code:
            return "translate", (image, torch.randn(n, code, generator=g)), ["image", "z"]
        return "translate", (image,), ["image"]
    raise CapabilityError(f"model '{model.name}' has no sampling network to export to ONNX")


def _baked(model: ModelFamily) -> ModelFamily:
    """A copy of ``model`` (in eval mode) whose parametrised weights (spectral norm in a
    generator, as SAGAN's) are plain tensors: the file stores the normalised weights, not the
    power iteration (whose ``vdot`` ONNX lacks). In eval mode spectral norm does not update its
    vectors, so these are the weights every forward would use; ``model`` is not changed."""
    from torch.nn.utils import parametrize

    if not any(parametrize.is_parametrized(m) for m in model.modules()):
        return model
    plain = copy.deepcopy(model)
    for m in list(plain.modules()):
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return plain


def export_onnx(trained: Any, path: str | Path, *, seed: int = 0, batch: int = 4,
                opset: int = 17) -> dict[str, Any]:
    """Write the sampling network of ``trained`` to ``path`` as ONNX and check it.

    Generators: ``z`` (``[N, latent]``, plus ``labels`` int64 ``[N]`` for conditional models)
    -> images; the VAE: its code ``z`` -> the decoder's mean; translators: input images ->
    outputs. The batch dimension is dynamic, except for translators whose normalisation uses
    the batch's own statistics (pix2pix's test-time batch norm), which the exporter can only
    write for a fixed batch: those take one image at a time (batch norm over one image is the
    paper's setting). The file is run with ONNX Runtime on a fixed batch and, when the batch is
    dynamic, on a second batch of another size, and compared with PyTorch: a difference above
    :data:`ONNX_TOLERANCE` is an error. Uses the TorchScript-based exporter (``dynamo=False``):
    torch's newer exporter needs ``onnxscript``, which gankit does not require. Returns what the
    manifest records.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("--onnx needs onnx and onnxruntime: pip install 'gankit[onnx]'") \
            from None

    model: ModelFamily = trained.model
    mode, inputs, names = _onnx_inputs(model, batch, seed)
    _, inputs2, _ = _onnx_inputs(model, batch + 3, seed + 1)  # another size: a dynamic batch
    path = Path(path)
    dyn = {k: {0: "batch"} for k in [*names, "output"]}
    with model.substituted(trained.nets), model.evaluating(), torch.no_grad():
        # eval mode on the wrapper too: the exporter restores the wrapper's mode on every
        # submodule afterwards, which would leave batch norm in training mode
        wrapper = _Sampler(_baked(model), mode).eval()
        checks = [(inputs, wrapper(*inputs).float()), (inputs2, wrapper(*inputs2).float())]
        fixed = None
        try:
            _trace(wrapper, inputs, path, names, dyn, opset)
        except Exception as e:  # noqa: BLE001  (an operator ONNX lacks, an untraceable branch)
            if mode != "translate":
                raise CapabilityError(f"model '{model.name}' cannot be exported to ONNX "
                                      f"({_first_line(e)})") from None
            one = tuple(t[:1] for t in inputs)
            try:
                _trace(wrapper, one, path, names, None, opset)
            except Exception as e2:  # noqa: BLE001
                raise CapabilityError(f"model '{model.name}' cannot be exported to ONNX "
                                      f"({_first_line(e2)})") from None
            fixed, checks = 1, [(one, wrapper(*one).float())]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diff = 0.0
    for ins, want in checks:
        try:
            got = sess.run(None, {k: v.numpy() for k, v in zip(names, ins)})[0]
        except Exception as e:  # noqa: BLE001  (ONNX Runtime's own error types)
            path.unlink(missing_ok=True)
            raise CapabilityError(f"the ONNX model of '{model.name}' does not run on a batch of "
                                  f"{len(ins[0])} ({_first_line(e)[:200]})") from None
        if got.shape != tuple(want.shape):
            diff = math.inf
            break
        diff = max(diff, float((torch.from_numpy(got).float() - want).abs().max()))
    if not diff <= ONNX_TOLERANCE:
        path.unlink(missing_ok=True)
        raise CheckpointError(f"the ONNX model of '{model.name}' differs from PyTorch by "
                              f"{diff:.3g} (tolerance {ONNX_TOLERANCE:g}); not exported")
    return {"file": path.name, "opset": opset, "inputs": names, "output": "output",
            "mode": mode, "batch": fixed or "dynamic",
            "input_specs": {k: _spec(v, fixed) for k, v in zip(names, inputs)},
            "checked_batches": [len(ins[0]) for ins, _ in checks], "check_seed": seed,
            "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE,
            "runtime": f"onnxruntime {ort.__version__}"}


def _spec(t: torch.Tensor, batch: int | None) -> str:
    """``"float32 [N, 100]"``: an input's dtype and shape, ``N`` for a dynamic batch."""
    dims = [str(batch or "N"), *map(str, t.shape[1:])]
    return f"{str(t.dtype).replace('torch.', '')} [{', '.join(dims)}]"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _trace(wrapper: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, names: list[str],
           dyn: dict[str, Any] | None, opset: int) -> None:
    import contextlib
    import io
    import warnings

    # the legacy exporter's deprecation notice, and the whole graph it prints on a failure
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, inputs, str(path), dynamo=False, input_names=names,
                          output_names=["output"], dynamic_axes=dyn, opset_version=opset)
