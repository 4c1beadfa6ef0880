"""Folders, zips and prepared sets: the default image size, and streaming when they are large.

:func:`load_images` and :func:`load_prepared` decide the image size (a default chosen from the
data when none is asked for, always one the model accepts) and whether the images are decoded
into memory or streamed (``data.stream``). :class:`LoaderStream` draws the batches of a
streamed dataset through a ``torch.utils.data.DataLoader`` with worker processes and pinned
memory (on CUDA); its sampler is the same seeded permutation per epoch as the in-memory
:class:`~gankit.data.sources.Stream` (so a streamed run sees exactly the batches an in-memory
run would), and its position is what the checkpoint stores: batches the loader prefetched but
the Trainer never drew are drawn again after a resume, and a resumed run stays bit-identical.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from .base import Dataset
from .decode import header_channels, image_headers, scan_images
from .files import _check_size_options, load_image_folder
from .sizes import ImageSizes
from .store import FileStore, ImageStore, open_prepared, to_unit


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(store: ImageStore) -> int:
    """Worker processes when ``data.workers`` is unset: decoding image files is worth other
    cores (up to 4, leaving one to training); prepared shards are read in the training process,
    where a row is one ``pread`` and worker processes would only add copies
    (``benchmarks/results/data_pipeline.md`` measures both)."""
    if isinstance(store, FileStore):
        return max(0, min(4, _cpus() - 1))
    return 0


def _want_stream(stream: bool | str, decoded: int, threshold: int) -> bool:
    if stream in (True, "true"):
        return True
    if stream in (False, "false"):
        return False
    return decoded > threshold


def load_images(path: Path, *, image_size: int | None, channels: int | None,
                sizes: ImageSizes | None, model: str, stream: bool | str,
                workers: int | None, threshold: int) -> Dataset:
    """A folder of images or a ``.zip`` of one (class sub-folders are labels), in memory or
    streamed. Without ``image_size``: images of one size the model takes keep it; otherwise the
    default is ``sizes.choose(median short side)`` (from the headers, no pixel decoded)."""
    _check_size_options(image_size, channels)
    files, labels, classes = scan_images(path)
    heads = image_headers(files)
    note = None
    size = image_size
    if size is None:
        dims = {(w, h) for w, h, _ in heads}
        (w0, h0), = dims if len(dims) == 1 else {(0, 0)}
        if len(dims) == 1 and (sizes.fits(h0, w0) if sizes else True):
            size = None  # keep the native size
        else:
            shorts = sorted(min(w, h) for w, h, _ in heads)
            med = shorts[len(shorts) // 2]
            size = (sizes or ImageSizes(lambda n: n >= 1, "any size")).choose(med)
            what = f"{model} takes {sizes.text}" if sizes else "no model constraint"
            spread = f"{shorts[0]}..{shorts[-1]} px" if shorts[0] != shorts[-1] else \
                f"{shorts[0]} px"
            note = (f"image size {size} chosen from the data (short sides {spread}, median "
                    f"{med}; {what}); --image-size N changes it")
    c = channels or header_channels(heads)
    n = len(files)
    native = size or min(heads[0][:2])
    decoded = n * c * native * native * 4
    if _want_stream(stream, decoded, threshold):
        if size is None:
            w0, h0 = heads[0][:2]
            size = h0 if h0 == w0 else (sizes.choose(min(w0, h0)) if sizes else min(w0, h0))
        store = FileStore(files, c, size, str(path))
        store.workers = default_workers(store) if workers is None else workers
        y = torch.tensor(labels, dtype=torch.int64) if labels is not None else None
        info: dict[str, Any] = {"path": str(path), "files": n, "stream": True,
                                "source": store.describe()}
        if labels is not None:
            info["classes"] = classes
        ds = Dataset(_name(path), store, y, len(classes), info=info)
    else:
        ds = load_image_folder(path, image_size=size, channels=channels)
        ds.name = _name(path)
        ds.info["stream"] = False
    if note:
        ds.info["image_size_note"] = note
    ds.info["image_size"] = ds.resolution
    ds.info["decoded_bytes"] = decoded
    return ds


def _name(path: Path) -> str:
    return (path.stem if path.suffix.lower() == ".zip" else path.name) or str(path)


def load_prepared(path: Path, *, image_size: int | None, channels: int | None,
                  sizes: ImageSizes | None, model: str, stream: bool | str,
                  workers: int | None, threshold: int) -> Dataset:
    """A folder written by ``gankit prepare``: streamed from its shards, or (small, or
    ``data.stream=false``) read into one float tensor."""
    store, y, meta = open_prepared(path)
    size, c = int(meta["size"]), int(meta["channels"])
    if image_size is not None and image_size != size:
        raise ConfigError(f"{path} was prepared at {size} px, not data.image_size={image_size}; "
                          f"drop --image-size, or prepare again with --size {image_size}")
    if channels is not None and channels != c:
        raise ConfigError(f"{path} was prepared with {c} channel(s), not data.channels="
                          f"{channels}; prepare again with --channels {channels}")
    if sizes is not None and not sizes.fits(size, size):
        hint = " or ".join(str(k) for k in sizes.examples(size))
        raise ConfigError(f"{path} was prepared at {size} px, which {model} cannot take (its "
                          f"networks take {sizes.text}); prepare again with --size {hint}")
    classes = meta.get("classes") or []
    decoded = len(store) * c * size * size * 4
    info: dict[str, Any] = {"path": str(path), "files": len(store), "prepared": True,
                            "image_size": size, "decoded_bytes": decoded}
    if classes:
        info["classes"] = classes
    if _want_stream(stream, decoded, threshold):
        store.workers = default_workers(store) if workers is None else workers
        info |= {"stream": True, "source": store.describe()}
        return Dataset(path.name, store, y, len(classes), info=info)
    info["stream"] = False
    return Dataset(path.name, store.materialise(), y, len(classes), info=info)


# --------------------------------------------------------------------------------------------
# the training stream
# --------------------------------------------------------------------------------------------


class _Rows(torch.utils.data.Dataset):
    """DataLoader items: one local batch of rows per index array (read sorted, in workers)."""

    def __init__(self, store: ImageStore, y: Tensor | None) -> None:
        self.store, self.y = store, y

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, idx: np.ndarray) -> dict[str, Tensor]:
        out = {"i": torch.from_numpy(idx), "x": torch.from_numpy(self.store.read(idx))}
        if self.y is not None:
            out["y"] = self.y[torch.from_numpy(idx)]
        return out


class _Order:
    """The index order of a stream: a seeded permutation per epoch and a position, exactly as
    :class:`~gankit.data.sources.Stream` draws them (same seed, same batches)."""

    def __init__(self, n: int, batch: int, local: int, offset: int, gen: torch.Generator) -> None:
        self.n, self.batch, self.local, self.offset, self.gen = n, batch, local, offset, gen
        self.perm: Tensor | None = None
        self.pos = 0

    def next(self) -> np.ndarray:
        if self.perm is None or self.pos + self.batch > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
        idx = self.perm[self.pos + self.offset:self.pos + self.offset + self.local]
        self.pos += self.batch
        return idx.numpy().astype(np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "pos": self.pos, "gen": self.gen.get_state()}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.perm = None if s["perm"] is None else s["perm"].cpu()
        self.pos = int(s["pos"])
        self.gen.set_state(s["gen"])

    def copy(self) -> _Order:
        g = torch.Generator()
        g.set_state(self.gen.get_state())
        o = _Order(self.n, self.batch, self.local, self.offset, g)
        o.perm, o.pos = self.perm, self.pos
        return o


class _Sampler(torch.utils.data.Sampler):
    """An endless sampler of index arrays, continuing from a snapshot of an :class:`_Order`."""

    def __init__(self, order: _Order) -> None:
        self.order = order

    def __iter__(self):
        while True:
            yield self.order.next()


class OnDevice:
    """An :class:`ImageStore` seen from ``device``: ``x[idx]`` reads those rows (float [-1, 1])
    and moves them there."""

    def __init__(self, store: ImageStore, device: torch.device) -> None:
        self.store, self.device, self.shape = store, device, store.shape

    def __len__(self) -> int:
        return len(self.store)

    def dim(self) -> int:
        return 4

    def __getitem__(self, key: Any) -> Tensor:
        return self.store[key].to(self.device)


class LoaderStream:
    """A :class:`~gankit.data.sources.Stream` over an :class:`ImageStore`: the same
    ``next()``/``state_dict()`` interface, batches read by a DataLoader (``store.workers``
    processes, pinned memory when the device is CUDA) and turned into float [-1, 1] on the
    device. ``self.order`` follows the batches drawn (what a checkpoint holds); the loader runs
    ahead on its own copy and is restarted from ``self.order`` after a resume."""

    def __init__(self, name: str, store: ImageStore, y: Tensor | None, batch: int,
                 device: torch.device, seed: int, rank: int = 0, world: int = 1) -> None:
        n = len(store)
        if batch > n:
            raise DataError(f"batch size {batch} is larger than the dataset ({n} samples); "
                            f"lower train.batch_size (--batch-size)")
        if batch % world:
            raise ConfigError(f"batch size {batch} is not divisible by {world} processes")
        self.name, self.store, self.y, self.device = name, store, y, device
        self.local = batch // world
        gen = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()) % 100_003)
        self.order = _Order(n, batch, self.local, rank * self.local, gen)
        self._it: Any = None
        self._loader: Any = None

    def _start(self) -> None:
        workers = int(self.store.workers)
        self._loader = torch.utils.data.DataLoader(
            _Rows(self.store, self.y), batch_size=None, sampler=_Sampler(self.order.copy()),
            num_workers=workers, pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None, persistent_workers=False)
        self._it = iter(self._loader)

    def next(self) -> dict[str, Tensor]:
        if self._it is None:
            self._start()
        want = self.order.next()
        b = next(self._it)
        if not np.array_equal(b["i"].numpy(), want):  # the loader must follow the order
            raise RuntimeError("the data loader fell out of step with its sampler")
        out = {"x": to_unit(b["x"].to(self.device, non_blocking=True))}
        if "y" in b:
            out["y"] = b["y"].to(self.device, non_blocking=True)
        return out

    def tensors(self) -> dict[str, Any]:
        """The whole training set as :meth:`Source.tensors` gives it: ``x`` reads the rows it
        is indexed with (SGAN's labelled subset) and moves them to the device."""
        y = {"y": self.y.to(self.device)} if self.y is not None else {}
        return {"x": OnDevice(self.store, self.device), **y}

    def state_dict(self) -> dict[str, Any]:
        return self.order.state_dict()

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.order.load_state_dict(s)
        self.close()  # the prefetched batches belong to the old position

    def close(self) -> None:
        """Stop the worker processes (they are restarted on the next draw)."""
        it, self._it, self._loader = self._it, None, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
