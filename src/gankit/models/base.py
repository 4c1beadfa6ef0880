"""What every model family provides: networks, latent sampling and its training phases.

Networks never compute losses or step optimizers (the StyleGAN2-ADA ``networks.py``/``loss.py``
split). A family declares its training as :class:`Phase` objects; the Trainer runs them, and is
the only code that touches optimizers, backward, AMP, accumulation, DDP and EMA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from ..errors import ConfigError
from ..losses import clip_weights, d_accuracy, get_loss
from ..registry import REGULARIZERS

if TYPE_CHECKING:
    from ..config import Config
    from ..train.trainer import StepContext

LossFn = Callable[["StepContext"], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass
class Phase:
    """One optimisation phase of a training step.

    ``opt`` names the optimizer (and so the network) it updates, or a tuple of them for a
    phase whose loss updates several networks at once (InfoGAN's mutual-information term,
    consensus optimisation). The phase runs when
    ``step % every == 0``, ``repeat`` times in a row (k D steps per G step, Goodfellow et al.
    2014 Alg. 1). ``makes_fake``/``uses_fake`` let the Trainer hand the last D step's fake batch
    to the G step instead of running G twice. ``after_step`` runs after the optimizer step
    (e.g. weight clipping).
    """

    name: str
    opt: str | tuple[str, ...]
    loss_fn: LossFn
    every: int = 1
    repeat: int = 1
    makes_fake: bool = False
    uses_fake: bool = False
    after_step: Callable[[], None] | None = None

    @property
    def opts(self) -> tuple[str, ...]:
        return (self.opt,) if isinstance(self.opt, str) else tuple(self.opt)


class Params(BaseModel):
    """Base of every family's hyper-parameters (``model.*`` config keys)."""

    model_config = ConfigDict(extra="forbid")


class ModelFamily(nn.Module):
    """Base class of registered models.

    Subclasses set ``Params`` and ``defaults`` (config layers applied under the user's), build
    ``self.G`` and ``self.D`` in ``__init__(cfg, info)`` where ``info`` is
    :meth:`gankit.data.Dataset.describe`, and may override :meth:`phases`.
    """

    Params: ClassVar[type[Params]] = Params
    defaults: ClassVar[dict[str, Any]] = {}
    needs_labels: ClassVar[bool] = False

    G: nn.Module
    D: nn.Module

    def __init__(self, cfg: Config, info: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.info = info
        self.p = self.Params(**{k: v for k, v in cfg.model.items() if k != "name"})
        self.sample_shape: tuple[int, ...] = tuple(info["shape"])
        self.num_classes: int = int(info.get("num_classes", 0))
        self.latent_dim: int = 0
        if self.needs_labels and self.num_classes < 2:
            raise ConfigError(
                f"model '{cfg.model['name']}' is conditional and needs labelled data; "
                f"'{info['name']}' has no class labels (use class sub-folders or an .npz with y)"
            )

    @property
    def conditional(self) -> bool:
        return self.needs_labels

    def networks(self) -> dict[str, nn.Module]:
        """Trainable networks by optimizer key."""
        return {"G": self.G, "D": self.D}

    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def generate(self, G: nn.Module, z: Tensor, c: Tensor | None = None) -> Tensor:
        return G(z, c) if self.conditional else G(z)

    def discriminate(self, D: nn.Module, x: Tensor, c: Tensor | None = None) -> Tensor:
        out = D(x, c) if self.conditional else D(x)
        return out.reshape(len(x), -1).mean(1)  # [N]; PatchGAN-style maps are averaged

    def phases(self) -> list[Phase]:
        return adversarial_phases(self)


def adversarial_phases(model: ModelFamily) -> list[Phase]:
    """The adversarial game with the configured loss, penalty and clipping.

    D minimises ``loss.d_loss`` (+ ``lambda_gp`` x penalty), G minimises ``loss.g_loss``. A lazy
    penalty (``gp_every = k > 1``) becomes its own phase every k steps with weight x k (StyleGAN2).
    """
    lc = model.cfg.loss
    loss = get_loss(lc.name)
    reg = REGULARIZERS.get(lc.gp) if lc.gp else None

    def critic(D: nn.Module, c: Tensor | None) -> Callable[[Tensor], Tensor]:
        return lambda x: model.discriminate(D, x, c)

    def d_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        fake, c_fake = ctx.fake_for_d()
        d_real = model.discriminate(ctx.D, ctx.real, ctx.c)
        d_fake = model.discriminate(ctx.D, fake.detach(), c_fake)
        loss_d = loss.d_loss(d_real, d_fake)
        stats = {
            "loss/D": loss_d.detach(),
            "D/real": d_real.detach().mean(),
            "D/fake": d_fake.detach().mean(),
            "D/acc": d_accuracy(d_real, d_fake),
        }
        if reg is not None and lc.gp_every == 1:
            pen = reg.fn(critic(ctx.D, ctx.c), ctx.real, fake)
            stats[f"loss/D/{reg.name}"] = pen.detach()
            loss_d = loss_d + lc.lambda_gp * pen
        return loss_d, stats

    def g_step(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        fake, c_fake = ctx.fake_for_g()
        loss_g = loss.g_loss(model.discriminate(ctx.D, fake, c_fake))
        return loss_g, {"loss/G": loss_g.detach()}

    after = None
    if lc.clip is not None:
        clip = float(lc.clip)
        after = lambda: clip_weights(model.D, clip)

    phases = [Phase("D", "D", d_step, repeat=model.cfg.optim.n_critic, makes_fake=True,
                    after_step=after)]
    if reg is not None and lc.gp_every > 1:
        k = lc.gp_every

        def d_reg(ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
            with torch.no_grad():
                fake, _ = ctx.fake_for_d()
            pen = reg.fn(critic(ctx.D, ctx.c), ctx.real, fake)
            return lc.lambda_gp * k * pen, {f"loss/D/{reg.name}": pen.detach()}

        phases.append(Phase("D_reg", "D", d_reg, every=k))
    phases.append(Phase("G", "G", g_step, uses_fake=True))
    return phases

