"""Self-attention for convolutional GANs (Zhang, Goodfellow, Metaxas & Odena 2019, "Self-Attention
Generative Adversarial Networks", §3).

For a feature map x with C channels and N = H x W positions, three 1x1 convolutions give keys
f(x) = W_f x and queries g(x) = W_g x with C/8 channels and values h(x) = W_h x; position j
attends to every position i with the weights

    beta_{j,i} = exp(s_ij) / sum_i exp(s_ij),    s_ij = f(x_i)^T g(x_j)

(no 1/sqrt(d) scaling), the attended values are mapped back to C channels by a 1x1 convolution
v, and the block returns ``y = gamma * o + x`` with a learnable scalar gamma initialised at 0:
the network starts from its local (convolutional) form and learns how much non-local evidence to
use. The paper's value path keeps C/8 channels (W_h, W_v in R^{C/8 x C}); ``value_ratio`` sets
it (BigGAN's implementation uses C/2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SelfAttention2d"]


class SelfAttention2d(nn.Module):
    """``[N, C, H, W] -> [N, C, H, W]``: ``x + gamma * v(attention(x))`` (module docstring)."""

    def __init__(self, channels: int, key_ratio: int = 8, value_ratio: int = 8) -> None:
        super().__init__()
        ck, cv = max(1, channels // key_ratio), max(1, channels // value_ratio)
        self.f = nn.Conv2d(channels, ck, 1, bias=False)  # keys
        self.g = nn.Conv2d(channels, ck, 1, bias=False)  # queries
        self.h = nn.Conv2d(channels, cv, 1, bias=False)  # values
        self.v = nn.Conv2d(cv, channels, 1, bias=False)  # back to C channels
        self.gamma = nn.Parameter(torch.zeros(()))

    def attention(self, x: Tensor) -> Tensor:
        """The attention map ``beta`` ``[N, HW (j, query), HW (i, key)]`` (rows sum to 1)."""
        q = self.g(x).flatten(2).transpose(1, 2)  # [N, HW, ck]
        k = self.f(x).flatten(2)  # [N, ck, HW]
        return torch.softmax(q @ k, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        n, _, hh, ww = x.shape
        q = self.g(x).flatten(2).transpose(1, 2)  # [N, HW, ck]
        k = self.f(x).flatten(2).transpose(1, 2)  # [N, HW, ck]
        val = self.h(x).flatten(2).transpose(1, 2)  # [N, HW, cv]
        o = F.scaled_dot_product_attention(q, k, val, scale=1.0)  # [N, HW, cv], unscaled scores
        o = o.transpose(1, 2).reshape(n, -1, hh, ww)
        return x + self.gamma * self.v(o)
