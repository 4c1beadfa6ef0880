"""Augmented CycleGAN: many-to-many unpaired translation with a latent code per direction.

Almahairi, Rajeswar, Sordoni, Bachman & Courville 2018, "Augmented CycleGAN: Learning
Many-to-Many Mappings from Unpaired Data". CycleGAN (Zhu et al. 2017) maps each image to one
translation; here each domain is augmented with a latent space, ``Z_a`` and ``Z_b`` (standard
normal codes of ``model.z_dim`` = 16 dimensions), and the mappings are stochastic:

- ``G_AB(a, z_b)`` and ``G_BA(b, z_a)``: ResNet generators whose instance norms are conditional
  on the code (conditional instance normalisation, Dumoulin et al. 2017, as in the paper: each
  norm's scale and shift are linear in ``z``), so different codes give different translations;
- encoders ``E_A(a, b) -> z_a`` and ``E_B(a, b) -> z_b``: given a pair, the code that explains
  what the source image does not determine;
- discriminators ``D_A``, ``D_B`` on images (CycleGAN's 70x70 PatchGANs, fed from CycleGAN's
  pools of 50 past fakes) and latent discriminators ``D_Za``, ``D_Zb`` (MLPs) on codes.

The map ``A x Z_b -> B x Z_a`` sends ``(a, z_b)`` to ``(b~, z~_a)`` with ``b~ = G_AB(a, z_b)``,
``z~_a = E_A(a, b~)``; its inverse direction is built alike from ``G_BA`` and ``E_B``. The paper's
losses, each direction:

    adversarial (least squares):  D_B judges b~ against real b;  D_Za judges z~_a = E_A(a, b~)
                                  against prior codes z_a ~ N(0, I)
    augmented cycle:  a' = G_BA(b~, z~_a)  ~ a      (L1, weight lambda = model.lambda_cycle)
                      z'_b = E_B(a, b~)    ~ z_b    (L1, weight model.lambda_latent)

and symmetrically from ``(b, z_a)``: ``a~ = G_BA(b, z_a)``, ``z~_b = E_B(a~, b)``, ``b' = G_AB(a~,
z~_b) ~ b``, ``z'_a = E_A(a~, b) ~ z_a``. The latent cycle is what makes the codes mean
something: ``E_B`` must read ``z_b`` back from the translation, so ``G_AB`` cannot ignore it, and
the latent discriminators keep the encoded codes distributed like the prior, so codes drawn
from the prior at test time land where training put them. Weights: the image cycles keep
CycleGAN's lambda = 10 and the latent cycles weigh 1 (``model.lambda_latent``); the paper does
not fix one value for all tasks, and these are the settings we state. No identity term (the
paper has none).

One step: generators and encoders take one joint Adam step (phase ``G``), then ``D_A``,
``D_B`` and the two latent discriminators (phase ``D_Z``), on the step's fakes. Adam 2e-4,
(0.5, 0.999), CycleGAN's constant-then-linear schedule, least-squares GAN loss. Codes are drawn
from the Trainer's checkpointed noise generator, so a resumed run continues bit-identically.
``translate(x, direction="AB")`` draws a code per image from the seeded generator (or takes
``z``, one code ``[z_dim]`` or one per image ``[N, z_dim]``): one input, many outputs.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..losses import get_loss
from ..nn import dcgan_init, mlp
from ..nn.patchgan import PatchDiscriminator
from ..registry import MODELS
from .base import GANFamily, Params, Phase, StepContext
from .cyclegan import CycleGAN, ImagePool, domain_shapes, pooled_d_loss


class AugCycleGANParams(Params):
    width: int = Field(64, ge=1)  # ngf = ndf (CycleGAN's 64)
    n_blocks: int = Field(6, ge=0)  # residual blocks of each G
    n_layers: int = Field(3, ge=0)  # PatchGAN depth: 3 -> 70x70 patches
    z_dim: int = Field(16, ge=1)  # latent code per direction (paper 16)
    z_hidden: int = Field(64, ge=1)  # hidden units of the latent discriminators
    lambda_cycle: float = Field(10.0, ge=0.0)  # weight of the image cycles (CycleGAN's 10)
    lambda_latent: float = Field(1.0, ge=0.0)  # weight of the latent cycles
    pool_size: int = Field(50, ge=0)  # past fakes per image discriminator
    norm: Literal["instance"] = "instance"  # D's norm; G's are conditional instance norms


class CondInstanceNorm(nn.Module):
    """Instance norm whose per-channel scale and shift are linear in a code ``z`` (conditional
    instance normalisation, Dumoulin et al. 2017): ``norm(x) * (1 + gamma(z)) + beta(z)``."""

    def __init__(self, ch: int, z_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(ch, affine=False)
        self.affine = nn.Linear(z_dim, 2 * ch)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        g, b = self.affine(z)[:, :, None, None].chunk(2, 1)  # [N, C, 1, 1] each
        return self.norm(x) * (1 + g) + b


class CINResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator (c7s1-w, d2w, d4w, R4w x n, u2w, uw, c7s1-out, tanh) with
    every instance norm conditional on a code: ``(x [N, in, H, W], z [N, z_dim]) -> [N, out, H,
    W]``; H and W multiples of 4."""

    def __init__(self, in_channels: int, out_channels: int, z_dim: int, width: int = 64,
                 n_blocks: int = 6) -> None:
        super().__init__()
        w = width
        convs: list[nn.Module] = [nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_channels, w, 7)),
                                  nn.Conv2d(w, 2 * w, 3, 2, 1), nn.Conv2d(2 * w, 4 * w, 3, 2, 1)]
        norms = [CondInstanceNorm(c, z_dim) for c in (w, 2 * w, 4 * w)]
        for _ in range(n_blocks):  # residual blocks: two convs, two norms each
            for _ in range(2):
                convs.append(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(4 * w, 4 * w, 3)))
                norms.append(CondInstanceNorm(4 * w, z_dim))
        for m in (4, 2):
            convs.append(nn.ConvTranspose2d(w * m, w * m // 2, 3, 2, 1, output_padding=1))
            norms.append(CondInstanceNorm(w * m // 2, z_dim))
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.n_blocks = n_blocks
        self.to_image = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(w, out_channels, 7),
                                      nn.Tanh())
        dcgan_init(self)
        for norm in self.norms:  # PyTorch's default init: codes move the output from the start
            norm.affine.reset_parameters()  # (N(0, 0.02) weights would leave them near-silent)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        act = torch.relu
        h = x
        for i in range(3):  # stem and the two downsamplings
            h = act(self.norms[i](self.convs[i](h), z))
        for k in range(self.n_blocks):
            i = 3 + 2 * k
            r = act(self.norms[i](self.convs[i](h), z))
            h = h + self.norms[i + 1](self.convs[i + 1](r), z)
        for i in range(3 + 2 * self.n_blocks, len(self.convs)):  # the two upsamplings
            h = act(self.norms[i](self.convs[i](h), z))
        return self.to_image(h)


class PairEncoder(nn.Module):
    """``E(a, b) -> z``: both images side by side on channels, three stride-2 4x4 convs with
    leaky ReLU, global average pooling, a linear map to ``z_dim``. No instance norm: each of its
    channels has mean zero per image, so after pooling it would erase what the code is read
    from (the amplitude of features)."""

    def __init__(self, in_channels: int, z_dim: int, width: int = 64) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, z_dim))
        # PyTorch's default init, not N(0, 0.02): the latent cycle then trains many times faster

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.body(torch.cat([a, b], 1))  # [N, z_dim]


def _sq(x: Tensor, target: float) -> Tensor:
    return (x - target).pow(2).mean()


@MODELS.register("augcyclegan",
                 description="many-to-many unpaired translation: CycleGAN with a latent code per "
                             "direction, pair encoders, latent discriminators and the augmented "
                             "cycle (Almahairi et al. 2018)")
class AugCycleGAN(CycleGAN):
    """Augmented CycleGAN (Almahairi et al. 2018): see the module docstring. Shares CycleGAN's
    data checks, schedule, discriminators and image pools; its generators take codes."""

    Params = AugCycleGANParams
    capabilities: ClassVar[frozenset[str]] = frozenset({"translate"})
    g_nets: ClassVar[tuple[str, ...]] = ("G_AB", "G_BA", "E_A", "E_B")
    tiny: ClassVar[dict[str, Any]] = {"model.width": 4, "model.n_blocks": 1, "model.n_layers": 1,
                                      "model.z_dim": 4, "model.z_hidden": 8}
    tiny_data: ClassVar[str] = "unpaired"

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        GANFamily.__init__(self, cfg, info)  # CycleGAN's networks are not built: ours take z
        p = self.p
        self.shape_a, self.shape_b = domain_shapes(self.name, info, p.n_layers)
        ca, cb = self.shape_a[0], self.shape_b[0]
        self.z_dim = p.z_dim
        self.G_AB = CINResnetGenerator(ca, cb, p.z_dim, p.width, p.n_blocks)
        self.G_BA = CINResnetGenerator(cb, ca, p.z_dim, p.width, p.n_blocks)
        self.E_A = PairEncoder(ca + cb, p.z_dim, p.width)
        self.E_B = PairEncoder(ca + cb, p.z_dim, p.width)
        self.D_A = PatchDiscriminator(ca, p.width, p.n_layers, p.norm)
        self.D_B = PatchDiscriminator(cb, p.width, p.n_layers, p.norm)
        lrelu = nn.LeakyReLU(0.2)
        self.D_Za = mlp(p.z_dim, p.z_hidden, 2, 1, lrelu)
        self.D_Zb = mlp(p.z_dim, p.z_hidden, 2, 1, lrelu)
        self.pool_A = ImagePool(p.pool_size, self.shape_a)
        self.pool_B = ImagePool(p.pool_size, self.shape_b)

    @property
    def translate_code_dim(self) -> int:
        """The size of the code ``z`` that :meth:`translate` takes (the ONNX export's input)."""
        return self.z_dim

    def networks(self) -> dict[str, nn.Module]:
        return {"G_AB": self.G_AB, "G_BA": self.G_BA, "E_A": self.E_A, "E_B": self.E_B,
                "D_A": self.D_A, "D_B": self.D_B, "D_Za": self.D_Za, "D_Zb": self.D_Zb}

    def prior(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """``n`` codes from the prior N(0, I): ``[n, z_dim]``."""
        return torch.randn(n, self.z_dim, generator=generator, device=device)

    # -- training -------------------------------------------------------------------------------
    def g_loss(self, nets: dict[str, nn.Module], a: Tensor, b: Tensor, z_a: Tensor, z_b: Tensor
               ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """``(L, stats, fakes)`` of the generators and encoders for real ``a``, ``b`` and prior
        codes ``z_a``, ``z_b``; ``fakes`` holds ``b~``, ``a~``, ``z~_a``, ``z~_b`` (detached)."""
        G_AB, G_BA, E_A, E_B = (nets[k] for k in ("G_AB", "G_BA", "E_A", "E_B"))
        # from (a, z_b): A x Z_b -> B x Z_a -> back
        fake_b = G_AB(a, z_b)  # b~ [N, C_b, H, W]
        enc_a = E_A(a, fake_b)  # z~_a [N, z_dim]
        rec_a = G_BA(fake_b, enc_a)  # a'
        rec_zb = E_B(a, fake_b)  # z'_b
        # from (b, z_a): B x Z_a -> A x Z_b -> back
        fake_a = G_BA(b, z_a)
        enc_b = E_B(fake_a, b)
        rec_b = G_AB(fake_a, enc_b)
        rec_za = E_A(fake_a, b)
        adv = {"B": _sq(nets["D_B"](fake_b), 1.0), "A": _sq(nets["D_A"](fake_a), 1.0),
               "Za": _sq(nets["D_Za"](enc_a), 1.0), "Zb": _sq(nets["D_Zb"](enc_b), 1.0)}
        cyc_a, cyc_b = (rec_a - a).abs().mean(), (rec_b - b).abs().mean()
        cyc_za, cyc_zb = (rec_za - z_a).abs().mean(), (rec_zb - z_b).abs().mean()
        p = self.p
        total = sum(adv.values()) + p.lambda_cycle * (cyc_a + cyc_b) \
            + p.lambda_latent * (cyc_za + cyc_zb)
        stats = {f"loss/G/adv_{k}": v.detach() for k, v in adv.items()} | {
            "G/cycle_A": cyc_a.detach(), "G/cycle_B": cyc_b.detach(),
            "G/cycle_za": cyc_za.detach(), "G/cycle_zb": cyc_zb.detach(),
            "loss/G": total.detach()}
        fakes = {"a": fake_a.detach(), "b": fake_b.detach(), "za": enc_a.detach(),
                 "zb": enc_b.detach()}
        return total, stats, fakes

    def phases(self) -> list[Phase]:
        key = "augcyclegan"

        def g_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            nets = {k: ctx.net(k) for k in self.networks()}
            a, b = ctx.batch["a"], ctx.batch["b"]
            z_a, z_b = self.prior(len(b), ctx.generator, b.device), \
                self.prior(len(a), ctx.generator, a.device)
            loss, stats, fakes = self.g_loss(nets, a, b, z_a, z_b)
            ctx.stash[(key, ctx.micro)] = fakes
            return loss, stats

        def fakes(ctx: StepContext) -> dict[str, Tensor]:
            out = ctx.stash.get((key, ctx.micro))
            if out is None:  # no G step ran this step
                with torch.no_grad():
                    a, b = ctx.batch["a"], ctx.batch["b"]
                    fb = ctx.net("G_AB")(a, self.prior(len(a), ctx.generator, a.device))
                    fa = ctx.net("G_BA")(b, self.prior(len(b), ctx.generator, b.device))
                    out = {"a": fa, "b": fb, "za": ctx.net("E_A")(a, fb),
                           "zb": ctx.net("E_B")(fa, b)}
            return out

        def d_step(dom: str) -> Any:
            def step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
                real, fake = ctx.batch[dom.lower()], fakes(ctx)[dom.lower()]
                return pooled_d_loss(ctx, dom, real, fake, getattr(self, f"pool_{dom}"))
            return step

        def dz_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            f = fakes(ctx)
            total, stats = 0.0, {}
            for dom in ("a", "b"):
                enc = f[f"z{dom}"]
                prior = self.prior(len(enc), ctx.generator, enc.device)
                D = ctx.net(f"D_Z{dom}")
                loss = get_loss("lsgan").d_loss(D(prior), D(enc))
                stats[f"loss/D_Z{dom}"] = loss.detach()
                total = total + loss
            return total, stats  # type: ignore[return-value]

        return [Phase("G", self.g_nets, g_step),
                Phase("D_A", "D_A", d_step("A")),
                Phase("D_B", "D_B", d_step("B")),
                Phase("D_Z", ("D_Za", "D_Zb"), dz_step)]

    # -- translating ----------------------------------------------------------------------------
    def translate(self, x: Tensor, *, generator: torch.Generator | None = None,
                  direction: str = "AB", z: Any = None, **options: Any) -> Tensor:
        """Images of domain A ``[N, c_A, H, W]`` -> domain B (``direction="BA"``: B -> A) with
        codes ``z`` (one ``[z_dim]`` for all, or ``[N, z_dim]``), drawn from the prior with
        ``generator`` when not given: another seed, another translation."""
        if options:
            raise ConfigError(f"augcyclegan translate takes only the options direction and z, "
                              f"not {', '.join(sorted(options))}")
        if direction not in ("AB", "BA"):
            raise ConfigError(f"augcyclegan translate direction must be AB or BA, got "
                              f"{direction!r}")
        c_in = (self.shape_a if direction == "AB" else self.shape_b)[0]
        if x.dim() != 4 or x.shape[1] != c_in:
            raise DataError(f"augcyclegan translates {direction} images [N, {c_in}, H, W] of "
                            f"domain {direction[0]}, got shape {tuple(x.shape)}")
        if x.shape[-1] % 4 or x.shape[-2] % 4 or min(x.shape[-2:]) < 8:
            raise DataError(f"augcyclegan translates sides that are multiples of 4 and at least "
                            f"8, got {x.shape[-2]}x{x.shape[-1]}")
        if z is None:
            code = self.prior(len(x), generator, x.device)
        else:
            code = torch.as_tensor(z, dtype=x.dtype, device=x.device)
            if code.dim() == 1:
                code = code.expand(len(x), -1)
            if code.shape != (len(x), self.z_dim):
                raise ConfigError(f"z must be one code [{self.z_dim}] or one per image "
                                  f"[{len(x)}, {self.z_dim}], got {tuple(code.shape)}")
        return (self.G_AB if direction == "AB" else self.G_BA)(x, code)
