"""Reading one image file the way every gankit data path reads it.

The lowest layer of ``gankit.data``: finding image files in a folder or a zip archive, reading
their headers without decoding, and decoding one file into a uint8 array (grey / RGB / RGBA /
16-bit handled, centre crop + Lanczos resize). The in-memory loader (:mod:`.files`), the
streamed image store (:mod:`.store`) and ``gankit translate``'s input reader all use it, so an
image is read identically whichever path reads it. Every failure is a one-sentence
:class:`~gankit.errors.DataError` naming the file.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError

#: File extensions read as images (compared lower-case). Anything else in a folder is ignored.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp",
)

# Pillow modes that hold a single grey channel (with or without alpha / high bit depth).
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
# Modes whose samples are not 8-bit: read through a float32 ("F") image, scaled to [0, 1].
_HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


# --------------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------------


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image_file(p: Path) -> bool:
    return not _is_hidden(p.name) and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder`` (hidden files/folders skipped), in sorted order."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        base = Path(dirpath)
        found.extend(base / f for f in filenames if _is_image_file(base / f))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _scan_folder(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """Find the images of ``root``; returns ``(files, labels or None, class names)``."""
    root_files = sorted(p for p in root.iterdir() if _is_image_file(p))
    class_dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name)), key=lambda p: p.name
    )
    classes: list[str] = []
    class_files: list[list[Path]] = []
    for d in class_dirs:
        files = _images_under(d)
        if files:  # sub-folders without images (e.g. __MACOSX leftovers) are not classes
            classes.append(d.name)
            class_files.append(files)

    if root_files and classes:
        raise DataError(
            f"{root}: found images both directly in the folder (e.g. {root_files[0].name}) and in "
            f"sub-folders (e.g. {classes[0]}/); put every image in a class sub-folder, or none"
        )
    if root_files:
        return root_files, None, []
    if classes:
        files = [f for fs in class_files for f in fs]
        labels = [k for k, fs in enumerate(class_files) for _ in fs]
        return files, labels, classes
    raise DataError(
        f"{root}: no images found (accepted extensions: {', '.join(IMAGE_EXTENSIONS)}, "
        "upper or lower case; hidden files are skipped)"
    )


def _canonical(img: Image.Image, channels: int | None) -> Image.Image:
    """Convert a decoded Pillow image to mode ``L``, ``RGB`` or ``F`` (high-bit-depth grey).

    Alpha is composited on black; palette images become RGB; ``channels=1`` turns colour into
    luminance (ITU-R 601-2, Pillow's ``convert("L")``). ``F`` images hold values in [0, 1].
    """
    mode = img.mode
    if mode in _HIGH_DEPTH_MODES:
        a = np.asarray(img, dtype=np.float32)
        if mode == "F":
            # Float TIFFs are usually [0, 1]; treat anything larger as 8-bit-valued.
            a = a / 255.0 if a.size and a.max() > 1.0 else a
        else:
            a = a / 65535.0  # 16-bit PNG/TIFF grey
        return Image.fromarray(np.clip(a, 0.0, 1.0).astype(np.float32))
    if mode in ("1", "L"):
        return img.convert("L")
    if mode in ("LA", "La"):
        la = img.convert("LA")
        out = Image.new("L", la.size, 0)
        out.paste(la.getchannel("L"), mask=la.getchannel("A"))
        return out
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (0, 0, 0))
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    else:  # RGB, P, CMYK, YCbCr, LAB, HSV, ...
        out = img.convert("RGB")
    return out.convert("L") if channels == 1 else out


class ZipImage:
    """One image member of a zip archive, standing in for a :class:`~pathlib.Path` where the
    folder readers use one (``name``, ``suffix``, ``relative_to``, ``open``). The archive is
    opened once per process (DataLoader workers open their own)."""

    _open: ClassVar[dict[tuple[int, str], zipfile.ZipFile]] = {}

    def __init__(self, archive: Path, member: str, rel: str) -> None:
        self.archive, self.member, self.rel = archive, member, rel
        self.name = PurePosixPath(member).name
        self.suffix = PurePosixPath(member).suffix

    def relative_to(self, root: Any) -> PurePosixPath:
        return PurePosixPath(self.rel)

    def open(self) -> io.BytesIO:
        key = (os.getpid(), str(self.archive))
        zf = self._open.get(key)
        if zf is None:
            zf = self._open[key] = zipfile.ZipFile(self.archive)
        return io.BytesIO(zf.read(self.member))

    def __str__(self) -> str:
        return f"{self.archive}:{self.member}"



def _scan_zip(archive: Path) -> tuple[list[ZipImage], list[int] | None, list[str]]:
    """The images of a zip archive, laid out as :func:`_scan_folder` expects of a folder: images
    at the top level, or one sub-folder per class. One folder wrapping everything (``photos.zip``
    holding ``photos/...``, as zipping a folder makes) is looked through."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{archive}: cannot read this zip archive ({e})") from None
    parts = [PurePosixPath(n).parts for n in names]
    keep = [(n, p) for n, p in zip(names, parts, strict=True)
            if p and not any(_is_hidden(q) or q == "__MACOSX" for q in p)
            and PurePosixPath(n).suffix.lower() in IMAGE_EXTENSIONS]
    if not keep:
        raise DataError(f"{archive}: no images found in the archive (accepted extensions: "
                        f"{', '.join(IMAGE_EXTENSIONS)}, upper or lower case)")
    strip = 0
    while True:  # everything below one folder at this level: look through it
        if any(len(p) == strip + 1 for _, p in keep) or len({p[strip] for _, p in keep}) != 1:
            break
        strip += 1
    entries = [ZipImage(archive, n, "/".join(p[strip:])) for n, p in keep]
    entries.sort(key=lambda e: e.rel)
    root = [e for e in entries if "/" not in e.rel]
    sub = [e for e in entries if "/" in e.rel]
    if root and sub:
        raise DataError(f"{archive}: found images both at the top of the archive (e.g. "
                        f"{root[0].rel}) and in sub-folders (e.g. {sub[0].rel}); put every image "
                        "in a class sub-folder, or none")
    if root:
        return root, None, []
    classes = sorted({e.rel.split("/", 1)[0] for e in sub})
    index = {c: k for k, c in enumerate(classes)}
    sub.sort(key=lambda e: (index[e.rel.split("/", 1)[0]], e.rel))
    return sub, [index[e.rel.split("/", 1)[0]] for e in sub], classes


