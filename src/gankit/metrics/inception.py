"""``inception-v3``: the Inception-v3 network of the reference TensorFlow FID code, built here
without torchvision.

FID (Heusel et al., 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS) and the Inception Score (Salimans et al., 2016, "Improved Techniques for
Training GANs", NeurIPS) are defined on one specific network: the ``inception-2015-12-05``
TensorFlow graph of Szegedy et al. (2016, "Rethinking the Inception Architecture for Computer
Vision", CVPR). Its PyTorch port, ``pt_inception-2015-12-05-6726825d.pth`` (distributed by
pytorch-fid and torch-fidelity), is the standard weight file; published FIDs are comparable only
when computed with it. This module rebuilds that network with the same state-dict key names
(``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch_pool.bn.running_var``, ..., ``fc.bias``) and the
same deviations from torchvision's ImageNet Inception that the TF graph has:

- 1008 output classes (the graph's softmax has 1008 units);
- the pool branches of the A, C and first E blocks average with ``count_include_pad=False``
  (TensorFlow's average pooling ignores padded zeros);
- the last E block (``Mixed_7c``) max-pools in its pool branch.

**gankit never downloads weights.** Give the file explicitly: ``path=...`` (CLI/config option) or
the ``GANKIT_INCEPTION_WEIGHTS`` environment variable; ``.pth``/``.pt`` files are read with
``torch.load(weights_only=True)`` (no pickled code runs), ``.safetensors`` with safetensors. The
file's SHA-256 is compared with the known digest of the reference file (:data:`FID_INCEPTION_SHA256`;
torch hub convention puts its first 8 hex digits, ``6726825d``, in the file name). A different
file whose tensors fit (e.g. the same weights re-saved as safetensors) is accepted with a warning,
since its numbers may not match published ones; a file whose keys or shapes do not fit is an error.

Preprocessing (recorded in the protocol) follows pytorch-fid: images in [-1, 1] (the range the
network expects; pytorch-fid maps [0, 1] inputs by ``2x - 1``), grey replicated to RGB, resized
bilinearly to 299x299 with ``align_corners=False`` and no antialiasing. (The TF graph itself resizes
uint8 images with TF1's legacy bilinear kernel and scales by ``(x - 128) / 128``; pytorch-fid's
rule reproduces it closely but not bit-exactly, and is what most PyTorch code reports.)

Do not use it for MNIST-like digits: ImageNet features of 28x28 digits are meaningless; use
``lenet-mnist``.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GankitError
from .features import FeatureExtractor, file_sha256, resize_square, weights_sha256

__all__ = [
    "ENV_VAR",
    "FID_INCEPTION_BYTES",
    "FID_INCEPTION_FILENAME",
    "FID_INCEPTION_NUM_PARAMETERS",
    "FID_INCEPTION_SHA256",
    "FIDInceptionV3",
    "InceptionExtractor",
    "load_fid_inception",
    "read_state_dict",
    "resolve_inception_path",
]

ENV_VAR = "GANKIT_INCEPTION_WEIGHTS"
FID_INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
#: SHA-256 of pt_inception-2015-12-05-6726825d.pth (95,628,359 bytes), as pinned by several
#: independent projects that verify this file; its first 8 digits are the name's hub suffix.
FID_INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
FID_INCEPTION_BYTES = 95_628_359
#: Trainable parameters of the FID network: torchvision's inception_v3 has 27,161,264 with the
#: auxiliary head (3,326,696) and a 1000-way fc; without the aux head that is 23,834,568, and the
#: 1008-way fc adds 8 * (2048 + 1) = 16,392.
FID_INCEPTION_NUM_PARAMETERS = 23_850_960


# ---------------------------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------------------------
class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, TF's value) -> ReLU; keys ``conv.*``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x: Tensor) -> Tensor:
    # 3x3/1 average that, like TensorFlow's, divides by the number of *valid* inputs at borders.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 224 + pool_ch."""

    def __init__(self, cin: int, pool_ch: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([a, b, c, d], 1)


class BlockB(nn.Module):
    """35 -> 17 reduction (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 384 + 96 + cin."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """17x17 block with factorised 7x7 convs (Mixed_6b..6e) -> 4 x 192 = 768 channels."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([a, b, c, d], 1)


class BlockD(nn.Module):
    """17 -> 8 reduction (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 320+192+cin."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = layer(b)
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8x8 block with split 1x3/3x1 convs (Mixed_7b, 7c) -> 320 + 768 + 768 + 192 = 2048.

    ``pool="avg"`` (Mixed_7b) averages without padded zeros; ``pool="max"`` (Mixed_7c) max-pools,
    a quirk of the TF FID graph that the reference weights depend on.
    """

    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        p = _avg_pool_tf(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([a, b, c, self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3: ``[N, 3, 299, 299]`` in [-1, 1] -> pool3 ``[N, 2048]``; ``fc`` gives
    the 1008 logits. Randomly initialised here; load the reference weights with
    :func:`load_fid_inception`.
    """

    NUM_CLASSES = 1008

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)  # 299 -> 149
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)  # -> 147
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)  # -> 147, maxpool -> 73
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)  # -> 71, maxpool -> 35
        self.Mixed_5b = BlockA(192, 32)  # -> 256 x 35 x 35
        self.Mixed_5c = BlockA(256, 64)  # -> 288
        self.Mixed_5d = BlockA(288, 64)  # -> 288
        self.Mixed_6a = BlockB(288)  # -> 768 x 17 x 17
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = BlockD(768)  # -> 1280 x 8 x 8
        self.Mixed_7b = BlockE(1280, pool="avg")  # -> 2048 x 8 x 8
        self.Mixed_7c = BlockE(2048, pool="max")
        self.fc = nn.Linear(2048, self.NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """pool3 features ``[N, 2048]`` of ``x`` ``[N, 3, 299, 299]`` (already preprocessed)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)  # [N, 64, 73, 73]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)  # [N, 192, 35, 35]
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))  # [N, 2048, 8, 8] -> [N, 2048]

    def logits(self, pool3: Tensor, unbiased: bool = True) -> Tensor:
        """1008 logits ``[N, 1008]`` from pool3 features.

        ``unbiased=True`` omits the fc bias, as the original Inception Score code does (it
        multiplies pool3 by the ``softmax/logits/MatMul`` weights only); torch-fidelity follows it.
        """
        return pool3 @ self.fc.weight.T if unbiased else self.fc(pool3)


# ---------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------
def resolve_inception_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The weight file to use: ``path`` if given, else ``$GANKIT_INCEPTION_WEIGHTS``.

    Raises :class:`GankitError` explaining how to supply the file when neither is set or the file
    does not exist. Never downloads.
    """
    src = "path option"
    if path is None or str(path) == "":
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise GankitError(
                "the inception-v3 feature extractor needs the FID Inception weights file "
                f"({FID_INCEPTION_FILENAME}, sha256 {FID_INCEPTION_SHA256[:16]}...), and gankit "
                "never downloads anything. Obtain that file (it is distributed by pytorch-fid and "
                f"torch-fidelity), then pass it as the extractor's path=... option or set "
                f"{ENV_VAR}=/path/to/{FID_INCEPTION_FILENAME}. For digits use 'lenet-mnist'; with "
                "no weights at hand, 'random-cnn'."
            )
        path, src = env, f"${ENV_VAR}"
    p = Path(path).expanduser()
    if not p.is_file():
        raise GankitError(f"Inception weights file not found: {p} (from {src})")
    return p


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors`` file."""
    from safetensors import SafetensorError

    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise GankitError(
                f"{path}: unsupported weights format '{suffix}'; expected .pth/.pt or .safetensors"
            )
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError,
            pickle.UnpicklingError) as e:  # refused pickle, truncated zip, bad header ...
        raise GankitError(f"cannot read Inception weights {path}: {type(e).__name__}: {e}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a checkpoint wrapping the state dict
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise GankitError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return dict(obj)


def _check_layout(state: dict[str, Tensor], path: Path) -> None:
    """Raise a clear :class:`GankitError` unless ``state`` fits :class:`FIDInceptionV3`."""
    with torch.device("meta"):
        ref = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    # BatchNorm's step counters are not used in eval mode and older files lack them.
    optional = {k for k in ref if k.endswith("num_batches_tracked")}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(ref) - set(got) - optional)
    extra = sorted(set(got) - set(ref))
    bad = sorted(k for k in set(ref) & set(got) if ref[k] != got[k])
    if not (missing or extra or bad):
        return
    hint = ""
    if any(k.startswith("AuxLogits.") for k in got) or got.get("fc.weight") == (1000, 2048):
        hint = (" This looks like torchvision's ImageNet Inception-v3 (1000 classes, aux head), "
                "which is a different network with different weights; FID needs "
                f"{FID_INCEPTION_FILENAME}.")
    elif any(k.startswith("module.") for k in got):
        hint = " Keys carry a 'module.' prefix (saved from DataParallel); strip it first."
    shown = 5
    raise GankitError(
        f"{path} is not an FID Inception-v3 state dict:"
        f" {len(missing)} missing key(s) {missing[:shown]},"
        f" {len(extra)} unexpected key(s) {extra[:shown]},"
        f" {len(bad)} shape mismatch(es) {[(k, got[k], ref[k]) for k in bad[:shown]]}.{hint}"
    )


