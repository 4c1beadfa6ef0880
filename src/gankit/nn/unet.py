"""The pix2pix U-Net generator (Isola et al. 2017, appendix 6.1.1), shared by pix2pix and CycleGAN.

Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks": an
encoder-decoder whose decoder block ``i`` is concatenated with the mirrored encoder activation
(skip connections, Ronneberger et al. 2015), so low-level structure shared by input and output
(edges, layout) need not squeeze through the 1x1 bottleneck. The generator has no ``z``: its only
noise is dropout, applied at test time too (paper, "Objective"), which :class:`GenDropout`
provides with an explicit generator so that sampling stays reproducible.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gankit.nn import dcgan_init

NORMS = ("batch", "instance", "none")


def norm2d(kind: str, channels: int, track_running_stats: bool = True) -> nn.Module:
    """The normalisation layer named by ``kind`` ("batch", "instance" or "none").

    "batch" is ``BatchNorm2d`` (with ``track_running_stats=False`` it normalises with the
    statistics of the current batch in eval mode too, as pix2pix does at test time); "instance"
    is ``InstanceNorm2d(affine=False)`` (CycleGAN, Zhu et al. 2017; Ulyanov et al. 2016).
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=track_running_stats)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


class GenDropout(nn.Module):
    """Inverted dropout whose mask is drawn from an explicit ``torch.Generator``.

    pix2pix (Isola et al. 2017, "Objective") gives its generator noise only "in the form of
    dropout, applied on several layers of our generator at both training and test time". The
    layer is active when ``self.training`` or ``self.always`` is true (the family sets ``always``
    for test-time noise); ``self.generator`` (``None``: the global RNG) makes the masks
    reproducible. Kept units are scaled by ``1 / (1 - p)``, so the expected activation is unchanged.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.always = False
        self.generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not (self.training or self.always):
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device,
                          dtype=x.dtype) >= self.p  # [*x.shape] bool
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, always={self.always}"


class UNetGenerator(nn.Module):
    """The pix2pix U-Net (Isola et al. 2017, appendix 6.1.1): ``[N, in, R, R] -> [N, out, R, R]``.

    ``depth = log2(R)`` stride-2 encoder blocks take ``R`` down to 1x1; the paper's U-Net-256 is
    encoder C64-C128-C256-C512-C512-C512-C512-C512, decoder CD512-CD512-CD512-C512-C256-C128-C64
    (channel counts before the concatenation), then a conv to ``out_channels`` and tanh.

    Layer order (the paper's; where it is silent, what the authors' reference code computes):

    - encoder block ``i``: Conv(4x4, stride 2, pad 1) - Norm - LeakyReLU(0.2); block 0 has no
      norm (paper); the innermost (1x1) block is a bare Conv (a norm would normalise a single
      value per channel, and its activation is the decoder's ReLU). The activated map is what
      the skip connection carries (in the reference code through its in-place LeakyReLU).
    - decoder block: ReLU - ConvTranspose(4x4, stride 2, pad 1) - Norm - Dropout, then
      ``cat([skip, out])`` on channels. The paper's CDk is ConvT-Norm-Dropout-ReLU; here the ReLU
      sits at the start of the next block, so it applies to the concatenated map (skip included),
      as in the reference code. The innermost ``n_dropout`` decoder blocks have dropout, the
      paper's CD512-CD512-CD512 (the reference code skips the innermost one and drops out the
      next three); with fewer blocks all of them do.
    - output: ReLU - ConvTranspose(4x4, stride 2, pad 1) to ``out_channels`` - tanh.

    Channels are ``width * 2**min(i, 3)`` for encoder block ``i`` (w, 2w, 4w, 8w, 8w, ...), capped
    at ``max_width``. ``norm="batch"`` keeps no running statistics: pix2pix normalises with the
    statistics of the test batch at test time too (paper, "Optimization and inference"; with
    batch size 1 that is instance normalisation); ``"instance"`` is CycleGAN's choice. Convs
    followed by a norm have no bias. Weights are N(0, 0.02), norm gains N(1, 0.02) (DCGAN init,
    as pix2pix).
    """

    def __init__(self, in_channels: int, out_channels: int, resolution: int, width: int = 64,
                 max_width: int = 512, norm: str = "batch", dropout: float = 0.5,
                 n_dropout: int = 3) -> None:
        super().__init__()
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4 \
                or resolution & (resolution - 1):
            raise ValueError(f"the U-Net generator needs a resolution that is a power of two "
                             f">= 4 (4, 8, 16, 32, 64, 128, 256, ...), got {resolution}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
        if n_dropout < 0:
            raise ValueError(f"n_dropout must be >= 0, got {n_dropout}")
        self.resolution = resolution
        self.depth = resolution.bit_length() - 1  # log2(R): R -> 1x1
        chans = [min(width * 2 ** min(i, 3), max_width) for i in range(self.depth)]
        bias = norm == "none"  # a conv followed by a norm needs no bias

        self.encoder = nn.ModuleList()
        for i in range(self.depth):
            cin = in_channels if i == 0 else chans[i - 1]
            if i == self.depth - 1:  # innermost, 2x2 -> 1x1: no norm, activation is the decoder's
                block = [nn.Conv2d(cin, chans[i], 4, 2, 1)]
            elif i == 0:
                block = [nn.Conv2d(cin, chans[i], 4, 2, 1), nn.LeakyReLU(0.2)]
            else:
                block = [nn.Conv2d(cin, chans[i], 4, 2, 1, bias=bias),
                         norm2d(norm, chans[i], track_running_stats=False), nn.LeakyReLU(0.2)]
            self.encoder.append(nn.Sequential(*block))

        # Decoder, innermost first: block j maps level depth-1-j (1/2**(depth-j) of R) up one level.
        self.decoder = nn.ModuleList()
        for j, i in enumerate(range(self.depth - 1, 0, -1)):
            cin = chans[i] if j == 0 else 2 * chans[i]  # after the first, [skip, out] concatenated
            block = [nn.ReLU(), nn.ConvTranspose2d(cin, chans[i - 1], 4, 2, 1, bias=bias),
                     norm2d(norm, chans[i - 1], track_running_stats=False)]
            if j < n_dropout and dropout > 0:
                block.append(GenDropout(dropout))
            self.decoder.append(nn.Sequential(*block))
        self.to_image = nn.Sequential(nn.ReLU(),
                                      nn.ConvTranspose2d(2 * chans[0], out_channels, 4, 2, 1),
                                      nn.Tanh())
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        """``[N, in, H, W]`` (sides multiples of ``2**depth``) -> ``[N, out, H, W]`` in [-1, 1]."""
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(f"the U-Net built for resolution {self.resolution} needs inputs whose "
                             f"sides are multiples of {2**self.depth}, got {tuple(x.shape)}")
        skips = []
        h = x
        for block in self.encoder:
            h = block(h)  # [N, chans[i], H / 2**(i+1), W / 2**(i+1)]
            skips.append(h)
        skips.pop()  # the innermost activation feeds the decoder directly, not through a skip
        for block in self.decoder:
            h = torch.cat([skips.pop(), block(h)], 1)  # [N, 2 * chans[i-1], 2h, 2w]
        return self.to_image(h)  # [N, out, H, W]

    def dropouts(self) -> list[GenDropout]:
        """The :class:`GenDropout` layers, innermost first (set their ``always``/``generator``)."""
        return [m for m in self.modules() if isinstance(m, GenDropout)]
