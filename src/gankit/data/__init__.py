"""Datasets: built-ins, image folders and arrays, all held in memory as one tensor.

``load_data(spec)`` accepts a built-in name (``gankit datasets`` lists them), a folder of images
(class sub-folders become labels), ``paired:DIR`` or ``unpaired:DIR`` for image-to-image data
(see :func:`~gankit.data.files.load_paired_folder`), or a ``.npy``/``.npz`` file.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..registry import DATASETS, did_you_mean
from . import builtin  # noqa: F401  (registers the built-ins)
from .base import Dataset
from .files import load_arrays, load_image_folder, load_paired_folder

__all__ = ["DATASETS", "Dataset", "dataset_meta", "load_data"]


def dataset_meta(name: str) -> dict:
    """The registry metadata of a built-in dataset (``{}`` for a user's folder or file).

    Keys: ``kind`` (images, points, paired, unpaired), ``classes`` (names), ``features`` (the
    feature extractor that fits the data), ``metrics`` (the default evaluation), ``probe`` (what
    the doctor's sample probes measure: digits, toy, images, points).
    """
    return dict(DATASETS.entry(name).meta) if name in DATASETS else {}


def load_data(spec: str, *, image_size: int | None = None, channels: int | None = None,
              seed: int = 0) -> Dataset:
    """Load a dataset by built-in name or path.

    ``paired:DIR`` and ``unpaired:DIR`` load image-to-image data from the folder ``DIR``
    (domain A as the input ``a``, domain B as the target ``x``). ``image_size`` resizes images
    (square) and ``channels`` forces 1 (grayscale) or 3 (RGB); both apply to image folders and
    image arrays. Bad data raises :class:`DataError`.
    """
    for pairing in ("paired", "unpaired"):
        if spec.startswith(pairing + ":"):
            folder = spec[len(pairing) + 1:]
            if not folder:
                raise DataError(f"'{spec}' names no folder; write {pairing}:DIR, e.g. "
                                f"{pairing}:./images")
            return load_paired_folder(Path(folder), image_size=image_size, channels=channels,
                                      pairing=pairing)
    if spec in DATASETS:
        ds = DATASETS.get(spec)(seed=seed)
        ds.info = {**dataset_meta(spec), **ds.info}
        if image_size is not None and ds.is_image and image_size != ds.resolution:
            from .files import resize_images

            for key in ("x", "x_test", "a", "a_test"):
                if getattr(ds, key) is not None:
                    setattr(ds, key, resize_images(getattr(ds, key), image_size))
        return ds
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_image_folder(path, image_size=image_size, channels=channels)
    if path.suffix in (".npy", ".npz"):
        if not path.exists():
            raise DataError(f"no such file: {path}")
        return load_arrays(path, image_size=image_size, channels=channels)
    if path.exists():
        raise DataError(f"{path}: expected a folder of images or a .npy/.npz file")
    looks_like_path = any(ch in spec for ch in "/\\.") or spec.startswith("~")
    if looks_like_path:
        raise DataError(f"no such file or folder: {path}")
    raise DataError(
        f"unknown dataset '{spec}'{did_you_mean(spec, DATASETS.names())}; built-ins: "
        f"{', '.join(DATASETS.names())}, or give a folder of images, paired:DIR or "
        f"unpaired:DIR, or a .npy/.npz file"
    )
