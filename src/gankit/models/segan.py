"""SegAN: adversarial segmentation with a multi-scale L1 loss.

Xue, Xu, Zhang, Long & Huang 2018, "SegAN: Adversarial Network with Multi-scale L1 Loss for
Medical Image Segmentation" (Neuroinformatics 16). A segmenter ``S`` maps an image ``a`` to a
foreground probability map; a critic ``C`` looks at the image *masked* by a label map, pixel by
pixel, ``a * S(a)`` (predicted) or ``a * y`` (ground truth), and extracts hierarchical features
``f_C^i`` (the masked image itself, then the output of each of its layers). The multi-scale L1
loss compares the two sets of features scale by scale (paper eq. 2),

    l_mae(S, C) = 1/L sum_{i=0..L-1} mean | f_C^i(a * S(a)) - f_C^i(a * y) |,

and the game is ``min_S max_C l_mae``: S and C are trained in turn (the paper's alternating
scheme), S to make its masked image indistinguishable from the truth's at every scale (pixel
level up to large receptive fields, so shape and context count, not only pixel overlap), C to
find the features where they differ. Each scale's L1 is averaged over its elements so that a
large early layer does not outweigh a small deep one (the paper sums normalised L1 distances).

Maximising an L1 distance has no bound: C could grow it by scaling its weights. C's weights are
therefore clipped to ``[-clip_c, clip_c]`` after each of its steps (WGAN's weight clipping,
Arjovsky et al. 2017; ``model.clip_c = 0.05``, the value public SegAN implementations use).

Here (``model.*``):

- ``S`` is the pix2pix U-Net (Isola et al. 2017; :class:`gankit.nn.unet.UNetGenerator`, 4x4
  stride-2 convolutions down to 1x1 with skip connections, as SegAN's fully convolutional
  encoder-decoder). Its tanh output ``t`` gives the probability ``(t + 1) / 2 =
  sigmoid(2 u)`` of the pre-activation ``u``: the paper's sigmoid output. Normalisation is
  ``instance`` by default (the paper uses batch norm; instance norm makes a scan's mask
  independent of which other scans share its batch at test time).
- ``C`` mirrors S's encoder (``c_layers`` 4x4 stride-2 convolutions, LeakyReLU 0.2, a norm after
  all but the first).
- ``lambda_adv`` weights the multi-scale loss in S's objective and ``lambda_dice`` a soft Dice
  term ``1 - 2 sum(p y) / (sum p + sum y)`` over the batch (Milletari et al. 2016). The paper
  trains S on the multi-scale loss alone (``lambda_dice=0``); ``lambda_adv=0`` is the *same
  segmenter trained with Dice alone*, the baseline of the comparison (no critic is built).
- Adam with the paper's learning rate 2e-5 and betas (0.5, 0.999). Short runs need more:
  ``benchmarks/segmentation.py`` trains both arms at 2e-4.
- ``dropout`` (p = 0.5 on the ``n_dropout`` innermost decoder blocks, pix2pix's) also serves
  Monte-Carlo dropout at test time (Gal & Ghahramani 2016): ``segment(x, mc=T)`` keeps it on for
  T stochastic passes (masks drawn from the seeded generator) and returns their mean
  probability, or with ``output="variance"`` the per-pixel variance, an uncertainty map.

``segment(x)`` returns foreground probabilities ``[N, 1, H, W]`` in [0, 1] (``output="mask"``:
the {0, 1} label map thresholded at 0.5; ``"prob+variance"``: both as two channels).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..data.sizes import ImageSizes, powers_of_two
from ..errors import ConfigError, DataError
from ..nn import dcgan_init
from ..nn.unet import GenDropout, UNetGenerator, norm2d
from ..registry import MODELS
from .base import ModelFamily, Params, Phase, StepContext

__all__ = ["OUTPUTS", "MultiScaleCritic", "SegAN", "mc_segment", "multiscale_l1",
           "soft_dice_loss"]

#: What ``segment`` returns (``output=``).
OUTPUTS = ("prob", "mask", "variance", "prob+variance")


# --- losses -------------------------------------------------------------------------------------
def multiscale_l1(feats_a: list[Tensor], feats_b: list[Tensor]) -> Tensor:
    """SegAN's multi-scale L1 loss (Xue et al. 2018, eq. 2): the mean over scales of the mean
    absolute difference of the two feature maps at that scale."""
    if len(feats_a) != len(feats_b) or not feats_a:
        raise ValueError("multiscale_l1 needs two equally long, non-empty lists of features")
    return torch.stack([(fa - fb).abs().mean() for fa, fb in zip(feats_a, feats_b)]).mean()


def soft_dice_loss(prob: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """``1 - (2 sum(p t) + eps) / (sum p + sum t + eps)`` over the whole batch (Milletari et al.
    2016, "V-Net"); ``prob`` and ``target`` in [0, 1], any shape; ``eps`` smooths empty masks."""
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + eps) / (prob.sum() + target.sum() + eps)


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]: images before masking, masks and tanh outputs as probabilities."""
    return (x + 1.0) * 0.5


