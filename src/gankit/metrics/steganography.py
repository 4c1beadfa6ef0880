"""Chu et al.'s observation: a CycleGAN hides what it needs for the cycle in its translations.

Chu, Zhmoginov & Sandler 2017, "CycleGAN, a Master of Steganography". The cycle loss asks
``G_BA(G_AB(a)) = a`` in every detail, also in details that domain B has no place for (in
``ct2mr``, the noise realisation of a CT image, which the anatomy does not determine). A
CycleGAN meets it by encoding those details in low-amplitude signals of ``G_AB(a)`` that look
like nothing in particular, and ``G_BA`` learns to decode them. Four measurements show it on a
trained pair of translators (any callables, e.g. a CycleGAN's ``G_AB`` and ``G_BA``):

1. **Fragility** (Chu et al. §4): the reconstruction error of ``G_BA(G_AB(a))`` against ``a``,
   and again after a near-invisible change of ``G_AB(a)``: Gaussian noise of std ``sigma``,
   8-bit quantisation, a slight blur. A decoder of anatomy would not notice; a decoder of a
   hidden message loses it, so the error rises by much more than the change itself.
2. **Hidden information**: with the clean (noise-free) rendering ``c`` of ``a`` and the true
   B-image of the same anatomy, the reconstruction from ``G_AB(a)`` is compared with the one from
   the true B-image, and the correlation of ``G_BA(G_AB(a)) - c`` with ``a``'s own noise ``a - c``
   is measured: the anatomy is the same in both inputs, so whatever the first reconstruction
   gets right beyond the second came through the translation, hidden.
3. **Structure that is recovered without being shown** (with label maps and a way to read
   them off each domain's images): the tissue Dice of the translation ``G_AB(a)`` read as a
   B-image, of the reconstruction ``G_BA(G_AB(a))`` read as an A-image, and of ``G_BA`` applied
   to the true B-image. Anatomy that the reconstruction has but the translation does not show
   travelled through the translation hidden.
4. **Control by a tiny perturbation** (Chu et al. §5, the adversarial attack): a perturbation
   ``delta`` with ``|delta| <= eps`` everywhere, found by projected gradient descent, added to
   ``G_AB(a_1)`` so that ``G_BA`` reconstructs another image ``a_2``. How far the reconstruction
   moves towards ``a_2`` for so small an ``eps`` is the decoder's sensitivity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Translator = Callable[[Tensor], Tensor]


def _mae(x: Tensor, y: Tensor) -> float:
    return float((x - y).abs().mean())


def _corr(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of all entries of ``x`` and ``y``."""
    x, y = x.flatten().double(), y.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x.norm() * y.norm()).clamp_min(1e-12))


def blur(x: Tensor, sigma: float = 0.5) -> Tensor:
    """A 3x3 Gaussian blur of ``[N, C, H, W]`` (reflect padding): a change the eye barely sees
    at ``sigma = 0.5``."""
    t = torch.arange(-1, 2, dtype=x.dtype, device=x.device)
    k1 = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k1 = k1 / k1.sum()
    k = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, groups=x.shape[1])


def quantise(x: Tensor, bits: int = 8) -> Tensor:
    """``x`` in [-1, 1] rounded to ``2**bits`` levels, as saving it as an image would."""
    levels = 2 ** bits - 1
    return torch.round((x.clamp(-1, 1) + 1) / 2 * levels) / levels * 2 - 1


@torch.no_grad()
def fragility(forward: Translator, backward: Translator, a: Tensor,
              sigmas: tuple[float, ...] = (0.01, 0.03), seed: int = 0) -> dict[str, Any]:
    """Reconstruction errors (mean absolute, [-1, 1] scale) of ``backward(forward(a))`` and of
    ``backward`` applied to perturbed translations; ``change`` is each perturbation's mean
    absolute size and ``gain`` the added reconstruction error per unit of change."""
    g = torch.Generator().manual_seed(seed)
    fb = forward(a)
    base = _mae(backward(fb), a)
    out: dict[str, Any] = {"reconstruction_mae": base, "perturbed": {}}
    perturbed = {f"noise_{s:g}": fb + s * torch.randn(fb.shape, generator=g) for s in sigmas}
    perturbed |= {"quantise_8bit": quantise(fb), "blur_0.5": blur(fb)}
    for name, pb in perturbed.items():
        err, change = _mae(backward(pb), a), _mae(pb, fb)
        out["perturbed"][name] = {"change": change, "reconstruction_mae": err,
                                  "gain": (err - base) / max(change, 1e-12)}
    return out


