"""Feature extractors: the embeddings that FID, KID, IS, precision/recall, density/coverage and
mode counts are computed on.

Metric functions in :mod:`gankit.metrics` take *feature arrays*; the networks that produce them
live here, in the :data:`gankit.registry.FEATURES` registry, so that the choice of embedding is a
named, recorded part of every result's protocol (DESIGN.md §5). ``FEATURES.get(name)(**opts)``
builds one:

================  ==================================================================  =========
name              what                                                                dim
================  ==================================================================  =========
``raw``           flattened values: toy 2-D points, tabular rows, (flattened) images  D
``random-cnn``    seeded randomly initialised CNN (Naeem et al., 2020), any images    512
``lenet-mnist``   small classifier trained on MNIST-5k by ``scripts/train_lenet.py``  128 / 10
``inception-v3``  the TF-FID Inception-v3 (Heusel et al., 2017); user's weights file  2048 / 1008
================  ==================================================================  =========

Which one to use:

- Toy 2-D mixtures (``ring8``, ``grid25``) and tabular data: ``raw``.
- Digits (MNIST-5k, scikit-learn ``digits``): ``lenet-mnist``. **MNIST through Inception is
  meaningless**: Inception-v3 was trained on ImageNet photographs at 299x299; a 28x28 grey digit
  upsampled 10x lies far outside that distribution, its 2048-d pool features encode little about
  the digit's identity or stroke quality, and FID numbers on them are neither comparable to the
  literature's nor sensitive to what matters for digits. Use the digit classifier instead.
- Natural images of any size for published, comparable numbers: ``inception-v3`` with the
  standard ``pt_inception-2015-12-05`` weights (``path=`` or ``$GANKIT_INCEPTION_WEIGHTS``; gankit
  never downloads them).
- Anything else, or when no weights are available: ``random-cnn``. Naeem et al. (2020),
  "Reliable Fidelity and Diversity Metrics for Generative Models" (ICML), show that embeddings of a
  randomly initialised network are informative enough to rank generative models, which makes them
  a sensible default outside ImageNet-like data. Its numbers are comparable only between runs that
  record the same checksum.

All extractors take gankit images (float ``[N, C, H, W]`` in ``[-1, 1]``; ``uint8`` tensors are
mapped from ``[0, 255]``) or, for ``raw``, any ``[N, ...]`` array, and return ``float64`` numpy
arrays so that the metric code can do its linear algebra in double precision.
"""

from __future__ import annotations

import abc
import hashlib
import math
import os
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, DataError

__all__ = [
    "FeatureExtractor",
    "RandomCNN",
    "RandomCNNExtractor",
    "RawExtractor",
    "file_sha256",
    "resize_square",
    "to_image_tensor",
    "weights_sha256",
]