def load_fid_inception(path: str | os.PathLike[str] | None = None
                       ) -> tuple[FIDInceptionV3, str]:
    """Build :class:`FIDInceptionV3` with the weights in ``path`` (or ``$GANKIT_INCEPTION_WEIGHTS``).

    Returns ``(network in eval mode, file SHA-256)``. Warns (:class:`UserWarning`) when the digest
    is not the reference file's but the tensors fit; raises :class:`GankitError` when no file is
    given, it cannot be read, or its keys/shapes do not fit.
    """
    p = resolve_inception_path(path)
    digest = file_sha256(p)
    state = read_state_dict(p)
    _check_layout(state, p)
    if digest != FID_INCEPTION_SHA256:
        warnings.warn(
            f"{p}: SHA-256 {digest[:16]}... is not that of the reference {FID_INCEPTION_FILENAME} "
            f"({FID_INCEPTION_SHA256[:16]}...). Its tensors fit the FID Inception-v3, so it is "
            "used, but scores are comparable with published ones only if these are the reference "
            "weights (e.g. re-saved as safetensors). The digest is recorded in the protocol.",
            stacklevel=2,
        )
    # Build on the meta device and adopt the loaded tensors: no time spent on a random init that
    # would be overwritten.
    with torch.device("meta"):
        net = FIDInceptionV3()
    full: dict[str, Tensor] = {}
    for k in net.state_dict():
        if k in state:
            t = state[k]
            full[k] = t.to(torch.long) if k.endswith("num_batches_tracked") else t.float()
        else:  # an optional BatchNorm counter
            full[k] = torch.zeros((), dtype=torch.long)
    net.load_state_dict(full, strict=True, assign=True)
    for q in net.parameters():
        q.requires_grad_(False)
    return net.eval(), digest


