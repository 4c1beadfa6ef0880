"""FastGAN (Liu, Zhu, Song & Elgammal 2021, "Towards Faster and Stabilized GAN Training for
High-fidelity Few-shot Image Synthesis"; seed 002 §4.7): a light GAN that trains on a few
hundred images (the seed trains it on ~2,500 CT slices).

- **Generator**: z -> a 4x4 map (transposed conv, batch norm, GLU), then up-sampling blocks
  (nearest x2, conv3x3 to twice the channels, batch norm, GLU) to the output size, a conv3x3
  and tanh. **Skip-layer excitation** (SLE, §3.1): a low-resolution map gates every channel of
  a map ``f`` times larger, ``y = x_high * sigmoid(conv1x1(LReLU(conv4x4(pool4(x_low)))))``,
  a long skip connection that costs almost nothing (the paper gates 8->128, 16->256 and
  32->512 at 1024 px, a factor 16; at 32-64 px the factor is 8, e.g. 4->32 and 8->64; at
  16 px there is no pair).
- **Discriminator** with **self-supervised decoders** (§3.2): down-sampling blocks whose main
  branch (conv4x4 stride 2, BN, LReLU, conv3x3, BN, LReLU) is averaged with a pooled 1x1
  shortcut, logits as a small patch map. On real images two simple decoders (up-sampling +
  conv3x3 + BN + GLU, then conv3x3 + tanh) reconstruct from D's features: the whole image
  (from the 8x8 map) and a **random quadrant** (from the matching quadrant of the 16x16 map);
  D minimises the reconstruction error (at 16 px, from the 4x4 and 8x8 maps), so its features must describe the image, which keeps
  it from over-fitting a small training set.
- **Loss**: hinge with a random margin, ``relu(m - D(x)) + relu(m + D(G(z)))`` with
  ``m ~ U(0.8, 1)`` per logit (the authors' code), plus the reconstruction term; G minimises
  ``-D(G(z))``. **DiffAugment** (Zhao et al. 2020) with colour and translation on every image
  D sees, real and fake.
- The reconstruction distance is a **perceptual** one (the distance of the features of a
  registered extractor, ``model.recon=features``, e.g. ``inception-v3`` with the weights file
  you supply, or the shipped ``lenet-mnist`` for digits) when you choose it, else **L1**
  (``model.recon=l1``, the default since no LPIPS weights ship); the start-up summary and the
  run's config say which was used, and the log key names it.
- Adam lr 2e-4, betas (0.5, 0.999), batch 8, G EMA (the authors' 0.999).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.sizes import ImageSizes
from ..errors import ConfigError
from ..games.phase import Phase, StepContext
from ..nn.augment import diff_augment
from ..registry import MODELS
from .base import GANFamily, Params

#: Channels per resolution as multiples of ``model.width`` (the paper's nfc table over ngf).
_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}


def _ch(width: int, r: int) -> int:
    return max(4, int(width * _MULT[r]))


class FastGANParams(Params):
    """``model.*`` of fastgan (the paper's ngf = ndf = 64 at 1024 px; 32 keeps 32-64 px runs
    light on a CPU)."""

    latent_dim: int = 256  # z (paper: 256)
    width: int = 32  # ngf = ndf; channels per resolution follow the paper's table
    sle_factor: int | None = None  # SLE skip factor (None: 16 from 128 px, else 8)
    recon: Literal["l1", "features"] = "l1"  # the decoders' reconstruction distance
    recon_features: str = "lenet-mnist"  # the extractor of model.recon=features
    recon_weights: str | None = None  # its weights file (extractors that need one)
    diffaugment: str = "color,translation"  # DiffAugment policy on every image D sees
    margin_low: float = 0.8  # the hinge margin m ~ U(margin_low, 1)


def _pow2(n: int) -> bool:
    return n >= 16 and n <= 1024 and n & (n - 1) == 0


SIZES = ImageSizes(_pow2, "square images of a power-of-two size from 16 to 1024 (e.g. 64, 256)",
                   _pow2)


def _glu_up(cin: int, cout: int) -> nn.Sequential:
    """Nearest x2, conv3x3 to 2 * cout, BN, GLU over channels: ``[N, cin, s] -> [N, cout, 2s]``."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(cin, 2 * cout, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(2 * cout), nn.GLU(dim=1))


class SLE(nn.Module):
    """Skip-layer excitation: ``x_high * sigmoid(conv1x1(LReLU(conv4x4(pool4(x_low)))))``."""

    def __init__(self, c_low: int, c_high: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Conv2d(c_low, c_high, 4, 1, 0),
                                  nn.LeakyReLU(0.1), nn.Conv2d(c_high, c_high, 1), nn.Sigmoid())

    def forward(self, x_low: Tensor, x_high: Tensor) -> Tensor:
        return x_high * self.gate(x_low)


def sle_pairs(resolution: int, factor: int | None) -> list[tuple[int, int]]:
    """``(low, high)`` resolutions joined by skip-layer excitation (module docstring)."""
    f = factor or (16 if resolution >= 128 else 8)
    return [(r, r * f) for r in (4, 8, 16, 32) if r * f <= resolution]


