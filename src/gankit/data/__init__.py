"""Datasets: built-ins, image folders and zips, prepared shards and arrays.

``load_data(spec)`` accepts a built-in name (``gankit datasets`` lists them), a folder of images
or a ``.zip`` of one (class sub-folders become labels), a folder written by ``gankit prepare``
(uint8 shards), ``paired:DIR`` or ``unpaired:DIR`` for image-to-image data (see
:func:`~gankit.data.files.load_paired_folder`), a ``.npy``/``.npz`` file, or NIfTI volumes and
DICOM series (a file, or a folder of them: their 2-D slices, windowed; see
:mod:`gankit.data.medical`).

Small sets are decoded into one float32 tensor (batches are index slices, DESIGN §4). A folder,
zip or prepared set whose decoded float32 tensor would exceed :data:`STREAM_THRESHOLD` bytes
(``data.stream=auto``; ``true``/``false`` force it) is streamed instead: its ``x`` is an
:class:`~gankit.data.store.ImageStore` of uint8 images read on demand, and training draws
batches through a DataLoader with workers (:mod:`gankit.data.stream`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from ..registry import DATASETS, did_you_mean
from . import (  # noqa: F401  (register the built-in datasets and tasks)
    anomaly_tasks,
    attribution_tasks,
    builtin,
    contrast_tasks,
    segmentation_tasks,
    translation_tasks,
)
from .base import Dataset
from .files import load_arrays, load_paired_folder
from .sizes import ANY_SIZE, ImageSizes

__all__ = ["DATASETS", "STREAM_THRESHOLD", "Dataset", "dataset_meta", "load_data"]

#: ``data.stream=auto`` streams a folder, zip or prepared set whose images, decoded to float32,
#: would take more than this many bytes (512 MiB: e.g. 11,000 RGB images at 64 px).
STREAM_THRESHOLD = 512 << 20


def dataset_meta(name: str) -> dict:
    """The registry metadata of a built-in dataset (``{}`` for a user's folder or file).

    Keys: ``kind`` (images, points, paired, unpaired), ``classes`` (names), ``features`` (the
    feature extractor that fits the data), ``metrics`` (the default evaluation), ``probe`` (what
    the doctor's sample probes measure: digits, toy, images, points).
    """
    return dict(DATASETS.entry(name).meta) if name in DATASETS else {}


def load_data(spec: str, *, image_size: int | None = None, channels: int | None = None,
              seed: int = 0, sizes: ImageSizes | None = None, model: str = "the model",
              stream: bool | str = "auto", workers: int | None = None,
              window: Any = None, slice_axis: str = "axial", skip_empty: bool = True
              ) -> Dataset:
    """Load a dataset by built-in name or path.

    ``paired:DIR`` and ``unpaired:DIR`` load image-to-image data from the folder ``DIR``
    (domain A as the input ``a``, domain B as the target ``x``). ``image_size`` resizes images
    (square; centre crop, then Lanczos) and ``channels`` forces 1 (grayscale) or 3 (RGB); both
    apply to image folders and image arrays.

    ``sizes`` are the sizes ``model``'s networks accept: without ``image_size``, images of
    mixed sizes (or of a size the model refuses) get a default size chosen from the data (see
    :meth:`ImageSizes.choose`), recorded in ``info["image_size"]`` and explained in
    ``info["image_size_note"]``. ``stream`` (``auto``, ``True``, ``False``) and ``workers``
    (DataLoader worker processes; ``None``: chosen by the source) apply to folders, zips and
    prepared sets. ``window``, ``slice_axis`` and ``skip_empty`` apply to NIfTI/DICOM data
    (:func:`~gankit.data.medical.load_medical`; ``data.window`` etc. in the config). Bad data
    raises :class:`DataError`.
    """
    medical_options = window is not None or slice_axis != "axial"
    for pairing in ("paired", "unpaired"):
        if spec.startswith(pairing + ":"):
            folder = spec[len(pairing) + 1:]
            if not folder:
                raise DataError(f"'{spec}' names no folder; write {pairing}:DIR, e.g. "
                                f"{pairing}:./images")
            _not_medical(spec, medical_options)
            ds = load_paired_folder(Path(folder), image_size=image_size, channels=channels,
                                    pairing=pairing)
            return _fit_size(ds, image_size, sizes, model)
    if spec in DATASETS:
        _not_medical(spec, medical_options)
        ds = DATASETS.get(spec)(seed=seed)
        ds.info = {**dataset_meta(spec), **ds.info}
        if image_size is not None and ds.is_volume:
            raise DataError(f"data.image_size resizes 2-D images; '{spec}' holds 3-D volumes of "
                            f"shape {ds.shape}")
        if image_size is not None and ds.is_image and image_size != ds.resolution:
            _resize(ds, image_size)
        return _fit_size(ds, image_size, sizes, model)
    path = Path(spec).expanduser()
    if path.exists() and not (path.is_dir() and _prepared(path)):
        from .medical import is_medical, load_medical

        if is_medical(path):
            ds = load_medical(path, window=window, slice_axis=slice_axis,
                              skip_empty=skip_empty, image_size=image_size, channels=channels)
            return _fit_size(ds, image_size, sizes, model)
    _not_medical(spec, medical_options)
    if path.is_dir() and _prepared(path):
        from .streaming import load_prepared

        return load_prepared(path, image_size=image_size, channels=channels, sizes=sizes,
                             model=model, stream=stream, workers=workers,
                             threshold=STREAM_THRESHOLD)
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".zip"):
        from .streaming import load_images

        return load_images(path, image_size=image_size, channels=channels, sizes=sizes,
                           model=model, stream=stream, workers=workers,
                           threshold=STREAM_THRESHOLD)
    if path.suffix in (".npy", ".npz"):
        if not path.exists():
            raise DataError(f"no such file: {path}")
        ds = load_arrays(path, image_size=image_size, channels=channels)
        return _fit_size(ds, image_size, sizes, model)
    if path.exists():
        raise DataError(f"{path}: expected a folder of images, a .zip of images or a .npy/.npz "
                        f"file")
    looks_like_path = any(ch in spec for ch in "/\\.") or spec.startswith("~")
    if looks_like_path:
        raise DataError(f"no such file or folder: {path}")
    raise DataError(
        f"unknown dataset '{spec}'{did_you_mean(spec, DATASETS.names())}; built-ins: "
        f"{', '.join(DATASETS.names())}, or give a folder of images (or a .zip of one), a "
        f"prepared folder (gankit prepare), paired:DIR or unpaired:DIR, or a .npy/.npz file"
    )


def _not_medical(spec: str, medical_options: bool) -> None:
    if medical_options:
        raise DataError(f"data.window and data.slice_axis apply to NIfTI/DICOM volumes; "
                        f"'{spec}' holds none")


def _prepared(path: Path) -> bool:
    from .store import is_prepared

    return is_prepared(path)


def _resize(ds: Dataset, size: int) -> None:
    from .files import resize_images

    for key in ("x", "x_test", "a", "a_test"):
        if getattr(ds, key) is not None:
            setattr(ds, key, resize_images(getattr(ds, key), size))


def _fit_size(ds: Dataset, image_size: int | None, sizes: ImageSizes | None,
              model: str) -> Dataset:
    """In-memory images of a size ``sizes`` refuse, with no size asked for: resize them to the
    default size chosen from their short side (and say so in ``info``)."""
    if not ds.is_image or image_size is not None or sizes is None:
        return ds
    h, w = ds.shape[1:]
    if sizes.fits(h, w):
        return ds
    size = sizes.choose(min(h, w))
    _resize(ds, size)
    ds.info["image_size"] = size
    ds.info["image_size_note"] = (f"image size {size} chosen: the data is {h}x{w} and {model} "
                                  f"takes {sizes.text}")
    return ds


__all__ += ["ANY_SIZE", "ImageSizes"]
