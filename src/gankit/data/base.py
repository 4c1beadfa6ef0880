"""The in-memory dataset container every model trains on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import DataError
from .store import ImageStore

#: What a dataset holds, as its ``info["kind"]``: single samples (images, 3-D volumes or
#: points), aligned pairs ``a[i] -> x[i]`` (pix2pix, segmentation), or two domains drawn
#: independently (CycleGAN).
KINDS = ("images", "volumes", "points", "paired", "unpaired")


@dataclass
class Dataset:
    """Training data held as tensors.

    ``x`` is ``[N, C, H, W]`` float in [-1, 1] for images, ``[N, C, D, H, W]`` float in [-1, 1]
    for 3-D volumes (:attr:`is_volume`; e.g. ``blobs3d``) or ``[N, D]`` float for points (toy
    2-D mixtures, tabular data); ``y`` is ``int64 [N]`` or ``None``. ``x_test``/``y_test`` hold a
    fixed held-out split where the dataset defines one (used by metrics, never for training).

    Image-to-image data adds a source domain ``a`` (and ``a_test``): with ``pairing="paired"``,
    ``a[i]`` is the input whose translation is ``x[i]`` (pix2pix's aligned pairs); with
    ``pairing="unpaired"`` the two domains are independent sets of any sizes (CycleGAN). ``x`` is
    always the target domain, so every metric of generated images compares against ``x``.

    Volumes are not images: :attr:`is_image` stays true only for 4-D data, so every code path
    written for ``[N, C, H, W]`` (resizing, grids, image metrics, image folders) either refuses
    volumes in one line or, for picture grids, shows their middle slice (``x[:, :, D // 2]``).

    ``x`` may instead be an :class:`~gankit.data.store.ImageStore` (a large folder or prepared
    set, streamed): indexed like a tensor it returns float32 rows in [-1, 1], read on demand.

    ``info`` carries the dataset's metadata (from its registry entry for built-ins, see
    :func:`gankit.data.dataset_meta`): ``kind``, ``classes``, the ``features`` extractor and
    default ``metrics`` that fit it, the doctor's ``probe`` kind, and facts such as the mode
    centres and sigma of the toy mixtures.
    """

    name: str
    x: torch.Tensor | ImageStore  # an ImageStore: streamed, read on demand (data.store)
    y: torch.Tensor | None = None
    num_classes: int = 0
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    a: torch.Tensor | None = None
    a_test: torch.Tensor | None = None
    pairing: str | None = None  # None, "paired" or "unpaired"

    def __post_init__(self) -> None:
        if isinstance(self.x, ImageStore):  # uint8 on disk: valid by construction
            if self.x_test is not None or self.a is not None:
                raise DataError(f"{self.name}: a streamed dataset holds one image set")
            validate_tensors(self.name, self.x[:1], None, 0)
            if self.y is not None:
                validate_tensors(self.name, torch.zeros(len(self.y), 1), self.y, self.num_classes)
                if len(self.y) != len(self.x):
                    raise DataError(f"{self.name}: {len(self.y)} labels for {len(self.x)} images")
        else:
            validate_tensors(self.name, self.x, self.y, self.num_classes)
        if self.x_test is not None:
            validate_tensors(self.name + " (test split)", self.x_test, self.y_test, self.num_classes)
        if self.pairing not in (None, "paired", "unpaired"):
            raise DataError(f"{self.name}: pairing must be None, 'paired' or 'unpaired', got "
                            f"{self.pairing!r}")
        if (self.a is None) != (self.pairing is None):
            raise DataError(f"{self.name}: a source domain 'a' and a pairing go together")
        for a, x, split in ((self.a, self.x, ""), (self.a_test, self.x_test, " (test split)")):
            if a is None:
                continue
            validate_tensors(f"{self.name} (domain a{split})", a, None, 0)
            if x is not None and a.dim() != x.dim():
                raise DataError(f"{self.name}: domain a{split} is {tuple(a.shape)}, domain x "
                                f"{tuple(x.shape)}")
            if self.pairing == "paired" and x is not None and len(a) != len(x):
                raise DataError(f"{self.name}{split}: {len(a)} inputs but {len(x)} targets; "
                                f"paired data needs one of each per pair")
        self.info.setdefault("kind", self.pairing or ("images" if self.is_image else
                                                      "volumes" if self.is_volume else "points"))

    @property
    def is_image(self) -> bool:
        """2-D images ``[N, C, H, W]`` (3-D volumes are not images: see :attr:`is_volume`)."""
        return self.x.dim() == 4

    @property
    def is_volume(self) -> bool:
        """3-D volumes ``[N, C, D, H, W]`` (CT/MR-style scans, ``blobs3d``)."""
        return self.x.dim() == 5

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(C, H, W)``, ``(C, D, H, W)`` or ``(D,)``."""
        return tuple(self.x.shape[1:])

    @property
    def channels(self) -> int:
        return int(self.x.shape[1]) if self.is_image or self.is_volume else 0

    @property
    def resolution(self) -> int:
        return int(self.x.shape[-1]) if self.is_image else 0

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def describe(self) -> dict[str, Any]:
        """Plain facts saved into the run's config so a run can be rebuilt without the data."""
        d: dict[str, Any] = {
            "name": self.name,
            "n": len(self),
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "is_image": self.is_image,
            "is_volume": self.is_volume,
            "kind": self.kind,
        }
        if self.is_image:
            d["image_size"] = self.resolution
            d["stream"] = isinstance(self.x, ImageStore)
            if "image_size_note" in self.info:
                d["image_size_note"] = self.info["image_size_note"]
            if "label_classes" in self.info:  # names of the classes of per-pixel label maps
                d["label_classes"] = [str(c) for c in self.info["label_classes"]]
        if self.a is not None:
            d["pairing"] = self.pairing
            d["a_shape"] = list(self.a.shape[1:])
            d["n_a"] = len(self.a)
        return d


def validate_tensors(name: str, x: torch.Tensor, y: torch.Tensor | None, num_classes: int) -> None:
    """Raise :class:`DataError` for data a model cannot train on."""
    if x.dim() not in (2, 4, 5):
        raise DataError(f"{name}: data must be [N, D] points, [N, C, H, W] images or "
                        f"[N, C, D, H, W] volumes, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"{name}: the dataset is empty")
    if not torch.is_floating_point(x):
        raise DataError(f"{name}: data must be floating point, got {x.dtype}")
    # In chunks of rows: isfinite builds temporaries as large as its input (3x a big dataset).
    chunk = max(1, (64 << 20) // max(1, x[0].numel() * 4))
    if not all(bool(torch.isfinite(x[i:i + chunk]).all()) for i in range(0, len(x), chunk)):
        bad = sum(int((~torch.isfinite(x[i:i + chunk])).flatten(1).any(1).sum())
                  for i in range(0, len(x), chunk))
        raise DataError(f"{name}: {bad} sample(s) contain NaN or Inf values")
    if x.dim() in (4, 5) and (x.min() < -1.0 - 1e-4 or x.max() > 1.0 + 1e-4):
        what = "images" if x.dim() == 4 else "volumes"
        raise DataError(f"{name}: {what} must be scaled to [-1, 1], got [{x.min():.3g}, "
                        f"{x.max():.3g}]")
    if y is not None:
        if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise DataError(
                f"{name}: labels must be int64 [N] matching {x.shape[0]} samples, "
                f"got {y.dtype} {tuple(y.shape)}"
            )
        if num_classes <= 0:
            raise DataError(f"{name}: labels given but num_classes is {num_classes}")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(f"{name}: labels must lie in [0, {num_classes - 1}], found [{lo}, {hi}]")
