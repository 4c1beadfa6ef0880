"""pix2pix: image-to-image translation with a conditional GAN and an L1 term.

Isola, Zhu, Zhou & Efros 2017, "Image-to-Image Translation with Conditional Adversarial
Networks" (chapter 001 "Conditional GANs" with its Fig. 17; deck 003 "Pix2Pix"). Trained on
aligned pairs ``a[i] -> b[i]`` (the ``paired`` data source: ``edges2digits``, ``paired:DIR``), a
U-Net generator maps the input image to the output image, ``fake = G(a)``, and a PatchGAN
discriminator judges the *pair*: it sees the channel concatenation of the input and either the
target or the output, ``D(cat([a, b]))`` vs ``D(cat([a, G(a)]))``, so a realistic output that
does not fit its input is still rejected (the input image is D's condition ``c``). The objective
(paper eq. 4)

    G* = arg min_G max_D  L_cGAN(G, D) + lambda L_L1(G),    L_L1 = E ||b - G(a)||_1

has lambda = 100 (``model.lambda_l1``). ``L_cGAN`` is the configured ``loss.name``; the default
``nonsaturating`` is the paper's ("we train to maximize log D(x, G(x, z))", §3.3). D's objective
is halved "to slow down the rate at which D learns relative to G" (§3.3). Both networks use Adam
with lr 2e-4, betas (0.5, 0.999) (§3.3). The L1 term carries the low frequencies; the PatchGAN
(a ``model.n_layers=3`` stack sees 70x70 patches) only has to model local structure, and its
loss is averaged over the patches (each patch is classified, §3.2.2).

Noise: G has no ``z`` ("the generator simply learned to ignore the noise", §3.1). Its only noise
is dropout (p = 0.5 on the three innermost decoder blocks), applied at test time too (§3.1,
§6.1): :meth:`Pix2Pix.translate` keeps the dropout layers on (``model.test_dropout``, default
true) and draws their masks from the generator it is given, so ``gankit translate --seed S`` is
reproducible and another seed gives another (slightly different) translation. Batch norm in G
uses the statistics of the test batch, as the paper (§3.3; with one image that is instance
norm); ``model.norm=instance`` is CycleGAN's choice.

``model.mode`` reproduces the paper's ablation (Table 1, Fig. 4): ``cgan+l1`` (default), ``l1``
(G alone with the L1 loss: no discriminator is built, one phase) and ``cgan`` (no L1 term; the
lambda is ignored). The reference code's schedule (constant, then linear decay to zero) is
``--set optim.schedule=linear``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..data.sizes import ImageSizes, powers_of_two
from ..errors import ConfigError, DataError
from ..nn.patchgan import PatchDiscriminator, receptive_field
from ..nn.unet import UNetGenerator
from ..registry import MODELS
from .base import DView, Game, GANFamily, Params, Phase, StepContext, Terms, adversarial_phases

MODES = ("cgan+l1", "l1", "cgan")


class Pix2PixParams(Params):
    width: int = Field(64, ge=1)  # ngf = ndf: channels of the outermost G and D blocks (paper 64)
    n_layers: int = Field(3, ge=0)  # PatchGAN depth: 3 -> 70x70 patches, 1 -> 16x16, 0 -> 1x1
    norm: Literal["batch", "instance"] = "batch"  # batch: test-time batch statistics (paper)
    lambda_l1: float = Field(100.0, ge=0.0)  # weight of the L1 term (paper: 100)
    test_dropout: bool = True  # dropout stays on when translating (the paper's noise)
    mode: Literal["cgan+l1", "l1", "cgan"] = "cgan+l1"  # the paper's objective ablation


def min_resolution(n_layers: int) -> int:
    """The smallest power-of-two side both networks take: the U-Net needs >= 4; the PatchGAN's
    ``n_layers`` stride-2 convs and two 4x4 stride-1 convs leave ``R / 2**n - 2`` logits per side,
    so it needs ``R >= 3 * 2**n``, i.e. ``2**(n + 2)``."""
    return max(4, 2 ** (n_layers + 2))


def check_resolution(info: dict[str, Any], n_layers: int) -> int:
    """The side ``R`` of the pairs in ``info``, or a :class:`ConfigError` saying how to fix it."""
    _, h, w = info["shape"]
    _, ha, wa = info.get("a_shape") or info["shape"]
    name = info.get("name", "the data")
    if (ha, wa) != (h, w):
        raise ConfigError(f"pix2pix translates aligned pairs of one size, but the inputs of "
                          f"'{name}' are {ha}x{wa} and its targets {h}x{w}; resize both with "
                          f"--set data.image_size=N")
    lo = min_resolution(n_layers)
    if h != w or h < lo or h & (h - 1):
        want = max(lo, 2 ** round(math.log2(max(h, w, 1))))
        rf = receptive_field(n_layers)
        raise ConfigError(
            f"pix2pix needs square images whose side is a power of two of at least {lo} ({lo}, "
            f"{2 * lo}, {4 * lo}, ...) for its U-Net and its {rf}x{rf} PatchGAN "
            f"(model.n_layers={n_layers}); '{name}' is {h}x{w}: add --set data.image_size={want}")
    return int(h)


@MODELS.register("pix2pix", description="image-to-image cGAN: U-Net G, PatchGAN D on (input, "
                                         "output) pairs, + 100 x L1 (Isola et al. 2017)")
class Pix2Pix(GANFamily):
    """pix2pix (Isola et al. 2017): translates paired images; see the module docstring."""

    Params = Pix2PixParams
    capabilities: ClassVar[frozenset[str]] = frozenset({"translate"})
    data_source: ClassVar[str] = "paired"
    data_kinds: ClassVar[tuple[str, ...]] = ("paired",)
    ema_networks: ClassVar[tuple[str, ...]] = ("G",)
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "nonsaturating"},
        "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999)},
    }
    # Widths of 4 and a 16x16 PatchGAN: a step on 16x16 pairs takes milliseconds.
    tiny: ClassVar[dict[str, Any]] = {"model.width": 4, "model.n_layers": 1}
    tiny_data: ClassVar[str] = "paired"

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)  # refuses data that is not paired
        p = self.p
        r = check_resolution(info, p.n_layers)
        c_a = int((info.get("a_shape") or info["shape"])[0])
        c_x = int(self.sample_shape[0])
        self.a_channels, self.resolution = c_a, r
        self.G = UNetGenerator(c_a, c_x, r, p.width, norm=p.norm)  # [N, c_a, R, R] -> [N, c_x, R, R]
        if p.mode != "l1":
            # D judges (input, output) pairs: c_a + c_x channels in, [N, 1, h, w] patch logits out
            self.D = PatchDiscriminator(c_a + c_x, p.width, p.n_layers, p.norm)

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        """Powers of two: the U-Net halves the image down to 1x1, the PatchGAN's ``n_layers``
        stride-2 convolutions need at least :func:`min_resolution`."""
        return powers_of_two(min_resolution(int(cfg.model.get("n_layers", 3))))

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        """``mode=l1`` plays no game: the loss and trick settings it would ignore are refused."""
        super().validate_config(cfg)
        if cfg.model.get("mode") == "l1":
            from ..tricks import active

            unused = [f"tricks.{k}" for k in active(cfg.tricks)]
            unused += [f"loss.{k}" for k in ("gp", "clip") if getattr(cfg.loss, k) is not None]
            if unused:
                raise ConfigError(f"pix2pix with model.mode=l1 trains G alone with the L1 loss; "
                                  f"{', '.join(unused)} needs a discriminator (use mode cgan+l1)")

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G} if self.p.mode == "l1" else {"G": self.G, "D": self.D}

    # -- the discriminator on pairs -------------------------------------------------------------
    def d_forward(self, D: nn.Module, x: Tensor, c: Any = None) -> Tensor:
        """D on the pair: input image ``c`` [N, c_a, H, W] and output/target ``x`` [N, c_x, H, W]
        concatenated on channels (input first, as the authors' code) -> logits [N, 1, h, w]."""
        return D(torch.cat([c, x], 1))

    def d_score(self, out: Tensor, n: int) -> Tensor:
        """One score per patch, ``[N, h * w]``: the losses average over every patch of every image
        (the paper's PatchGAN classifies each patch; averaging the logits first would let a
        confident patch outvote the others). A gradient penalty then differentiates the sum of
        an image's patch scores."""
        return out.reshape(n, -1)

    # -- training -------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        lam, mode = self.p.lambda_l1, self.p.mode
        if mode == "l1":
            def l1_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
                # G alone: Adam is invariant to the scale of a lone loss, so lambda plays no part
                b = ctx.batch
                l1 = F.l1_loss(ctx.net("G")(b["a"]), b["b"])
                return l1, {"loss/G": l1.detach(), "G/l1": l1.detach()}

            return [Phase("G", "G", l1_step)]

        def real(ctx: StepContext) -> tuple[Tensor, Tensor]:
            return ctx.batch["b"], ctx.batch["a"]  # target [N, c_x, R, R], its input as D's c

        def fake(ctx: StepContext, G: nn.Module) -> tuple[Tensor, Tensor, None]:
            a = ctx.batch["a"]
            return G(a), a, None  # the translation, its input as D's c, no latent

        def g_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            l1 = (v.fake - v.real).abs().mean()  # type: ignore[operator]
            terms = {"loss/G/l1": lam * l1} if mode == "cgan+l1" else {}
            return terms, {"G/l1": l1.detach()}  # logged in cgan mode too, not trained

        return adversarial_phases(self, Game(real=real, fake=fake, g_terms=g_terms, d_scale=0.5,
                                             image_condition=True))

    # -- translating ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def test_dropout(self, generator: torch.Generator | None) -> Iterator[None]:
        """G's dropout on at test time (``model.test_dropout``), masks drawn from ``generator``;
        the layers' settings are restored afterwards."""
        drops = self.G.dropouts()
        old = [(d.always, d.generator) for d in drops]
        for d in drops:
            d.always, d.generator = self.p.test_dropout, generator
        try:
            yield
        finally:
            for d, (always, gen) in zip(drops, old):
                d.always, d.generator = always, gen

    def translate(self, x: Tensor, *, generator: torch.Generator | None = None,
                  **options: Any) -> Tensor:
        """Input-domain images ``[N, c_a, H, W]`` in [-1, 1] -> outputs ``[N, c_x, H, W]``.

        Sides must be multiples of ``2**depth`` of the U-Net (the training side ``R`` or larger
        multiples: G is fully convolutional). With batch norm the output depends on the batch,
        whose statistics normalise it (the paper's test-time behaviour).
        """
        if options:
            raise ConfigError(f"pix2pix translate takes no option(s) {', '.join(sorted(options))}")
        if x.dim() != 4 or x.shape[1] != self.a_channels:
            raise DataError(f"pix2pix translates images [N, {self.a_channels}, H, W] of its input "
                            f"domain, got shape {tuple(x.shape)}")
        r = self.resolution
        if x.shape[-1] % r or x.shape[-2] % r:
            raise DataError(f"pix2pix was trained on {r}x{r} images and translates sides that are "
                            f"multiples of {r}, got {x.shape[-2]}x{x.shape[-1]}")
        with self.test_dropout(generator):
            return self.G(x)
