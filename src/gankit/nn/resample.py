"""Resampling convolutions computed without building the resampled map.

A nearest-neighbour x2 up-sampling followed by a 3x3 convolution is one stride-2 transposed
convolution with a 4x4 kernel (:class:`UpConv2d`); a 3x3 convolution followed by 2x2 average
pooling is one stride-2 4x4 convolution (:class:`ConvPool2d`). Both keep the 3x3 ``weight`` as
their parameter (so initialisation, spectral normalisation and state dicts see the 3x3 kernel,
as in the papers that use these blocks: SNGAN's ResNet, Miyato et al. 2018; BEGAN's decoder,
Berthelot et al. 2017) and derive the 4x4 kernel on every call: the same function with 16
instead of 36 multiply-adds per low-resolution pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _up_taps(w: Tensor, dim: int) -> Tensor:
    # 3 taps (w0, w1, w2) of a 3x3 conv on a nearest-x2 up-sampled map -> the 4 taps of the
    # equivalent stride-2 transposed conv along ``dim``: output 2m takes w0 x[m-1] + (w1 + w2) x[m],
    # output 2m+1 takes (w0 + w1) x[m] + w2 x[m+1]; conv_transpose indexes its kernel reversed.
    w0, w1, w2 = w.unbind(dim)
    return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)


def _pool_taps(w: Tensor, dim: int) -> Tensor:
    # 3 taps of a 3x3 conv followed by 2x2 average pooling -> the 4 taps of a stride-2 conv along
    # ``dim``: (z[2m] + z[2m+1]) / 2 with z = conv(x) reads x[2m-1..2m+2] with (w0, w0 + w1,
    # w1 + w2, w2) / 2.
    w0, w1, w2 = w.unbind(dim)
    return torch.stack([w0, w0 + w1, w1 + w2, w2], dim) * 0.5


class UpConv2d(nn.Conv2d):
    """Nearest-neighbour x2 up-sampling, then this 3x3 convolution (stride 1, padding 1).

    ``[N, cin, s, s] -> [N, cout, 2s, 2s]``, computed as one stride-2 transposed convolution whose
    4x4 kernel is derived from the 3x3 ``weight`` on every call (so gradients, spectral norm and
    state dicts see the 3x3 kernel): the same function with 16 instead of 36 multiply-adds per
    input pixel, and the up-sampled map is never built.
    """

    def __init__(self, cin: int, cout: int, bias: bool = True) -> None:
        super().__init__(cin, cout, 3, 1, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        w4 = _up_taps(_up_taps(self.weight, 2), 3).transpose(0, 1)  # [cin, cout, 4, 4]
        return F.conv_transpose2d(x, w4, self.bias, stride=2, padding=1)


class ConvPool2d(nn.Conv2d):
    """This 3x3 convolution (stride 1, padding 1), then 2x2 average pooling.

    ``[N, cin, s, s] -> [N, cout, s // 2, s // 2]``, computed as one stride-2 4x4 convolution whose
    kernel is derived from the 3x3 ``weight`` on every call (spectral norm normalises the 3x3
    kernel, as in the paper): the same function with 16 instead of 36 multiply-adds per output
    pixel, and the full-resolution map is never built.
    """

    def __init__(self, cin: int, cout: int, bias: bool = True) -> None:
        super().__init__(cin, cout, 3, 1, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        w4 = _pool_taps(_pool_taps(self.weight, 2), 3)  # [cout, cin, 4, 4]
        return F.conv2d(x, w4, self.bias, stride=2, padding=1)
