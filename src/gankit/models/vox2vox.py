"""Vox2Vox: a 3-D pix2pix for volumetric segmentation.

Cirillo, Abramian & Eklund 2020, "Vox2Vox: 3D-GAN for Brain Tumour Segmentation" (BrainLes,
MICCAI 2020). pix2pix (Isola et al. 2017) in three dimensions: a 3-D U-Net generator ``G`` maps a
volume ``a`` ``[N, C, D, H, W]`` to its segmentation, and a 3-D PatchGAN discriminator ``D``
judges (volume, segmentation) pairs, concatenated on channels, patch by patch. The generator's
objective is the adversarial loss plus ``lambda`` times the generalised Dice loss of the
segmentation (the paper: lambda = 5), Adam with lr 2e-4 and betas (0.5, 0.999) for both
networks, D's objective halved as in pix2pix. The adversarial loss is pix2pix's
(``loss.name=nonsaturating``).

Networks (``model.*``; the paper's structure, its sizes configurable):

- ``G``: encoder of ``depth`` blocks Conv3d(4x4x4, stride 2, pad 1) - InstanceNorm - LeakyReLU
  (0.2) (no norm on the first), channels ``width * 2**i`` capped at ``max_width``; a bottleneck
  of ``bottleneck`` residual blocks Conv3d(3x3x3) - InstanceNorm - LeakyReLU at the coarsest
  scale; decoder blocks ConvTranspose3d(4x4x4, stride 2) - InstanceNorm - Dropout - ReLU, each
  concatenated with the mirrored encoder output (skip connections); a last transposed
  convolution to one channel and tanh. ``(t + 1) / 2`` of the output ``t`` is the foreground
  probability (a sigmoid: the paper's softmax over two classes).
- ``D``: ``n_layers`` blocks Conv3d(4x4x4, stride 2) - InstanceNorm - LeakyReLU (no norm on the
  first), one stride-1 block, and a stride-1 Conv3d to one logit per patch.

Generalised Dice loss (Sudre et al. 2017, "Generalised Dice overlap as a deep learning loss
function for highly unbalanced segmentations"), over foreground and background l with weights
``w_l = 1 / (sum_i r_li)^2`` so a small lesion counts as much as the large background:
``GDL = 1 - 2 sum_l w_l sum_i r_li p_li / sum_l w_l sum_i (r_li + p_li)``, over the batch.
``model.seg_loss=l1`` is pix2pix's L1 instead.

``model.mode=seg`` trains the same generator with the segmentation loss alone (no
discriminator is built): the baseline of the paper's question, what the adversarial term adds.
The decoder's dropout (p = ``dropout`` on the ``n_dropout`` innermost blocks) also gives
Monte-Carlo dropout at test time: ``segment(x, mc=T)``, as SegAN's (:mod:`gankit.models.segan`).

``segment(x)`` returns foreground probabilities ``[N, 1, D, H, W]`` in [0, 1] (``output="mask"``:
the {0, 1} label map thresholded at 0.5; ``"variance"``/``"prob+variance"`` with ``mc >= 2``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..nn.unet import GenDropout
from ..registry import MODELS
from .base import DView, Game, GANFamily, Params, Phase, StepContext, Terms, adversarial_phases
from .segan import mc_segment, to_unit

__all__ = ["PatchDiscriminator3D", "UNet3D", "Vox2Vox", "generalised_dice_loss"]


def generalised_dice_loss(prob: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Sudre et al. 2017's generalised Dice loss of a binary segmentation over the batch, with
    foreground and background as its two classes (module docstring); ``prob``/``target`` in
    [0, 1] of one shape."""
    p = torch.stack([prob.flatten(), 1.0 - prob.flatten()])  # [2, voxels]
    r = torch.stack([target.flatten(), 1.0 - target.flatten()])
    w = 1.0 / r.sum(1).pow(2).clamp(min=1.0)  # [2]; a class absent from the batch weighs 1
    inter = (w * (r * p).sum(1)).sum()
    total = (w * (r + p).sum(1)).sum()
    return 1.0 - 2.0 * inter / (total + eps)


