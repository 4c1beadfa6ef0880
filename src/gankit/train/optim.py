"""Optimizers and learning-rate schedules from the family's per-network specs.

The family declares an :class:`~gankit.models.base.OptimSpec` and parameter groups per network;
the user's ``optim.nets.<name>.*`` keys override any field (``optim.nets.Q.lr=1e-3``). A network
regularised lazily (a phase with ``lazy_reg`` every k steps) gets StyleGAN2's correction of its
Adam hyper-parameters, ``c = k / (k + 1)``: ``lr * c`` and ``betas ** c`` (Karras et al. 2020,
"Analyzing and Improving the Image Quality of StyleGAN", Appendix B), so that the extra
optimizer steps of the regulariser do not change the effective learning dynamics.

A :class:`Schedule` sets every parameter group's learning rate from the step at the start of
each training step: ``lr = base * factor(step)``. Its state (the base rates, which rollbacks
scale) is checkpointed, and the factor depends on the step only, so a resumed run follows the
same rates bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..models.base import ModelFamily, OptimSpec
from ..registry import did_you_mean

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "linear", "cosine")


def resolve_spec(model: ModelFamily, name: str, reg_every: int = 1) -> OptimSpec:
    """Network ``name``'s spec: the family's, the user's ``optim.nets.<name>`` over it, and the
    lazy-regularisation correction when the network is regularised every ``reg_every`` steps."""
    spec = model.optim_spec(name)
    over = model.cfg.optim.nets.get(name)
    if over is not None:
        spec = replace(spec, **{k: v for k, v in over.model_dump().items() if v is not None})
    if spec.name not in OPTIMIZERS:
        raise ConfigError(f"network {name}: optimizer '{spec.name}' is not one of "
                          f"{', '.join(OPTIMIZERS)}")
    if spec.schedule not in SCHEDULES:
        raise ConfigError(f"network {name}: schedule '{spec.schedule}' is not one of "
                          f"{', '.join(SCHEDULES)}")
    if reg_every > 1 and spec.name in ("adam", "adamw"):
        c = reg_every / (reg_every + 1)
        spec = replace(spec, lr=spec.lr * c, betas=(spec.betas[0] ** c, spec.betas[1] ** c))
    elif reg_every > 1:
        spec = replace(spec, lr=spec.lr * reg_every / (reg_every + 1))
    return spec


def check_net_overrides(model: ModelFamily, names: list[str]) -> None:
    """``optim.nets`` may only name networks of the model."""
    for k in model.cfg.optim.nets:
        if k not in names:
            raise ConfigError(f"optim.nets.{k}: model '{model.name}' has no trained network "
                              f"'{k}'{did_you_mean(k, names)}; its networks: {', '.join(names)}")


def build_optimizer(model: ModelFamily, name: str, net: nn.Module, spec: OptimSpec
                    ) -> torch.optim.Optimizer:
    """The optimizer of network ``name`` with the family's parameter groups."""
    groups: list[dict[str, Any]] = []
    for g in model.param_groups(name, net):
        if not g.params:
            continue
        groups.append({"params": g.params, "lr": spec.lr * g.lr_mult,
                       "weight_decay": spec.weight_decay if g.weight_decay is None
                       else g.weight_decay, **g.extra})
    if not groups:
        raise ConfigError(f"network {name} has no trainable parameters")
    if spec.name == "adam":
        return torch.optim.Adam(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps, foreach=True)
    if spec.name == "adamw":
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps, foreach=True)
    if spec.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=spec.lr, eps=spec.eps, foreach=True)
    return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.betas[0], foreach=True)


class Schedule:
    """The learning rate of every group of one optimizer as ``base * factor(step)``.

    ``constant``: 1 after a linear warm-up over ``warmup`` steps. ``linear``: 1 (after warm-up)
    until ``decay_start`` (default: half of ``total``), then linear to ``min_lr_ratio`` at
    ``total`` (Isola et al. 2017 and Zhu et al. 2017: constant for the first half, linear decay
    to 0 over the second). ``cosine``: warm-up, then ``min + (1 - min) (1 + cos(pi p)) / 2`` with
    ``p`` the fraction of the steps after warm-up (Loshchilov & Hutter 2017).
    """

    def __init__(self, opt: torch.optim.Optimizer, spec: OptimSpec, total: int) -> None:
        self.opt = opt
        self.kind, self.warmup, self.total = spec.schedule, int(spec.warmup), int(total)
        self.decay_start = spec.decay_start if spec.decay_start is not None else total // 2
        self.min_ratio = float(spec.min_lr_ratio)
        self.base = [float(g["lr"]) for g in opt.param_groups]
        if self.kind != "constant" and not 0 <= self.decay_start <= self.total:
            raise ConfigError(f"optim.decay_start {self.decay_start} must lie in [0, train.steps "
                              f"= {self.total}]")

    def factor(self, step: int) -> float:
        w = self.warmup
        warm = min(1.0, (step + 1) / w) if w > 0 else 1.0
        if self.kind == "constant":
            return warm
        if self.kind == "linear":
            if step < self.decay_start:
                return warm
            span = max(1, self.total - self.decay_start)
            p = min(1.0, (step - self.decay_start) / span)
            return warm * (1.0 - (1.0 - self.min_ratio) * p)
        span = max(1, self.total - w)
        p = min(1.0, max(0, step - w) / span)
        return warm * (self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * p)))

    def apply(self, step: int) -> None:
        f = self.factor(step)
        for g, b in zip(self.opt.param_groups, self.base):
            g["lr"] = b * f

    def scale(self, factor: float) -> None:
        """Multiply every base rate (a rollback's learning-rate cut); applied at the next step."""
        self.base = [b * factor for b in self.base]

    def state_dict(self) -> dict[str, Any]:
        return {"base": list(self.base), "kind": self.kind, "total": self.total}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        if len(s["base"]) != len(self.base):
            raise ConfigError("the checkpoint's schedule has a different number of parameter "
                              "groups; was the model changed?")
        self.base = [float(b) for b in s["base"]]
