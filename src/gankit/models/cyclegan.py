"""CycleGAN: unpaired image-to-image translation with two GANs and cycle consistency.

Zhu, Park, Isola & Efros 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks". Two generators ``G_AB: A -> B`` and ``G_BA: B -> A`` (ResNet generators,
:mod:`gankit.nn.resnet_gen`: 7x7 reflection-padded conv, two stride-2 convs, ``model.n_blocks``
residual blocks with instance norm (6 at 128 px, 9 at 256), two fractionally strided convs, a
7x7 conv and tanh) and two 70x70 PatchGAN discriminators with instance norm, ``D_B`` judging
domain B (real ``b`` vs ``G_AB(a)``) and ``D_A`` judging domain A. The objective (paper eq. 3,
with the least-squares GAN loss of §4 and the identity loss of §5.2)

    L_G = (D_B(G_AB(a)) - 1)^2 + (D_A(G_BA(b)) - 1)^2
          + lambda (||G_BA(G_AB(a)) - a||_1 + ||G_AB(G_BA(b)) - b||_1)
          + 0.5 lambda (||G_AB(b) - b||_1 + ||G_BA(a) - a||_1)
    L_D_B = 0.5 [(D_B(b) - 1)^2 + D_B(pool_B(G_AB(a)))^2]       (and L_D_A alike)

with lambda = 10 (``model.lambda_cycle``) and the identity weight 0.5 (``model.lambda_identity``,
a fraction of lambda; 0 turns it off; it compares an image with its own translation, so it is
left out when the domains differ in channels), every square averaged over the patches and the
batch. D's objective is halved "to slow down the rate at which D learns relative to G" (§4). Each
discriminator is updated from a history of generated images rather than the latest ones
(Shrivastava et al. 2017): a pool of ``model.pool_size`` = 50 past fakes; once it is full, each
new fake is, with probability 1/2, swapped for a stored one (which D then sees) and otherwise
shown itself. The pools are family buffers and their draws come from the Trainer's noise
generator, so both are checkpointed and a resumed run continues bit-identically.

One training step: G_AB and G_BA take one joint Adam step on ``L_G`` (phase ``G``), then D_A and
D_B one each on the step's fakes (phases ``D_A``, ``D_B``), as the authors' code. Adam with lr
2e-4, betas (0.5, 0.999); the lr is constant for the first half of training and then decays
linearly to zero (100 + 100 epochs in the paper: ``optim.schedule=linear``, ``decay_start`` half
of ``train.steps`` unless set). ``translate`` maps A to B, ``direction="BA"`` B to A.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..data.sizes import ImageSizes
from ..errors import ConfigError, DataError
from ..losses import get_loss
from ..nn.patchgan import PatchDiscriminator
from ..nn.resnet_gen import ResnetGenerator
from ..registry import MODELS
from .base import GANFamily, OptimSpec, Params, Phase, StepContext


class CycleGANParams(Params):
    width: int = Field(64, ge=1)  # ngf = ndf (paper 64)
    n_blocks: int = Field(6, ge=0)  # residual blocks of G: 6 at 128 px, 9 at 256 px
    n_layers: int = Field(3, ge=0)  # PatchGAN depth: 3 -> 70x70 patches
    lambda_cycle: float = Field(10.0, ge=0.0)  # lambda of the cycle L1 terms (paper 10)
    lambda_identity: float = Field(0.5, ge=0.0)  # identity weight as a fraction of lambda
    pool_size: int = Field(50, ge=0)  # past fakes per discriminator (0: no pool)
    norm: Literal["instance", "batch"] = "instance"


def min_side(n_layers: int) -> int:
    """The smallest side both networks take: G's reflection pads need a 2x2 map after its two
    stride-2 convs (side >= 8); the PatchGAN's ``n_layers`` stride-2 convs and two 4x4 convs need
    ``R >= 3 * 2**n`` (pix2pix's bound, rounded up to a multiple of 4)."""
    lo = 3 * 2 ** n_layers if n_layers else 1
    return max(8, -(-lo // 4) * 4)


def domain_shapes(model: str, info: dict[str, Any], n_layers: int
                  ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The image shapes ``(C, H, W)`` of domains A and B of the data ``info``; a one-line error
    unless both are square, of one side, a multiple of 4 and at least :func:`min_side`."""
    shape_b = tuple(int(s) for s in info["shape"])
    shape_a = tuple(int(s) for s in (info.get("a_shape") or info["shape"]))
    name = info.get("name", "the data")
    lo = min_side(n_layers)
    for dom, (_, h, w) in (("A", shape_a), ("B", shape_b)):
        if h != w or h < lo or h % 4:
            raise ConfigError(f"{model} needs square images whose side is a multiple of 4 "
                              f"and at least {lo}; domain {dom} of '{name}' is {h}x{w}: add "
                              f"--set data.image_size={max(lo, h - h % 4)}")
    if shape_a[1:] != shape_b[1:]:
        raise ConfigError(f"{model} translates images of one size, but domain A of '{name}' "
                          f"is {shape_a[1]}x{shape_a[2]} and B {shape_b[1]}x{shape_b[2]}; "
                          f"resize both with --set data.image_size=N")
    return shape_a, shape_b


class ImagePool(nn.Module):
    """A history of ``size`` generated images (Shrivastava et al. 2017; CycleGAN §4).

    :meth:`query` takes a batch of new fakes and returns the batch D is shown: while the pool is
    not full each image is stored and returned itself; once full, each image, with probability
    1/2, replaces a uniformly chosen stored image, and the stored one is returned in its place;
    otherwise the new image is returned and the pool is unchanged. The stored images and their
    count are buffers (checkpointed with the family), the draws come from ``generator`` (the
    Trainer's checkpointed noise generator), so the pool is exact across kill -9 and resume.
    """

    def __init__(self, size: int, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, fakes: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.size == 0:
            return fakes
        n, dev = len(fakes), fakes.device
        # a fixed number of draws per image, whatever the branch: the noise stream stays aligned
        swap = torch.rand(n, generator=generator, device=dev) > 0.5
        idx = torch.randint(self.size, (n,), generator=generator, device=dev)
        out = fakes.detach().clone()
        count = int(self.count)
        for i in range(n):
            if count < self.size:
                self.images[count] = fakes[i]
                count += 1
            elif bool(swap[i]):
                j = int(idx[i])
                out[i] = self.images[j]
                self.images[j] = fakes[i]
        self.count.fill_(count)
        return out


def _sq(x: Tensor, target: float) -> Tensor:
    """The least-squares GAN term: mean over patches and batch of ``(x - target)^2``."""
    return (x - target).pow(2).mean()



def pooled_d_loss(ctx: StepContext, dom: str, real: Tensor, fake: Tensor,
                  pool: ImagePool) -> tuple[Tensor, dict[str, Tensor]]:
    """Discriminator ``D_{dom}``'s least-squares loss ``0.5 [(D(real) - 1)^2 + D(shown)^2]``,
    ``shown`` drawn from the history ``pool`` of past fakes (Shrivastava et al. 2017, as
    CycleGAN), with its logs."""
    shown = pool.query(fake, ctx.generator)
    D = ctx.net(f"D_{dom}")
    out_real, out_fake = D(real), D(shown)
    loss = get_loss("lsgan").d_loss(out_real, out_fake)
    return loss, {f"loss/D_{dom}": loss.detach(), f"D_{dom}/real": out_real.detach().mean(),
                  f"D_{dom}/fake": out_fake.detach().mean()}

@MODELS.register("cyclegan", description="unpaired translation: two ResNet G, two PatchGAN D, "
                                          "LSGAN + 10 x cycle L1 + identity (Zhu et al. 2017)")
class CycleGAN(GANFamily):
    """CycleGAN (Zhu et al. 2017): translates unpaired images; see the module docstring."""

    Params = CycleGANParams
    capabilities: ClassVar[frozenset[str]] = frozenset({"translate"})
    data_source: ClassVar[str] = "unpaired"
    data_kinds: ClassVar[tuple[str, ...]] = ("unpaired",)
    ema_networks: ClassVar[tuple[str, ...]] = ()
    g_nets: ClassVar[tuple[str, ...]] = ("G_AB", "G_BA")
    d_tricks_in_place: ClassVar[bool | None] = False
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "lsgan"},
        "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999),
                  "schedule": "linear"},
    }
    # Widths of 4, one residual block and a 16x16 PatchGAN: a step on 16x16 images takes ms.
    tiny: ClassVar[dict[str, Any]] = {"model.width": 4, "model.n_blocks": 1, "model.n_layers": 1}
    tiny_data: ClassVar[str] = "unpaired"

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)  # refuses data that is not unpaired
        p = self.p
        self.shape_a, self.shape_b = domain_shapes(self.name, info, p.n_layers)
        shape_a, shape_b = self.shape_a, self.shape_b
        ca, cb = shape_a[0], shape_b[0]
        self.G_AB = ResnetGenerator(ca, cb, p.width, p.n_blocks, p.norm)
        self.G_BA = ResnetGenerator(cb, ca, p.width, p.n_blocks, p.norm)
        self.D_A = PatchDiscriminator(ca, p.width, p.n_layers, p.norm)
        self.D_B = PatchDiscriminator(cb, p.width, p.n_layers, p.norm)
        self.pool_A = ImagePool(p.pool_size, shape_a)  # past G_BA(b), shown to D_A
        self.pool_B = ImagePool(p.pool_size, shape_b)  # past G_AB(a), shown to D_B

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        lo = min_side(int(cfg.model.get("n_layers", 3)))
        return ImageSizes(lambda n: n >= lo and n % 4 == 0,
                          f"square images whose side is a multiple of 4 >= {lo}",
                          lambda n: n & (n - 1) == 0)

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        super().validate_config(cfg)
        if cfg.loss.name != "lsgan":
            raise ConfigError(f"{cfg.model['name']} trains with the least-squares loss of its paper; "
                              f"loss.name={cfg.loss.name} is not supported (use lsgan)")
        extra = [f"loss.{k}" for k in ("gp", "clip") if getattr(cfg.loss, k) is not None]
        if extra:
            raise ConfigError(f"{cfg.model['name']} does not apply {', '.join(extra)}")

    def networks(self) -> dict[str, nn.Module]:
        return {"G_AB": self.G_AB, "G_BA": self.G_BA, "D_A": self.D_A, "D_B": self.D_B}

    def optim_spec(self, name: str) -> OptimSpec:
        """GANFamily's G/D settings; with ``optim.schedule=linear`` and no ``decay_start``, the
        lr stays constant for the first half of ``train.steps`` (the paper's 100 + 100 epochs)."""
        spec = super().optim_spec(name)
        if spec.schedule == "linear" and spec.decay_start is None:
            spec.decay_start = int(self.cfg.train.steps) // 2
        return spec

    # -- training -------------------------------------------------------------------------------
    def g_loss(self, nets: dict[str, nn.Module], a: Tensor, b: Tensor
               ) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
        """``(L_G, stats, fake_B, fake_A)`` for real batches ``a`` and ``b``."""
        p = self.p
        G_AB, G_BA, D_A, D_B = (nets[k] for k in ("G_AB", "G_BA", "D_A", "D_B"))
        fake_b, fake_a = G_AB(a), G_BA(b)
        adv_ab, adv_ba = _sq(D_B(fake_b), 1.0), _sq(D_A(fake_a), 1.0)
        cyc_a = (G_BA(fake_b) - a).abs().mean()
        cyc_b = (G_AB(fake_a) - b).abs().mean()
        lam, lam_id = p.lambda_cycle, p.lambda_cycle * p.lambda_identity
        stats = {"loss/G_AB/adv": adv_ab.detach(), "loss/G_BA/adv": adv_ba.detach(),
                 "G/cycle_A": cyc_a.detach(), "G/cycle_B": cyc_b.detach()}
        total = adv_ab + adv_ba + lam * (cyc_a + cyc_b)
        if lam_id > 0 and self.shape_a[0] == self.shape_b[0]:  # identity needs equal channels
            idt_b = (G_AB(b) - b).abs().mean()
            idt_a = (G_BA(a) - a).abs().mean()
            stats |= {"G/identity_A": idt_a.detach(), "G/identity_B": idt_b.detach()}
            total = total + lam_id * (idt_a + idt_b)
        stats["loss/G"] = total.detach()
        return total, stats, fake_b, fake_a

    def g_extra(self, nets: dict[str, nn.Module], batch: dict[str, Tensor], fake_b: Tensor,
                fake_a: Tensor) -> tuple[Tensor | float, dict[str, Tensor]]:
        """Terms a variant adds to ``L_G`` from the step's batch and fakes: ``(term, stats)``;
        CycleGAN itself adds none (empty stats)."""
        return 0.0, {}

    def phases(self) -> list[Phase]:
        def g_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            nets = {k: ctx.net(k) for k in self.networks()}
            a, b = ctx.batch["a"], ctx.batch["b"]
            loss, stats, fake_b, fake_a = self.g_loss(nets, a, b)
            extra, more = self.g_extra(nets, ctx.batch, fake_b, fake_a)
            if more:  # a variant's own terms (shape-consistent CycleGAN's segmenter loss)
                loss = loss + extra
                stats |= more | {"loss/G": loss.detach()}
            ctx.stash[("cyclegan", ctx.micro)] = (fake_a.detach(), fake_b.detach())
            return loss, stats

        def fakes(ctx: StepContext) -> tuple[Tensor, Tensor]:
            out = ctx.stash.get(("cyclegan", ctx.micro))
            if out is None:  # no G step ran this step (e.g. a D phase on its own)
                with torch.no_grad():
                    out = (ctx.net("G_BA")(ctx.batch["b"]), ctx.net("G_AB")(ctx.batch["a"]))
            return out

        def d_step(dom: str) -> Any:
            def step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
                fake_a, fake_b = fakes(ctx)
                real, fake = (ctx.batch["a"], fake_a) if dom == "A" else (ctx.batch["b"], fake_b)
                return pooled_d_loss(ctx, dom, real, fake, getattr(self, f"pool_{dom}"))
            return step

        return [Phase("G", ("G_AB", "G_BA"), g_step),
                Phase("D_A", "D_A", d_step("A")),
                Phase("D_B", "D_B", d_step("B"))]

    # -- translating ----------------------------------------------------------------------------
    def translate(self, x: Tensor, *, generator: torch.Generator | None = None,
                  direction: str = "AB", **options: Any) -> Tensor:
        """Images of domain A ``[N, c_A, H, W]`` in [-1, 1] -> domain B (``direction="BA"``: B
        -> A). G is fully convolutional: any side that is a multiple of 4 (and >= 8) works."""
        if options:
            raise ConfigError(f"cyclegan translate takes only the option direction, not "
                              f"{', '.join(sorted(options))}")
        if direction not in ("AB", "BA"):
            raise ConfigError(f"cyclegan translate direction must be AB or BA, got {direction!r}")
        c_in = (self.shape_a if direction == "AB" else self.shape_b)[0]
        if x.dim() != 4 or x.shape[1] != c_in:
            raise DataError(f"cyclegan translates {direction} images [N, {c_in}, H, W] of domain "
                            f"{direction[0]}, got shape {tuple(x.shape)}")
        if x.shape[-1] % 4 or x.shape[-2] % 4 or min(x.shape[-2:]) < 8:
            raise DataError(f"cyclegan translates sides that are multiples of 4 and at least 8, "
                            f"got {x.shape[-2]}x{x.shape[-1]}")
        return (self.G_AB if direction == "AB" else self.G_BA)(x)
