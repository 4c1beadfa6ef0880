"""User data from disk: folders of images, paired/unpaired image folders, ``.npy``/``.npz`` arrays.

Everything is decoded once into one in-memory tensor (DESIGN §4: small datasets live on the
device as one tensor). Images come out as float32 ``[N, C, H, W]`` in [-1, 1] and labels as
``int64 [N]`` (DESIGN §3). Every problem with the user's files -- missing path, no images, a
corrupt file, inconsistent sizes, NaN, bad labels -- raises :class:`~gankit.errors.DataError`
with one sentence naming the path, never a traceback from Pillow or NumPy.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .base import Dataset
from .decode import (
    IMAGE_EXTENSIONS,
    _images_under,
    _is_image_file,
    _read_image,
    _read_side_by_side,
    scan_images,
)

__all__ = [
    "IMAGE_EXTENSIONS", "load_arrays", "load_image_folder", "load_paired_folder", "resize_images",
]

_PROGRESS_THRESHOLD = 2000  # show a progress bar only for folders larger than this
_RESIZE_CHUNK = 1024  # images per interpolate call in resize_images (bounds peak memory)
_MAX_CLASSES = 100_000  # more "classes" than this means the labels are not class indices


class _SameSize:
    """Checks that every image read under ``root`` has the size of the first one.

    Without ``image_size`` images are stacked as they are, so they must agree; the error names
    both files and suggests the option that resizes them.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.first: tuple[str, tuple[int, int]] | None = None

    def check(self, path: Path, hw: tuple[int, int], part: str = "") -> None:
        """``hw`` is the (height, width) read from ``path``; ``part`` names a part of the file
        (`` (each half)`` of a side-by-side pair)."""
        name = f"{path.relative_to(self.root)}{part}"
        if self.first is None:
            self.first = (name, hw)
            return
        first, first_hw = self.first
        if hw != first_hw:
            # W x H, the way image viewers and Pillow report sizes.
            raise DataError(
                f"{self.root}: images have different sizes ({first} is {first_hw[1]}x"
                f"{first_hw[0]} but {name} is {hw[1]}x{hw[0]}); resize them all with "
                f"--set data.image_size=N (e.g. N={min(first_hw)})"
            )


def _reading(files: list[Path]) -> Iterable[Path]:
    """``files``, wrapped in a transient progress bar when there are many of them."""
    if len(files) <= _PROGRESS_THRESHOLD:
        return files
    from rich.progress import track

    return track(files, description=f"Reading {len(files)} images", transient=True)


def _read_images(
    files: list[Path], channels: int | None, image_size: int | None, same: _SameSize
) -> list[np.ndarray]:
    """:func:`_read_image` for every file, checking that their sizes agree."""
    arrays: list[np.ndarray] = []
    for f in _reading(files):
        a = _read_image(f, channels, image_size)
        same.check(f, (a.shape[0], a.shape[1]))
        arrays.append(a)
    return arrays


def _auto_channels(arrays: list[np.ndarray]) -> int:
    """1 when every decoded image is grey (``[H, W]``), else 3."""
    return 1 if all(a.ndim == 2 for a in arrays) else 3


def _stack(arrays: list[np.ndarray], channels: int) -> torch.Tensor:
    """Decoded same-size images -> float32 ``[N, channels, H, W]`` in [-1, 1]; grey images are
    replicated when ``channels`` is 3. Empties ``arrays`` as it goes (bounds peak memory)."""
    h, w = arrays[0].shape[:2]
    # Fill 0..255-valued floats, then rescale the whole tensor once (vectorised).
    x = torch.empty((len(arrays), channels, h, w), dtype=torch.float32)
    for i, a in enumerate(arrays):
        t = torch.from_numpy(a)
        if a.dtype != np.uint8:  # float32 in [0, 1] from high-bit-depth files
            t = t * 255.0
        t = t.unsqueeze(0) if a.ndim == 2 else t.permute(2, 0, 1)  # [C, H, W]
        x[i] = t.expand(channels, h, w) if t.shape[0] == 1 else t
    arrays.clear()
    return x.mul_(2.0 / 255.0).sub_(1.0).clamp_(-1.0, 1.0)


def _check_size_options(image_size: int | None, channels: int | None) -> None:
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")


