"""``gankit segment``: masks (and Monte-Carlo dropout uncertainty) from a trained segmenter.

A run of a family with the ``segment`` capability (segan, vox2vox) segments a user's images or
volumes. With ``--mc T`` the segmenter's dropout stays on for T stochastic passes (Gal &
Ghahramani 2016): the mask is then the thresholded mean probability and a variance map is
written next to it, high where the passes disagree, which is where errors concentrate
(``benchmarks/results/medical_segmentation.md`` measures how well).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from .errors import ConfigError, DataError
from .options import weights_option


def read_volumes(path: Path, info: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    """``(volumes [N, C, D, H, W] in [-1, 1], names)`` for a 3-D segmenter trained on ``info``.

    ``path``: a ``.npy``/``.npz`` array (``x`` or its single array) of shape ``[N, C, D, H, W]``,
    ``[N, D, H, W]`` (one channel) or one volume ``[D, H, W]``, or a folder of such ``.npy``
    files, one volume each (``[D, H, W]`` or ``[C, D, H, W]``). Float values must lie in
    [-1, 1] (the training scale); uint8 volumes are scaled from 0..255.
    """
    from .data.files import _pick_arrays, _read_npy_npz

    c = int((info.get("a_shape") or info["shape"])[0])

    def volumes(a: np.ndarray, where: Path, one: bool) -> torch.Tensor:
        if a.dtype.kind not in "biuf":
            raise DataError(f"{where}: holds {a.dtype} values, not numbers")
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 127.5 - 1.0
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        if t.dim() == 3 or (one and t.dim() == 4 and c > 1):
            t = t.unsqueeze(0)  # one volume
        if t.dim() == 4:
            t = t.unsqueeze(1) if c == 1 else t.unsqueeze(0)
        if t.dim() != 5 or t.shape[1] != c:
            raise DataError(f"{where}: shape {tuple(a.shape)} is not [N, {c}, D, H, W] volumes "
                            f"(or [N, D, H, W] / [D, H, W] for one channel)")
        if not torch.isfinite(t).all():
            raise DataError(f"{where}: contains NaN or Inf values")
        if t.min() < -1.0 - 1e-4 or t.max() > 1.0 + 1e-4:
            raise DataError(f"{where}: values must be scaled to [-1, 1] (as the training data), "
                            f"got [{t.min():.3g}, {t.max():.3g}]")
        return t

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".npy")
        if not files:
            raise DataError(f"{path}: no .npy volumes found")
        vols = [volumes(_pick_arrays(f, _read_npy_npz(f))[0], f, True) for f in files]
        shapes = {tuple(v.shape[1:]) for v in vols}
        if len(shapes) > 1:
            raise DataError(f"{path}: volumes of different shapes {sorted(shapes)}")
        return torch.cat(vols), [f.stem for f in files]
    if path.suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: a 3-D segmenter reads .npy/.npz volumes or a folder of .npy")
    x = volumes(_pick_arrays(path, _read_npy_npz(path))[0], path, False)
    return x, [f"{i:05d}" for i in range(len(x))]


def segment_inputs(run_dir: Path, input_: Path, out: Path, *, mc: int = 0, seed: int = 0,
                   weights: str = "ema", batch_size: int = 16) -> dict[str, Any]:
    """Segment ``input_`` with the run's model and write the results to ``out`` (see the
    ``gankit segment`` help); returns ``{"n", "files", "variance"}``."""
    from .api import load
    from .data.images import save_images

    if mc == 1:
        raise ConfigError("--mc 1 gives no variance: use --mc 0 (one deterministic pass) or "
                          "--mc T with T >= 2 Monte-Carlo dropout passes")
    if out.suffix not in ("", ".npz"):
        raise ConfigError(f"--out {out}: give a folder or a .npz file")
    if out.exists() and not out.is_dir() and out.suffix != ".npz":
        raise ConfigError(f"--out {out} is a file; give a folder or a .npz")
    g = load(run_dir, weights=weights)
    g.model.require("segment")
    info = g.model.info
    if info.get("is_volume"):
        x, names = read_volumes(input_, info)
    else:
        from .data.inputs import read_inputs

        x, names = read_inputs(input_, info)
    res = g.segment(x, seed=seed, batch_size=batch_size, mc=mc,
                    output="prob+variance" if mc >= 2 else "prob")
    prob = res[:, :1]  # [N, 1, ...] mean foreground probability
    var = res[:, 1:] if mc >= 2 else None
    mask = prob > 0.5
    if out.suffix == ".npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"mask": mask.numpy().astype(np.uint8), "prob": prob.numpy()}
        if var is not None:
            arrays["variance"] = var.numpy()
        np.savez_compressed(out, **arrays)
        return {"n": len(x), "files": [out], "variance": var is not None}
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    if x.dim() == 4:  # 2-D: PNGs (mask 0/255; variance x 4, so 0.25, its maximum, is white)
        files += save_images(mask.float() * 2 - 1, out, names=[f"{n}_mask" for n in names])
        if var is not None:
            files += save_images((4 * var).clamp(0, 1) * 2 - 1, out,
                                 names=[f"{n}_variance" for n in names])
    else:  # 3-D: one .npy per volume
        for i, n in enumerate(names):
            files.append(out / f"{n}_mask.npy")
            np.save(files[-1], mask[i].numpy().astype(np.uint8))
            if var is not None:
                files.append(out / f"{n}_variance.npy")
                np.save(files[-1], var[i].numpy())
    return {"n": len(x), "files": files, "variance": var is not None}


@click.command("segment")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--input", "input_", type=click.Path(path_type=Path), required=True,
              help="2-D models: an image, a folder of images or a .npy/.npz array; 3-D models: a "
                   ".npy/.npz of volumes or a folder of .npy volumes (values in [-1, 1]).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="A folder (NAME_mask.png / .npy per input, NAME_variance with --mc) or a .npz "
                   "(arrays mask, prob and, with --mc, variance).")
@click.option("--mc", type=click.IntRange(min=0), default=0, show_default=True,
              help="Monte-Carlo dropout passes T (>= 2): the mask is the thresholded mean and a "
                   "variance map is written; 0: one deterministic pass.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the dropout masks with --mc.")
@weights_option
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
def segment(run_dir: Path, input_: Path, out: Path, mc: int, seed: int, weights: str,
            batch_size: int) -> None:
    """Segment images or volumes with RUN_DIR's segmenter (segan, vox2vox): masks at
    probability 0.5, and with --mc T the Monte-Carlo dropout variance."""
    from .outputs import console

    r = segment_inputs(run_dir, input_, out, mc=mc, seed=seed, weights=weights,
                       batch_size=batch_size)
    what = "masks and variance maps" if r["variance"] else "masks"
    console().print(f"wrote {what} of {r['n']} inputs to {out}")


def register(cli: click.Group) -> None:
    cli.add_command(segment)
