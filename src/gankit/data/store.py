"""Images kept as uint8 and read on demand: prepared shards and image files.

A dataset too large to decode into one float tensor (70,000 images at 256 px would need 55 GB
as float32) holds an :class:`ImageStore` as its ``x``: it knows its shape, reads any rows as
uint8 and, indexed like a tensor (``x[i]``, ``x[a:b]``, ``x[index_tensor]``), returns those rows
as float32 in [-1, 1], so the evaluator, the doctor's probes and the sample grids read the few
images they need without materialising the rest. Training draws batches through
:mod:`gankit.data.stream` (a ``torch.utils.data.DataLoader`` with workers).

Prepared sets (``gankit prepare``; the idea of StyleGAN2-ADA's ``dataset_tool.py``, Karras et
al. 2020) are a folder of ``shard-00000.npy``... uint8 arrays ``[n, C, H, W]``, ``labels.npy``
(int64, when the source had class sub-folders) and ``meta.json`` (``format``, ``size``,
``channels``, ``count``, ``classes``, ``source``, ``shards``). Every shard opens with
``np.load(path, mmap_mode="r")``; gankit itself reads rows with ``os.pread`` at their offsets,
so the memory a run holds does not grow with the number of images (mapped pages would count
towards the process's resident size as they are touched).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

PREPARED_FORMAT = "gankit-prepared-images"
PREPARED_VERSION = 1
#: Images per shard are chosen so that a shard holds about this many bytes.
SHARD_BYTES = 256 << 20


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., C, H, W]`` -> float32 in [-1, 1], with the same operations as the
    in-memory loader (so a streamed batch equals the in-memory one bit for bit)."""
    return x.float().mul_(2.0 / 255.0).sub_(1.0).clamp_(-1.0, 1.0)