def load_image_folder(
    path: Path, *, image_size: int | None = None, channels: int | None = None
) -> Dataset:
    """Load every image under ``path`` into one ``[N, C, H, W]`` float32 tensor in [-1, 1].

    PNG, JPEG, BMP, GIF (first frame), TIFF and WebP are read with Pillow; other files and hidden
    files are skipped. If the images sit in sub-folders, each sub-folder (sorted by name) is a
    class: ``y`` holds ``int64`` labels and ``info["classes"]`` the folder names. Images directly
    in ``path`` give an unlabelled dataset; both at once is an error.

    ``channels=None`` picks 1 when every file is grayscale by Pillow mode (``L``, ``1``, ``I;16``
    ...) and 3 otherwise; alpha is composited on black and palette images become RGB.
    ``image_size`` center-crops each image to a square and resizes it (Lanczos, antialiased) to
    ``image_size`` x ``image_size``; without it all images must have the same size.

    A ``.zip`` archive of images is read exactly as the folder it holds (see
    :func:`scan_images`).

    Raises :class:`DataError` for a missing folder, a folder without images, an unreadable image
    or images of different sizes.
    """
    _check_size_options(image_size, channels)
    path = Path(path).expanduser()
    files, labels, classes = scan_images(path)
    arrays = _read_images(files, channels, image_size, _SameSize(path))
    x = _stack(arrays, channels or _auto_channels(arrays))

    y = torch.tensor(labels, dtype=torch.int64) if labels is not None else None
    info: dict = {"path": str(path), "files": len(files)}
    if labels is not None:
        info["classes"] = classes
    return Dataset(path.name or str(path), x, y, len(classes), info=info)


# --------------------------------------------------------------------------------------------
# paired and unpaired image folders (image-to-image translation)
# --------------------------------------------------------------------------------------------

_PAIRED_LAYOUTS = (
    "sub-folders A/ (inputs) and B/ (targets) whose files match by name, optionally below "
    "train/ and test/, or side-by-side images (A left, B right, twice as wide as high)"
)


