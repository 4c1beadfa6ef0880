"""Model families; each file registers itself in ``gankit.registry.MODELS``."""

from __future__ import annotations

from ..registry import MODELS
from . import cgan, dcgan, gan  # noqa: F401  (registration)
from .base import ModelFamily, Phase, adversarial_phases


def get_family(name: str) -> type[ModelFamily]:
    """The class of a registered family (``custom`` is the bring-your-own-networks family)."""
    if name == "custom":
        from .custom import GAN

        return GAN
    return MODELS.get(name)


__all__ = ["MODELS", "ModelFamily", "Phase", "adversarial_phases", "get_family"]