ArrayLike = Tensor | np.ndarray


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's state (names, shapes, dtypes and raw little-endian bytes).

    Used as the identity of weights that are generated rather than stored in a file (the random
    CNN), so that two results computed with different networks can never look comparable.
    """
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}|{tuple(t.shape)}|{t.dtype}|".encode())
        arr = t.numpy()
        # Explicit little-endian so the digest is the same on any host.
        h.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def to_image_tensor(x: ArrayLike, what: str = "images") -> Tensor:
    """Validate a batch of gankit images and return it as a float32 CPU/any-device tensor.

    Accepts float ``[N, C, H, W]`` in ``[-1, 1]`` (torch or numpy) or ``uint8`` in ``[0, 255]``.
    Raises :class:`DataError` for a wrong rank, an empty batch or non-finite values.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise DataError(f"{what}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 4:
        raise DataError(
            f"{what}: expected images of shape [N, C, H, W], got shape {list(x.shape)}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{what}: empty batch")
    if x.dtype == torch.uint8:
        # uint8 images are [0, 255]; map to the gankit convention [-1, 1].
        return x.float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise DataError(f"{what}: expected float images in [-1, 1] or uint8, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{what}: contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.5 or hi > 1.5:
        # Not an error (a generator without tanh may overshoot), but [0, 255] floats are a
        # common mistake that silently ruins every metric.
        warnings.warn(
            f"{what}: values span [{lo:.3g}, {hi:.3g}], but gankit images are in [-1, 1]; "
            "did you pass [0, 255] or unnormalised data?",
            stacklevel=3,
        )
    return x.float()


def resize_square(x: Tensor, size: int, antialias: bool = True) -> Tensor:
    """Bilinear resize of ``[N, C, H, W]`` to ``[N, C, size, size]`` (``align_corners=False``).

    A no-op when the input already has that size. ``antialias`` only matters when shrinking; it
    avoids aliasing when, say, 64x64 samples are brought down to 32x32.
    """
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=antialias)


class FeatureExtractor(abc.ABC):
    """Base class: turns samples into ``float64`` feature (and, for classifiers, logit) arrays.

    Subclasses set the class/instance attributes below and implement :meth:`_prepare` (validate and
    bring a batch to the network's input format) and :meth:`_forward` (prepared batch ->
    ``(features, logits or None)``). The base class handles batching, device placement,
    ``torch.inference_mode`` and the conversion to numpy.

    Attributes:
        name: registry name, e.g. ``"random-cnn"``.
        version: human-readable version of the extractor's definition.
        checksum: SHA-256 identifying the exact weights (``"none"`` when there are none).
        input_kind: ``"image"`` (``[N, C, H, W]`` in [-1, 1]) or ``"points"`` (``[N, ...]``).
        expected_channels: accepted channel counts, ``None`` for any.
        expected_size: the side length images are resized to, ``None`` for no resizing.
        resize_rule: how inputs are resized, recorded in the protocol.
        channel_rule: how channel counts are adapted, recorded in the protocol.
        feature_dim: D of :meth:`features` (``None`` when it depends on the input, as for raw).
        num_classes: K of :meth:`logits`, ``None`` for non-classifiers.
    """

    name: str = "base"
    version: str = "0"
    checksum: str = "none"
    input_kind: str = "image"
    expected_channels: tuple[int, ...] | None = None
    expected_size: int | None = None
    resize_rule: str = "none"
    channel_rule: str = "none"
    feature_dim: int | None = None
    num_classes: int | None = None

    #: The torch module run by :meth:`_forward`, if any (moved to the requested device lazily).
    net: nn.Module | None = None

    # -- to implement -------------------------------------------------------------------------
    @abc.abstractmethod
    def _prepare(self, x: Tensor) -> Tensor:
        """A validated batch (on the target device) -> the network's input."""

    @abc.abstractmethod
    def _forward(self, x: Tensor, want_logits: bool) -> tuple[Tensor, Tensor | None]:
        """Prepared batch -> ``(features [B, D], logits [B, K] or None)``."""

    # -- public API ---------------------------------------------------------------------------
    @property
    def is_classifier(self) -> bool:
        return self.num_classes is not None

    def features(self, x: ArrayLike, batch_size: int = 256, device: str | torch.device = "cpu"
                 ) -> np.ndarray:
        """Embed ``x`` into a ``float64`` array ``[N, D]``.

        Runs in batches of ``batch_size`` under ``torch.inference_mode()`` on ``device``; the
        result does not depend on ``batch_size`` (up to float32 rounding, ~1e-6).
        """
        return self._run(x, batch_size, device, want_logits=False)[0]

    def logits(self, x: ArrayLike, batch_size: int = 256, device: str | torch.device = "cpu"
               ) -> np.ndarray:
        """Class logits ``[N, K]`` (``float64``) for classifier extractors (IS, class histograms)."""
        if not self.is_classifier:
            raise ConfigError(f"feature extractor '{self.name}' is not a classifier: no logits")
        out = self._run(x, batch_size, device, want_logits=True)[1]
        assert out is not None
        return out

    def features_and_logits(self, x: ArrayLike, batch_size: int = 256,
                            device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """Both arrays from one pass over ``x`` (FID and IS together cost one forward)."""
        if not self.is_classifier:
            raise ConfigError(f"feature extractor '{self.name}' is not a classifier: no logits")
        f, lg = self._run(x, batch_size, device, want_logits=True)
        assert lg is not None
        return f, lg

    def differentiable_features(self, x: Tensor) -> Tensor:
        """Features ``[N, D]`` of a batch with gradients flowing back to ``x`` (a perceptual
        distance as a training loss); the extractor's own weights stay fixed, on ``x``'s device,
        in eval mode."""
        if self.net is not None:
            self.net.to(x.device).eval().requires_grad_(False)
        self._check(x.detach())  # validates shape, channels and range (no gradient needed)
        f, _ = self._forward(self._prepare(x), False)
        return f

    def protocol(self) -> dict[str, Any]:
        """What a metric result must record to be reproducible and comparable."""
        p: dict[str, Any] = {
            "extractor": self.name,
            "version": self.version,
            "checksum": self.checksum,
            "input_kind": self.input_kind,
            "resize": self.resize_rule,
            "channels": self.channel_rule,
            "feature_dim": self.feature_dim,
        }
        if self.num_classes is not None:
            p["num_classes"] = self.num_classes
        return p

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, checksum={self.checksum[:12]!r})"

    # -- machinery ----------------------------------------------------------------------------
    def _check(self, x: ArrayLike) -> Tensor:
        t = to_image_tensor(x, f"{self.name} input") if self.input_kind == "image" else x
        assert isinstance(t, Tensor)
        if self.expected_channels is not None and t.shape[1] not in self.expected_channels:
            raise DataError(
                f"{self.name}: images must have {' or '.join(map(str, self.expected_channels))} "
                f"channels, got {t.shape[1]} (shape {list(t.shape)})"
            )
        return t

    def _run(self, x: ArrayLike, batch_size: int, device: str | torch.device, want_logits: bool
             ) -> tuple[np.ndarray, np.ndarray | None]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        dev = torch.device(device)
        t = self._check(x)
        if self.net is not None:
            self.net.to(dev).eval()
        feats: list[np.ndarray] = []
        logits: list[np.ndarray] = []
        with torch.inference_mode():
            for i in range(0, t.shape[0], batch_size):
                xb = self._prepare(t[i:i + batch_size].to(dev))
                f, lg = self._forward(xb, want_logits)
                feats.append(f.double().cpu().numpy())  # [B, D]
                if want_logits:
                    assert lg is not None
                    logits.append(lg.double().cpu().numpy())  # [B, K]
        return np.concatenate(feats), (np.concatenate(logits) if want_logits else None)


# ---------------------------------------------------------------------------------------------
# raw
# ---------------------------------------------------------------------------------------------
class RawExtractor(FeatureExtractor):
    """Flattened input values as features: ``[N, ...] -> [N, prod(...)]`` in float64.

    The natural embedding for toy 2-D mixtures and tabular data, where the coordinates *are* the
    data. For images it flattens pixels, which makes FID/KID a pixel-space statistic (fine for a
    sanity check, poor at judging image quality).
    """

    name = "raw"
    version = "1"
    checksum = "none"
    input_kind = "points"
    resize_rule = "none"
    channel_rule = "none (flattened)"

    def _check(self, x: ArrayLike) -> Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not isinstance(x, Tensor):
            raise DataError(f"raw: expected a torch.Tensor or numpy array, got {type(x).__name__}")
        if x.ndim < 1 or x.shape[0] == 0:
            raise DataError(f"raw: expected a non-empty [N, ...] array, got shape {list(x.shape)}")
        x = x.reshape(x.shape[0], -1)  # [N, D]
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise DataError("raw: input contains NaN or infinite values")
        self.feature_dim = int(x.shape[1])
        return x

    def _prepare(self, x: Tensor) -> Tensor:
        return x

    def _forward(self, x: Tensor, want_logits: bool) -> tuple[Tensor, Tensor | None]:
        # float64 straight from the input: no rounding through float32.
        return x.double(), None

    def protocol(self) -> dict[str, Any]:
        p = super().protocol()
        p["feature_dim"] = "input dim" if self.feature_dim is None else self.feature_dim
        return p


# ---------------------------------------------------------------------------------------------
# random-cnn
# ---------------------------------------------------------------------------------------------
class RandomCNN(nn.Module):
    """Four 3x3 conv layers with ReLU and global average + max pooling (``[N, 3, 32, 32] -> [N, 512]``).

    Weights are drawn from a private :class:`torch.Generator` seeded with ``seed`` (He-normal,
    ``std = sqrt(2 / fan_in)``, zero biases), so the network is identical across constructions and
    processes and independent of the global RNG state. No normalisation layers: nothing depends on
    batch statistics, which keeps features batch-size independent.
    """

    #: (in, out, stride) of each conv; 32 -> 32 -> 16 -> 8 -> 8 spatially.
    LAYERS: tuple[tuple[int, int, int], ...] = ((3, 64, 1), (64, 128, 2), (128, 256, 2),
                                                (256, 256, 1))

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        self.convs = nn.ModuleList()
        for cin, cout, stride in self.LAYERS:
            conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
            with torch.no_grad():
                std = math.sqrt(2.0 / (cin * 9))
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * std)
                conv.bias.zero_()
            self.convs.append(conv)
        self.out_dim = 2 * self.LAYERS[-1][1]
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        # x: [N, 3, 32, 32]
        for conv in self.convs:
            x = F.relu(conv(x))
        # x: [N, 256, 8, 8] -> avg and max over space -> [N, 512]
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