def _subfolder(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name`` in any letter case, or ``None``."""
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.lower() == name]
    if len(found) > 1:
        names = ", ".join(sorted(p.name + "/" for p in found))
        raise DataError(f"{folder}: found both {names}; keep one of them")
    return found[0] if found else None


def _domain_files(folder: Path) -> list[Path]:
    files = _images_under(folder)
    if not files:
        raise DataError(
            f"{folder}: no images found (accepted extensions: {', '.join(IMAGE_EXTENSIONS)}, "
            "upper or lower case; hidden files are skipped)"
        )
    return files


def _by_name(folder: Path, files: list[Path]) -> dict[str, Path]:
    """``files`` keyed by their path relative to ``folder`` without the extension."""
    keyed: dict[str, Path] = {}
    for f in files:
        key = f.relative_to(folder).with_suffix("").as_posix()
        if key in keyed:
            raise DataError(
                f"{folder}: {keyed[key].relative_to(folder)} and {f.relative_to(folder)} share a "
                "name; pairs are matched by name without extension, so keep one of them"
            )
        keyed[key] = f
    return keyed


def _match_pairs(root: Path, a_dir: Path, b_dir: Path) -> tuple[list[Path], list[Path]]:
    """The files of ``a_dir`` and ``b_dir`` matched by relative path without extension, in the
    sorted order of those names. A file without a partner is a :class:`DataError`."""
    a = _by_name(a_dir, _domain_files(a_dir))
    b = _by_name(b_dir, _domain_files(b_dir))
    problems = []
    for src, dst, mine, other in ((a_dir, b_dir, a, b), (b_dir, a_dir, b, a)):
        only = sorted(mine.keys() - other.keys())
        if only:
            shown = ", ".join(str(mine[k].relative_to(root)) for k in only[:3])
            more = ", ..." if len(only) > 3 else ""
            problems.append(f"{len(only)} file(s) in {src.relative_to(root)}/ have no partner in "
                            f"{dst.relative_to(root)}/ ({shown}{more})")
    if problems:
        raise DataError(f"{root}: {'; '.join(problems)}; pairs are matched by their path below "
                        "A/ and B/ without the extension")
    keys = sorted(a)
    return [a[k] for k in keys], [b[k] for k in keys]


def _split_folders(root: Path) -> list[Path]:
    """``[root]``, or ``[root/train]`` / ``[root/train, root/test]`` for a split layout."""
    train, test = _subfolder(root, "train"), _subfolder(root, "test")
    if train is None:
        if test is not None:
            raise DataError(f"{root}: found {test.name}/ but no train/ folder beside it")
        return [root]
    for name in ("a", "b"):
        if _subfolder(root, name) is not None:
            raise DataError(f"{root}: found both train/ and {name.upper()}/; put A/ and B/ "
                            "inside train/ (and test/), or use no train/ level at all")
    return [train] if test is None else [train, test]


def load_paired_folder(
    path: Path, *, image_size: int | None = None, channels: int | None = None,
    pairing: str = "paired",
) -> Dataset:
    """Load image-to-image data: domain A (the input) as ``a``, domain B (the target) as ``x``.

    Layouts, below ``path`` or below each of ``path/train`` and ``path/test`` (the test split
    gives ``a_test``/``x_test``; ``train``, ``test``, ``A`` and ``B`` match in any letter case):

    - sub-folders ``A/`` and ``B/``. With ``pairing="paired"`` (pix2pix, Isola et al. 2017) each
      file of A is matched with the file of B at the same relative path without extension
      (``A/x/001.png`` with ``B/x/001.jpg``), pairs ordered by that name, and a file without a
      partner is an error. With ``pairing="unpaired"`` (CycleGAN, Zhu et al. 2017) the domains
      are two independent sets, each in sorted order, of any sizes.
    - ``pairing="paired"`` only: images directly in the folder, each a side-by-side pair twice
      as wide as high, A on the left and B on the right (the format of the pix2pix datasets).

    Images are read as :func:`load_image_folder` reads them. ``channels`` applies to both
    domains; without it each domain is grey (1) when all of its files are, else RGB (3), so an
    edge map can translate to a photo. ``image_size`` center-crops and resizes every image (each
    half of a side-by-side image separately); without it every image of both domains and splits
    must have one size.

    Raises :class:`DataError` for a missing folder, an unknown layout, a domain without images,
    unmatched files, a side-by-side image that is not 2:1, unreadable images or mixed sizes.
    """
    _check_size_options(image_size, channels)
    if pairing not in ("paired", "unpaired"):
        raise DataError(f"pairing must be 'paired' or 'unpaired', got {pairing!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"no such folder: {path}")
    if not path.is_dir():
        raise DataError(f"{path}: expected a folder of {pairing} images")

    same = _SameSize(path)
    splits: list[tuple[list[np.ndarray], list[np.ndarray]]] = []  # (A, B) arrays per split
    layouts, n_files = set(), 0
    for folder in _split_folders(path):
        a_dir, b_dir = _subfolder(folder, "a"), _subfolder(folder, "b")
        if a_dir is not None or b_dir is not None:
            if a_dir is None or b_dir is None:
                have = (a_dir or b_dir).name  # type: ignore[union-attr]
                raise DataError(f"{folder}: found {have}/ but not its partner folder; "
                                f"{pairing} data needs A/ (inputs) and B/ (targets)")
            if pairing == "paired":
                files_a, files_b = _match_pairs(path, a_dir, b_dir)
            else:
                files_a, files_b = _domain_files(a_dir), _domain_files(b_dir)
            splits.append((_read_images(files_a, channels, image_size, same),
                           _read_images(files_b, channels, image_size, same)))
            layouts.add("A/B")
            n_files += len(files_a) + len(files_b)
            continue
        if pairing == "unpaired":
            raise DataError(f"{folder}: unpaired data needs sub-folders A/ and B/, one per "
                            "domain (side-by-side images are pairs: use paired:)")
        files = sorted(p for p in folder.iterdir() if _is_image_file(p))
        if not files:
            raise DataError(f"{folder}: no paired images found; expected {_PAIRED_LAYOUTS}")
        arrays_a, arrays_b = [], []
        for f in _reading(files):
            a, b = _read_side_by_side(f, channels, image_size)
            same.check(f, (a.shape[0], a.shape[1]), " (each half)")
            arrays_a.append(a)
            arrays_b.append(b)
        splits.append((arrays_a, arrays_b))
        layouts.add("side-by-side")
        n_files += len(files)

    # One channel count per domain across both splits, so train and test stack alike.
    c_a = channels or _auto_channels([a for s in splits for a in s[0]])
    c_x = channels or _auto_channels([b for s in splits for b in s[1]])
    a, x = _stack(splits[0][0], c_a), _stack(splits[0][1], c_x)
    a_test = x_test = None
    if len(splits) > 1:
        a_test, x_test = _stack(splits[1][0], c_a), _stack(splits[1][1], c_x)
    info = {"path": str(path), "files": n_files, "layout": "+".join(sorted(layouts))}
    return Dataset(path.name or str(path), x, None, 0, x_test, None, info=info, a=a,
                   a_test=a_test, pairing=pairing)


# --------------------------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------------------------

_ACCEPTED_SHAPES = (
    "[N, D] points, [N, H, W] grayscale images, [N, C, H, W] or [N, H, W, C] images with C = 1 or 3"
)


def _read_npy_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a ``.npy`` (key ``x``) or ``.npz`` file, loaded without pickle."""
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        return {"x": np.load(path, allow_pickle=False)}
    # Truncated file, bad zip, object array needing pickle, bad header ...: NumPy raises
    # ValueError, OSError, EOFError, zipfile.BadZipFile and more; all mean "this file is bad".
    except Exception as e:  # noqa: BLE001
        reason = str(e)
        if "allow_pickle" in reason or "Object arrays" in reason:
            reason = ("it holds Python objects (pickled), which gankit never loads; save numeric "
                      "arrays")
        raise DataError(f"{path}: cannot read this array file ({reason})") from None


def _pick_arrays(path: Path, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    if not arrays:
        raise DataError(f"{path}: the file holds no arrays")
    if "x" in arrays:
        return arrays["x"], arrays.get("y")
    if len(arrays) == 1:
        return next(iter(arrays.values())), None
    raise DataError(
        f"{path}: expected an array named 'x' (and optionally 'y' for labels), "
        f"found {', '.join(sorted(arrays))}"
    )


def _check_numeric(path: Path, what: str, a: np.ndarray) -> None:
    if a.dtype.kind not in "biuf":
        raise DataError(f"{path}: {what} must be a numeric array, got dtype {a.dtype}")


def _images_to_unit(path: Path, x: np.ndarray) -> torch.Tensor:
    """Image array of any accepted dtype/range -> float32 tensor in [-1, 1]."""
    if x.dtype == np.uint8:
        return torch.from_numpy(x.astype(np.float32)).mul_(2.0 / 255.0).sub_(1.0)
    t = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if t.numel() == 0:
        return t
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).flatten(1).any(1).sum())
        raise DataError(f"{path}: {bad} image(s) contain NaN or Inf values")
    lo, hi = float(t.min()), float(t.max())
    eps = 1e-3
    if lo >= -eps and hi <= 1.0 + eps:
        return t.mul(2.0).sub_(1.0).clamp_(-1.0, 1.0)
    if lo >= -1.0 - eps and hi <= 1.0 + eps:
        return t.clamp(-1.0, 1.0)
    if x.dtype.kind in "iu" and lo >= 0 and hi <= 255:  # 8-bit values stored in a wider int
        return t.mul(2.0 / 255.0).sub_(1.0)
    raise DataError(
        f"{path}: image values lie in [{lo:.4g}, {hi:.4g}]; accepted are uint8 0..255, "
        "or floats in [0, 1] or [-1, 1]"
    )


