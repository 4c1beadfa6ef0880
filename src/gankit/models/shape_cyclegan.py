"""Shape-consistent CycleGAN: CycleGAN whose translations must keep the anatomy a segmenter sees.

Zhang, Yang & Zheng 2018, "Translating and Segmenting Multimodal Medical Volumes with Cycle- and
Shape-Consistency Generative Adversarial Network". CycleGAN (Zhu et al. 2017, the ``cyclegan``
family, whose networks, image pools and losses this family reuses) plus a segmenter per domain,
``S_A`` and ``S_B``, each mapping an image of its domain to per-pixel logits over the tissue
classes. The cycle loss alone only asks that ``G_BA`` can undo ``G_AB``: a translation may move
or swap structures as long as the way back restores them (geometric distortion, §3.2). The
shape-consistency loss asks that the translated image still has the input's anatomy, as the
other domain's segmenter reads it:

    L_shape = CE(S_B(G_AB(a)), y_a) + CE(S_A(G_BA(b)), y_b)

(CE the per-pixel cross-entropy, averaged over pixels and batch; ``y_a``, ``y_b`` the label maps
of the real images). The objective is ``L_GAN(G_AB, D_B) + L_GAN(G_BA, D_A) + lambda L_cyc +
gamma L_shape``, minimised by the generators and the segmenters and maximised by the
discriminators, with lambda = 10 (``model.lambda_cycle``) and gamma = 1 (``model.lambda_shape``,
our reading of the paper's setting; 0 turns the shape term off and leaves CycleGAN with two
segmenters beside it). The segmenters learn from the real labelled images of their domain (``CE(S_A(a), y_a) +
CE(S_B(b), y_b)``) and, as in the paper ("the segmentors use synthetic data as an online data
augmentation"), from the translated ones through ``gamma L_shape`` with the fakes detached.
CycleGAN's identity term (0.5 lambda) is kept, as in the paper's CycleGAN base.

Each step: the generators take one Adam step on CycleGAN's ``L_G`` + ``gamma L_shape`` (phase
``G``), the segmenters one on their loss (phase ``S``), then D_A and D_B as in CycleGAN. Adam
2e-4, (0.5, 0.999) for all networks; CycleGAN's constant-then-linear schedule. The segmenters
are ResNet generators (:mod:`gankit.nn.resnet_gen`) without the tanh, ``model.seg_width`` wide
with ``model.seg_blocks`` residual blocks: fully convolutional, so they take any side that the
generators take. The data is unpaired with a label map per image (the ``unpaired-labelled``
source: ``ct2mr``, or a dataset whose ``info`` holds ``a_labels``/``x_labels`` and
``label_classes``). ``translate`` is CycleGAN's; ``segment`` gives the label map of domain-B
images (``direction="A"``: domain A) as ``int64``-valued class indices.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..nn.resnet_gen import ResnetGenerator
from ..registry import MODELS
from .base import Phase, StepContext
from .cyclegan import CycleGAN, CycleGANParams


class ShapeCycleGANParams(CycleGANParams):
    lambda_shape: float = Field(1.0, ge=0.0)  # gamma of the shape-consistency term
    seg_width: int = Field(32, ge=1)  # width of the segmenters S_A, S_B
    seg_blocks: int = Field(2, ge=0)  # their residual blocks


def shape_loss(S_A: nn.Module, S_B: nn.Module, fake_b: Tensor, fake_a: Tensor, y_a: Tensor,
               y_b: Tensor) -> tuple[Tensor, Tensor]:
    """The two shape-consistency terms ``(CE(S_B(fake_b), y_a), CE(S_A(fake_a), y_b))``: the
    translation ``fake_b = G_AB(a)`` must segment (by B's segmenter) into ``a``'s labels."""
    return F.cross_entropy(S_B(fake_b), y_a), F.cross_entropy(S_A(fake_a), y_b)


@MODELS.register("shape-cyclegan",
                 description="CycleGAN + a segmenter per domain and the shape-consistency "
                             "cross-entropy on translated images (Zhang, Yang & Zheng 2018)")
class ShapeCycleGAN(CycleGAN):
    """Shape-consistent CycleGAN (Zhang et al. 2018): see the module docstring."""

    Params = ShapeCycleGANParams
    capabilities: ClassVar[frozenset[str]] = frozenset({"translate", "segment"})
    data_source: ClassVar[str] = "unpaired-labelled"
    g_nets: ClassVar[tuple[str, ...]] = ("G_AB", "G_BA", "S_A", "S_B")
    tiny: ClassVar[dict[str, Any]] = {**CycleGAN.tiny, "model.seg_width": 4,
                                      "model.seg_blocks": 0}
    tiny_data: ClassVar[str] = "unpaired-labelled"

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        classes = info.get("label_classes")
        if not classes or len(classes) < 2:
            raise ConfigError(f"shape-cyclegan needs a label map per image of both domains and "
                              f"their class names; '{info.get('name', 'the data')}' has none "
                              f"(use a labelled two-domain built-in such as ct2mr)")
        self.label_classes = [str(c) for c in classes]
        k, p = len(classes), self.p
        self.S_A = ResnetGenerator(self.shape_a[0], k, p.seg_width, p.seg_blocks, p.norm,
                                   tanh=False)
        self.S_B = ResnetGenerator(self.shape_b[0], k, p.seg_width, p.seg_blocks, p.norm,
                                   tanh=False)

    def networks(self) -> dict[str, nn.Module]:
        return super().networks() | {"S_A": self.S_A, "S_B": self.S_B}

    def _labels(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        y_a, y_b = batch["a_labels"], batch["b_labels"]
        k = len(self.label_classes)
        if int(max(y_a.max(), y_b.max())) >= k:
            raise DataError(f"label maps hold class {int(max(y_a.max(), y_b.max()))}, but the "
                            f"data names {k} classes")
        return y_a, y_b

    def g_extra(self, nets: dict[str, nn.Module], batch: dict[str, Tensor], fake_b: Tensor,
                fake_a: Tensor) -> tuple[Tensor | float, dict[str, Tensor]]:
        """``gamma L_shape`` for the generators (the segmenters are not stepped by it here)."""
        y_a, y_b = self._labels(batch)
        sh_ab, sh_ba = shape_loss(nets["S_A"], nets["S_B"], fake_b, fake_a, y_a, y_b)
        stats = {"G/shape_AB": sh_ab.detach(), "G/shape_BA": sh_ba.detach()}
        return self.p.lambda_shape * (sh_ab + sh_ba), stats

    def s_loss(self, nets: dict[str, nn.Module], batch: dict[str, Tensor], fake_b: Tensor,
               fake_a: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The segmenters' loss: CE on the real labelled images of each domain plus ``gamma``
        times CE on the (detached) translations, labelled with their inputs' maps."""
        y_a, y_b = self._labels(batch)
        seg_a = F.cross_entropy(nets["S_A"](batch["a"]), y_a)
        seg_b = F.cross_entropy(nets["S_B"](batch["b"]), y_b)
        sh_ab, sh_ba = shape_loss(nets["S_A"], nets["S_B"], fake_b.detach(), fake_a.detach(),
                                  y_a, y_b)
        loss = seg_a + seg_b + self.p.lambda_shape * (sh_ab + sh_ba)
        return loss, {"loss/S": loss.detach(), "S/seg_A": seg_a.detach(),
                      "S/seg_B": seg_b.detach()}

    def phases(self) -> list[Phase]:
        base = super().phases()

        def s_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            nets = {k: ctx.net(k) for k in ("S_A", "S_B")}
            out = ctx.stash.get(("cyclegan", ctx.micro))
            if out is None:  # no G step ran this step
                with torch.no_grad():
                    out = (ctx.net("G_BA")(ctx.batch["b"]), ctx.net("G_AB")(ctx.batch["a"]))
            fake_a, fake_b = out
            return self.s_loss(nets, ctx.batch, fake_b, fake_a)

        return [base[0], Phase("S", ("S_A", "S_B"), s_step), *base[1:]]

    def segment(self, x: Tensor, *, generator: torch.Generator | None = None,
                direction: str = "B", **options: Any) -> Tensor:
        """Label maps ``[N, H, W]`` (class indices of ``label_classes``, as floats through
        :meth:`infer`) of images ``[N, C, H, W]`` of domain B (``direction="A"``: domain A)."""
        if options:
            raise ConfigError(f"shape-cyclegan segment takes only the option direction, not "
                              f"{', '.join(sorted(options))}")
        if direction not in ("A", "B"):
            raise ConfigError(f"shape-cyclegan segment direction must be A or B, got "
                              f"{direction!r}")
        c = (self.shape_a if direction == "A" else self.shape_b)[0]
        if x.dim() != 4 or x.shape[1] != c:
            raise DataError(f"shape-cyclegan segments images [N, {c}, H, W] of domain "
                            f"{direction}, got shape {tuple(x.shape)}")
        if x.shape[-1] % 4 or x.shape[-2] % 4 or min(x.shape[-2:]) < 8:
            raise DataError(f"shape-cyclegan segments sides that are multiples of 4 and at "
                            f"least 8, got {x.shape[-2]}x{x.shape[-1]}")
        return (self.S_A if direction == "A" else self.S_B)(x).argmax(1)