def scan_images(path: Path) -> tuple[list[Any], list[int] | None, list[str]]:
    """``(files, labels or None, class names)`` of a folder of images or a ``.zip`` of them:
    class sub-folders (sorted by name) become labels."""
    if not path.exists():
        raise DataError(f"no such folder: {path}")
    if path.is_file() and path.suffix.lower() == ".zip":
        return _scan_zip(path)
    if not path.is_dir():
        raise DataError(f"{path}: expected a folder of images (or a .zip of them)")
    return _scan_folder(path)


def image_headers(files: list[Any], limit: int = 5000) -> list[tuple[int, int, str]]:
    """``(width, height, mode)`` of the files (of ``limit`` of them, evenly spread, when there
    are more), read from their headers without decoding the pixels."""
    pick = files if len(files) <= limit else \
        [files[int(i)] for i in np.linspace(0, len(files) - 1, limit)]
    out = []
    for f in pick:
        try:
            with Image.open(f.open() if isinstance(f, ZipImage) else f) as im:
                out.append((im.size[0], im.size[1], im.mode))
        except Exception as e:  # noqa: BLE001  (any Pillow failure means a bad file)
            raise DataError(f"{f}: cannot read this image file ({type(e).__name__}: {e})") \
                from None
    return out


def header_channels(headers: list[tuple[int, int, str]]) -> int:
    """1 when every file is grey by its Pillow mode, else 3 (as :func:`_auto_channels`)."""
    return 1 if all(m in _GRAY_MODES or m in ("LA", "La") for _, _, m in headers) else 3


def _center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """Center-crop to a square, then resize to ``size`` x ``size`` with Lanczos (antialiased)."""
    w, h = img.size
    s = min(w, h)
    if w != h:
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if s != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return img


def _decode(path: Path, channels: int | None) -> Image.Image:
    """Decode one file into a canonical Pillow image (see :func:`_canonical`), EXIF-upright.

    Any decoding failure becomes a :class:`DataError` naming the file.
    """
    try:
        with Image.open(path.open() if isinstance(path, ZipImage) else path) as im:
            im.load()  # GIF/WebP/APNG: the first frame, which Image.open selects
            # Camera JPEGs store rotation in EXIF; honour it so faces are upright.
            if im.getexif().get(0x0112, 1) != 1:
                im = ImageOps.exif_transpose(im)
            img = _canonical(im, channels)
    except DataError:
        raise
    # Pillow raises many exception types for broken files (OSError, SyntaxError, ValueError,
    # struct.error, DecompressionBombError ...); all of them mean "this file is bad".
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: cannot read this image file ({type(e).__name__}: {e})") from None
    return img


def _read_image(path: Path, channels: int | None, image_size: int | None) -> np.ndarray:
    """Decode one file to ``uint8`` (L/RGB) or ``float32`` in [0, 1] (high-depth grey).

    Returns ``[H, W]`` for grey and ``[H, W, 3]`` for colour, center-cropped and resized to
    ``image_size`` if given. Any decoding failure becomes a :class:`DataError` naming the file.
    """
    img = _decode(path, channels)
    if image_size is not None:
        img = _center_crop_resize(img, image_size)
    return np.array(img)  # a writable copy (torch.from_numpy warns on read-only arrays)


def _read_side_by_side(
    path: Path, channels: int | None, image_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Split a pix2pix-style pair image (``W == 2 * H``: A on the left, B on the right) into two
    arrays as :func:`_read_image` returns them; each half is cropped/resized on its own."""
    img = _decode(path, channels)
    w, h = img.size
    if w != 2 * h:
        raise DataError(
            f"{path}: a side-by-side pair image must be twice as wide as high (A on the left, B "
            f"on the right), but this one is {w}x{h} (for separate files, put the inputs in A/ "
            "and the targets in B/)"
        )
    halves = []
    for half in (img.crop((0, 0, h, h)), img.crop((h, 0, w, h))):
        if image_size is not None:
            half = _center_crop_resize(half, image_size)
        halves.append(np.array(half))
    return halves[0], halves[1]