def _to_image_tensor(path: Path, x: np.ndarray) -> torch.Tensor:
    """``[N, H, W]``, ``[N, C, H, W]`` or ``[N, H, W, C]`` -> float32 ``[N, C, H, W]`` in
    [-1, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[1] not in (1, 3):
        if x.shape[3] not in (1, 3):
            raise DataError(
                f"{path}: image array of shape {x.shape} has neither 1 nor 3 channels; "
                f"accepted shapes: {_ACCEPTED_SHAPES}"
            )
        x = x.transpose(0, 3, 1, 2)  # channels-last -> channels-first
    return _images_to_unit(path, np.ascontiguousarray(x))


def _to_labels(path: Path, y: np.ndarray, n: int, key: str = "y") -> tuple[torch.Tensor, int]:
    """Validate a label array; returns ``(int64 [N], num_classes)``."""
    _check_numeric(path, f"labels '{key}'", y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{path}: labels '{key}' must be a 1-D array of class indices, got shape {y.shape}"
        )
    if y.shape[0] != n:
        raise DataError(f"{path}: there are {n} samples but {y.shape[0]} labels in '{key}'")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DataError(f"{path}: labels '{key}' contain NaN or Inf")
        if not np.array_equal(y, np.round(y)):
            bad = y[y != np.round(y)][0]
            raise DataError(
                f"{path}: labels '{key}' must be whole numbers (class indices), found {bad:g}"
            )
    yi = y.astype(np.int64)
    lo, hi = int(yi.min()), int(yi.max())
    if lo < 0:
        raise DataError(f"{path}: labels '{key}' must be class indices >= 0, found {lo}")
    if hi >= _MAX_CLASSES:
        raise DataError(
            f"{path}: labels '{key}' must be class indices 0..K-1, found {hi} (that would mean "
            f"{hi + 1} classes); remap them to 0..K-1"
        )
    return torch.from_numpy(yi), hi + 1


def load_arrays(
    path: Path, *, image_size: int | None = None, channels: int | None = None
) -> Dataset:
    """Load a ``.npy`` (data only) or ``.npz`` file (``x``, optional ``y``) as a dataset.

    Shapes of ``x``: ``[N, D]`` is points, kept as float32 with no rescaling (``image_size`` and
    ``channels`` do not apply); ``[N, H, W]`` is grayscale images; ``[N, C, H, W]`` or
    ``[N, H, W, C]`` with C = 1 or 3 are images (channels-last is transposed). Image values: uint8
    0..255, floats in [0, 1], or floats already in [-1, 1]; all become [-1, 1]. A ``.npz`` with a
    single array of any name uses it as ``x``. Optional keys: ``y`` (integer, or integral float,
    labels >= 0; ``num_classes`` = max + 1 unless a ``num_classes`` scalar is stored) and
    ``x_test``/``y_test`` (a held-out split, validated the same way).

    ``channels`` forces 1 (luminance, ITU-R 601-2) or 3 (grey replicated); ``image_size``
    center-crops to a square and resizes (see :func:`resize_images`). Files are always read with
    ``allow_pickle=False``; unreadable files, NaN/Inf, bad shapes, bad value ranges and bad labels
    raise :class:`DataError`.
    """
    _check_size_options(image_size, channels)
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    arrays = _read_npy_npz(path)
    x_np, y_np = _pick_arrays(path, arrays)

    def convert_x(a: np.ndarray, key: str) -> torch.Tensor:
        _check_numeric(path, f"data '{key}'", a)
        if a.ndim not in (2, 3, 4):
            raise DataError(f"{path}: '{key}' has shape {a.shape}; accepted: {_ACCEPTED_SHAPES}")
        if a.shape[0] == 0:
            raise DataError(f"{path}: '{key}' holds no samples")
        if a.ndim == 2:  # points: no rescaling
            t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            if not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).any(1).sum())
                raise DataError(f"{path}: {bad} sample(s) of '{key}' contain NaN or Inf values")
            return t
        t = _to_image_tensor(path, a)
        if channels == 1 and t.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            t = (t * w).sum(1, keepdim=True)
        elif channels == 3 and t.shape[1] == 1:
            t = t.expand(-1, 3, -1, -1).contiguous()
        if image_size is not None and tuple(t.shape[-2:]) != (image_size, image_size):
            t = resize_images(t, image_size)
        return t

    x = convert_x(x_np, "x")
    n_classes = 0
    y = None
    if y_np is not None:
        y, n_classes = _to_labels(path, y_np, x.shape[0])
    x_test = y_test = None
    if "x_test" in arrays:
        x_test = convert_x(arrays["x_test"], "x_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(
                f"{path}: 'x_test' samples have shape {tuple(x_test.shape[1:])} but 'x' samples "
                f"have {tuple(x.shape[1:])}"
            )
        if "y_test" in arrays:
            if y is None:
                raise DataError(f"{path}: 'y_test' is given but 'y' (training labels) is not")
            y_test, k = _to_labels(path, arrays["y_test"], x_test.shape[0], "y_test")
            n_classes = max(n_classes, k)
    if "num_classes" in arrays and y is not None:
        k = arrays["num_classes"]
        if k.ndim != 0 or k.dtype.kind not in "iu" or int(k) < 1:
            raise DataError(f"{path}: 'num_classes' must be a positive integer scalar")
        if int(k) < n_classes:
            raise DataError(
                f"{path}: labels must lie in [0, {int(k) - 1}] ('num_classes' is {int(k)}), "
                f"found label {n_classes - 1}"
            )
        n_classes = int(k)
    return Dataset(path.stem, x, y, n_classes, x_test, y_test, info={"path": str(path)})


# --------------------------------------------------------------------------------------------
# resizing tensors
# --------------------------------------------------------------------------------------------


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` images in [-1, 1] to ``[N, C, size, size]``.

    Non-square images are center-cropped to a square first (as :func:`load_image_folder` does),
    so nothing is stretched. Bilinear interpolation, antialiased when downsampling so small
    images do not alias; the result is clamped to [-1, 1]. Works in chunks of 1,024 images to
    bound peak memory.
    """
    if x.dim() != 4:
        raise ValueError(f"resize_images expects [N, C, H, W], got shape {tuple(x.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"image_size must be a positive integer, got {size!r}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    s = min(h, w)
    if h != w:
        top, left = (h - s) // 2, (w - s) // 2
        x = x[..., top:top + s, left:left + s]
    if s == size:
        return x.float().clamp(-1.0, 1.0)
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.float32, device=x.device)
    for i in range(0, x.shape[0], _RESIZE_CHUNK):
        chunk = x[i:i + _RESIZE_CHUNK].float()
        out[i:i + _RESIZE_CHUNK] = F.interpolate(
            chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=size < s
        )
    return out.clamp_(-1.0, 1.0)

