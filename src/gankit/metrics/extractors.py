"""The registered feature extractors (``gankit.registry.FEATURES``).

Factories take keyword options: ``FEATURES.get(name)(**opts)``. The extractor classes live in
:mod:`gankit.metrics.features` (the base class, raw values, the random CNN),
:mod:`gankit.metrics.lenet` (the shipped digit classifier) and :mod:`gankit.metrics.inception`
(FID's Inception-v3 from a user-supplied weights file); this module only names them, so the
three modules import the base class and nothing imports back.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..registry import FEATURES
from .features import FeatureExtractor, RandomCNNExtractor, RawExtractor
from .inception import InceptionExtractor
from .lenet import LeNetExtractor


def _raw(**opts: Any) -> RawExtractor:
    _no_options("raw", opts)
    return RawExtractor()


def _random_cnn(seed: int = 0, **opts: Any) -> RandomCNNExtractor:
    _no_options("random-cnn", opts)
    return RandomCNNExtractor(seed=seed)


def _lenet_mnist(path: str | None = None, verify: bool = True, **opts: Any) -> FeatureExtractor:
    _no_options("lenet-mnist", opts)
    return LeNetExtractor(path=path, verify=verify)


def _inception_v3(path: str | None = None, unbiased_logits: bool = True, **opts: Any
                  ) -> FeatureExtractor:
    _no_options("inception-v3", opts)
    return InceptionExtractor(path=path, unbiased_logits=unbiased_logits)


def _no_options(name: str, opts: dict[str, Any]) -> None:
    if opts:
        raise ConfigError(f"feature extractor '{name}' got unknown option(s): {', '.join(opts)}")


FEATURES.register("raw", _raw, description="flattened values (toy 2-D points, tabular data)")
FEATURES.register("random-cnn", _random_cnn,
                  description="seeded random CNN, 512-d, any images (Naeem et al. 2020)")
FEATURES.register("lenet-mnist", _lenet_mnist,
                  description="LeNet trained on MNIST-5k, 128-d features, 10 logits (digits)")
FEATURES.register("inception-v3", _inception_v3,
                  description="TF-FID Inception-v3, 2048-d pool3, 1008 logits; weights file required")