# ---------------------------------------------------------------------------------------------
# extractor
# ---------------------------------------------------------------------------------------------
class InceptionExtractor(FeatureExtractor):
    """``inception-v3``: 2048-d pool3 features and 1008 logits of the FID Inception-v3.

    Needs the weight file (``path`` or ``$GANKIT_INCEPTION_WEIGHTS``); gankit never downloads it.
    Meaningless for MNIST-like digits (ImageNet features of 28x28 digits): use ``lenet-mnist``.

    Args:
        path: ``.pth``/``.pt``/``.safetensors`` file with the FID Inception weights.
        unbiased_logits: logits without the fc bias, as the original Inception Score code
            computes them (default), or with it.
        net: an already-built network to use instead of loading a file (tests, custom weights);
            the checksum is then that of its state.
    """

    name = "inception-v3"
    version = "pt_inception-2015-12-05"
    input_kind = "image"
    expected_channels = (1, 3)
    expected_size = 299
    resize_rule = "bilinear to 299x299, align_corners=False, no antialias (pytorch-fid)"
    channel_rule = "grey replicated to RGB; input range [-1, 1] as the network expects"
    feature_dim = 2048
    num_classes = 1008

    def __init__(self, path: str | os.PathLike[str] | None = None, unbiased_logits: bool = True,
                 net: FIDInceptionV3 | None = None) -> None:
        self.unbiased_logits = bool(unbiased_logits)
        if net is not None:

            self.net, self.checksum, self.path = net.eval(), weights_sha256(net), None
        else:
            self.net, self.checksum = load_fid_inception(path)
            self.path = resolve_inception_path(path)
        self.reference_weights = self.checksum == FID_INCEPTION_SHA256

    def _prepare(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # [N, 3, H, W]
        return resize_square(x, 299, antialias=False)

    def _forward(self, x: Tensor, want_logits: bool) -> tuple[Tensor, Tensor | None]:
        assert isinstance(self.net, FIDInceptionV3)
        f = self.net(x)  # [B, 2048]
        return f, (self.net.logits(f, self.unbiased_logits) if want_logits else None)

    def protocol(self) -> dict[str, Any]:
        return super().protocol() | {
            "reference_weights": self.reference_weights,
            "logits": "unbiased (no fc bias)" if self.unbiased_logits else "with fc bias",
        }