class FastGANGenerator(nn.Module):
    """``z [N, latent] -> image [N, C, R, R]`` in [-1, 1]."""

    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int,
                 sle_factor: int | None) -> None:
        super().__init__()
        self.init = nn.Sequential(nn.ConvTranspose2d(latent_dim, 2 * _ch(width, 4), 4, 1, 0,
                                                     bias=False),
                                  nn.BatchNorm2d(2 * _ch(width, 4)), nn.GLU(dim=1))
        self.res = [4 * 2 ** i for i in range(1, int(math.log2(resolution)) - 1)]  # 8 .. R
        self.ups = nn.ModuleList(_glu_up(_ch(width, r // 2), _ch(width, r)) for r in self.res)
        self.pairs = sle_pairs(resolution, sle_factor)
        self.sle = nn.ModuleDict({f"{lo}_{hi}": SLE(_ch(width, lo), _ch(width, hi))
                                  for lo, hi in self.pairs})
        self.out = nn.Conv2d(_ch(width, resolution), channels, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.init(z[:, :, None, None])  # [N, ch(4), 4, 4]
        maps = {4: h}
        for r, up in zip(self.res, self.ups):
            h = up(h)
            for lo, hi in self.pairs:
                if hi == r:
                    h = self.sle[f"{lo}_{hi}"](maps[lo], h)
            maps[r] = h
        return self.out(h).tanh()


class DownBlock(nn.Module):
    """``[N, cin, s] -> [N, cout, s/2]``: (conv4x4 s2, BN, LReLU, conv3x3, BN, LReLU) averaged
    with (avg-pool, conv1x1, BN, LReLU)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.LeakyReLU(0.2), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))
        self.direct = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(cin, cout, 1, bias=False),
                                    nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))

    def forward(self, x: Tensor) -> Tensor:
        return (self.main(x) + self.direct(x)) / 2


class Decoder(nn.Module):
    """D's self-supervised decoder: a ``side`` x ``side`` feature map (8x8 in the paper) -> a
    ``size`` x ``size`` image."""

    def __init__(self, cin: int, channels: int, size: int, width: int, side: int = 8) -> None:
        super().__init__()
        blocks, c, r = [], cin, side
        while r < size:
            blocks.append(_glu_up(c, max(4, width // 2)))
            c, r = max(4, width // 2), r * 2
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(c, channels, 3, 1, 1)

    def forward(self, f: Tensor) -> Tensor:
        return self.out(self.blocks(f)).tanh()


class FastGANDiscriminator(nn.Module):
    """``image -> patch logits [N, 1, 5, 5]``; :meth:`forward_features` also returns the 8x8 and
    16x16 maps the decoders read."""

    def __init__(self, channels: int, resolution: int, width: int) -> None:
        super().__init__()
        # R -> R/2 (plain conv), then DownBlocks to 8 and one more to 4
        self.stem = nn.Sequential(nn.Conv2d(channels, _ch(width, resolution // 2), 4, 2, 1),
                                  nn.LeakyReLU(0.2))
        rs = [resolution // 2 ** i for i in range(1, int(math.log2(resolution)) - 1)]  # R/2..4
        self.downs = nn.ModuleList(DownBlock(_ch(width, r), _ch(width, r // 2))
                                   for r in rs[:-1])
        self.sizes = rs  # map side after the stem, then after each down block
        c4 = _ch(width, 4)
        self.head = nn.Sequential(nn.Conv2d(c4, c4, 1, bias=False), nn.BatchNorm2d(c4),
                                  nn.LeakyReLU(0.2), nn.Conv2d(c4, 1, 4, 1, 2))
        # the decoders read the 8x8 map and a quadrant of the 16x16 one (4x4 and 8x8 at 16 px)
        a = self.side = min(8, resolution // 4)
        out = min(resolution, 128) // 2
        self.decode_all = Decoder(_ch(width, a), channels, out, width, a)
        self.decode_part = Decoder(_ch(width, 2 * a), channels, out, width, a)

    def forward_features(self, x: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
        h = self.stem(x)
        maps = {self.sizes[0]: h}
        for r, down in zip(self.sizes[1:], self.downs):
            h = down(h)
            maps[r] = h
        return self.head(h), maps

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[0]


def quadrant(x: Tensor, q: Tensor) -> Tensor:
    """Quadrant ``q`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right; one per sample)
    of each map of ``x`` ``[N, C, 2s, 2s]`` -> ``[N, C, s, s]``."""
    s = x.shape[-1] // 2
    rows, cols = (q // 2) * s, (q % 2) * s
    return torch.stack([x[i, :, r:r + s, c:c + s] for i, (r, c) in
                        enumerate(zip(rows.tolist(), cols.tolist()))])


@MODELS.register("fastgan", description="skip-layer excitation, GLU up-blocks, a discriminator "
                                        "with self-supervised decoders (whole image and a random "
                                        "quadrant), margin hinge, DiffAugment (Liu et al. 2021)")
class FastGAN(GANFamily):
    """FastGAN (Liu et al. 2021); see the module docstring."""

    Params = FastGANParams
    p: FastGANParams
    data_kinds: ClassVar[tuple[str, ...]] = ("images",)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 4, "model.latent_dim": 8}
    defaults: ClassVar[dict[str, Any]] = {
        "optim": {"name": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999),
                  "betas_d": (0.5, 0.999), "n_critic": 1},
    }

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        """Powers of two from 16 (the decoders read two of D's maps, one twice the other)."""
        return SIZES

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        if not info["is_image"]:
            raise ConfigError(f"fastgan's convolutional networks need images; '{info['name']}' "
                              f"holds points")
        if not 0 <= p.margin_low <= 1:
            raise ConfigError(f"model.margin_low must lie in [0, 1], got {p.margin_low}")
        if p.sle_factor is not None and p.sle_factor not in (2, 4, 8, 16, 32):
            raise ConfigError(f"model.sle_factor must be a power of two from 2 to 32, got "
                              f"{p.sle_factor}")
        c, r = self.sample_shape[0], self.sample_shape[-1]
        self.latent_dim = p.latent_dim
        self.G = FastGANGenerator(p.latent_dim, c, r, p.width, p.sle_factor)
        self.D = FastGANDiscriminator(c, r, p.width)
        self.recon_size = min(r, 128) // 2
        self._extractor = None
        if p.recon == "features":
            from ..metrics import extractors  # noqa: F401  (registers the extractors)
            from ..registry import FEATURES

            if p.recon_features not in FEATURES:
                raise ConfigError(f"model.recon_features: no feature extractor "
                                  f"'{p.recon_features}' (extractors: "
                                  f"{', '.join(FEATURES.names())})")
            opts = {"path": p.recon_weights} if p.recon_weights else {}
            self._extractor = FEATURES.get(p.recon_features)(**opts)

    def summary_note(self) -> str:
        """Which reconstruction distance the decoders are trained with (the config records
        model.recon too; the log key names it)."""
        if self.p.recon == "l1":
            return "decoder reconstruction: L1 (no perceptual weights chosen)"
        return f"decoder reconstruction: perceptual, {self.p.recon_features} features"

    def recon_distance(self, a: Tensor, b: Tensor) -> Tensor:
        """Mean distance between reconstructions ``a`` and targets ``b`` (L1, or the mean
        squared distance of the chosen extractor's features)."""
        if self._extractor is None:
            return (a - b).abs().mean()
        fa = self._extractor.differentiable_features(a)
        fb = self._extractor.differentiable_features(b).detach()
        return (fa - fb).pow(2).sum(1).mean()

    def augment(self, x: Tensor) -> Tensor:
        return diff_augment(x, self.p.diffaugment) if self.p.diffaugment else x

    def d_losses(self, D: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """D's objective on a real and a fake batch (module docstring)."""
        real_a, fake_a = self.augment(real), self.augment(fake)
        logits_r, maps = D.forward_features(real_a)
        logits_f = D(fake_a)
        lo = self.p.margin_low
        m_r = lo + (1 - lo) * torch.rand(logits_r.shape, generator=generator,
                                         device=logits_r.device)
        m_f = lo + (1 - lo) * torch.rand(logits_f.shape, generator=generator,
                                         device=logits_f.device)
        adv = F.relu(m_r - logits_r).mean() + F.relu(m_f + logits_f).mean()
        s = self.recon_size
        a = D.side
        whole = D.decode_all(maps[a])
        q = torch.randint(0, 4, (len(real),), generator=generator, device=real.device)
        part = D.decode_part(quadrant(maps[2 * a], q))
        target_whole = F.interpolate(real_a, size=s, mode="bilinear", align_corners=False,
                                     antialias=True)
        target_part = quadrant(F.interpolate(real_a, size=2 * s, mode="bilinear",
                                             align_corners=False, antialias=True), q)
        rec = self.recon_distance(whole, target_whole) + self.recon_distance(part, target_part)
        key = "l1" if self._extractor is None else "features"
        return adv + rec, {"loss/D": (adv + rec).detach(), "loss/D/adv": adv.detach(),
                           f"loss/D/recon_{key}": rec.detach(),
                           "D/real": logits_r.detach().mean(), "D/fake": logits_f.detach().mean()}

    def phases(self) -> list[Phase]:
        def d_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            real = ctx.batch["x"]
            with torch.no_grad():
                fake = self.generate(ctx.net("G"), self.sample_latent(len(real), ctx.generator,
                                                                      real.device))
            return self.d_losses(ctx.net("D"), real, fake, ctx.generator)

        def g_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            n = len(ctx.batch["x"])
            fake = self.generate(ctx.net("G"), self.sample_latent(n, ctx.generator, ctx.device))
            loss = -ctx.net("D")(self.augment(fake)).mean()
            return loss, {"loss/G": loss.detach()}

        return [Phase("D", "D", d_step, repeat=self.cfg.optim.n_critic),
                Phase("G", "G", g_step)]
