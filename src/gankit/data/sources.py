"""Data sources: where a training step's batch comes from.

A family declares its ``data_source`` by name (:data:`SOURCES`); the Trainer builds it over the
dataset and draws one batch dict per step and micro-batch (shared by the step's phases):

======================  ============================================================================
source                  batch
======================  ============================================================================
``samples``             ``{"x", "y"?}``: the training samples and labels (one tensor, index slices)
``paired``              ``{"a", "b", "y"?}``: aligned pairs, ``a[i] -> b[i]`` (pix2pix)
``unpaired``            ``{"a", "b"}``: one batch of each domain, drawn independently (CycleGAN)
``unpaired-labelled``   ``{"a", "a_labels", "b", "b_labels"}``: as ``unpaired``, each image with its
                        per-pixel label map (shape-consistent CycleGAN)
``classes``             one entry per class stream, e.g. ``{"healthy", "patient"}`` (VA-GAN): each
                        stream draws from its own classes of one labelled set
======================  ============================================================================

Every source is made of :class:`Stream` s: a stream owns a subset of rows of some aligned
tensors on the device, a seeded generator, and a permutation with a position. Each epoch of a
stream is a new permutation (identical on every process); process ``rank`` takes its contiguous
share of each global batch. Every stream's permutation, position and generator state are in
the checkpoint, so a resumed run sees exactly the batches it would have seen (DESIGN.md §4:
small datasets live on the device, batches are index slices, no DataLoader workers). A
streamed dataset (its ``x`` an :class:`~gankit.data.store.ImageStore`) is drawn by a
:class:`~gankit.data.streaming.LoaderStream` instead: the same order, read by a DataLoader.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..registry import Registry
from .base import Dataset
from .store import ImageStore

#: Data sources by name: ``fn(ds, batch, device, seed, rank, world, **options) -> Source``.
SOURCES: Registry[Callable[..., Source]] = Registry("data source")


class Stream:
    """Batches of aligned ``fields`` (rows ``index`` of each, or all), as seeded permutations."""

    def __init__(self, name: str, fields: dict[str, Tensor], batch: int, device: torch.device,
                 seed: int, rank: int = 0, world: int = 1, index: Tensor | None = None) -> None:
        for v in fields.values():
            _in_memory(v)
        n = len(index) if index is not None else len(next(iter(fields.values())))
        if batch > n:
            what = "the dataset" if name == "data" else f"data stream '{name}'"
            raise DataError(f"batch size {batch} is larger than {what} ({n} samples); lower "
                            f"train.batch_size (--batch-size)")
        if batch % world:
            raise ConfigError(f"batch size {batch} is not divisible by {world} processes")
        self.name = name
        self.fields = {k: v.to(device) for k, v in fields.items()}
        self.index = index.to(device) if index is not None else None
        self.n, self.batch = n, batch
        self.local = batch // world
        self.offset = rank * self.local
        # A stable per-stream seed: the same on every process and in every Python session.
        self.gen = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()) % 100_003)
        self.device = device
        self.perm: Tensor | None = None
        self.pos = 0

    def next(self) -> dict[str, Tensor]:
        if self.perm is None or self.pos + self.batch > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen).to(self.device)
            self.pos = 0
        idx = self.perm[self.pos + self.offset:self.pos + self.offset + self.local]
        self.pos += self.batch
        if self.index is not None:
            idx = self.index[idx]
        return {k: v[idx] for k, v in self.fields.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"perm": None if self.perm is None else self.perm.cpu(), "pos": self.pos,
                "gen": self.gen.get_state()}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.perm = None if s["perm"] is None else s["perm"].to(self.device)
        self.pos = int(s["pos"])
        self.gen.set_state(s["gen"])


def _in_memory(x: Any) -> None:
    if not torch.is_tensor(x):
        raise ConfigError("this model's data source needs the images in memory, but the data is "
                          "streamed; set data.stream=false (--set data.stream=false)")


class Source:
    """One or more streams drawn together into one batch dict; ``rename`` maps a stream's field
    names to batch keys (the ``classes`` source yields ``{stream: x, stream_y: y}``)."""

    def __init__(self, streams: list[Stream], rename: dict[str, dict[str, str]] | None = None
                 ) -> None:
        self.streams = streams
        self.rename = rename or {}
        self.local = streams[0].local

    def draw(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for s in self.streams:
            names = self.rename.get(s.name, {})
            for k, v in s.next().items():
                out[names.get(k, k)] = v
        return out

    def tensors(self, stream: int = 0) -> dict[str, Tensor]:
        """The whole tensors of a stream (e.g. SGAN's labelled subset indexes them)."""
        s = self.streams[stream]
        return s.fields if isinstance(s, Stream) else s.tensors()  # streamed: rows on demand

    def state_dict(self) -> dict[str, Any]:
        return {s.name: s.state_dict() for s in self.streams}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "perm" in state:  # a checkpoint of the one-stream format
            state = {self.streams[0].name: state}
        missing = [s.name for s in self.streams if s.name not in state]
        if missing:
            raise DataError(f"the checkpoint has no data position for {', '.join(missing)}")
        for s in self.streams:
            s.load_state_dict(state[s.name])


def build_source(name: str, ds: Dataset, batch: int, device: torch.device, seed: int,
                 rank: int = 0, world: int = 1, **options: Any) -> Source:
    """The data source ``name`` over ``ds`` with ``batch`` samples per draw (all processes)."""
    return SOURCES.get(name)(ds, batch, device, seed, rank, world, **options)


@SOURCES.register("samples", description="the training samples x (and labels y), one permutation")
def samples(ds: Dataset, batch: int, device: torch.device, seed: int, rank: int, world: int,
            **_: Any) -> Source:
    if isinstance(ds.x, ImageStore):  # streamed: a DataLoader over uint8 images
        from .streaming import LoaderStream

        return Source([LoaderStream("data", ds.x, ds.y, batch, device, seed, rank, world)])
    fields = {"x": ds.x} | ({"y": ds.y} if ds.y is not None else {})
    return Source([Stream("data", fields, batch, device, seed, rank, world)])


@SOURCES.register("paired", description="aligned pairs a[i] -> b[i] (pix2pix)")
def paired(ds: Dataset, batch: int, device: torch.device, seed: int, rank: int, world: int,
           **_: Any) -> Source:
    if ds.pairing != "paired" or ds.a is None:
        raise DataError(f"'{ds.name}' holds no aligned pairs; give paired:DIR (folders A/ and B/ "
                        f"with matching file names) or a paired built-in such as edges2digits")
    fields = {"a": ds.a, "b": ds.x} | ({"y": ds.y} if ds.y is not None else {})
    return Source([Stream("data", fields, batch, device, seed, rank, world)])


@SOURCES.register("unpaired", description="one batch of each domain a and b, drawn independently")
def unpaired(ds: Dataset, batch: int, device: torch.device, seed: int, rank: int, world: int,
             **_: Any) -> Source:
    if ds.a is None:
        raise DataError(f"'{ds.name}' has one domain; give unpaired:DIR (folders A/ and B/) or "
                        f"a two-domain built-in")
    return Source([Stream("a", {"a": ds.a}, batch, device, seed, rank, world),
                   Stream("b", {"b": ds.x}, batch, device, seed, rank, world)])


def pixel_labels(ds: Dataset, key: str, images: Tensor) -> Tensor:
    """The per-pixel label maps ``ds.info[key]`` (``int64 [N, H, W]``) of ``images`` ``[N, C,
    h, w]``; maps of another size than the images (the images were resized by
    ``data.image_size``) are resized by nearest neighbour, so labels stay class indices."""
    lab = ds.info.get(key)
    if lab is None:
        raise DataError(f"'{ds.name}' has no per-pixel label maps ({key} in its info); give a "
                        f"labelled two-domain built-in such as ct2mr")
    lab = torch.as_tensor(lab)
    if lab.dtype != torch.int64 or lab.dim() != 3 or len(lab) != len(images):
        raise DataError(f"'{ds.name}': {key} must be int64 [{len(images)}, H, W] label maps, got "
                        f"{lab.dtype} {tuple(lab.shape)}")
    if lab.min() < 0:
        raise DataError(f"'{ds.name}': {key} holds negative class indices")
    size = tuple(images.shape[-2:])
    if tuple(lab.shape[-2:]) != size:
        lab = torch.nn.functional.interpolate(lab[:, None].float(), size=size,
                                              mode="nearest")[:, 0].long()
    return lab


@SOURCES.register("unpaired-labelled",
                  description="unpaired domains a and b, each image with its per-pixel label map")
def unpaired_labelled(ds: Dataset, batch: int, device: torch.device, seed: int, rank: int,
                      world: int, **_: Any) -> Source:
    """The ``unpaired`` streams (same names, so the same image order) carrying the label maps
    ``info["a_labels"]`` of ``a`` and ``info["x_labels"]`` of ``x`` as ``a_labels``/``b_labels``."""
    if ds.a is None:
        raise DataError(f"'{ds.name}' has one domain; give a labelled two-domain built-in such "
                        f"as ct2mr")
    _in_memory(ds.x)
    la, lb = pixel_labels(ds, "a_labels", ds.a), pixel_labels(ds, "x_labels", ds.x)
    return Source([Stream("a", {"a": ds.a, "a_labels": la}, batch, device, seed, rank, world),
                   Stream("b", {"b": ds.x, "b_labels": lb}, batch, device, seed, rank, world)])


@SOURCES.register("classes", description="one stream per group of classes of one labelled set")
def classes(ds: Dataset, batch: int, device: torch.device, seed: int, rank: int, world: int,
            streams: dict[str, list[int]] | None = None, **_: Any) -> Source:
    """``streams`` maps a batch key to the classes it draws from, e.g. ``{"healthy": [0],
    "patient": [1]}``; each stream permutes only the indices of its classes."""
    if ds.y is None:
        raise DataError(f"'{ds.name}' has no labels to filter by class")
    if not streams:
        raise ConfigError("the classes source needs streams, e.g. {'healthy': [0], 'patient': [1]}")
    out = []
    _in_memory(ds.x)
    fields = {"x": ds.x.to(device), "y": ds.y.to(device)}  # one copy on the device, all streams
    for key, cls in streams.items():
        bad = [c for c in cls if not 0 <= c < ds.num_classes]
        if bad:
            raise ConfigError(f"stream '{key}': classes {bad} not in [0, {ds.num_classes - 1}]")
        index = torch.nonzero(torch.isin(ds.y, torch.as_tensor(cls))).flatten()
        if len(index) == 0:
            raise DataError(f"'{ds.name}' has no samples of classes {cls} for stream '{key}'")
        out.append(Stream(key, fields, batch, device, seed, rank, world, index))
    return Source(out, {key: {"x": key, "y": f"{key}_y"} for key in streams})
