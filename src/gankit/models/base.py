"""What every model family declares: networks, optimizers, data, phases and capabilities.

**A family declares, the Trainer does.** A family (one file in ``gankit/models``) declares

- its networks by name: :meth:`ModelFamily.networks` (trained) and
  :meth:`ModelFamily.frozen_networks` (on the device, never optimised, saved once), each also an
  attribute of the family under the same name;
- which of them keep an EMA copy (``ema_networks``);
- an optimizer spec and learning-rate schedule per network (:meth:`ModelFamily.optim_spec`,
  :class:`OptimSpec`) and its parameter groups (:meth:`ModelFamily.param_groups`), which the
  user's ``optim.nets.<name>.*`` keys override;
- the data it trains on (``data_source``: ``samples``, ``paired``, ``unpaired``, ``classes``);
- its training as :class:`~gankit.games.phase.Phase` objects (:meth:`ModelFamily.phases`),
  usually built from a reusable game (:func:`~gankit.games.adversarial.adversarial_phases`);
- its capabilities (``capabilities``: sample, translate, log_prob, encode, decode, score,
  attribute, segment), each a method of the same name that the API and the CLI dispatch to;
- a tiny configuration (``tiny``) for the contract test that runs every family.

Networks never compute losses or step optimizers (the StyleGAN2-ADA ``networks.py``/``loss.py``
split); the Trainer alone owns optimizers, schedules, backward, AMP, accumulation, DDP, EMA and
checkpoints. :class:`GANFamily` is the base of the adversarial families: a generator ``G(z, c)``
and a discriminator ``D`` playing the game, with every stabilisation trick.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import Tensor, nn

from ..data.sizes import ANY_SIZE, ImageSizes
from ..errors import ConfigError
from ..games.adversarial import DView, Game, Terms, adversarial_phases
from ..games.phase import Phase, StepContext

if TYPE_CHECKING:
    from ..config import Config
    from ..data.base import Dataset

__all__ = ["CAPABILITIES", "CapabilityError", "DView", "GANFamily", "Game", "ModelFamily",
           "OptimSpec", "ParamGroup", "Params", "Phase", "StepContext", "Terms",
           "adversarial_phases", "apply_data_defaults"]

#: What a trained model can do, each a method of the family with the same name.
CAPABILITIES: dict[str, str] = {
    "sample": "draw new samples: sample(n, generator=, cond=, **options)",
    "translate": "map images of the input domain to the output domain: translate(x)",
    "log_prob": "log-likelihood (or its lower bound) of each sample in nats: log_prob(x)",
    "encode": "the latent code of each sample: encode(x)",
    "decode": "samples from latent codes: decode(z)",
    "score": "an anomaly or realness score per sample: score(x)",
    "attribute": "a map of what makes each image belong to its class: attribute(x)",
    "segment": "a label map per pixel: segment(x)",
}


class CapabilityError(ConfigError):
    """A model was asked for something it cannot do (e.g. translating with a DCGAN)."""


#: ``model.*`` sizes that must be >= 1 (widths, hidden units, latent dimensions) and counts
#: that must be >= 0 (layers), whatever the family: checked when the config is resolved, so a
#: nonsense size is a one-line error rather than a tensor with a negative dimension.
POSITIVE_SIZES = frozenset({"latent_dim", "width", "max_width", "hidden", "g_hidden", "d_hidden",
                            "h_dim", "q_hidden", "sphere_dim", "g_width", "d_width"})
COUNTS = frozenset({"g_layers", "d_layers", "n_layers", "depth", "moments", "unroll_steps"})


class Params(BaseModel):
    """Base of every family's hyper-parameters (``model.*`` config keys)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _sizes(self) -> Params:
        for k in type(self).model_fields:
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool):
                continue
            if k in POSITIVE_SIZES and v < 1:
                raise ValueError(f"{k} must be >= 1, got {v}")
            if k in COUNTS and v < 0:
                raise ValueError(f"{k} must be >= 0, got {v}")
        return self


