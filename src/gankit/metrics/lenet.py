"""``lenet-mnist``: a small LeNet-style digit classifier shipped with gankit, for digit metrics.

Why a digit classifier: **MNIST through Inception is meaningless.** Inception-v3 features were
learned on ImageNet photographs at 299x299; a 28x28 grey digit blown up 10x is far outside that
distribution, so its 2048-d embedding says little about which digit it is or how well it is
drawn, and an "MNIST FID" on Inception features is neither comparable with the literature nor
sensitive to what matters. For digits, gankit computes FID/KID on this network's penultimate
layer (128-d) and the Inception Score / class histograms on its 10 logits: a network trained on
the data's own domain, whose features separate digits and whose logits name them.

The network (LeCun et al., 1998, "Gradient-based learning applied to document recognition", with
ReLU, max pooling and dropout) is trained by ``scripts/train_lenet.py`` on the 4,000 training images
of the fixed MNIST-5k split only (the 1,000 test images stay held out for measuring it), and its
weights ship as ``gankit/assets/lenet_mnist.safetensors`` (~0.74 MB). The loader verifies the file's
SHA-256 against :data:`LENET_SHA256` and loads it with safetensors (never pickle).

Input rule (recorded in the protocol): gankit images ``[N, C, H, W]`` in [-1, 1]; RGB is turned
grey by averaging the channels; any other size (e.g. 8x8 scikit-learn digits, 32x32 samples) is
resized bilinearly (``align_corners=False``, antialiased when shrinking) to 28x28. Digits are
expected white on black, as in MNIST (the built-in datasets already are).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GankitError
from .features import ArrayLike, FeatureExtractor, file_sha256, resize_square

__all__ = [
    "LENET_SHA256",
    "LeNet",
    "LeNetExtractor",
    "default_lenet_path",
    "load_lenet",
    "prepare_digits",
]

#: SHA-256 of the shipped ``assets/lenet_mnist.safetensors``. ``scripts/train_lenet.py`` prints the
#: new digest; update this constant whenever the weights are retrained.
LENET_SHA256 = "fb319980d61f1db45f1b3f16412219dbd2390fb548ef393983a25a5564fce8a7"

#: Side length the classifier was trained at.
LENET_SIZE = 28


def default_lenet_path() -> Path:
    """Where the shipped weights live inside the installed package."""
    return Path(__file__).resolve().parent.parent / "assets" / "lenet_mnist.safetensors"


class LeNet(nn.Module):
    """``[N, 1, 28, 28]`` in [-1, 1] -> 128-d features -> 10 logits (~185k parameters).

    conv 5x5 (32) -> ReLU -> maxpool 2 -> conv 5x5 (64) -> ReLU -> maxpool 2 -> fc 128 -> ReLU
    -> dropout -> fc 10. Valid (unpadded) convolutions keep the flattened map at 64x4x4 = 1024, so
    the float32 weights stay under 1 MB.
    """

    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5)  # 28 -> 24, pool -> 12
        self.conv2 = nn.Conv2d(32, 64, 5)  # 12 -> 8, pool -> 4
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)
        self.drop_conv = nn.Dropout2d(dropout / 2)
        self.drop = nn.Dropout(dropout)

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate activations ``[N, 128]`` (after ReLU, before dropout)."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # [N, 32, 12, 12]
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # [N, 64, 4, 4]
        h = self.drop_conv(h).flatten(1)  # [N, 1024]
        return F.relu(self.fc1(h))  # [N, 128]

    def head(self, f: Tensor) -> Tensor:
        """Features ``[N, 128]`` -> logits ``[N, 10]``."""
        return self.fc2(self.drop(f))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


def prepare_digits(x: Tensor) -> Tensor:
    """gankit images ``[N, C, H, W]`` in [-1, 1] -> the classifier's ``[N, 1, 28, 28]`` input.

    RGB (C = 3) is averaged to grey; other sizes are resized bilinearly to 28x28.
    """
    if x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)  # [N, 1, H, W]
    return resize_square(x, LENET_SIZE)


def load_lenet(path: str | os.PathLike[str] | None = None, verify: bool = True) -> LeNet:
    """Load the digit classifier from ``path`` (default: the shipped weights), in eval mode.

    With ``verify`` (default) the file's SHA-256 must equal :data:`LENET_SHA256`; a mismatch means a
    corrupt or modified file and raises :class:`GankitError`. Weights are read with safetensors
    only; missing/extra tensors or wrong shapes also raise :class:`GankitError`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path) if path is not None else default_lenet_path()
    if not p.is_file():
        raise GankitError(
            f"LeNet weights not found: {p}. The file ships with gankit (reinstall it) or can be "
            "rebuilt with `python scripts/train_lenet.py`."
        )
    digest = file_sha256(p)
    if verify and digest != LENET_SHA256:
        raise GankitError(
            f"LeNet weights {p} fail the checksum: SHA-256 is {digest}, expected {LENET_SHA256}. "
            "The file is corrupt or was modified; reinstall gankit (or, after retraining with "
            "scripts/train_lenet.py, update LENET_SHA256 in gankit/metrics/lenet.py)."
        )
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise GankitError(f"LeNet weights {p} are not a readable safetensors file: {e}") from None
    net = LeNet()
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        bad = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        raise GankitError(
            f"LeNet weights {p} do not fit the network: missing {missing}, unexpected {extra}, "
            f"wrong shapes {[(k, got[k], expected[k]) for k in bad]}"
        )
    net.load_state_dict({k: v.float() for k, v in state.items()})
    for q in net.parameters():
        q.requires_grad_(False)
    return net.eval()


class LeNetExtractor(FeatureExtractor):
    """``lenet-mnist``: 128-d penultimate features and 10 logits of the shipped digit classifier.

    Use it (not Inception) for every digit metric: MNIST through Inception is meaningless (see the
    module docstring). Accepts 1- or 3-channel images of any size; ``checksum`` is the weight
    file's SHA-256.
    """

    name = "lenet-mnist"
    version = "1"
    input_kind = "image"
    expected_channels = (1, 3)
    expected_size = LENET_SIZE
    resize_rule = "bilinear to 28x28, align_corners=False, antialias when shrinking"
    channel_rule = "RGB -> grey by channel mean"
    feature_dim = 128
    num_classes = 10

    def __init__(self, path: str | os.PathLike[str] | None = None, verify: bool = True) -> None:
        self.path = Path(path) if path is not None else default_lenet_path()
        self.net = load_lenet(self.path, verify=verify)
        self.checksum = file_sha256(self.path)

    def _prepare(self, x: Tensor) -> Tensor:
        return prepare_digits(x)

    def _forward(self, x: Tensor, want_logits: bool) -> tuple[Tensor, Tensor | None]:
        assert isinstance(self.net, LeNet)
        f = self.net.embed(x)  # [B, 128]
        return f, (self.net.head(f) if want_logits else None)  # [B, 10]

    def predict(self, x: ArrayLike, batch_size: int = 256, device: str | torch.device = "cpu"
                ) -> np.ndarray:
        """Predicted digit labels, ``int64 [N]``."""
        return self.logits(x, batch_size, device).argmax(axis=1).astype(np.int64)

    def protocol(self) -> dict[str, Any]:
        return super().protocol() | {"weights": "gankit/assets/lenet_mnist.safetensors"
                                     if self.path == default_lenet_path() else str(self.path)}