class ImageStore(ABC):
    """uint8 images ``[N, C, H, W]`` read on demand; indexing returns float32 in [-1, 1].

    Subclasses implement :meth:`read`. ``workers`` and ``pin_memory`` configure the training
    loader (``data.workers``; pinned memory when training on CUDA).
    """

    dtype = torch.float32
    device = torch.device("cpu")
    ndim = 4

    def __init__(self, n: int, channels: int, size: int) -> None:
        self.shape = torch.Size((n, channels, size, size))
        self.workers = 0

    # -- what subclasses provide ---------------------------------------------------------------
    @abstractmethod
    def read(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (int64, any order) as uint8 ``[len(idx), C, H, W]``."""

    @abstractmethod
    def describe(self) -> str:
        """One line naming where the images come from (shown in the start-up summary)."""

    # -- tensor-like reading -----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.shape[0])

    def dim(self) -> int:
        return 4

    def _rows(self, key: Any) -> tuple[np.ndarray, bool]:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for {n} images")
            return np.array([i % n], dtype=np.int64), True
        if isinstance(key, slice):
            return np.arange(n, dtype=np.int64)[key], False
        if torch.is_tensor(key):
            key = key.cpu().numpy()
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"indices out of range for {n} images")
        return idx % n if idx.size else idx, False

    def uint8(self, key: Any) -> torch.Tensor:
        idx, single = self._rows(key)
        out = torch.from_numpy(self.read(idx)) if idx.size else \
            torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        return out[0] if single else out

    def __getitem__(self, key: Any) -> torch.Tensor:
        return to_unit(self.uint8(key))

    def materialise(self, chunk: int = 2048) -> torch.Tensor:
        """Every image as one float32 tensor (what the in-memory path holds)."""
        out = torch.empty(tuple(self.shape), dtype=torch.float32)
        for i in range(0, len(self), chunk):
            out[i:i + chunk] = self[i:i + chunk]
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()}, shape={tuple(self.shape)})"


class ShardStore(ImageStore):
    """The images of a prepared folder (see the module docstring), read with ``os.pread``."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.files = [self.folder / s["file"] for s in meta["shards"]]
        counts = [int(s["count"]) for s in meta["shards"]]
        super().__init__(sum(counts), int(meta["channels"]), int(meta["size"]))
        self.starts = np.cumsum([0, *counts])
        self.row_bytes = int(np.prod(self.shape[1:]))
        self.offsets = [_npy_data_offset(f, (c, *self.shape[1:])) for f, c in
                        zip(self.files, counts, strict=True)]
        self._fds: dict[int, int] = {}
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen their own files
        return {**self.__dict__, "_fds": {}, "_pid": -1}

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # a forked worker must not share the parent's offsets
            self._fds, self._pid = {}, os.getpid()
        if shard not in self._fds:
            self._fds[shard] = os.open(self.files[shard], os.O_RDONLY)
        return self._fds[shard]

    def read(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), *self.shape[1:]), dtype=np.uint8)
        flat = out.reshape(len(idx), -1)
        shard_of = np.searchsorted(self.starts, idx, side="right") - 1
        for j in np.argsort(idx, kind="stable"):  # in file order: sequential reads
            s = int(shard_of[j])
            pos = self.offsets[s] + (int(idx[j]) - int(self.starts[s])) * self.row_bytes
            buf = os.pread(self._fd(s), self.row_bytes, pos)
            if len(buf) != self.row_bytes:
                raise DataError(f"{self.files[s]}: the shard is shorter than its header says "
                                f"(truncated?); run gankit prepare again")
            flat[j] = np.frombuffer(buf, dtype=np.uint8)
        return out

    def describe(self) -> str:
        return f"prepared shards in {self.folder}"

    def __del__(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass


class FileStore(ImageStore):
    """Image files (a folder or a zip) decoded on demand, centre-cropped and resized to
    ``size`` (Lanczos), as :func:`gankit.data.files.load_image_folder` reads them."""

    def __init__(self, files: list[Any], channels: int, size: int, root: str) -> None:
        super().__init__(len(files), channels, size)
        self.files, self.root = files, root

    def read(self, idx: np.ndarray) -> np.ndarray:
        from .decode import _read_image

        c, s = int(self.shape[1]), int(self.shape[2])
        out = np.empty((len(idx), c, s, s), dtype=np.uint8)
        for j, i in enumerate(idx):
            a = _read_image(self.files[int(i)], c, s)
            if a.dtype != np.uint8:  # high-bit-depth grey: floats in [0, 1] (Lanczos overshoots)
                a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
            out[j] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return out

    def describe(self) -> str:
        return f"image files in {self.root}, decoded while training"


def _npy_data_offset(path: Path, shape: tuple[int, ...]) -> int:
    """Where the data of the uint8 ``.npy`` file ``path`` starts; checks its header."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                hdr = np.lib.format.read_array_header_1_0(f)
            else:
                hdr = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read this shard ({e}); run gankit prepare again") \
            from None
    got_shape, fortran, dtype = hdr
    if tuple(got_shape) != tuple(shape) or fortran or dtype != np.uint8:
        raise DataError(f"{path}: holds {dtype} {tuple(got_shape)}, meta.json says uint8 "
                        f"{tuple(shape)}; run gankit prepare again")
    if os.path.getsize(path) < offset + int(np.prod(shape)):
        raise DataError(f"{path}: the shard is truncated; run gankit prepare again")
    return offset


# --------------------------------------------------------------------------------------------
# prepared folders
# --------------------------------------------------------------------------------------------


def is_prepared(path: Path) -> bool:
    meta = path / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == PREPARED_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        for k in ("size", "channels", "count", "shards"):
            meta[k]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{folder}/meta.json: not a readable prepared-set description ({e}); "
                        f"run gankit prepare again") from None
    if meta.get("version", 1) > PREPARED_VERSION:
        raise DataError(f"{folder}: prepared by a newer gankit (format version "
                        f"{meta['version']}); upgrade gankit")
    return meta


def write_prepared(out: Path, batches: Iterable[tuple[np.ndarray, np.ndarray | None]], *,
                   size: int, channels: int, classes: list[str] | None, source: str
                   ) -> dict[str, Any]:
    """Write uint8 image batches ``[b, C, H, W]`` (with int64 labels or ``None``) as a prepared
    folder ``out``; returns its meta. ``meta.json`` is written last, so an interrupted prepare
    never looks complete."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} already exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    per_shard = max(1, SHARD_BYTES // (channels * size * size))
    shards: list[dict[str, Any]] = []
    labels: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    count = 0

    def flush() -> None:
        if not pending:
            return
        arr = np.concatenate(pending)
        pending.clear()
        name = f"shard-{len(shards):05d}.npy"
        np.save(out / name, arr)
        shards.append({"file": name, "count": len(arr)})

    for x, y in batches:
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (channels, size, size):
            raise DataError(f"prepared images must be uint8 [n, {channels}, {size}, {size}], "
                            f"got {x.dtype} {x.shape}")
        if (y is None) != (classes is None):
            raise DataError("labels must be given for every batch or for none")
        if y is not None:
            labels.append(np.asarray(y, dtype=np.int64))
        start = 0
        while start < len(x):
            have = sum(len(p) for p in pending)
            take = min(per_shard - have, len(x) - start)
            pending.append(x[start:start + take])
            start += take
            if have + take == per_shard:
                flush()
        count += len(x)
    flush()
    if count == 0:
        raise DataError("no images to prepare")
    if classes is not None:
        np.save(out / "labels.npy", np.concatenate(labels))
    meta = {"format": PREPARED_FORMAT, "version": PREPARED_VERSION, "size": size,
            "channels": channels, "count": count, "classes": classes, "source": source,
            "shards": shards, "labels": "labels.npy" if classes is not None else None}
    from ..rundir import atomic_write_json

    atomic_write_json(out / "meta.json", meta)
    return meta


def open_prepared(folder: Path) -> tuple[ShardStore, torch.Tensor | None, dict[str, Any]]:
    """``(store, labels or None, meta)`` of a prepared folder."""
    meta = read_meta(folder)
    store = ShardStore(folder, meta)
    if len(store) != int(meta["count"]):
        raise DataError(f"{folder}: meta.json counts {meta['count']} images but the shards hold "
                        f"{len(store)}; run gankit prepare again")
    y = None
    if meta.get("classes"):
        try:
            y_np = np.load(folder / (meta.get("labels") or "labels.npy"), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{folder}: cannot read the labels ({e})") from None
        if y_np.shape != (len(store),):
            raise DataError(f"{folder}: {len(y_np)} labels for {len(store)} images")
        y = torch.from_numpy(y_np.astype(np.int64))
    return store, y, meta


def batches_of(store: ImageStore, chunk: int = 256) -> Iterator[np.ndarray]:
    for i in range(0, len(store), chunk):
        yield store.read(np.arange(i, min(i + chunk, len(store)), dtype=np.int64))
