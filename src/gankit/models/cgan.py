"""Conditional GAN: the class label enters both G and D (Mirza & Osindero 2014; seed 000 §4.1).

``arch=mlp`` is the paper's MLP setting (one-hot label concatenated to z and to the flattened
input); ``arch=conv`` puts the label into the DCGAN networks (concatenated to z, and as one-hot
planes concatenated to D's input image). Fake batches use the labels of the real batch, so the
generator learns the data's class distribution; ``sample(labels=...)`` picks classes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from ..data.sizes import ANY_SIZE, STAGED, ImageSizes
from ..errors import ConfigError
from ..nn import spectral_norm_all
from ..registry import MODELS
from .base import GANFamily, Params
from .dcgan import DCDiscriminator, DCGenerator
from .gan import MLPDiscriminator, MLPGenerator, mlp_sizes


class CGANParams(Params):
    arch: Literal["mlp", "conv"] = "conv"
    latent_dim: int | None = None
    # mlp sizes (None: as the 'gan' model)
    g_hidden: int | None = None
    g_layers: int | None = None
    d_hidden: int | None = None
    d_layers: int | None = None
    g_batchnorm: bool = True
    d_dropout: float = 0.0
    # conv sizes (as the 'dcgan' model)
    width: int = 64
    max_width: int = 512
    spectral_norm: bool = False


@MODELS.register("cgan", description="conditional GAN, label into G and D (Mirza & Osindero 2014); MLP or conv")
class CGAN(GANFamily):
    """Conditional GAN (Mirza & Osindero 2014)."""

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        """Strided conv stages for images (any size with the MLP architecture)."""
        return STAGED if cfg.model.get("arch", "auto") in ('conv',) else ANY_SIZE

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8}

    Params = CGANParams
    needs_labels = True
    defaults: ClassVar[dict[str, Any]] = {"loss": {"name": "nonsaturating"}}

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p, k = self.p, self.num_classes
        if p.arch == "conv":
            if not info["is_image"]:
                raise ConfigError("cgan with arch=conv needs images; use --set model.arch=mlp")
            c, r = self.sample_shape[0], self.sample_shape[-1]
            self.latent_dim = p.latent_dim or 100
            self.G = DCGenerator(self.latent_dim, c, r, p.width, p.max_width, k)
            self.D = DCDiscriminator(c, r, p.width, p.max_width, not p.spectral_norm, k)
        else:
            s = mlp_sizes(p, info["is_image"])  # type: ignore[arg-type]
            self.latent_dim = s["latent_dim"]
            self.G = MLPGenerator(self.latent_dim, self.sample_shape, s["g_hidden"],
                                  s["g_layers"], p.g_batchnorm, k)
            self.D = MLPDiscriminator(self.sample_shape, s["d_hidden"], s["d_layers"],
                                      p.d_dropout, k)
        if p.spectral_norm:
            spectral_norm_all(self.D)
