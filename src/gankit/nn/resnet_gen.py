"""CycleGAN's ResNet generator (Zhu et al. 2017, appendix 7.2; Johnson et al. 2016's network).

Zhu, Park, Isola & Efros 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks": c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-3, where c7s1-k is
a 7x7 reflection-padded stride-1 Conv-InstanceNorm-ReLU with k filters, dk a 3x3 stride-2
Conv-InstanceNorm-ReLU, Rk a residual block of two reflection-padded 3x3 convs with instance
norm, uk a 3x3 stride-1/2 fractionally strided Conv-InstanceNorm-ReLU, and the last layer a
reflection-padded 7x7 conv to the output channels followed by tanh. 6 blocks at 128 px, 9 at 256.
"""

from __future__ import annotations

from torch import Tensor, nn

from gankit.nn import dcgan_init
from gankit.nn.unet import norm2d


class ResnetBlock(nn.Module):
    """``x + [pad1 - conv3 - norm - ReLU - pad1 - conv3 - norm](x)`` (same channels, same size)."""

    def __init__(self, ch: int, norm: str = "instance") -> None:
        super().__init__()
        bias = norm != "batch"  # InstanceNorm2d(affine=False) leaves the bias its job
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=bias), norm2d(norm, ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=bias), norm2d(norm, ch))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """``[N, in, H, W] -> [N, out, H, W]`` in (-1, 1); H and W multiples of 4 (two stride-2
    downsamplings). ``width`` is ngf (paper 64), ``n_blocks`` the residual blocks (6 or 9).
    ``tanh=False`` leaves the last conv's output as it is: per-pixel logits for a segmenter
    (shape-consistent CycleGAN's S_A, S_B)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, n_blocks: int = 6,
                 norm: str = "instance", tanh: bool = True) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        bias = norm != "batch"
        w = width
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, w, 7, bias=bias),
                                   norm2d(norm, w), nn.ReLU(True)]
        for m in (1, 2):  # d128, d256
            layers += [nn.Conv2d(w * m, w * 2 * m, 3, 2, 1, bias=bias), norm2d(norm, w * 2 * m),
                       nn.ReLU(True)]
        layers += [ResnetBlock(4 * w, norm) for _ in range(n_blocks)]
        for m in (4, 2):  # u128, u64
            layers += [nn.ConvTranspose2d(w * m, w * m // 2, 3, 2, 1, output_padding=1, bias=bias),
                       norm2d(norm, w * m // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, out_channels, 7)] + ([nn.Tanh()] if tanh
                                                                            else [])
        self.n_blocks = n_blocks
        self.model = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
