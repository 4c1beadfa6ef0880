"""Medical volumes as data: NIfTI files and DICOM series, windowed, sliced and cut into patches.

``--data DIR`` (or ``--data scan.nii.gz``) where ``DIR`` holds NIfTI volumes (``.nii`` /
``.nii.gz``, read with nibabel) and/or DICOM series (read with pydicom; every folder that holds
DICOM files is ONE series) trains on the 2-D slices of every volume. An optional ``train/`` and
``test/`` level (any letter case) gives a held-out split by volume, so no patient's slices leak
from one split into the other.

Reading. A NIfTI volume is reoriented to the closest RAS+ orientation (``nibabel
.as_closest_canonical``) and held as ``[z, y, x]`` (inferior -> superior, anterior -> posterior,
left -> right) with its scaling (``scl_slope``/``scl_inter``) applied. A DICOM series is
sorted along the normal of its slices (the cross product of the two ``ImageOrientationPatient``
direction cosines, dotted with each ``ImagePositionPatient``), or by ``InstanceNumber`` where
positions are missing, and every slice is mapped to its modality's units (Hounsfield units for
CT) by ``value * RescaleSlope + RescaleIntercept`` (DICOM PS3.3 C.11.1.1.2); its stack axis
is "axial". A multi-frame file is one volume.

Intensities (``data.window``). CT numbers are absolute, so a CT is shown through a window of
width W centred on level L: ``[L - W/2, L + W/2]`` maps linearly onto [-1, 1] and everything
outside is clipped. :data:`WINDOWS` holds the usual radiology presets (``brain`` W80/L40,
``soft-tissue`` W400/L40, ``lung`` W1500/L-600, ``bone`` W1800/L400, ...); ``W/L`` numbers such
as ``400/40`` (or ``W400/L40``) give any other. Without a window (``auto``) each volume is
scaled from its 0.5th to its 99.5th percentile, the usual choice for MR, whose intensities have
no absolute unit.

Slices (``data.slice_axis``: ``axial``, ``coronal``, ``sagittal``) are 2-D images ``[1, H, W]``;
``data.skip_empty`` (default on) drops slices where fewer than 1% of the pixels rise above the
volume's darkest value by 1% of the range (air outside the body, zero padding). Slices of
volumes of different in-plane sizes need ``data.image_size`` (centre crop + resize per
volume). :func:`extract_patches` cuts a volume into 3-D patches ``[N, 1, s, s, s]`` for
volumetric models.

Every problem -- an unreadable or truncated file, a bad header, two series in one folder,
slices of different sizes or modalities in a series, CT and MR mixed in one dataset, NaN --
is one :class:`~gankit.errors.DataError` line naming the file.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import Dataset

__all__ = [
    "AXES", "EMPTY_FRACTION", "WINDOWS", "Volume", "apply_window", "extract_patches",
    "find_volumes", "is_medical", "load_medical", "load_volumes", "parse_window",
    "read_dicom_series", "read_nifti", "volume_patches", "volume_slices", "window_volume",
]

#: Radiology window presets: name -> (width W, level L) in Hounsfield units.
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (80.0, 40.0),
    "subdural": (250.0, 75.0),
    "stroke": (40.0, 40.0),
    "soft-tissue": (400.0, 40.0),
    "mediastinum": (350.0, 50.0),
    "liver": (150.0, 30.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
}

#: Slice orientations: the axis of the ``[z, y, x]`` volume that is held fixed.
AXES: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}

#: A slice (or patch) is empty when fewer than this fraction of its pixels are foreground.
EMPTY_FRACTION = 0.01
_FOREGROUND_MARGIN = 0.02  # foreground: above the volume's minimum by 1% of [-1, 1]
_AUTO_PERCENTILES = (0.5, 99.5)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


@dataclass
class Volume:
    """One 3-D volume: intensities ``float32 [z, y, x]`` in its own units (HU for CT), where it
    came from, and its modality (``None`` for NIfTI, which does not record one)."""

    name: str
    data: np.ndarray
    modality: str | None = None
    spacing: tuple[float, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------------------------
_WL = re.compile(r"^\s*w?\s*(-?\d+(?:\.\d*)?)\s*[/,]\s*l?\s*(-?\d+(?:\.\d*)?)\s*$",
                 re.IGNORECASE)


def parse_window(spec: Any) -> tuple[float, float] | None:
    """``data.window`` -> ``(width, level)``, or ``None`` for per-volume percentile scaling.

    Accepts ``None``/``"auto"``, a preset of :data:`WINDOWS` (``soft_tissue`` and any letter
    case too), ``"W/L"`` numbers (``"400/40"``, ``"W400/L40"``, ``"1500,-600"``) or a pair
    ``[W, L]``. Raises :class:`DataError` otherwise (and for a width <= 0).
    """
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)) and len(spec) == 2:
        w, lv = (float(v) for v in spec)
    elif isinstance(spec, str):
        key = spec.strip().lower().replace("_", "-").replace(" ", "-")
        if key == "auto":
            return None
        if key == "soft":
            key = "soft-tissue"
        if key in WINDOWS:
            return WINDOWS[key]
        m = _WL.match(spec)
        if m is None:
            from ..registry import did_you_mean

            raise DataError(f"unknown window '{spec}'{did_you_mean(key, list(WINDOWS))}; give a "
                            f"preset ({', '.join(WINDOWS)}), WIDTH/LEVEL in HU (e.g. 400/40) or "
                            f"auto")
        w, lv = float(m.group(1)), float(m.group(2))
    else:
        raise DataError(f"data.window must be a preset name, WIDTH/LEVEL or auto, got {spec!r}")
    if not (w > 0 and math.isfinite(w) and math.isfinite(lv)):
        raise DataError(f"a window's width must be a positive number of HU, got {w:g}")
    return w, lv


def apply_window(values: np.ndarray, width: float, level: float) -> np.ndarray:
    """Map ``[level - width/2, level + width/2]`` linearly onto [-1, 1], clipping outside:
    ``float32`` of the same shape."""
    lo = level - width / 2.0
    out = (np.asarray(values, np.float64) - lo) / width
    return (np.clip(out, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)


def _auto_scale(values: np.ndarray) -> np.ndarray:
    """Per-volume scaling of the 0.5th..99.5th percentiles onto [-1, 1] (clipped)."""
    lo, hi = np.percentile(values, _AUTO_PERCENTILES)
    if hi <= lo:
        return np.full(values.shape, -1.0, np.float32)
    return apply_window(values, hi - lo, (hi + lo) / 2.0)


def window_volume(vol: Volume, window: tuple[float, float] | None) -> np.ndarray:
    """``vol.data`` in [-1, 1] through ``window`` (``(W, L)``), or auto-scaled for ``None``."""
    return _auto_scale(vol.data) if window is None else apply_window(vol.data, *window)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


def _finite(name: str, a: np.ndarray) -> np.ndarray:
    if a.size == 0:
        raise DataError(f"{name}: the volume holds no voxels")
    if not np.isfinite(a).all():
        raise DataError(f"{name}: the volume contains NaN or infinite values")
    return a


def read_nifti(path: Path) -> Volume:
    """A NIfTI-1/2 file as a :class:`Volume` in RAS+ ``[z, y, x]`` order (see the module
    docstring). 2-D images become one slice; a 4-D file must hold a single volume."""
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.get_fdata(dtype=np.float32))
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    except Exception as e:  # noqa: BLE001  (nibabel, gzip, zlib, numpy: all mean "bad file")
        raise DataError(f"{path}: cannot read this NIfTI file ({_reason(e)})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DataError(f"{path}: a NIfTI volume of shape {data.shape} is not 3-D; a time "
                        f"series or multi-volume file needs splitting into 3-D volumes")
    # RAS+ [x, y, z] -> [z, y, x] with y flipped: rows run anterior -> posterior
    vol = np.ascontiguousarray(data.transpose(2, 1, 0)[:, ::-1, :])
    return Volume(path.name, _finite(str(path), vol), None, zooms[::-1])


def _is_dicom_file(p: Path) -> bool:
    """A DICOM file by suffix, or an extension-less file with the ``DICM`` magic at byte 128
    (DICOMDIR index files are skipped)."""
    if p.name.startswith(".") or p.name.upper() == "DICOMDIR" or not p.is_file():
        return False
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    if p.suffix:
        return False
    try:
        with p.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _is_nifti_file(p: Path) -> bool:
    return not p.name.startswith(".") and p.name.lower().endswith(NIFTI_SUFFIXES) and p.is_file()


def _dcm_float(ds: Any, key: str, default: float) -> float:
    v = ds.get(key)
    return default if v is None or v == "" else float(v)


def read_dicom_series(folder: Path, files: list[Path]) -> Volume:
    """The DICOM files of one series as a :class:`Volume` (``[slices, rows, columns]`` in the
    modality's units: ``stored * RescaleSlope + RescaleIntercept``), sorted along the slice
    normal by ``ImagePositionPatient`` (else ``InstanceNumber``, else file name).

    Refuses files that are not DICOM or lack pixel data, two series in one folder, slices of
    different sizes and mixed modalities, each with a one-line :class:`DataError`.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = str(folder)
    slices: list[tuple[Path, Any]] = []
    for f in sorted(files):
        try:
            ds = pydicom.dcmread(str(f))
        except InvalidDicomError as e:
            raise DataError(f"{f}: not a valid DICOM file ({_reason(e)})") from None
        except Exception as e:  # noqa: BLE001  (truncated or corrupt: pydicom raises many kinds)
            raise DataError(f"{f}: cannot read this DICOM file ({_reason(e)})") from None
        # pydicom returns what it could parse of a truncated file: it must still be an image
        if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
            raise DataError(f"{f}: the DICOM file holds no image (no pixel data or size; "
                            f"truncated, or not an image)")
        slices.append((f, ds))
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise DataError(f"{name}: the folder holds {len(series)} DICOM series; put each series "
                        f"in a folder of its own")
    modalities = sorted({str(ds.get("Modality", "")) for _, ds in slices} - {""})
    if len(modalities) > 1:
        raise DataError(f"{name}: the series mixes modalities ({', '.join(modalities)}); a "
                        f"series holds one modality")
    sizes: dict[tuple[int, int], Path] = {}
    for f, ds in slices:
        sizes.setdefault((int(ds.get("Rows", 0)), int(ds.get("Columns", 0))), f)
    if len(sizes) > 1:
        (s0, f0), (s1, f1) = list(sizes.items())[:2]
        raise DataError(f"{name}: slices of different sizes in one series ({f0.name} is "
                        f"{s0[1]}x{s0[0]} but {f1.name} is {s1[1]}x{s1[0]})")
    slices = _sort_slices(name, slices)
    planes = []
    for f, ds in slices:
        try:
            a = np.asarray(ds.pixel_array, np.float64)
        except Exception as e:  # noqa: BLE001  (compressed without a decoder, truncated data)
            raise DataError(f"{f}: cannot decode the DICOM pixel data ({_reason(e)})") from None
        slope, inter = _dcm_float(ds, "RescaleSlope", 1.0), _dcm_float(ds, "RescaleIntercept",
                                                                       0.0)
        a = a * slope + inter
        planes.extend(a if a.ndim == 3 else [a])  # a multi-frame file: its frames in order
    vol = np.stack(planes).astype(np.float32)  # [slices, rows, columns]
    ds0 = slices[0][1]
    spacing = tuple(float(v) for v in ds0.get("PixelSpacing", [])) or ()
    return Volume(folder.name, _finite(name, vol), modalities[0] if modalities else None,
                  spacing)


def _sort_slices(name: str, slices: list[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
    if len(slices) == 1:
        return slices
    if all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds
           for _, ds in slices):
        ori = np.asarray(slices[0][1].ImageOrientationPatient, np.float64)
        normal = np.cross(ori[:3], ori[3:])
        pos = [float(np.dot(normal, np.asarray(ds.ImagePositionPatient, np.float64)))
               for _, ds in slices]
        order = np.argsort(pos, kind="stable")
        gaps = np.diff(np.asarray(pos)[order])
        if gaps.size and np.min(np.abs(gaps)) < 1e-4:
            i = int(np.argmin(np.abs(gaps)))
            raise DataError(f"{name}: two slices lie at the same position "
                            f"({slices[order[i]][0].name} and {slices[order[i + 1]][0].name}); "
                            f"a series holds each slice once")
        return [slices[i] for i in order]
    if all("InstanceNumber" in ds for _, ds in slices):
        return sorted(slices, key=lambda s: int(s[1].InstanceNumber))
    return slices


def find_volumes(path: Path) -> tuple[list[Path], dict[Path, list[Path]]]:
    """NIfTI files and DICOM series (folder -> its files) under ``path`` (a folder or a single
    file), hidden files and folders skipped, in sorted order."""
    path = Path(path)
    if path.is_file():
        if _is_nifti_file(path):
            return [path], {}
        if _is_dicom_file(path):
            return [], {path.parent: [path]}
        raise DataError(f"{path}: not a NIfTI (.nii, .nii.gz) or DICOM file")
    nifti: list[Path] = []
    series: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath)
        for fn in sorted(filenames):
            p = base / fn
            if _is_nifti_file(p):
                nifti.append(p)
            elif _is_dicom_file(p):
                series.setdefault(base, []).append(p)
    return nifti, series


def is_medical(path: Path) -> bool:
    """Whether ``path`` is a NIfTI/DICOM file or a folder holding some (and no ordinary
    images: a folder with both is an error)."""
    path = Path(path)
    if path.is_file():
        return _is_nifti_file(path) or _is_dicom_file(path)
    if not path.is_dir():
        return False
    from .decode import _is_image_file

    found = image = None
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fn in filenames:
            p = Path(dirpath) / fn
            if found is None and (_is_nifti_file(p) or _is_dicom_file(p)):
                found = p
            elif image is None and _is_image_file(p):
                image = p
            if found is not None and image is not None:
                raise DataError(f"{path}: holds both images ({image.relative_to(path)}) and "
                                f"medical volumes ({found.relative_to(path)}); keep one kind")
    return found is not None


def load_volumes(path: Path) -> list[Volume]:
    """Every NIfTI volume and DICOM series under ``path``, in their own units. A dataset may not
    mix modalities (CT numbers and MR intensities cannot share a window)."""
    nifti, series = find_volumes(path)
    if not nifti and not series:
        raise DataError(f"{path}: no NIfTI (.nii, .nii.gz) or DICOM files found")
    vols = [read_nifti(p) for p in nifti]
    vols += [read_dicom_series(folder, files) for folder, files in sorted(series.items())]
    mods = sorted({v.modality for v in vols if v.modality})
    if len(mods) > 1:
        first = {m: next(v.name for v in vols if v.modality == m) for m in mods}
        raise DataError(f"{path}: mixed modalities ({', '.join(f'{m} in {n}' for m, n in first.items())}); "
                        f"train on one modality at a time")
    return vols


# --------------------------------------------------------------------------------------------
# slices and patches
# --------------------------------------------------------------------------------------------
def _foreground(x: np.ndarray, floor: float) -> np.ndarray:
    return x > floor + _FOREGROUND_MARGIN


def volume_slices(vol: np.ndarray, axis: str = "axial", skip_empty: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """2-D slices ``float32 [N, H, W]`` of a windowed ``[z, y, x]`` volume along ``axis``
    (:data:`AXES`), and the index of each along that axis. Coronal and sagittal slices have the
    superior side at the top. ``skip_empty`` drops slices with fewer than
    :data:`EMPTY_FRACTION` foreground pixels (above the volume's minimum by 1% of the range)."""
    if axis not in AXES:
        raise DataError(f"slice_axis must be one of {', '.join(AXES)}, got {axis!r}")
    s = np.moveaxis(vol, AXES[axis], 0)
    if AXES[axis]:
        s = s[:, ::-1, :]  # rows of a coronal/sagittal slice: z, superior first
    idx = np.arange(s.shape[0])
    if skip_empty:
        frac = _foreground(s, float(vol.min())).reshape(len(s), -1).mean(1)
        idx = idx[frac >= EMPTY_FRACTION]
    return np.ascontiguousarray(s[idx], np.float32), idx


def extract_patches(vol: np.ndarray, size: int | tuple[int, int, int],
                    stride: int | tuple[int, int, int] | None = None,
                    skip_empty: bool = False) -> np.ndarray:
    """3-D patches ``float32 [N, 1, s, s, s]`` of a ``[z, y, x]`` volume for volumetric models.

    Patches start every ``stride`` voxels along each axis (default ``size``: a tiling), with a
    last one flush against the far side so every voxel is covered; a patch larger than the
    volume is a :class:`DataError`. Order: z, then y, then x. ``skip_empty`` drops patches with
    fewer than :data:`EMPTY_FRACTION` foreground voxels (as :func:`volume_slices`).
    """
    vol = np.asarray(vol, np.float32)
    if vol.ndim != 3:
        raise DataError(f"extract_patches needs a 3-D volume, got shape {vol.shape}")
    sz = (size,) * 3 if isinstance(size, int) else tuple(size)
    st = sz if stride is None else ((stride,) * 3 if isinstance(stride, int) else tuple(stride))
    if len(sz) != 3 or len(st) != 3 or min(sz) < 1 or min(st) < 1:
        raise DataError(f"patch size and stride must be positive (3 values), got {size}, {stride}")
    if any(s > d for s, d in zip(sz, vol.shape)):
        raise DataError(f"a {'x'.join(map(str, sz))} patch does not fit a volume of shape "
                        f"{'x'.join(map(str, vol.shape))}")

    def starts(d: int, s: int, k: int) -> list[int]:
        out = list(range(0, d - s + 1, k))
        return out if out[-1] == d - s else [*out, d - s]

    floor = float(vol.min())
    patches = []
    for z in starts(vol.shape[0], sz[0], st[0]):
        for y in starts(vol.shape[1], sz[1], st[1]):
            for x in starts(vol.shape[2], sz[2], st[2]):
                p = vol[z:z + sz[0], y:y + sz[1], x:x + sz[2]]
                if skip_empty and _foreground(p, floor).mean() < EMPTY_FRACTION:
                    continue
                patches.append(p)
    if not patches:
        return np.zeros((0, 1, *sz), np.float32)
    return np.stack(patches)[:, None]


def volume_patches(path: Path, size: int | tuple[int, int, int], *,
                   stride: int | tuple[int, int, int] | None = None, window: Any = None,
                   skip_empty: bool = True) -> np.ndarray:
    """The 3-D patches ``float32 [N, 1, s, s, s]`` in [-1, 1] of every volume under ``path``
    (a NIfTI file or DICOM series, or a folder of them), each volume windowed as
    :func:`load_medical` does (``window``: preset, ``"W/L"`` or ``None`` for percentiles) and
    cut by :func:`extract_patches`, volumes in :func:`find_volumes` order."""
    wl = parse_window(window)
    parts = [extract_patches(window_volume(v, wl), size, stride, skip_empty)
             for v in load_volumes(Path(path))]
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------------
def _split_dirs(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    subs = {p.name.lower(): p for p in path.iterdir() if p.is_dir()}
    if "train" in subs and "test" in subs:
        return [subs["train"], subs["test"]]
    return [path]


def _slices_of(path: Path, window: tuple[float, float] | None, axis: str, skip_empty: bool,
               image_size: int | None) -> tuple[torch.Tensor, dict[str, Any]]:
    from .files import resize_images

    vols = load_volumes(path)
    parts: list[torch.Tensor] = []
    names, counts = [], []
    first: tuple[str, tuple[int, int]] | None = None
    for v in vols:
        s, _ = volume_slices(window_volume(v, window), axis, skip_empty)
        if not len(s):
            continue
        t = torch.from_numpy(s)[:, None]  # [n, 1, H, W]
        if image_size is not None:
            t = resize_images(t, image_size)
        hw = (int(t.shape[2]), int(t.shape[3]))
        if first is None:
            first = (v.name, hw)
        elif hw != first[1]:
            raise DataError(f"{path}: {axis} slices have different sizes ({first[0]} gives "
                            f"{first[1][1]}x{first[1][0]} but {v.name} {hw[1]}x{hw[0]}); "
                            f"resize them all with --set data.image_size=N (e.g. N="
                            f"{min(first[1])})")
        parts.append(t)
        names.append(v.name)
        counts.append(len(t))
    if not parts:
        raise DataError(f"{path}: every {axis} slice is empty (background only); try "
                        f"--set data.skip_empty=false or another data.window")
    mods = sorted({v.modality for v in vols if v.modality})
    return torch.cat(parts), {"volumes": names, "slices_per_volume": counts,
                              "modality": mods[0] if mods else None}


def load_medical(path: Path, *, window: Any = None, slice_axis: str = "axial",
                 skip_empty: bool = True, image_size: int | None = None,
                 channels: int | None = None) -> Dataset:
    """The 2-D slices of the NIfTI volumes and DICOM series under ``path`` as a
    :class:`Dataset` of ``[N, C, H, W]`` images in [-1, 1] (see the module docstring).

    ``window``: a preset, ``"W/L"`` or ``None``/``"auto"`` (:func:`parse_window`);
    ``slice_axis``: ``axial``, ``coronal`` or ``sagittal``; ``skip_empty``: drop background
    slices; ``image_size``: centre crop + resize each slice; ``channels=3`` repeats the grey
    channel. ``train/`` and ``test/`` sub-folders give ``x_test`` (split by volume). ``info``
    records the window, axis, modality and the volumes each split's slices came from.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if slice_axis not in AXES:
        raise DataError(f"data.slice_axis must be one of {', '.join(AXES)}, got {slice_axis!r}")
    wl = parse_window(window)
    splits = [_slices_of(d, wl, slice_axis, skip_empty, image_size) for d in _split_dirs(path)]
    x, info = splits[0]
    x_test = None
    if len(splits) > 1:
        x_test, tinfo = splits[1]
        if x_test.shape[2:] != x.shape[2:]:
            raise DataError(f"{path}: train slices are {x.shape[3]}x{x.shape[2]} but test "
                            f"slices {x_test.shape[3]}x{x_test.shape[2]}; set data.image_size")
        if tinfo["modality"] and info["modality"] and tinfo["modality"] != info["modality"]:
            raise DataError(f"{path}: train/ is {info['modality']} but test/ is "
                            f"{tinfo['modality']}; train and test on one modality")
        info["test_volumes"] = tinfo["volumes"]
        info["test_slices_per_volume"] = tinfo["slices_per_volume"]
    if channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
        x_test = None if x_test is None else x_test.expand(-1, 3, -1, -1).contiguous()
    info = {"path": str(path), "source": "medical", "slice_axis": slice_axis,
            "window": ("auto: per-volume 0.5-99.5th percentiles" if wl is None else
                       {"width": wl[0], "level": wl[1]}),
            "skip_empty": skip_empty, **info}
    name = path.name.removesuffix(".gz").removesuffix(".nii") or str(path)
    return Dataset(name, x, None, 0, x_test, None, info=info)
