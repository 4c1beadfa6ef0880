"""Conditional batch normalisation (de Vries et al. 2017; Dumoulin et al. 2017), the way
class information enters the generators of SAGAN (Zhang et al. 2019) and BigGAN (Brock et al.
2019).

Batch statistics normalise x without a learned affine map; the per-channel gain and bias come
from a conditioning vector c instead:

    y = (1 + W_gain c) * BN(x) + W_bias c

With c a one-hot class vector this is a table of per-class gains and biases (SAGAN); with c the
concatenation of a shared class embedding and a chunk of z it is BigGAN's conditional BN with
hierarchical latents. ``W_gain`` and ``W_bias`` start at zero, so the layer starts as plain batch
norm with gain 1 and bias 0 for every condition.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ConditionalBatchNorm2d"]


class ConditionalBatchNorm2d(nn.Module):
    """``(x [N, C, H, W], c [N, cond_dim]) -> [N, C, H, W]`` (module docstring)."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(cond_dim, channels, bias=False)
        self.bias = nn.Linear(cond_dim, channels, bias=False)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        g = 1.0 + self.gain(c)
        b = self.bias(c)
        return self.bn(x) * g[:, :, None, None] + b[:, :, None, None]
