"""Bring your own networks: any ``nn.Module`` pair trained through the same Trainer."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..config import resolve_config
from .base import ModelFamily, Params


class CustomParams(Params):
    latent_dim: int = 100
    num_classes: int = 0  # > 0: G(z, c) and D(x, c) receive int64 labels


class GAN(ModelFamily):
    """A GAN made of user networks.

    ``G(z)`` maps ``[N, latent_dim]`` noise to samples and ``D(x)`` maps samples to scores
    (``[N]`` or ``[N, 1]``); with ``num_classes > 0`` both also receive labels ``c``. Any loss from
    ``gankit.registry.LOSSES`` and any penalty can be used; everything else (optimizers, EMA, AMP,
    checkpoints, DDP) comes from the Trainer::

        model = gankit.GAN(generator=G, discriminator=D, loss="hinge", latent_dim=64)
        run = gankit.train(model, data="mnist5k", steps=1000)
    """

    Params = CustomParams

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *,
                 loss: str = "nonsaturating", latent_dim: int = 100, num_classes: int = 0,
                 **overrides: Any) -> None:
        cfg = resolve_config("custom", {"model": {"latent_dim": latent_dim,
                                                  "num_classes": num_classes},
                                        "loss": {"name": loss}}, overrides)
        super().__init__(cfg, {"name": "custom", "shape": [], "num_classes": num_classes})
        self.latent_dim = latent_dim
        self.G = generator
        self.D = discriminator

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def bind(self, cfg: Any, info: dict[str, Any]) -> None:
        """Adopt the run's resolved config and the data's description (called by ``train``)."""
        self.cfg = cfg
        self.info = info
        self.sample_shape = tuple(info["shape"])
