"""A trained model ready for what its family can do, and how a family is built from a config.

:class:`TrainedModel` is what ``gankit.load`` returns (for a run directory or a ``gankit
export`` folder) and what ``run.generator`` is; :func:`build_model` builds a family's networks
from a resolved config and a data description. Both sit below the API and the export, which
use them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .config import Config
from .errors import ConfigError
from .models import ModelFamily, get_family

#: ``weights=`` choices of :func:`load` (and the legacy names they replace). Two questions,
#: which checkpoint and which copy: ``ema`` = the latest intact checkpoint, EMA copies where the
#: run kept them (the default); ``raw`` = the latest intact checkpoint, the trained weights;
#: ``last`` = another name for ``ema`` (the latest checkpoint as the run samples it, the
#: counterpart of ``best``); ``best`` = the weights the evaluator kept in ``best/``
#: (``train.eval_every``), EMA copies where kept.
WEIGHTS = {"ema": "ema", "raw": "raw", "last": "ema", "best": "best", "G_ema": "ema", "G": "raw"}


class TrainedModel:
    """A trained model of any family, ready for what its family can do.

    ``sample``, ``translate``, ``log_prob``, ``encode``, ``decode``, ``score``, ``attribute`` and
    ``segment`` dispatch to the family's capability of the same name; one the family lacks is a
    one-line :class:`~gankit.models.base.CapabilityError`. Results come back on the CPU. Sampling
    and translation are reproducible with ``seed``; without one they draw fresh entropy (torch's
    global generator is never reseeded). ``model`` is the family module itself (all networks).
    """

    def __init__(self, model: ModelFamily, device: torch.device,
                 nets: dict[str, nn.Module] | None = None) -> None:
        self.model = model
        self.device = device
        self.nets = nets or {}  # substitutes (a live run's EMA copies)

    def __repr__(self) -> str:
        return (f"TrainedModel({self.model.name}, capabilities: "
                f"{', '.join(sorted(self.capabilities))})")

    @property
    def capabilities(self) -> frozenset[str]:
        return self.model.capabilities

    @property
    def conditional(self) -> bool:
        return self.model.conditional

    @property
    def G(self) -> nn.Module:
        """The generator (its EMA copy during a live run)."""
        return self.nets.get("G", getattr(self.model, "G", None))

    def sample(self, n: int, *, seed: int | None = None, labels: Any = None,
               batch_size: int = 500, **options: Any) -> Tensor:
        """``n`` samples: images ``[n, C, H, W]`` in [-1, 1] or points ``[n, D]``.

        ``labels`` (conditional models): an int for one class, or a sequence of ``n`` ints;
        default cycles through the classes. ``options`` are the family's (GANs:
        ``truncation``, the truncation trick of Brock et al. 2019).
        """
        return self.model.draw(n, seed, nets=self.nets, cond=labels, batch_size=batch_size,
                               **options)

    def _infer(self, capability: str, x: Any, seed: int | None, batch_size: int,
               **options: Any) -> Tensor:
        t = torch.as_tensor(x)
        if not torch.is_floating_point(t):
            t = t.float()
        return self.model.infer(capability, t, seed, nets=self.nets, batch_size=batch_size,
                                **options)

    def translate(self, x: Any, *, seed: int | None = None, batch_size: int = 64,
                  **options: Any) -> Tensor:
        """Translate images ``[N, C, H, W]`` in [-1, 1] of the input domain."""
        return self._infer("translate", x, seed, batch_size, **options)

    def log_prob(self, x: Any, *, seed: int | None = None, batch_size: int = 256,
                 **options: Any) -> Tensor:
        """Log-likelihood (or its lower bound) of each sample in nats, ``[N]``."""
        return self._infer("log_prob", x, seed, batch_size, **options)

    def encode(self, x: Any, *, seed: int | None = None, batch_size: int = 256,
               **options: Any) -> Tensor:
        return self._infer("encode", x, seed, batch_size, **options)

    def decode(self, z: Any, *, seed: int | None = None, batch_size: int = 256,
               **options: Any) -> Tensor:
        return self._infer("decode", z, seed, batch_size, **options)

    def score(self, x: Any, *, seed: int | None = None, batch_size: int = 256,
              **options: Any) -> Tensor:
        return self._infer("score", x, seed, batch_size, **options)

    def attribute(self, x: Any, *, seed: int | None = None, batch_size: int = 64,
                  **options: Any) -> Tensor:
        return self._infer("attribute", x, seed, batch_size, **options)

    def segment(self, x: Any, *, seed: int | None = None, batch_size: int = 64,
                **options: Any) -> Tensor:
        return self._infer("segment", x, seed, batch_size, **options)

    def interpolate(self, n_rows: int = 4, steps: int = 8, *, seed: int = 0,
                    labels: Any = None) -> Tensor:
        """A latent interpolation grid ``[n_rows * steps, ...]``: each row walks by slerp
        between the latents of two seeds (:func:`gankit.interpolate.interpolate`)."""
        from .interpolate import interpolate

        return interpolate(self, n_rows, steps, seed, labels)


Sampler = TrainedModel  # the name of earlier releases


def build_model(cfg: Config, info: dict[str, Any]) -> ModelFamily:
    """The family of ``cfg`` for data ``info``, its networks initialised from ``train.seed``
    (on a forked RNG: the caller's global generator is not reseeded). Images of a size the
    family's networks do not take are refused first, in one line naming the sizes that fit."""
    family = get_family(cfg.model["name"])
    if info.get("is_image") and len(info.get("shape", ())) == 3:
        family.valid_image_sizes(cfg).check(tuple(info["shape"][1:]), cfg.model["name"],
                                            what=f"the images of '{info.get('name')}'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        try:
            return family(cfg, info)
        except (RuntimeError, ValueError, IndexError) as e:  # sizes the networks cannot take
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise ConfigError(f"model '{cfg.model['name']}' cannot be built from model.* = "
                              f"{ {k: v for k, v in cfg.model.items() if k != 'name'} } for "
                              f"data of shape {info.get('shape')}: {first}") from None
