"""The pix2pix PatchGAN discriminator (Isola et al. 2017, appendix 6.1.2), for pix2pix and CycleGAN.

Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks": a fully
convolutional discriminator that classifies every N x N patch as real or fake, so it only models
high-frequency structure (the L1 term handles low frequencies); the map of patch logits is
averaged by the loss. ``n_layers`` sets the patch size (the receptive field of one output logit):
3 is the paper's 70x70 PatchGAN, 1 the 16x16, 0 the 1x1 PixelGAN.
"""

from __future__ import annotations

from torch import Tensor, nn

from gankit.nn import dcgan_init
from gankit.nn.unet import NORMS, norm2d


def _conv_specs(n_layers: int) -> list[tuple[int, int]]:
    """``(kernel, stride)`` of every convolution of the discriminator, input side first."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
        raise ValueError(f"n_layers must be an integer >= 0, got {n_layers!r}")
    if n_layers == 0:  # PixelGAN: C64 - C128 - 1, all 1x1
        return [(1, 1)] * 3
    # n_layers stride-2 Ck, one stride-1 Ck, the stride-1 conv to one logit channel
    return [(4, 2)] * n_layers + [(4, 1), (4, 1)]


def receptive_field(n_layers: int) -> int:
    """Side of the input patch one output logit sees: 70, 34, 16, 1 for ``n_layers`` 3, 2, 1, 0.

    The recursion ``r_in = (r_out - 1) * stride + kernel`` from one output pixel back through the
    layer list of :class:`PatchDiscriminator`.
    """
    r = 1
    for kernel, stride in reversed(_conv_specs(n_layers)):
        r = (r - 1) * stride + kernel
    return r


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017, appendix 6.1.2): ``[N, in, H, W] -> [N, 1, h, w]`` patch logits.

    Layers (Ck = Conv(4x4, pad 1) - Norm - LeakyReLU(0.2); no sigmoid, the loss takes logits):
    C(w, stride 2, no norm) - C(2w, stride 2) - ... (``n_layers`` stride-2 blocks with channels
    ``w * min(2**i, 8)``) - C(w * min(2**n_layers, 8), stride 1) - Conv(4x4, stride 1, pad 1) to 1
    channel, every width capped at ``max_width``. ``n_layers=3`` is the paper's 70x70 PatchGAN
    C64-C128-C256-C512 (a 256x256 input gives a 30x30 logit map); the channel rule for other
    depths follows the authors' reference code. ``n_layers=0`` is the 1x1 PixelGAN: 1x1 convs
    C64 - C128 - 1. For pix2pix ``in_channels`` is the condition and the image concatenated.

    ``norm="batch"`` is ordinary ``BatchNorm2d`` (running statistics are fine in D); convs
    followed by a norm have no bias. Weights N(0, 0.02), norm gains N(1, 0.02) (DCGAN init).
    """

    def __init__(self, in_channels: int, width: int = 64, n_layers: int = 3, norm: str = "batch",
                 max_width: int = 512) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
        specs = _conv_specs(n_layers)
        self.n_layers = n_layers
        self.receptive_field = receptive_field(n_layers)
        if n_layers == 0:
            chans = [width, 2 * width]
        else:
            chans = [width * min(2**i, 8) for i in range(n_layers + 1)]
        chans = [min(c, max_width) for c in chans]

        body: list[nn.Module] = []
        cin = in_channels
        for i, ((kernel, stride), cout) in enumerate(zip(specs[:-1], chans)):
            pad = (kernel - 1) // 2  # 4x4: 1 (the paper's), 1x1: 0
            if i == 0:  # no norm on the first layer (paper)
                body += [nn.Conv2d(cin, cout, kernel, stride, pad), nn.LeakyReLU(0.2)]
            else:
                body += [nn.Conv2d(cin, cout, kernel, stride, pad, bias=norm == "none"),
                         norm2d(norm, cout), nn.LeakyReLU(0.2)]
            cin = cout
        self.body = nn.Sequential(*body)
        kernel, stride = specs[-1]
        self.head = nn.Conv2d(cin, 1, kernel, stride, (kernel - 1) // 2)
        dcgan_init(self)

    def features(self, x: Tensor) -> Tensor:
        """Activations before the last conv, flattened per sample: ``[N, F]`` (feature matching)."""
        return self.body(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[N, in, H, W]`` -> logits ``[N, 1, h, w]``, one per receptive-field patch."""
        return self.head(self.body(x))
