"""The in-memory dataset container every model trains on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import DataError


@dataclass
class Dataset:
    """Training data held as one tensor.

    ``x`` is ``[N, C, H, W]`` float in [-1, 1] for images or ``[N, D]`` float for points (toy
    2-D mixtures, tabular data); ``y`` is ``int64 [N]`` or ``None``. ``x_test``/``y_test`` hold a
    fixed held-out split where the dataset defines one (used by metrics, never for training).
    ``info`` carries dataset-specific facts (mode centres and sigma for the toy mixtures).
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor | None = None
    num_classes: int = 0
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_tensors(self.name, self.x, self.y, self.num_classes)
        if self.x_test is not None:
            validate_tensors(self.name + " (test split)", self.x_test, self.y_test, self.num_classes)

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(C, H, W)`` or ``(D,)``."""
        return tuple(self.x.shape[1:])

    @property
    def channels(self) -> int:
        return int(self.x.shape[1]) if self.is_image else 0

    @property
    def resolution(self) -> int:
        return int(self.x.shape[-1]) if self.is_image else 0

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def describe(self) -> dict:
        """Plain facts saved into the run's config so a run can be rebuilt without the data."""
        return {
            "name": self.name,
            "n": len(self),
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "is_image": self.is_image,
        }


def validate_tensors(name: str, x: torch.Tensor, y: torch.Tensor | None, num_classes: int) -> None:
    """Raise :class:`DataError` for data a model cannot train on."""
    if x.dim() not in (2, 4):
        raise DataError(
            f"{name}: data must be [N, D] points or [N, C, H, W] images, got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{name}: the dataset is empty")
    if not torch.is_floating_point(x):
        raise DataError(f"{name}: data must be floating point, got {x.dtype}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        raise DataError(f"{name}: {bad} sample(s) contain NaN or Inf values")
    if x.dim() == 4 and (x.min() < -1.0 - 1e-4 or x.max() > 1.0 + 1e-4):
        raise DataError(f"{name}: images must be scaled to [-1, 1], got [{x.min():.3g}, {x.max():.3g}]")
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