class RandomCNNExtractor(FeatureExtractor):
    """Seeded random-CNN embedding (Naeem et al., 2020, "Reliable Fidelity and Diversity Metrics
    for Generative Models", ICML) for images of any size and channel count.

    Images are resized bilinearly (``align_corners=False``, antialiased when shrinking) to 32x32.
    The network's first layer has 3 input channels: grey images (C = 1) are replicated to RGB (as
    for Inception), RGB is used as is, and for any other C input channel ``c`` uses the kernel
    slice ``c mod 3`` scaled by ``3 / C`` (so the first layer's response keeps its scale).
    ``checksum`` is the SHA-256 of the generated weights, so the protocol pins the exact network.
    """

    name = "random-cnn"
    version = "1"
    input_kind = "image"
    expected_channels = None
    expected_size = 32
    resize_rule = "bilinear to 32x32, align_corners=False, antialias when shrinking"
    channel_rule = "grey replicated to RGB; other C: first-layer kernel[c mod 3] * 3/C"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.net = RandomCNN(self.seed).eval()
        self.feature_dim = self.net.out_dim
        self.checksum = weights_sha256(self.net)
        self._first_cache: dict[int, tuple[Tensor, Tensor]] = {}

    def _first_weight(self, c: int, device: torch.device) -> Tensor:
        w = self.net.convs[0].weight  # [64, 3, 3, 3]
        cached = self._first_cache.get(c)
        if cached is None or cached[0].device != device or cached[1] is not w:
            idx = torch.arange(c, device=w.device) % 3
            wc = w[:, idx] * (3.0 / c)  # [64, C, 3, 3]
            cached = (wc.to(device), w)
            self._first_cache[c] = cached
        return cached[0]

    def _prepare(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # [N, 3, H, W]
        return resize_square(x, 32)

    def _forward(self, x: Tensor, want_logits: bool) -> tuple[Tensor, Tensor | None]:
        assert isinstance(self.net, RandomCNN)
        first = self.net.convs[0]
        if x.shape[1] == 3:
            h = first(x)
        else:
            h = F.conv2d(x, self._first_weight(x.shape[1], x.device), first.bias, padding=1)
        h = F.relu(h)  # [N, 64, 32, 32]
        for conv in self.net.convs[1:]:
            h = F.relu(conv(h))
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1), None  # [N, 512]

    def protocol(self) -> dict[str, Any]:
        return super().protocol() | {"seed": self.seed}