@torch.no_grad()
def hidden_information(forward: Translator, backward: Translator, a: Tensor, a_clean: Tensor,
                       b_true: Tensor) -> dict[str, float]:
    """What the translation carries beyond the anatomy: reconstruction errors of ``a`` from its
    own translation and from the true B-image of the same anatomy, and the correlation of each
    reconstruction's deviation from the clean image with ``a``'s noise ``a - a_clean`` (over the
    pixels whose clean value is inside (-0.95, 0.95), where the noise is not clipped)."""
    rec_own, rec_true = backward(forward(a)), backward(b_true)
    noise = a - a_clean
    # Only where the clean image is inside (-1, 1): at the ends the noise is clipped, its mean
    # is not zero, and any reconstruction that tells tissues apart would correlate with it.
    inner = a_clean.abs() < 0.95
    return {"mae_from_own_translation": _mae(rec_own, a),
            "mae_from_true_b": _mae(rec_true, a),
            "noise_corr_from_own_translation": _corr((rec_own - a_clean)[inner], noise[inner]),
            "noise_corr_from_true_b": _corr((rec_true - a_clean)[inner], noise[inner]),
            "noise_std": float(noise[inner].std())}


@torch.no_grad()
def anatomy_through_cycle(forward: Translator, backward: Translator, a: Tensor, b_true: Tensor,
                          labels: Tensor, read_a: Callable[[Tensor], Tensor],
                          read_b: Callable[[Tensor], Tensor], num_classes: int
                          ) -> dict[str, dict[str, float]]:
    """Label agreement (:func:`gankit.data.contrast_tasks.label_agreement`: accuracy, mean and
    per-class Dice) with the true maps ``labels`` of: the translation read as a B-image
    (``visible_in_translation``), the reconstruction read as an A-image
    (``recovered_by_cycle``), ``backward(b_true)`` read as an A-image (``from_true_b``) and the
    input itself (``input``). ``read_a``/``read_b`` map images to label maps ``[N, H, W]``."""
    from ..data.contrast_tasks import label_agreement

    fb = forward(a)
    return {"input": label_agreement(read_a(a), labels, num_classes),
            "visible_in_translation": label_agreement(read_b(fb), labels, num_classes),
            "recovered_by_cycle": label_agreement(read_a(backward(fb)), labels, num_classes),
            "from_true_b": label_agreement(read_a(backward(b_true)), labels, num_classes)}


def steer(forward: Translator, backward: Translator, a1: Tensor, a2: Tensor, eps: float = 0.03,
          steps: int = 100, lr: float = 0.005) -> dict[str, Any]:
    """Projected gradient descent on ``delta`` (``|delta| <= eps`` per pixel, the sum kept in
    [-1, 1]) minimising ``|backward(forward(a1) + delta) - a2|_1``. Returns the errors to ``a2``
    before and after, the error a faithful reconstruction of ``a2`` has (``backward(forward(a2))``),
    ``moved``: the share of the way from the first to the last that ``delta`` covered, the mean
    size of ``delta`` and the attacked reconstructions."""
    with torch.no_grad():
        fb1 = forward(a1)
        before = _mae(backward(fb1), a2)
        target = _mae(backward(forward(a2)), a2)
    delta = torch.zeros_like(fb1, requires_grad=True)
    for _ in range(steps):
        loss = (backward((fb1 + delta).clamp(-1, 1)) - a2).abs().mean()
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta -= lr * grad.sign()
            delta.clamp_(-eps, eps)
    with torch.no_grad():
        rec = backward((fb1 + delta).clamp(-1, 1))
        after = _mae(rec, a2)
    return {"eps": eps, "delta_mae": float(delta.detach().abs().mean()),
            "mae_to_target_before": before, "mae_to_target_after": after,
            "mae_to_target_faithful": target,
            "moved": (before - after) / max(before - target, 1e-12),
            "reconstructions": rec.detach()}


def cycle_steganography(forward: Translator, backward: Translator, a: Tensor, *,
                        a_clean: Tensor | None = None, b_true: Tensor | None = None,
                        labels: Tensor | None = None,
                        read: tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor],
                                    int] | None = None,
                        eps: float = 0.03, steps: int = 100, seed: int = 0) -> dict[str, Any]:
    """The measurements of the module docstring on images ``a`` of domain A: the second needs
    ``a_clean`` and ``b_true``, the third ``b_true``, ``labels`` and ``read = (read_a, read_b,
    num_classes)``. The attack steers each image's reconstruction towards the next image of
    ``a`` (``a`` rolled by one)."""
    out: dict[str, Any] = {"fragility": fragility(forward, backward, a, seed=seed)}
    if a_clean is not None and b_true is not None:
        out["hidden"] = hidden_information(forward, backward, a, a_clean, b_true)
    if b_true is not None and labels is not None and read is not None:
        out["anatomy"] = anatomy_through_cycle(forward, backward, a, b_true, labels, *read)
    st = steer(forward, backward, a, a.roll(1, 0), eps=eps, steps=steps)
    st.pop("reconstructions")
    out["steer"] = st
    return out