@dataclass
class OptimSpec:
    """How one network is optimised: the optimizer, its hyper-parameters and the schedule.

    ``schedule``: ``constant`` (after an optional linear ``warmup``), ``linear`` (constant until
    ``decay_start``, then linear decay to ``min_lr_ratio`` x lr at the last step: pix2pix and
    CycleGAN's schedule) or ``cosine`` (``warmup`` then cosine decay to ``min_lr_ratio`` x lr).
    """

    name: str = "adam"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    schedule: str = "constant"
    warmup: int = 0
    decay_start: int | None = None
    min_lr_ratio: float = 0.0


@dataclass
class ParamGroup:
    """Parameters of one network that share settings: ``lr_mult`` scales the network's lr (e.g.
    StyleGAN's mapping network at 0.01x), ``weight_decay`` overrides it (e.g. none on biases)."""

    params: list[Tensor]
    lr_mult: float = 1.0
    weight_decay: float | None = None
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def apply_data_defaults(cfg: Any, settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Set each ``cfg.<section>.<key>`` of ``settings`` that no config layer set; return them.

    Data-dependent defaults: a family's ``defaults`` are applied before the data is known, so
    keys whose default depends on it (images vs points) stay out of ``defaults`` and are filled
    here, from ``ModelFamily.__init__`` (a family's ``data_defaults``), where the user's layers
    left them unset (pydantic's ``model_fields_set``: a value given on the command line, in a
    config file or in ``overrides`` always wins, even when it equals the built-in default). The
    resolved config, saved as config.json before training, then records them, so resume/load
    rebuild the same run.
    """
    applied: dict[str, Any] = {}
    for sec, values in settings.items():
        section = getattr(cfg, sec)
        for key, value in values.items():
            if key not in section.model_fields_set:
                setattr(section, key, value)  # validated; marks the key as set (idempotent)
                applied[f"{sec}.{key}"] = value
    return applied


def _trainable(net: nn.Module) -> list[Tensor]:
    return [p for p in net.parameters() if p.requires_grad]



def refuse_gan_keys(cfg: Config, optimizer: str | None = "optim.lr, optim.betas",
                    why: str = "trains no discriminator") -> None:
    """A one-line error for the adversarial loss keys and the G/D optimizer keys
    (``optim.lr_g``, ``lr_d``, ``betas_g``, ``betas_d``, ``n_critic``) changed from their
    defaults, for families that train no discriminator and would silently ignore them;
    ``optimizer`` names the keys that do apply, ``None`` for a family with no optimizer at all
    (every ``optim.*`` key is then refused); ``why`` says why they do not apply."""
    from ..config import LossConfig, OptimConfig

    loss, opt = LossConfig().model_dump(), OptimConfig().model_dump()
    got_loss, got_opt = cfg.loss.model_dump(), cfg.optim.model_dump()
    keys = opt if optimizer is None else ("lr_g", "lr_d", "betas_g", "betas_d", "n_critic")
    bad = [f"loss.{k}" for k in loss if got_loss[k] != loss[k]]
    bad += [f"optim.{k}" for k in keys if got_opt[k] != opt[k]]
    if bad:
        tail = "" if optimizer is None else f" (its optimizer is {optimizer})"
        raise ConfigError(f"model '{cfg.model['name']}' {why}: {', '.join(bad)} does not apply "
                          f"to it{tail}.")


class ModelFamily(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every registered model family, GAN or not (see the module docstring).

    Subclasses set ``Params`` and ``defaults`` (config layers applied under the user's), build
    their networks as attributes in ``__init__(cfg, info)`` (``info`` is
    :meth:`gankit.data.Dataset.describe`), and implement :meth:`networks`, :meth:`phases` (both
    abstract) and the method of each of their ``capabilities`` (checked when the class is
    defined: a declared capability without its method is a ``TypeError``).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.capabilities) - set(CAPABILITIES)
        if unknown:
            raise TypeError(f"{cls.__name__} declares unknown capabilities {sorted(unknown)}; "
                            f"capabilities: {', '.join(CAPABILITIES)}")
        missing = [c for c in cls.capabilities if getattr(cls, c) is getattr(ModelFamily, c)]
        if missing:
            raise TypeError(f"{cls.__name__} declares {', '.join(sorted(missing))} but does not "
                            f"implement {'it' if len(missing) == 1 else 'them'}")

    Params: ClassVar[type[Params]] = Params
    defaults: ClassVar[dict[str, Any]] = {}
    needs_labels: ClassVar[bool] = False
    # Config defaults that depend on the kind of data, {"images"|"points": {section: {key:
    # value}}}: applied when the model is built to the keys no config layer set (the user's
    # values win), and recorded in the saved config (apply_data_defaults).
    data_defaults: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}
    #: What the trained model can do (keys of CAPABILITIES), each a method of the same name.
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: The data source the Trainer draws batches from (gankit.data.sources.SOURCES).
    data_source: ClassVar[str] = "samples"
    #: Data kinds (Dataset.kind) the family trains on.
    data_kinds: ClassVar[tuple[str, ...]] = ("images", "points")
    #: Networks that get an EMA copy when train.ema is on (sampling uses the copies).
    ema_networks: ClassVar[tuple[str, ...]] = ()
    #: Config overrides of the family's tiny model for the fast contract test, and which of the
    #: tests' tiny datasets it trains on (images, points, paired).
    tiny: ClassVar[dict[str, Any]] = {}
    tiny_data: ClassVar[str] = "images"
    #: Whether the family's networks take 3-D volumes ``[N, C, D, H, W]`` (vox2vox); the others
    #: refuse volume data in one line rather than fail inside a 2-D convolution.
    takes_volumes: ClassVar[bool] = False
    #: Whether one feed-forward pass of a network makes a sample from noise (GAN generators, a
    #: VAE's decoder) or an output from an input (translators): what ONNX export writes. False
    #: for iterative or non-network samplers (mixtures, Gibbs chains, autoregressive and
    #: diffusion sampling), which ``gankit export --onnx`` refuses in one line.
    sampling_network: ClassVar[bool] = True
    #: Whether the family plays an adversarial game (the tricks.* section applies to it).
    adversarial: ClassVar[bool] = False
    # D's logged scores (D/real, D/fake) are the scores of the configured loss.name (GANs only).
    scores_follow_loss: ClassVar[bool] = False

    def __init__(self, cfg: Config, info: dict[str, Any]) -> None:
        super().__init__()
        kind = "images" if info.get("is_image") else "points"
        apply_data_defaults(cfg, self.data_defaults.get(kind, {}))
        self.cfg = cfg
        self.info = info
        self.p = self.Params(**{k: v for k, v in cfg.model.items() if k != "name"})
        self.sample_shape: tuple[int, ...] = tuple(info["shape"])
        self.num_classes: int = int(info.get("num_classes", 0))
        data_kind = info.get("kind", kind)
        if info.get("is_volume") and not self.takes_volumes:
            raise ConfigError(f"model '{cfg.model['name']}' takes 2-D data; '{info.get('name')}' "
                              f"holds 3-D volumes of shape {tuple(info['shape'])} (a 3-D family "
                              f"such as vox2vox trains on them)")
        if data_kind not in self.data_kinds:
            raise ConfigError(f"model '{cfg.model['name']}' trains on {' or '.join(self.data_kinds)}"
                              f" data; '{info.get('name')}' is {data_kind}"
                              + (" (give paired:DIR, or a built-in such as edges2digits)"
                                 if "paired" in self.data_kinds else ""))
        if self.needs_labels and self.num_classes < 2:
            raise ConfigError(
                f"model '{cfg.model['name']}' is conditional and needs labelled data; "
                f"'{info['name']}' has no class labels (use class sub-folders or an .npz with y)"
            )

    #: The square image sizes the family's networks take (:meth:`valid_image_sizes`).
    image_sizes: ClassVar[Any] = None

    @classmethod
    def valid_image_sizes(cls, cfg: Config) -> ImageSizes:
        """The square image sizes this family's networks (as ``cfg`` configures them) accept.

        The default data size is chosen among them and any other size is refused before a
        network is built. Families set ``image_sizes`` or override this when the answer
        depends on the config (an MLP architecture takes any size, strided convolutions do not).
        """
        return cls.image_sizes or ANY_SIZE

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        """Cross-section rules, checked when the config is resolved. Families that play no
        adversarial game refuse the ``tricks.*`` switches, which they would silently ignore."""
        from ..tricks import active

        want = active(cfg.tricks)
        if want and not cls.adversarial:
            raise ConfigError(f"model '{cfg.model['name']}' plays no adversarial game: "
                              f"{', '.join('tricks.' + k for k in want)} does not apply to it")

    @property
    def name(self) -> str:
        return str(self.cfg.model["name"])

    @property
    def conditional(self) -> bool:
        return self.needs_labels

    @property
    def device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")

    # -- declarations ---------------------------------------------------------------------
    @abc.abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """Trained networks by name (each also the family's attribute of that name)."""

    def frozen_networks(self) -> dict[str, nn.Module]:
        """Networks used but never optimised (pre-trained parts); kept in eval mode."""
        return {}

    @abc.abstractmethod
    def phases(self) -> list[Phase]:
        """The training phases (usually built from a game, e.g. ``adversarial_phases``)."""

    def source_options(self) -> dict[str, Any]:
        """Options of the data source (the ``classes`` source's streams, e.g.
        ``{"streams": {"healthy": [0], "patient": [1]}}``)."""
        return {}

    def optim_spec(self, name: str) -> OptimSpec:
        """The optimizer of network ``name`` from the ``optim`` section; families without a
        discriminator use ``optim.lr``/``optim.betas`` (their defaults set them)."""
        o = self.cfg.optim
        if o.lr is None:
            raise ConfigError(f"model '{self.name}' needs optim.lr (its networks have no G/D "
                              f"sides for optim.lr_g/lr_d)")
        return self._spec(o.lr, o.betas if o.betas is not None else o.betas_g)

    def _spec(self, lr: float, betas: tuple[float, float]) -> OptimSpec:
        o = self.cfg.optim
        return OptimSpec(o.name, float(lr), tuple(betas), o.weight_decay, o.eps, o.schedule,
                         o.warmup, o.decay_start, o.min_lr_ratio)

    def param_groups(self, name: str, net: nn.Module) -> list[ParamGroup]:
        """Parameter groups of network ``name``: one group of its trainable parameters."""
        return [ParamGroup(_trainable(net))]

    def family_buffers(self) -> dict[str, Tensor]:
        """Buffers of the family module outside its networks (e.g. BEGAN's k_t, trick state);
        checkpointed as ``family.safetensors``."""
        nets = tuple(f"{k}." for k in (*self.networks(), *self.frozen_networks()))
        return {k: b for k, b in self.named_buffers() if not k.startswith(nets)}

    # -- capabilities ---------------------------------------------------------------------
    def require(self, capability: str) -> None:
        """Raise a one-line :class:`CapabilityError` unless the model has ``capability``."""
        if capability not in CAPABILITIES:
            raise ConfigError(f"unknown capability '{capability}'; capabilities: "
                              f"{', '.join(CAPABILITIES)}")
        if capability not in self.capabilities:
            can = ", ".join(sorted(self.capabilities)) or "nothing beyond training"
            raise CapabilityError(f"model '{self.name}' cannot {capability.replace('_', ' ')} "
                                  f"(it can: {can})")

    def _lacks(self, capability: str) -> NoReturn:
        """What the base capability methods do: a family that has the capability overrides the
        method (enforced in ``__init_subclass__``), so reaching here means it lacks it."""
        self.require(capability)
        raise TypeError(f"{type(self).__name__} lists {capability} among its capabilities "
                        f"without implementing it")

    def sample(self, n: int, *, generator: torch.Generator | None = None, cond: Any = None,
               **options: Any) -> Tensor:
        """``n`` new samples on the model's device."""
        return self._lacks("sample")

    def translate(self, x: Tensor, *, generator: torch.Generator | None = None,
                  **options: Any) -> Tensor:
        return self._lacks("translate")

    def log_prob(self, x: Tensor, *, generator: torch.Generator | None = None,
                 **options: Any) -> Tensor:
        """Log-likelihoods ``[N]`` in nats per example, of the space :meth:`likelihood` names
        (:mod:`gankit.likelihood`)."""
        return self._lacks("log_prob")

    def summary_note(self) -> str | None:
        """A choice the start-up summary should show next to the model's name (e.g. which
        reconstruction distance FastGAN uses); ``None`` for none."""
        return None

    def likelihood(self) -> dict[str, str]:
        """What :meth:`log_prob` measures: ``{"space": binary | dequantized | continuous,
        "kind": exact | lower-bound | estimate}`` (:mod:`gankit.likelihood`); families with
        ``log_prob`` override it."""
        return self._lacks("log_prob")

    def encode(self, x: Tensor, *, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        return self._lacks("encode")

    def decode(self, z: Tensor, *, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        return self._lacks("decode")

    def score(self, x: Tensor, *, generator: torch.Generator | None = None,
              **options: Any) -> Tensor:
        return self._lacks("score")

    def attribute(self, x: Tensor, *, generator: torch.Generator | None = None,
                  **options: Any) -> Tensor:
        return self._lacks("attribute")

    def segment(self, x: Tensor, *, generator: torch.Generator | None = None,
                **options: Any) -> Tensor:
        return self._lacks("segment")

    def condition(self, n: int, labels: Any) -> Tensor | None:
        """Class labels ``int64 [n]`` for ``n`` samples: ``labels`` is an int, ``n`` ints or
        ``None`` (cycle through the classes); ``None`` for unconditional models."""
        if not self.conditional:
            if labels is not None:
                raise ConfigError(f"model '{self.name}' is unconditional: labels cannot be chosen")
            return None
        k = self.num_classes
        if labels is None:
            c = torch.arange(n) % k
        elif isinstance(labels, int):
            c = torch.full((n,), labels)
        else:
            c = torch.as_tensor(list(labels) if not torch.is_tensor(labels) else labels,
                                dtype=torch.int64).flatten()
            if c.shape != (n,):
                raise ConfigError(f"labels must be one int or {n} ints, got {tuple(c.shape)}")
        if len(c) and (c.min() < 0 or c.max() >= k):
            raise ConfigError(f"labels must lie in [0, {k - 1}]")
        return c.to(self.device, torch.int64)

    # -- running a capability: fixed seeds, EMA weights, eval mode (written once) -----------
    @contextlib.contextmanager
    def substituted(self, nets: dict[str, nn.Module] | None) -> Iterator[None]:
        """Use other modules for some networks inside the block (the Trainer's EMA copies):
        the family's attribute of each name is swapped and restored afterwards."""
        nets = nets or {}
        old = {}
        for k, m in nets.items():
            if k not in self._modules:
                raise KeyError(f"model has no network '{k}' to substitute")
            old[k] = self._modules[k]
            self._modules[k] = m
        try:
            yield
        finally:
            for k, m in old.items():
                self._modules[k] = m

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode inside the block (batch norm uses running statistics, dropout is off),
        every module's own mode restored afterwards: training state is untouched."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            yield
        finally:
            for m, t in modes:
                m.training = t

    @staticmethod
    def seeded(seed: int | None, device: torch.device) -> torch.Generator:
        """A generator on ``device`` from ``seed``; no seed: fresh entropy, without touching
        torch's global generator (as ``torch.seed()`` would)."""
        g = torch.Generator(device)
        g.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(7), "little"))
        return g

    def draw(self, n: int, seed: int | None = None, *, nets: dict[str, nn.Module] | None = None,
             cond: Any = None, batch_size: int = 500, **options: Any) -> Tensor:
        """``n`` samples on the CPU from a fixed ``seed``: the one sampling routine behind the
        API, the sample grids, the evaluator and the doctor's probes.

        ``nets`` substitutes networks (the EMA copies during training); the model runs in eval
        mode under ``torch.inference_mode`` and its modes are restored, so training is
        untouched. ``cond`` are class labels (see :meth:`condition`); ``options`` go to
        :meth:`sample` (e.g. ``truncation``).
        """
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        self.require("sample")
        c = self.condition(n, cond)
        gen = self.seeded(seed, self.device)
        out = []
        with self.substituted(nets), self.evaluating(), torch.inference_mode():
            for i in range(0, n, batch_size):
                m = min(batch_size, n - i)
                ci = None if c is None else c[i:i + m]
                out.append(self.sample(m, generator=gen, cond=ci, **options).float().cpu())
        return torch.cat(out)

    def infer(self, capability: str, x: Tensor, seed: int | None = None, *,
              nets: dict[str, nn.Module] | None = None, batch_size: int = 256,
              **options: Any) -> Tensor:
        """Apply ``capability`` (translate, log_prob, encode, decode, score, ...) to ``x`` in
        batches, on the CPU, with a seeded generator for any randomness, in eval mode."""
        self.require(capability)
        fn = getattr(self, capability)
        gen = self.seeded(seed, self.device)
        out = []
        with self.substituted(nets), self.evaluating(), torch.inference_mode():
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size].to(self.device)
                out.append(fn(xb, generator=gen, **options).float().cpu())
        return torch.cat(out)

    def preview(self, ds: Dataset, n: int = 64, seed: int = 0,
                nets: dict[str, nn.Module] | None = None) -> tuple[Tensor, int | None]:
        """What the sample grids show: ``(samples, images per row)``. Samples from a fixed
        seed for generative models; for translators, rows of (input, output, target) triplets
        of held-out pairs; for segmenters, (input's first channel, foreground probability,
        true mask) triplets, 3-D volumes by their middle slice."""
        if "sample" in self.capabilities:
            return self.draw(n, seed, nets=nets), (8 if self.conditional else None)
        if "translate" in self.capabilities and ds.a is not None:
            a = ds.a_test if ds.a_test is not None else ds.a
            x = ds.x_test if ds.x_test is not None else ds.x
            # unpaired data with a paired held-out split (thin2thick) shows its targets too
            paired = ds.pairing == "paired" or (ds.a_test is not None
                                                and bool(ds.info.get("paired_test")))
            k = min(n // 3, len(a), len(x)) if paired else min(n // 2, len(a))
            k -= k % 4 if k > 4 else 0  # whole rows of 4 tuples: no straggler row
            out = self.infer("translate", a[:k], seed, nets=nets)
            cols = [a[:k].float(), out] + ([x[:k].float()] if paired else [])
            ch = max(int(t.shape[1]) for t in cols)
            cols = [t.expand(-1, ch, -1, -1) if t.shape[1] != ch else t for t in cols]
            grid = torch.stack(cols, 1).flatten(0, 1)  # [k * len(cols), C, H, W] row-major
            return grid, len(cols) * 4
        if "segment" in self.capabilities and ds.a is not None and ds.pairing == "paired":
            # rows of (input, predicted probability, true mask) triplets of held-out pairs;
            # volumes [k, C, D, H, W] by their middle slice
            a = ds.a_test if ds.a_test is not None else ds.a
            x = ds.x_test if ds.x_test is not None else ds.x
            k = min(n // 3, len(a))
            k -= k % 4 if k > 4 else 0
            prob = self.infer("segment", a[:k], seed, nets=nets)  # [k, 1, ...] in [0, 1]
            cols = [a[:k, :1].float(), prob * 2 - 1, x[:k].float()]
            cols = [t[:, :, t.shape[2] // 2] if t.dim() == 5 else t for t in cols]
            return torch.stack(cols, 1).flatten(0, 1), 12
        raise CapabilityError(f"model '{self.name}' has nothing to preview")


# --- the adversarial families -------------------------------------------------------------------
def _d_layer_settings(D: Any) -> dict[str, Any]:
    """The D-layer tricks a DCGAN/MLP discriminator already has."""
    if D is None:
        return {}
    D = getattr(D, "body", D)  # a DCGAN discriminator inside a multi-head one (ACGAN, SSGAN)
    out: dict[str, Any] = {}
    drop = getattr(D, "drop_rate", None)  # MLP: Dropout layers or functional dropout
    if drop is None:
        drop = getattr(getattr(D, "features", None), "dropout", None)  # DCGAN's trunk
    if drop:
        out["dropout"] = drop
    mbstd = getattr(D, "mbstd", None)
    if mbstd is not None:
        out["mbstd_group"] = mbstd.group_size
    mbdisc = getattr(D, "mbdisc", None)
    if mbdisc is not None:
        out["mbdisc"] = (mbdisc.kernels, mbdisc.kernel_dim)
    return out


def _check_phase_tricks(model: ModelFamily, phases: list[Phase]) -> None:
    """Refuse phase-level tricks that a family's own phases would silently ignore."""
    from ..tricks import PHASE_TRICKS, active

    want = active(model.cfg.tricks, PHASE_TRICKS)
    if want and not any(ph.applies_tricks for ph in phases):
        raise ConfigError(f"model '{model.cfg.model['name']}' trains with its own phases, which do "
                          f"not apply {', '.join('tricks.' + k for k in want)}")


class GANFamily(ModelFamily):
    """Base of the adversarial families: ``G(z[, c])`` against ``D``.

    Subclasses build ``self.G`` and ``self.D`` in ``__init__(cfg, info)`` and set
    ``self.latent_dim``. D's output is read through :meth:`d_forward` (all heads, one pass) and
    :meth:`d_score` (the real/fake score). Training is the game of
    :func:`~gankit.games.adversarial.adversarial_phases`; a family adds auxiliary terms, its own
    objective or networks by overriding :meth:`phases` to return ``adversarial_phases(self,
    Game(...))``, so every trick keeps working (writing phases from scratch is possible, but
    phase-level tricks are then refused unless the phases apply them). ``g_nets`` are the
    networks on G's side of the optimizer settings (``optim.lr_g``/``betas_g``); the others get
    D's (``lr_d``/``betas_d``).

    Stabilisation tricks (``tricks.*``, :mod:`gankit.tricks`): the phase-level ones are applied
    by the game. The D-layer ones (dropout, minibatch stddev, minibatch discrimination) are
    layers of the DCGAN/MLP discriminators: a family may build its D with them
    (``**gankit.tricks.d_layer_kwargs(cfg)``); otherwise, right after the subclass's
    ``__init__``, :meth:`install_tricks` adds them in place to a DCGAN/MLP ``self.D`` when the
    family trains with the default phases (or sets ``d_tricks_in_place = True``), and refuses
    the config otherwise.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset({"sample"})
    ema_networks: ClassVar[tuple[str, ...]] = ("G",)
    g_nets: ClassVar[tuple[str, ...]] = ("G",)
    adversarial: ClassVar[bool] = True
    scores_follow_loss: ClassVar[bool] = True
    # May install_tricks() add D-layer tricks to self.D in place? None: only when the family
    # keeps the default phases (its own phases might use D's parts, e.g. features + head).
    d_tricks_in_place: ClassVar[bool | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "discriminate" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: override d_forward()/d_score(), not discriminate(): "
                            f"adversarial_phases calls those two")
        # Run install_tricks() once, after the most derived __init__ has built G and D.
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: GANFamily, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            if type(self) is cls:
                self.install_tricks()

        cls.__init__ = __init__  # type: ignore[method-assign]
        # Refuse phase-level tricks that the most derived phases() would silently ignore.
        phases = cls.phases

        @functools.wraps(phases)
        def checked_phases(self: GANFamily) -> list[Phase]:
            out = phases(self)
            if type(self) is cls:
                _check_phase_tricks(self, out)
            return out

        # True while the family trains with the default phases (adversarial_phases as such)
        default = phases is GANFamily.phases or getattr(phases, "default", False)
        checked_phases.default = default  # type: ignore[attr-defined]
        cls.phases = checked_phases  # type: ignore[method-assign]

    G: nn.Module
    D: nn.Module

    def __init__(self, cfg: Config, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        self.latent_dim: int = 0

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        from ..tricks import check_config

        check_config(cfg)  # cross-section rules of tricks.* (e.g. label smoothing needs BCE)

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optim_spec(self, name: str) -> OptimSpec:
        """G-side networks (``g_nets``) use ``optim.lr_g``/``betas_g``, the others (D and its
        helpers, e.g. InfoGAN's Q) ``lr_d``/``betas_d``; ``optim.lr``/``betas`` override both."""
        o = self.cfg.optim
        g = name in self.g_nets
        lr = o.lr if o.lr is not None else (o.lr_g if g else o.lr_d)
        betas = o.betas if o.betas is not None else (o.betas_g if g else o.betas_d)
        return self._spec(lr, betas)

    # -- the generator ----------------------------------------------------------------------
    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def generate(self, G: nn.Module, z: Tensor, c: Tensor | None = None) -> Tensor:
        return G(z, c) if self.conditional else G(z)

    def truncate(self, z: Tensor, threshold: float, generator: torch.Generator | None) -> Tensor:
        """The truncation trick (Brock et al. 2019 §3.1): latent entries with
        ``|z| > threshold`` are redrawn until none is left. Families whose latent holds more
        than Gaussian noise (InfoGAN's codes) truncate only the noise."""
        if threshold <= 0:
            raise ConfigError(f"truncation must be > 0, got {threshold}")
        while True:
            bad = z.abs() > threshold
            if not bad.any():
                return z
            z = torch.where(bad, self.sample_latent(len(z), generator, z.device), z)

    def sample(self, n: int, *, generator: torch.Generator | None = None, cond: Any = None,
               truncation: float | None = None, **options: Any) -> Tensor:
        """``n`` samples ``G(z[, c])``; ``truncation`` applies the truncation trick to ``z``."""
        if options:
            raise ConfigError(f"model '{self.name}' has no sampling option(s) "
                              f"{', '.join(sorted(options))} (it takes truncation)")
        z = self.sample_latent(n, generator, self.device)
        if truncation is not None:
            z = self.truncate(z, truncation, generator)
        if self.conditional and cond is None:
            cond = self.condition(n, None)
        return self.generate(self.G, z, cond)

    # -- the discriminator ------------------------------------------------------------------
    def d_forward(self, D: nn.Module, x: Tensor, c: Any = None) -> Any:
        """D's full output for a batch: ``D(x[, c])``. A family whose D has several heads
        (ACGAN's classifier, SSGAN's rotation head, InfoGAN's Q) returns them all from one pass;
        :meth:`d_score` picks the real/fake score and its :class:`Game` terms use the rest."""
        return D(x, c) if self.conditional else D(x)

    def d_score(self, out: Any, n: int) -> Tensor:
        """The real/fake score ``[n]`` in :meth:`d_forward`'s output ``out`` (for ``n`` samples);
        by default the output itself, PatchGAN-style maps averaged."""
        return out.reshape(n, -1).mean(1)

    def discriminate(self, D: nn.Module, x: Tensor, c: Any = None) -> Tensor:
        """D's real/fake score ``[N]`` of a batch (override :meth:`d_forward`/:meth:`d_score`)."""
        return self.d_score(self.d_forward(D, x, c), len(x))

    def d_features(self, D: nn.Module, x: Tensor, c: Any = None) -> Tensor:
        """D's penultimate per-sample features ``[N, F]`` (for feature matching, Salimans et al.
        2016 §3.1): ``D.features(x[, c])`` flattened. Override for other discriminators."""
        fn = getattr(D, "features", None)
        if not callable(fn):
            raise ConfigError(f"{type(D).__name__} has no features(x) method giving its "
                              f"penultimate features; override d_features")
        out = fn(x, c) if self.conditional else fn(x)
        return out.reshape(len(x), -1)

    def has_d_features(self, name: str) -> bool:
        """Whether :meth:`d_features` works for discriminator network ``name``."""
        return type(self).d_features is not GANFamily.d_features \
            or callable(getattr(getattr(self, name), "features", None))

    def install_tricks(self, modify: bool = True) -> None:
        """Check the configured D-layer tricks against ``self.D`` and add missing ones in place.

        Called automatically after the subclass's ``__init__`` (idempotent). ``modify=False``
        (used when the phases are built, after the optimizers) only checks: layers added then
        would not be trained.
        """
        from ..tricks import d_layer_kwargs

        kw = d_layer_kwargs(self.cfg)
        D = getattr(self, "D", None)
        have = _d_layer_settings(D)
        missing = [key for key, off in (
            ("d_dropout", kw["dropout"] == 0 or have.get("dropout") == kw["dropout"]),
            ("minibatch_stddev", kw["mbstd_group"] == 0
             or have.get("mbstd_group") == kw["mbstd_group"]),
            ("minibatch_discrimination", kw["mbdisc_kernels"] == 0
             or have.get("mbdisc") == (kw["mbdisc_kernels"], kw["mbdisc_dim"]))) if not off]
        if not missing:
            return  # none configured, or D was built with them
        in_place = self.d_tricks_in_place
        if in_place is None:
            in_place = getattr(type(self).phases, "default", False)
        can_add = callable(getattr(D, "add_tricks", None))
        if not (modify and in_place and can_add):
            why = ("they are layers of gankit's DCGAN/MLP discriminators, and this model's "
                   "discriminator is not one" if not can_add else
                   "this family trains with its own phases and builds its discriminator without "
                   "them" if not in_place else
                   "they must be set when the model is built, before its optimizers exist")
            raise ConfigError(f"model '{self.cfg.model['name']}' cannot apply "
                              f"{', '.join('tricks.' + k for k in missing)}: {why}")
        D.add_tricks(**kw)  # type: ignore[union-attr]

    def phases(self) -> list[Phase]:
        return adversarial_phases(self)
