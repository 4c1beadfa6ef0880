"""NCSN: the noise-conditional score network of Song & Ermon 2019, "Generative Modeling by
Estimating Gradients of the Data Distribution", trained by denoising score matching (Vincent
2011, "A Connection Between Score Matching and Denoising Autoencoders") and sampled by annealed
Langevin dynamics (chapter 000 §5.1: "score function-based approaches are trained by score
matching, and their sampling process uses Langevin dynamics").

The score s_theta(x, sigma) ~ grad_x log q_sigma(x) of the data convolved with N(0, sigma^2 I)
is learned at L noise levels sigma_1 > ... > sigma_L in geometric progression. Denoising score
matching: for x~ = x + sigma z, grad log q_sigma(x~ | x) = -(x~ - x) / sigma^2 = -z / sigma,
so the objective (Song & Ermon eq. 5-6, weight lambda(sigma) = sigma^2) is

    (1/2) E_{i, x, z} || sigma_i s_theta(x + sigma_i z, sigma_i) + z ||^2,

with the level i drawn uniformly per example; its minimiser is the score of q_sigma (for a
Gaussian N(mu, s^2 I) it is -(x - mu) / (s^2 + sigma^2)). The network is the diffusion family's
time-embedded U-Net (images) or residual MLP (points), conditioned on the position of log sigma
between log sigma_1 and log sigma_L, its output divided by sigma (the parameterisation of Song &
Ermon 2020, "Improved Techniques for Training Score-Based Generative Models": the true score's
norm scales as 1/sigma).

Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): from uniform noise on [-1, 1]
(images; points: N(0, sigma_1^2 I)), for each level i, ``steps`` updates
x <- x + (alpha_i / 2) s_theta(x, sigma_i) + sqrt(alpha_i) z with the step size
alpha_i = eps sigma_i^2 / sigma_L^2. ``denoise`` adds a last step x + sigma_L^2 s_theta(x,
sigma_L) (Tweedie's formula; Song & Ermon 2020, Jolicoeur-Martineau et al. 2021), off by
default as in the 2019 paper.

Paper defaults (§5, MNIST/CIFAR-10): L = 10, sigma_1 = 1, sigma_L = 0.01, 100 steps per level,
eps = 2e-5, Adam at 1e-3, batch 128. On 2-D points sigma_1 defaults to 10 (about the largest
distance between two grid25 points, the rule of Song & Ermon 2020's technique 1) with 20 levels.
EMA of the network with the Trainer's decay (Song & Ermon 2020's technique 5).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..data.sizes import ImageSizes
from ..errors import ConfigError
from ..games.phase import Phase, StepContext
from ..registry import MODELS
from .base import ModelFamily, Params, refuse_gan_keys
from .ddpm import build_net, unet_sizes

__all__ = ["NCSN", "dsm_loss", "geometric_sigmas"]


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> Tensor:
    """sigma_1 = sigma_max > ... > sigma_L = sigma_min in geometric progression, float64 ``[L]``."""
    if levels == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), levels,
                                    dtype=torch.float64))


def dsm_loss(score: Tensor, z: Tensor, sigma: Tensor) -> Tensor:
    """Per-example denoising score matching loss with weight sigma^2:
    ``0.5 || sigma s + z ||^2`` (= 0.5 sigma^2 || s - (-z / sigma) ||^2), for the score ``s``
    at x + sigma z; ``sigma`` broadcasts against ``score``. ``[N]``."""
    return 0.5 * (sigma * score + z).flatten(1).pow(2).sum(1)


class NCSNParams(Params):
    sigma_max: float | None = None  # sigma_1; None: 1 on images, 10 on points
    sigma_min: float = 0.01  # sigma_L
    num_scales: int | None = None  # L; None: 10 on images, 20 on points
    arch: Literal["auto", "unet", "mlp"] = "auto"
    width: int = 32
    levels: int = 3
    attention: bool = True
    dropout: float = 0.0
    hidden: int = 128
    depth: int = 3
    steps: int = 100  # Langevin steps per noise level (sample()'s default)
    step_eps: float = 2e-5  # eps of the step size (sample()'s default)
    denoise: bool = False  # sample()'s default


@MODELS.register("ncsn", description="noise-conditional score network (Song & Ermon 2019): "
                                     "denoising score matching, annealed Langevin sampling")
class NCSN(ModelFamily):
    """Song & Ermon 2019's score model: one network ``s`` (s_theta), the denoising score matching
    phase, annealed Langevin sampling (see the module docstring)."""

    sampling_network: ClassVar[bool] = False  # annealed Langevin dynamics
    Params = NCSNParams
    defaults: ClassVar[dict[str, Any]] = {
        "optim": {"lr": 1e-3, "betas": (0.9, 0.999)},  # Song & Ermon 2019 §5
        # sampling runs L x steps network passes per sample: no doctor probes by default
        "train": {"batch_size": 128, "doctor": False},
    }
    capabilities: ClassVar[frozenset[str]] = frozenset({"sample"})
    data_kinds: ClassVar[tuple[str, ...]] = ("images", "points")
    ema_networks: ClassVar[tuple[str, ...]] = ("s",)
    adversarial: ClassVar[bool] = False
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8, "model.levels": 2, "model.num_scales": 3,
                                      "model.steps": 2}
    tiny_data: ClassVar[str] = "images"

    s: nn.Module

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        return unet_sizes(cfg)

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        super().validate_config(cfg)
        refuse_gan_keys(cfg)

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        self.is_image = bool(info.get("is_image"))
        if p.sigma_max is None:
            p.sigma_max = 1.0 if self.is_image else 10.0
        if p.num_scales is None:
            p.num_scales = 10 if self.is_image else 20
        if not 0 < p.sigma_min < p.sigma_max:
            raise ConfigError(f"model.sigma_min and sigma_max must satisfy 0 < min < max, got "
                              f"{p.sigma_min} and {p.sigma_max}.")
        if p.num_scales < 2:
            raise ConfigError(f"model.num_scales must be >= 2, got {p.num_scales}.")
        if not 0 <= p.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {p.dropout}.")
        self.defaults_sample = check_langevin(p.steps, p.step_eps, p.denoise, prefix="model.")
        self.sigmas = geometric_sigmas(p.sigma_max, p.sigma_min, p.num_scales)  # float64 [L]
        arch = p.arch if p.arch != "auto" else ("unet" if self.is_image else "mlp")
        self.s = build_net(self.sample_shape, self.is_image, arch, p)

    def networks(self) -> dict[str, nn.Module]:
        return {"s": self.s}

    def phases(self) -> list[Phase]:
        return [Phase("dsm", "s", self.dsm_phase)]

    # -- the score ----------------------------------------------------------------------------
    def position(self, sigma: Tensor) -> Tensor:
        """Where log sigma lies between log sigma_1 (0) and log sigma_L (1000): the network's
        conditioning input, on the scale of a diffusion timestep."""
        lo, hi = math.log(self.p.sigma_min), math.log(self.p.sigma_max)
        return 1000.0 * (hi - torch.log(sigma.double())) / (hi - lo)

    def score_at(self, net: nn.Module, x: Tensor, sigma: Tensor) -> Tensor:
        """s_theta(x, sigma) = net(x, position(sigma)) / sigma for ``sigma [N]``."""
        out = net(x, self.position(sigma).to(x.device, torch.float32))
        return out / sigma.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))

    def dsm_phase(self, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        """Denoising score matching at one uniformly drawn level per example (Song & Ermon
        2019 eq. 6), averaged over the batch; the level and z from the training generator."""
        x = ctx.batch["x"]
        g = ctx.generator
        i = torch.randint(0, len(self.sigmas), (len(x),), generator=g, device=g.device).cpu()
        sigma = self.sigmas[i].to(x.device, x.dtype)  # [N]
        z = torch.randn(x.shape, generator=g, device=g.device).to(x.device, x.dtype)
        s_view = sigma.view(-1, *([1] * (x.dim() - 1)))
        s = self.score_at(ctx.net("s"), x + s_view * z, sigma)
        loss = dsm_loss(s, z, s_view).mean()
        return loss, {"loss/dsm": loss.detach()}

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, n: int, *, generator: torch.Generator | None = None, cond: Any = None,
               **options: Any) -> Tensor:
        """``n`` samples by annealed Langevin dynamics: ``steps`` per level, step size
        ``eps sigma_i^2 / sigma_L^2``, optional final ``denoise`` step."""
        unknown = set(options) - {"steps", "eps", "denoise"}
        if unknown:
            raise ConfigError(f"model 'ncsn' has no sampling option(s) "
                              f"{', '.join(sorted(unknown))} (it takes steps, eps, denoise).")
        d = self.defaults_sample
        steps, eps, denoise = check_langevin(options.get("steps", d["steps"]),
                                             options.get("eps", d["eps"]),
                                             options.get("denoise", d["denoise"])).values()
        shape = (n, *self.sample_shape)
        if self.is_image:
            x = torch.rand(shape, generator=generator, device=self.device) * 2 - 1
        else:
            x = torch.randn(shape, generator=generator, device=self.device) * self.p.sigma_max
        return self.langevin(self.s, x, steps, eps, denoise, generator)

    def preview(self, ds: Any, n: int = 64, seed: int = 0,
                nets: dict[str, nn.Module] | None = None) -> tuple[Tensor, int | None]:
        """The training-time sample grids use at most 10 Langevin steps per level (L x 100
        network passes for every grid would cost more than the training between grids)."""
        return self.draw(n, seed, nets=nets, steps=min(self.p.steps, 10)), None

    def langevin(self, net: nn.Module, x: Tensor, steps: int, eps: float, denoise: bool,
                 generator: torch.Generator | None) -> Tensor:
        """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) from ``x``."""
        sig_l = float(self.sigmas[-1])
        for sigma in self.sigmas.tolist():
            alpha = eps * sigma ** 2 / sig_l ** 2
            sv = torch.full((len(x),), sigma, dtype=torch.float64)
            for _ in range(steps):
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + 0.5 * alpha * self.score_at(net, x, sv) + math.sqrt(alpha) * z
        if denoise:
            sv = torch.full((len(x),), sig_l, dtype=torch.float64)
            x = x + sig_l ** 2 * self.score_at(net, x, sv)
        return x.clamp(-1, 1) if self.is_image else x


def check_langevin(steps: Any, eps: Any, denoise: Any, prefix: str = "") -> dict[str, Any]:
    """Validate the Langevin options; one-line errors."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"{prefix}steps (Langevin steps per noise level) must be a positive "
                          f"integer, got {steps!r}.")
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
        raise ConfigError(f"{prefix}{'step_' if prefix else ''}eps must be a number > 0, got "
                          f"{eps!r}.")
    if not isinstance(denoise, bool):
        raise ConfigError(f"{prefix}denoise must be true or false, got {denoise!r}.")
    return {"steps": int(steps), "eps": float(eps), "denoise": denoise}
