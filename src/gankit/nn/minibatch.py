"""Batch-level discriminator layers against mode collapse (seed 000 §3.5 Box 4; deck 003).

A discriminator that scores samples one at a time cannot see that a generator returns the same
image for every z. Both layers here give D a statistic of the whole mini-batch, so a collapsed
batch looks different from a real one:

- :class:`MinibatchDiscrimination` (Salimans et al. 2016, "Improved Techniques for Training
  GANs", §3.2): learned per-kernel L1 similarities of each sample to the others.
- :class:`MinibatchStdDev` (Karras et al. 2018, "Progressive Growing of GANs", §3): the average
  standard deviation of the features over a group of samples, appended as one extra feature map.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MinibatchDiscrimination(nn.Module):
    """``f [N, A] -> [f, o] [N, A + B]`` with ``o_b(x_i) = sum_j exp(-||M_i,b - M_j,b||_1)``.

    ``M_i = f(x_i) T`` with the learned tensor ``T`` of shape ``[A, B, C]`` (``B`` kernels of
    dimension ``C``); the sum runs over the whole mini-batch including ``j = i`` as in eq. (3.2) of
    Salimans et al. 2016, so each ``o_b`` lies in ``[1, N]``: ``N`` when every sample is the same
    (a collapsed batch), close to 1 when all samples are far apart.
    """

    def __init__(self, in_features: int, kernels: int, kernel_dim: int = 5,
                 init_std: float = 0.05) -> None:
        super().__init__()
        if kernels < 1 or kernel_dim < 1:
            raise ValueError("kernels and kernel_dim must be >= 1")
        self.in_features, self.kernels, self.kernel_dim = in_features, kernels, kernel_dim
        # Small Gaussian init: distances start O(1), so exp(-d) neither vanishes nor saturates.
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * init_std)

    @property
    def out_features(self) -> int:
        return self.in_features + self.kernels

    def forward(self, f: Tensor) -> Tensor:
        m = (f @ self.T).view(len(f), self.kernels, self.kernel_dim)  # [N, B, C]
        # L1 distance between every pair, per kernel: [N, 1, B, C] - [1, N, B, C] -> [N, N, B]
        dist = (m.unsqueeze(1) - m.unsqueeze(0)).abs().sum(3)
        o = torch.exp(-dist).sum(1)  # [N, B]
        return torch.cat([f, o], 1)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, kernels={self.kernels}, "
                f"kernel_dim={self.kernel_dim}")


def _group(n: int, group_size: int) -> int:
    """The largest group size <= ``group_size`` that divides the batch (ProGAN needs N % G == 0)."""
    g = max(1, min(group_size, n))
    while n % g:
        g -= 1
    return g


class MinibatchStdDev(nn.Module):
    """Append the group standard deviation as one feature (Karras et al. 2018 §3).

    The batch is split into groups of ``group_size`` samples (sample ``i`` belongs to group
    ``i % (N / G)``, as in ProGAN/StyleGAN); within a group the (biased) standard deviation of
    every feature at every position is computed and averaged to one number, which is appended as
    a constant extra channel ``[N, C, H, W] -> [N, C + 1, H, W]`` (or feature, ``[N, F] ->
    [N, F + 1]``). A batch whose samples are all alike gets ~0 where real batches do not, so the
    discriminator can penalise missing variety. When ``N`` is not a multiple of ``group_size``
    the largest divisor of ``N`` below it is used.
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        if group_size < 2:
            raise ValueError("group_size must be >= 2 (the std over one sample is 0)")
        self.group_size, self.eps = group_size, eps

    def forward(self, x: Tensor) -> Tensor:
        n = len(x)
        g = _group(n, self.group_size)
        y = x.reshape(g, n // g, *x.shape[1:])  # [G, N/G, ...]
        var = (y - y.mean(0)).pow(2).mean(0)  # [N/G, ...] biased variance over each group
        s = (var + self.eps).sqrt().flatten(1).mean(1)  # [N/G]: one number per group
        s = s.repeat(g)  # [N]: sample i -> group i % (N/G)
        extra = s.view(n, 1, *([1] * (x.dim() - 2))).expand(n, 1, *x.shape[2:])
        return torch.cat([x, extra.to(x.dtype)], 1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


def fit_mbdisc(cur: MinibatchDiscrimination | None, in_features: int, kernels: int, dim: int,
               like: Tensor) -> MinibatchDiscrimination | None:
    """The minibatch-discrimination layer for ``in_features`` inputs: ``cur`` when it fits, else
    a new one on ``like``'s device/dtype (``kernels = 0`` keeps ``cur``'s settings, or none)."""
    if kernels == 0:
        if cur is None:
            return None
        kernels, dim = cur.kernels, cur.kernel_dim
    if cur is not None and (cur.in_features, cur.kernels, cur.kernel_dim) == (in_features,
                                                                              kernels, dim):
        return cur
    return MinibatchDiscrimination(in_features, kernels, dim).to(like)


def widened_linear(old: nn.Linear, in_features: int, init_std: float | None = None) -> nn.Linear:
    """A new linear layer like ``old`` for a wider input, e.g. a head after a batch layer.

    ``init_std``: weights N(0, init_std) and zero bias (DCGAN uses 0.02); None keeps PyTorch's
    default init. Spectrally normalised when ``old`` was (Miyato et al. 2018).
    """
    # Device/dtype from the bias or raw parameter: reading a spectrally normalised ``.weight``
    # would run a power iteration and change the SN state.
    ref = old.bias if old.bias is not None else next(old.parameters())
    lin = nn.Linear(in_features, old.out_features, bias=old.bias is not None).to(ref)
    if init_std is not None:
        nn.init.normal_(lin.weight, 0.0, init_std)
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)
    if nn.utils.parametrize.is_parametrized(old):
        nn.utils.parametrizations.spectral_norm(lin)
    return lin