# --- Monte-Carlo dropout ------------------------------------------------------------------------
@contextlib.contextmanager
def dropout_on(drops: list[GenDropout], generator: torch.Generator | None) -> Iterator[None]:
    """Dropout layers active at test time, masks from ``generator``; settings restored after."""
    old = [(d.always, d.generator) for d in drops]
    for d in drops:
        d.always, d.generator = True, generator
    try:
        yield
    finally:
        for d, (always, gen) in zip(drops, old):
            d.always, d.generator = always, gen


def mc_segment(net: nn.Module, x: Tensor, *, generator: torch.Generator | None, mc: int = 0,
               output: str = "prob") -> Tensor:
    """Foreground probabilities of a tanh-output segmenter ``net`` (``[N, 1, ...]``), with
    ``mc`` Monte-Carlo dropout passes (0: one deterministic pass with dropout off).

    ``output``: ``prob`` (mean probability), ``mask`` (mean > 0.5 as 0/1), ``variance``
    (per-pixel variance of the ``mc`` probabilities, population form; needs ``mc >= 2``) or
    ``prob+variance`` (both, concatenated on channels).
    """
    if output not in OUTPUTS:
        raise ConfigError(f"segment output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if isinstance(mc, bool) or not isinstance(mc, int) or mc < 0:
        raise ConfigError(f"mc (Monte-Carlo dropout passes) must be an integer >= 0, got {mc!r}")
    if "variance" in output and mc < 2:
        raise ConfigError(f"output={output} needs a variance: give mc >= 2 Monte-Carlo dropout "
                          f"passes")
    if mc == 0:
        prob = to_unit(net(x))
        var = torch.zeros_like(prob)
    else:
        drops = [m for m in net.modules() if isinstance(m, GenDropout) and m.p > 0]
        if not drops:
            raise ConfigError("Monte-Carlo dropout needs dropout layers: train with "
                              "model.dropout > 0 and model.n_dropout >= 1")
        with dropout_on(drops, generator):
            probs = torch.stack([to_unit(net(x)) for _ in range(mc)])  # [T, N, 1, ...]
        prob, var = probs.mean(0), probs.var(0, unbiased=False)
    if output == "prob":
        return prob
    if output == "mask":
        return (prob > 0.5).to(prob.dtype)
    if output == "variance":
        return var
    return torch.cat([prob, var], 1)


# --- the critic ---------------------------------------------------------------------------------
class MultiScaleCritic(nn.Module):
    """SegAN's critic: ``[N, C, H, W]`` masked images -> their hierarchical features.

    ``n_layers`` blocks Conv(4x4, stride 2, pad 1) - Norm - LeakyReLU(0.2) with channels ``width
    * 2**i`` (capped at ``max_width``), no norm on the first (as S's encoder). :meth:`forward`
    returns ``[input, block 1 output, ..., block n output]``: the pixel-level features and one
    map per scale, each ``[N, C_i, H / 2**i, W / 2**i]``.
    """

    def __init__(self, in_channels: int, width: int = 64, n_layers: int = 3, norm: str = "batch",
                 max_width: int = 512) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"the critic needs at least one layer, got c_layers={n_layers}")
        self.blocks = nn.ModuleList()
        cin = in_channels
        for i in range(n_layers):
            cout = min(width * 2 ** i, max_width)
            if i == 0:
                block = [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2)]
            else:
                block = [nn.Conv2d(cin, cout, 4, 2, 1, bias=norm == "none"), norm2d(norm, cout),
                         nn.LeakyReLU(0.2)]
            self.blocks.append(nn.Sequential(*block))
            cin = cout
        dcgan_init(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [x]
        for block in self.blocks:
            feats.append(block(feats[-1]))
        return feats


# --- the family ---------------------------------------------------------------------------------
class SegANParams(Params):
    width: int = Field(64, ge=1)  # channels of the outermost S and C blocks (paper: 64)
    max_width: int = Field(512, ge=1)
    c_layers: int = Field(3, ge=1)  # the critic's stride-2 blocks (scales after the input)
    norm: Literal["instance", "batch", "none"] = "instance"
    dropout: float = Field(0.5, ge=0.0, lt=1.0)  # S's decoder dropout (pix2pix's), for MC dropout
    n_dropout: int = Field(3, ge=0)  # innermost decoder blocks with dropout
    lambda_adv: float = Field(1.0, ge=0.0)  # weight of the multi-scale L1 loss; 0: Dice alone
    lambda_dice: float = Field(1.0, ge=0.0)  # weight of the soft Dice term; 0: the paper's S loss
    clip_c: float = Field(0.05, gt=0.0)  # C's weights clipped to [-clip_c, clip_c]


@MODELS.register("segan", description="adversarial segmentation: U-Net segmenter vs a critic "
                                       "with a multi-scale L1 loss on image x mask (Xue et al. "
                                       "2018)")
class SegAN(ModelFamily):
    """SegAN (Xue et al. 2018): segmenter ``S`` and multi-scale critic ``C``; see the module
    docstring."""

    Params = SegANParams
    capabilities: ClassVar[frozenset[str]] = frozenset({"segment"})
    data_source: ClassVar[str] = "paired"
    data_kinds: ClassVar[tuple[str, ...]] = ("paired",)
    # No EMA: the segmenter is evaluated as trained (the paper's), and the adversarial and
    # Dice-only runs then differ in their loss alone.
    ema_networks: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {"optim": {"lr": 2e-5, "betas": (0.5, 0.999)}}
    tiny: ClassVar[dict[str, Any]] = {"model.width": 4, "model.c_layers": 2}
    tiny_data: ClassVar[str] = "paired"

    S: UNetGenerator
    C: MultiScaleCritic

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)  # refuses unpaired data and volumes
        p = self.p
        if p.lambda_adv == 0 and p.lambda_dice == 0:
            raise ConfigError("segan needs model.lambda_adv > 0 or model.lambda_dice > 0 (both "
                              "are 0: S would have no loss)")
        c_a = int((info.get("a_shape") or info["shape"])[0])
        c_x, h, w = (int(s) for s in self.sample_shape)
        if c_x != 1:
            raise ConfigError(f"segan segments one foreground class: its targets must be one-"
                              f"channel masks, '{info.get('name')}' has {c_x} channels")
        _, ha, wa = (info.get("a_shape") or info["shape"])
        if (ha, wa) != (h, w) or h != w:
            raise ConfigError(f"segan needs square images and masks of one size, got images "
                              f"{ha}x{wa} and masks {h}x{w}")
        self.a_channels, self.resolution = c_a, h
        self.S = UNetGenerator(c_a, 1, h, p.width, p.max_width, p.norm, p.dropout, p.n_dropout)
        if p.lambda_adv > 0:
            self.C = MultiScaleCritic(c_a, p.width, p.c_layers, p.norm, p.max_width)

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        """Powers of two: the U-Net halves down to 1x1, the critic ``c_layers`` times."""
        return powers_of_two(max(4, 2 ** int(cfg.model.get("c_layers", 3))))

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        from ..tricks import active

        want = active(cfg.tricks)
        if want:
            raise ConfigError(f"segan trains with its own segmenter/critic phases, which do not "
                              f"apply {', '.join('tricks.' + k for k in want)}")

    def networks(self) -> dict[str, nn.Module]:
        return {"S": self.S, "C": self.C} if self.p.lambda_adv > 0 else {"S": self.S}

    # -- training -------------------------------------------------------------------------------
    def s_loss(self, S: nn.Module, C: nn.Module | None, a: Tensor, b: Tensor
               ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """S's objective on a batch (images ``a``, masks ``b`` in [-1, 1]): ``(loss, stats,
        probabilities)``; the probabilities (detached) are what C's step then sees."""
        p = self.p
        prob = to_unit(S(a))  # [N, 1, H, W] foreground probability
        y = to_unit(b)
        dice = soft_dice_loss(prob, y)
        stats = {"S/dice_loss": dice.detach()}
        loss = p.lambda_dice * dice
        if C is not None and p.lambda_adv > 0:
            img = to_unit(a)
            mae = multiscale_l1(C(img * prob), C(img * y))
            loss = loss + p.lambda_adv * mae
            stats["S/mae"] = mae.detach()
        stats["loss/S"] = loss.detach()
        return loss, stats, prob.detach()

    def phases(self) -> list[Phase]:
        p = self.p

        def s_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            b = ctx.batch
            C = ctx.net("C") if p.lambda_adv > 0 else None
            loss, stats, prob = self.s_loss(ctx.net("S"), C, b["a"], b["b"])
            ctx.stash[("segan", ctx.micro)] = prob  # C's step reuses S's output (one S pass)
            return loss, stats

        phases = [Phase("S", "S", s_step)]
        if p.lambda_adv == 0:
            return phases

        def c_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            b = ctx.batch
            prob = ctx.stash[("segan", ctx.micro)]
            img, C = to_unit(b["a"]), ctx.net("C")
            mae = multiscale_l1(C(img * prob), C(img * to_unit(b["b"])))
            return -mae, {"loss/C": -mae.detach(), "C/mae": mae.detach()}  # C maximises l_mae

        def clip() -> None:
            with torch.no_grad():
                for w in self.C.parameters():
                    w.clamp_(-p.clip_c, p.clip_c)

        return [*phases, Phase("C", "C", c_step, after_step=clip)]

    # -- segmenting -----------------------------------------------------------------------------
    def segment(self, x: Tensor, *, generator: torch.Generator | None = None, mc: int = 0,
                output: str = "prob", **options: Any) -> Tensor:
        """Images ``[N, c_a, H, W]`` in [-1, 1] -> foreground probabilities ``[N, 1, H, W]``
        (see :func:`mc_segment` for ``mc`` and ``output``). Sides must be multiples of the
        training side (S is fully convolutional)."""
        if options:
            raise ConfigError(f"segan segment takes mc= and output=, not "
                              f"{', '.join(sorted(options))}")
        if x.dim() != 4 or x.shape[1] != self.a_channels:
            raise DataError(f"segan segments images [N, {self.a_channels}, H, W], got shape "
                            f"{tuple(x.shape)}")
        r = self.resolution
        if x.shape[-1] % r or x.shape[-2] % r:
            raise DataError(f"segan was trained on {r}x{r} images and segments sides that are "
                            f"multiples of {r}, got {x.shape[-2]}x{x.shape[-1]}")
        return mc_segment(self.S, x, generator=generator, mc=mc, output=output)
