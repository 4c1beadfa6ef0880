"""Write a built-in dataset out as an image folder, in the layouts ``--data`` reads back.

The README's tour trains on "your folder of images"; a stranger without one makes it with
``gankit datasets mnist5k --to ./images`` (class sub-folders), ``gankit datasets edges2digits
--to ./pairs`` (``A/`` and ``B/`` with matching names, for ``paired:./pairs``). Writing is
all-or-nothing: the images go to a temporary sibling folder that is renamed at the end, so an
interrupted export leaves no half-written folder behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..errors import ConfigError
from .base import Dataset
from .images import save_images


def _class_names(ds: Dataset) -> list[str]:
    names = [str(c) for c in ds.info.get("classes", [])]
    if len(names) != ds.num_classes:
        names = [f"class_{k}" for k in range(ds.num_classes)]
    width = len(str(max(ds.num_classes - 1, 0)))
    return [n.zfill(width) if n.isdigit() else n for n in names]


def write_folder(ds: Dataset, out: str | Path, *, n: int | None = None,
                 split: str = "train") -> dict[str, int]:
    """Write ``ds`` (its first ``n`` samples of ``split``) as PNGs under ``out``.

    Labelled image data: one sub-folder per class (read back as labels). Unlabelled: the images
    directly in ``out``. Paired / unpaired data: ``out/A`` (inputs) and ``out/B`` (targets),
    paired files sharing their names (also the test split of unpaired data whose held-out split
    is paired, ``info["paired_test"]``, e.g. thin2thick). Returns the number of images per sub-folder.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty folder; choose another --to")
    if ds.is_volume:
        raise ConfigError(f"'{ds.name}' holds 3-D volumes; only 2-D image data can be written as "
                          f"a folder of PNGs")
    if not ds.is_image:
        raise ConfigError(f"'{ds.name}' holds points, not images; only image data can be "
                          f"written as a folder")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be train or test, got '{split}'")
    x, y, a = (ds.x, ds.y, ds.a) if split == "train" else (ds.x_test, ds.y_test, ds.a_test)
    if x is None:
        raise ConfigError(f"'{ds.name}' has no test split; use --split train")
    if n is not None and n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    take = slice(0, n)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    counts: dict[str, int] = {}
    try:
        if a is not None:  # image-to-image: A/ inputs, B/ targets
            xa, xb = a[take], x[take]
            if ds.pairing == "paired" or (split == "test" and ds.info.get("paired_test")):
                names = [f"{i:05d}" for i in range(len(xb))]
                save_images(xa, tmp / "A", names=names)
                save_images(xb, tmp / "B", names=names)
            else:
                save_images(xa, tmp / "A")
                save_images(xb, tmp / "B")
            counts = {"A": len(xa), "B": len(xb)}
        elif y is not None and ds.num_classes > 0:
            xs, ys = x[take], y[take]
            for k, name in enumerate(_class_names(ds)):
                sel = torch.nonzero(ys == k).flatten()
                if len(sel):
                    save_images(xs[sel], tmp / name, prefix=name)
                    counts[name] = len(sel)
        else:
            save_images(x[take], tmp)
            counts = {".": len(x[take])}
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts
