"""Model families: one file per family, each registering itself in ``gankit.registry.MODELS``.

Every module in this package is imported here, so adding a family is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..registry import MODELS
from .base import GANFamily, ModelFamily, Phase, adversarial_phases

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "custom"):
        importlib.import_module(f"{__name__}.{_m.name}")


def get_family(name: str) -> type[ModelFamily]:
    """The class of a registered family (``custom`` is the bring-your-own-networks family)."""
    if name == "custom":
        from .custom import GAN

        return GAN
    return MODELS.get(name)


__all__ = ["MODELS", "GANFamily", "ModelFamily", "Phase", "adversarial_phases", "get_family"]
