"""Bring your own networks: any ``nn.Module`` pair trained through the same Trainer."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..config import resolve_config
from ..errors import ConfigError
from .base import GANFamily, Params


class CustomParams(Params):
    latent_dim: int = 100
    num_classes: int = 0  # > 0: G(z, c) and D(x, c) receive int64 labels


class GAN(GANFamily):
    """A GAN made of user networks.

    ``G(z)`` maps ``[N, latent_dim]`` noise to samples and ``D(x)`` maps samples to scores
    (``[N]`` or ``[N, 1]``); with ``num_classes > 0`` both also receive labels ``c``. Any loss from
    ``gankit.registry.LOSSES`` and any penalty can be used; everything else (optimizers, EMA, AMP,
    checkpoints, DDP) comes from the Trainer::

        model = gankit.GAN(generator=G, discriminator=D, loss="hinge", latent_dim=64)
        run = gankit.train(model, data="mnist5k", steps=1000)

    The run's resolved config is the truth: ``model.latent_dim``/``model.num_classes`` given as
    overrides to ``gankit.train`` are adopted by the model (and checked against G), so
    config.json always describes the networks that were trained.
    """

    Params = CustomParams
    family_name: ClassVar[str] = "custom"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *,
                 loss: str = "nonsaturating", latent_dim: int = 100, num_classes: int = 0,
                 **overrides: Any) -> None:
        cfg = resolve_config(type(self), {"model": {"latent_dim": latent_dim,
                                                    "num_classes": num_classes},
                                          "loss": {"name": loss}}, overrides)
        super().__init__(cfg, {"name": "custom", "shape": [], "num_classes": num_classes,
                               "kind": "images"})
        self.latent_dim = latent_dim
        self.G = generator
        self.D = discriminator

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def bind(self, cfg: Any, info: dict[str, Any]) -> None:
        """Adopt the run's resolved config and the data's description (called by ``train``).

        ``model.latent_dim`` and ``model.num_classes`` come from the config; G must accept the
        latent size (checked with a 2-sample forward pass) and a conditional model needs labels.
        """
        self.cfg = cfg
        self.info = info
        self.sample_shape = tuple(info["shape"])
        self.latent_dim = int(cfg.model["latent_dim"])
        self.num_classes = int(cfg.model["num_classes"])
        if self.num_classes and int(info.get("num_classes", 0)) < 1:
            raise ConfigError(f"model.num_classes={self.num_classes} but '{info['name']}' has no "
                              f"labels")
        if self.num_classes and int(info.get("num_classes", 0)) > self.num_classes:
            raise ConfigError(f"'{info['name']}' has {info['num_classes']} classes but "
                              f"model.num_classes is {self.num_classes}")
        was = self.G.training
        self.G.eval()
        try:
            with torch.no_grad():
                z = torch.zeros(2, self.latent_dim, device=self.device)  # no RNG drawn
                c = torch.zeros(2, dtype=torch.int64, device=self.device) \
                    if self.conditional else None
                out = self.generate(self.G, z, c)
        except (RuntimeError, TypeError, ValueError) as e:
            raise ConfigError(f"the generator does not accept model.latent_dim="
                              f"{self.latent_dim}: {str(e).splitlines()[0]}") from None
        finally:
            self.G.train(was)
        if tuple(out.shape[1:]) != self.sample_shape:
            raise ConfigError(f"the generator makes samples of shape {list(out.shape[1:])}; the "
                              f"data's are {list(self.sample_shape)}")