def _init(module: nn.Module) -> None:
    """pix2pix's initialisation, in 3-D: conv weights N(0, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm3d(c, affine=False, track_running_stats=False)


class UNet3D(nn.Module):
    """Vox2Vox's 3-D U-Net (module docstring): ``[N, in, D, H, W] -> [N, out, D, H, W]`` in
    [-1, 1], sides multiples of ``2**depth``."""

    def __init__(self, in_channels: int, out_channels: int = 1, width: int = 64,
                 max_width: int = 512, depth: int = 4, bottleneck: int = 2, dropout: float = 0.5,
                 n_dropout: int = 2) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"the 3-D U-Net needs depth >= 1, got {depth}")
        self.depth = depth
        chans = [min(width * 2 ** i, max_width) for i in range(depth)]
        self.encoder = nn.ModuleList()
        for i in range(depth):
            cin = in_channels if i == 0 else chans[i - 1]
            block: list[nn.Module] = [nn.Conv3d(cin, chans[i], 4, 2, 1, bias=i == 0)]
            if i > 0:
                block.append(_norm(chans[i]))
            block.append(nn.LeakyReLU(0.2))
            self.encoder.append(nn.Sequential(*block))
        self.bottleneck = nn.ModuleList(
            nn.Sequential(nn.Conv3d(chans[-1], chans[-1], 3, 1, 1, bias=False), _norm(chans[-1]),
                          nn.LeakyReLU(0.2)) for _ in range(bottleneck))
        self.decoder = nn.ModuleList()
        for j, i in enumerate(range(depth - 2, -1, -1)):  # up to the scale of encoder block i
            cin = chans[i + 1] if j == 0 else 2 * chans[i + 1]
            block = [nn.ConvTranspose3d(cin, chans[i], 4, 2, 1, bias=False), _norm(chans[i])]
            if j < n_dropout and dropout > 0:
                block.append(GenDropout(dropout))
            block.append(nn.ReLU())
            self.decoder.append(nn.Sequential(*block))
        self.to_volume = nn.Sequential(
            nn.ConvTranspose3d(2 * chans[0] if depth > 1 else chans[0], out_channels, 4, 2, 1),
            nn.Tanh())
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        h = x
        for block in self.encoder:
            h = block(h)  # [N, chans[i], D / 2**(i+1), ...]
            skips.append(h)
        for block in self.bottleneck:
            h = h + block(h)  # residual, at the coarsest scale
        skips.pop()
        for block in self.decoder:
            h = torch.cat([block(h), skips.pop()], 1)  # [N, 2 * chans[i], ...]
        return self.to_volume(h)  # [N, out, D, H, W]


class PatchDiscriminator3D(nn.Module):
    """A 3-D PatchGAN (module docstring): ``[N, in, D, H, W] -> [N, 1, d, h, w]`` patch logits."""

    def __init__(self, in_channels: int, width: int = 64, n_layers: int = 3,
                 max_width: int = 512) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(n_layers + 1):  # n_layers stride-2 blocks, then one stride-1 block
            cout = min(width * min(2 ** i, 8), max_width)
            stride = 2 if i < n_layers else 1
            layers.append(nn.Conv3d(cin, cout, 4, stride, 1, bias=i == 0))
            if i > 0:
                layers.append(_norm(cout))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv3d(cin, 1, 4, 1, 1)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class Vox2VoxParams(Params):
    width: int = Field(64, ge=1)  # channels of the outermost G and D blocks (paper: 64)
    max_width: int = Field(512, ge=1)
    depth: int = Field(4, ge=1)  # G's stride-2 levels (paper: 4)
    bottleneck: int = Field(2, ge=0)  # residual 3x3x3 blocks at G's coarsest scale
    n_layers: int = Field(3, ge=0)  # D's stride-2 blocks
    dropout: float = Field(0.5, ge=0.0, lt=1.0)  # G's decoder dropout (pix2pix's p), MC dropout
    n_dropout: int = Field(2, ge=0)
    lambda_seg: float = Field(5.0, ge=0.0)  # weight of the segmentation loss (paper: 5)
    seg_loss: Literal["gdl", "l1"] = "gdl"  # generalised Dice (paper) or pix2pix's L1
    mode: Literal["gan+seg", "seg"] = "gan+seg"  # seg: G alone on the segmentation loss


@MODELS.register("vox2vox", description="3-D segmentation GAN: 3-D U-Net G, 3-D PatchGAN D on "
                                         "(volume, mask) pairs, + 5 x generalised Dice (Cirillo "
                                         "et al. 2020)")
class Vox2Vox(GANFamily):
    """Vox2Vox (Cirillo et al. 2020): segments 3-D volumes; see the module docstring."""

    Params = Vox2VoxParams
    capabilities: ClassVar[frozenset[str]] = frozenset({"segment"})
    data_source: ClassVar[str] = "paired"
    data_kinds: ClassVar[tuple[str, ...]] = ("paired",)
    takes_volumes: ClassVar[bool] = True
    # No EMA (as SegAN): the adversarial and segmentation-only runs differ in their loss alone.
    ema_networks: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "nonsaturating"},
        "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999)},
    }
    # 8^3 volumes, widths of 2: a step takes milliseconds.
    tiny: ClassVar[dict[str, Any]] = {"model.width": 2, "model.depth": 2, "model.n_layers": 1,
                                      "model.bottleneck": 1}
    tiny_data: ClassVar[str] = "volumes"

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        name = info.get("name")
        if not info.get("is_volume"):
            raise ConfigError(f"vox2vox segments 3-D volumes [N, C, D, H, W]; '{name}' holds 2-D "
                              f"data of shape {tuple(info['shape'])} (segan segments 2-D images)")
        c_x, *side = (int(s) for s in self.sample_shape)
        c_a, *side_a = (int(s) for s in info.get("a_shape") or info["shape"])
        if c_x != 1:
            raise ConfigError(f"vox2vox segments one foreground class: its targets must be one-"
                              f"channel masks, '{name}' has {c_x} channels")
        lo = max(2 ** p.depth, 2 ** (p.n_layers + 2) if p.mode != "seg" else 1)
        r = side[0]
        if side != side_a or len(set(side)) != 1 or r < lo or r & (r - 1):
            raise ConfigError(f"vox2vox needs cubic volumes and masks of one size, a power of two "
                              f">= {lo} (model.depth={p.depth}, model.n_layers={p.n_layers}); "
                              f"'{name}' has volumes {side_a} and masks {side}")
        self.a_channels, self.resolution = c_a, r
        self.G = UNet3D(c_a, 1, p.width, p.max_width, p.depth, p.bottleneck, p.dropout,
                        p.n_dropout)
        if p.mode != "seg":
            self.D = PatchDiscriminator3D(c_a + 1, p.width, p.n_layers, p.max_width)

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        super().validate_config(cfg)
        if cfg.model.get("mode") == "seg":
            from ..tricks import active

            unused = [f"tricks.{k}" for k in active(cfg.tricks)]
            unused += [f"loss.{k}" for k in ("gp", "clip") if getattr(cfg.loss, k) is not None]
            if unused:
                raise ConfigError(f"vox2vox with model.mode=seg trains G alone; {', '.join(unused)}"
                                  f" needs a discriminator (use mode gan+seg)")

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G} if self.p.mode == "seg" else {"G": self.G, "D": self.D}

    def d_forward(self, D: nn.Module, x: Tensor, c: Any = None) -> Tensor:
        """D on the pair: volume ``c`` and segmentation ``x`` concatenated on channels."""
        return D(torch.cat([c, x], 1))

    def d_score(self, out: Tensor, n: int) -> Tensor:
        return out.reshape(n, -1)  # one score per patch: the loss averages over every patch

    def seg_loss(self, out: Tensor, target: Tensor) -> Tensor:
        """The segmentation term on G's tanh output and the {-1, +1} target."""
        if self.p.seg_loss == "l1":
            return (out - target).abs().mean()
        return generalised_dice_loss(to_unit(out), to_unit(target))

    def phases(self) -> list[Phase]:
        lam = self.p.lambda_seg
        if self.p.mode == "seg":
            def seg_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
                b = ctx.batch
                loss = self.seg_loss(ctx.net("G")(b["a"]), b["b"])
                return loss, {"loss/G": loss.detach(), "G/seg": loss.detach()}

            return [Phase("G", "G", seg_step)]

        def real(ctx: StepContext) -> tuple[Tensor, Tensor]:
            return ctx.batch["b"], ctx.batch["a"]  # the true mask, its volume as D's c

        def fake(ctx: StepContext, G: nn.Module) -> tuple[Tensor, Tensor, None]:
            a = ctx.batch["a"]
            return G(a), a, None

        def g_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            seg = self.seg_loss(v.fake, v.real)  # type: ignore[arg-type]
            return {"loss/G/seg": lam * seg}, {"G/seg": seg.detach()}

        return adversarial_phases(self, Game(real=real, fake=fake, g_terms=g_terms, d_scale=0.5,
                                             image_condition=True))

    def segment(self, x: Tensor, *, generator: torch.Generator | None = None, mc: int = 0,
                output: str = "prob", **options: Any) -> Tensor:
        """Volumes ``[N, c_a, D, H, W]`` in [-1, 1] -> foreground probabilities ``[N, 1, D, H,
        W]`` (``mc``/``output``: :func:`gankit.models.segan.mc_segment`); sides must be multiples
        of ``2**depth`` (G is fully convolutional)."""
        if options:
            raise ConfigError(f"vox2vox segment takes mc= and output=, not "
                              f"{', '.join(sorted(options))}")
        if x.dim() != 5 or x.shape[1] != self.a_channels:
            raise DataError(f"vox2vox segments volumes [N, {self.a_channels}, D, H, W], got shape "
                            f"{tuple(x.shape)}")
        k = 2 ** self.p.depth
        if any(s % k for s in x.shape[2:]):
            raise DataError(f"vox2vox (model.depth={self.p.depth}) segments volumes whose sides "
                            f"are multiples of {k}, got {tuple(x.shape[2:])}")
        return mc_segment(self.G, x, generator=generator, mc=mc, output=output)
