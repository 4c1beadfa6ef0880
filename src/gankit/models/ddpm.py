"""DDPM: the denoising diffusion probabilistic model of Ho et al. 2020, "Denoising Diffusion
Probabilistic Models", with the deterministic DDIM sampler of Song, Meng & Ermon 2021,
"Denoising Diffusion Implicit Models" (chapter 000 §5.1 "Diffusion and Score based Models";
lecture deck "Diffusion models").

Forward process (Ho et al. eq. 2, 4): q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),
so q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with alpha_t = 1 - beta_t and
abar_t = prod_{s <= t} alpha_s. The paper's defaults are ours: T = 1000 steps, betas linear
from 1e-4 to 0.02 (§4), data scaled to [-1, 1].

Training (Algorithm 1, the "simple" loss of eq. 14): t ~ U{1..T}, eps ~ N(0, I),
L_simple = || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2 (mean over the
dimensions). eps_theta is a small U-Net with a sinusoidal time embedding, residual blocks,
group norm and one self-attention block at the lowest resolution (§4, Appendix B: theirs has
35.7M parameters at 32x32; ``model.width`` and ``model.levels`` make ours CPU-sized), or for
2-D points a residual MLP with the same embedding. Adam at 2e-4, batch 128, dropout 0.1 and an
EMA of the network with decay 0.9999 (Appendix B) are the defaults (we use no warm-up and no
gradient clipping: the Trainer has no clipping, and the short CPU runs do not diverge).

Sampling (``sample(n, sampler=, steps=, eta=, clip=)``):

- ``ancestral`` (Algorithm 2): x_{t-1} = mu_theta(x_t, t) + sigma_t z with the posterior mean
  of the predicted x_0 and sigma_t^2 = beta_t (``model.variance=beta``) or the posterior
  variance beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t (``beta_tilde``); the paper found
  both similar. With ``steps < T`` it runs the same chain on an evenly spaced sub-sequence
  tau_1 < ... < tau_S of {1..T}, with the respaced betas 1 - abar_{tau_i} / abar_{tau_{i-1}}
  (Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", §4).
- ``ddim`` (Song et al. 2021, eq. 12): x_{s} = sqrt(abar_s) x0_hat + sqrt(1 - abar_s -
  sigma^2) eps_hat + sigma z with sigma = eta sqrt((1 - abar_s)/(1 - abar_t))
  sqrt(1 - abar_t/abar_s) on the sub-sequence; ``eta = 0`` (default) is deterministic, ``eta =
  1`` is the ancestral chain with the posterior variance.
- ``clip`` (images: on) clips the predicted x_0 to [-1, 1] at each step, as both papers' code
  does; eps_hat is then the noise consistent with the clipped x0_hat.

The defaults of these options are ``model.sampler`` (ancestral), ``model.sample_steps`` (T) and
``model.eta`` (0), so ``gankit eval`` can evaluate a run with a faster sampler.

Likelihood (``log_prob``): the variational bound of Ho et al. eq. 5,
L = L_T + sum_{t=2}^T L_{t-1} + L_0, with L_T = KL(q(x_T|x_0) || N(0, I)),
L_{t-1} = KL(q(x_{t-1}|x_t, x_0) || p_theta(x_{t-1}|x_t)) (Gaussians, closed form, one x_t drawn
per term) and L_0 = -log p_theta(x_0|x_1). On images L_0 is the paper's discretised Gaussian
decoder (eq. 13) over the 256 grey levels, so -L lower-bounds log P(x) of the 8-bit image, a
probability. We report it in the ``dequantized`` space of :mod:`gankit.likelihood` as the
density that spreads P(x) uniformly over x's dequantisation bin, log P(x) + D log 256 nats: its
bits per dimension (D log 256 - log p) / (D log 2) are exactly -log P(x) / (D log 2), the
paper's 3.70 bits/dim on CIFAR-10 being that number. On points L_0 is a Gaussian density
(``continuous`` space). The sum over t is estimated on ``timesteps`` strata of {2..T} (one
uniformly drawn t per stratum, weighted by its size): unbiased for the sum, exact enumeration
when ``timesteps >= T - 1``; default ``model.nll_timesteps`` (100).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..data.sizes import ANY_SIZE, ImageSizes
from ..errors import ConfigError
from ..games.phase import Phase, StepContext
from ..likelihood import levels
from ..nn.time_unet import TimeMLP, TimeUNet, unet_accepts
from ..registry import MODELS
from .base import ModelFamily, Params, refuse_gan_keys

__all__ = ["DDPM", "Schedule", "discretized_gaussian_log_likelihood", "normal_kl",
           "stratified_timesteps", "subsequence"]

_LOG_2PI = math.log(2 * math.pi)
SAMPLERS = ("ancestral", "ddim")


# --- the diffusion maths (float64 schedule) ---------------------------------------------------
class Schedule:
    """The linear beta schedule and the quantities derived from it, float64 ``[T + 1]`` arrays
    indexed by t = 0..T (entry 0: beta_0 = 0, abar_0 = 1)."""

    def __init__(self, timesteps: int, beta_start: float, beta_end: float) -> None:
        T = int(timesteps)
        self.T = T
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])  # [T + 1]
        self.alphas = 1.0 - self.betas
        self.abar = torch.cumprod(self.alphas, 0)  # abar_0 = 1
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.abar[:-1]])
        self.abar_prev = abar_prev
        # posterior q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t, beta_tilde) (Ho et al. eq. 6-7)
        with torch.no_grad():
            denom = (1.0 - self.abar).clamp_min(1e-300)
            self.beta_tilde = torch.where(torch.arange(T + 1) > 0,
                                          (1.0 - abar_prev) / denom * self.betas,
                                          torch.zeros(1, dtype=torch.float64))
            self.coef_x0 = torch.where(torch.arange(T + 1) > 0,
                                       abar_prev.sqrt() * self.betas / denom,
                                       torch.zeros(1, dtype=torch.float64))
            self.coef_xt = torch.where(torch.arange(T + 1) > 0,
                                       self.alphas.sqrt() * (1.0 - abar_prev) / denom,
                                       torch.zeros(1, dtype=torch.float64))

    def at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """``name``'s values at integer timesteps ``t [N]``, shaped ``[N, 1, ...]`` to broadcast
        against ``like`` and of its dtype/device."""
        v = getattr(self, name)[t.cpu().long()]
        return v.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """A draw of q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. eq. 4)."""
        ab = self.at("abar", t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 6-7)."""
        mean = self.at("coef_x0", t, x0) * x0 + self.at("coef_xt", t, x0) * xt
        return mean, self.at("beta_tilde", t, x0).expand_as(x0)

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (eq. 4 solved for x_0)."""
        ab = self.at("abar", t, xt)
        return (xt - (1 - ab).sqrt() * eps) / ab.sqrt()

    def model_variance(self, kind: str) -> Tensor:
        """sigma_t^2 of p_theta(x_{t-1} | x_t), ``[T + 1]``: beta_t, or beta~_t with t = 1's
        (zero) value replaced by t = 2's so that the decoder p(x_0 | x_1) keeps a width."""
        if kind == "beta":
            return self.betas
        v = self.beta_tilde.clone()
        if self.T >= 2:
            v[1] = v[2]
        else:
            v[1] = self.betas[1]
        return v


def normal_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) elementwise:
    0.5 (log var2/var1 + (var1 + (mean1 - mean2)^2) / var2 - 1)."""
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def _log_diff_ndtr(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for a < b, stable in both tails (by symmetry for a > 0)."""
    ln = torch.special.log_ndtr
    upper = a > 0  # both in the upper tail: Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    hi = torch.where(upper, ln(-a), ln(b))
    lo = torch.where(upper, ln(-b), ln(a))
    return hi + torch.log1p(-torch.exp((lo - hi).clamp(max=0.0)).clamp(max=1 - 1e-16))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
    """log P(x) elementwise of 8-bit data ``x = k / 127.5 - 1`` under the discretised Gaussian
    decoder of Ho et al. eq. 13: the mass of N(mean, scale^2) on [x - 1/255, x + 1/255], the
    outer bins extended to -inf at x = -1 and +inf at x = 1 (computed in float64)."""
    x, mean, scale = x.double(), mean.double(), scale.double().expand_as(x)
    lo = (x - 1.0 / 255 - mean) / scale
    hi = (x + 1.0 / 255 - mean) / scale
    ln = torch.special.log_ndtr
    mid = _log_diff_ndtr(lo, hi)
    out = torch.where(x < -0.999, ln(hi), torch.where(x > 0.999, ln(-lo), mid))
    return out


def subsequence(T: int, steps: int) -> list[int]:
    """Evenly spaced timesteps tau_1 < ... < tau_S in {1..T} with tau_S = T (S = ``steps``;
    all of 1..T when ``steps = T``)."""
    if steps <= 1:
        return [T]
    # spacing (T - 1) / (S - 1) >= 1, so rounding half up keeps the timesteps distinct
    return [math.floor(1 + (T - 1) * i / (steps - 1) + 0.5) for i in range(steps)]


def stratified_timesteps(T: int, k: int, n: int,
                         generator: torch.Generator | None) -> list[tuple[Tensor, int]]:
    """``k`` strata of {2..T} (contiguous, sizes differing by at most one) and one uniform draw
    per stratum for each of ``n`` examples: a list of ``(t [n], stratum size)``. Summing
    ``size * f(t)`` over the strata estimates ``sum_{t=2}^T f(t)`` without bias."""
    m = T - 1
    k = max(1, min(int(k), m))
    edges = [round(j * m / k) for j in range(k + 1)]
    out = []
    for j in range(k):
        lo, size = 2 + edges[j], edges[j + 1] - edges[j]
        u = torch.randint(0, size, (n,), generator=generator)
        out.append((lo + u, size))
    return out


# --- the family -------------------------------------------------------------------------------
class DDPMParams(Params):
    timesteps: int = 1000  # T (Ho et al. §4)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    variance: Literal["beta", "beta_tilde"] = "beta"  # sigma_t^2 of the reverse process
    arch: Literal["auto", "unet", "mlp"] = "auto"  # auto: unet for images, mlp for points
    width: int = 32  # unet: channels of the first level (doubled below it)
    levels: int = 3  # unet: resolutions (28 -> 14 -> 7 for MNIST)
    attention: bool = True  # unet: self-attention at the lowest resolution
    dropout: float = 0.1
    hidden: int = 128  # mlp: units
    depth: int = 3  # mlp: residual blocks
    sampler: Literal["ancestral", "ddim"] = "ancestral"  # sample()'s default sampler
    sample_steps: int | None = None  # sample()'s default steps (None: T)
    eta: float = 0.0  # sample()'s default DDIM eta
    nll_timesteps: int = 100  # log_prob()'s default strata of {2..T}


@MODELS.register("ddpm", description="denoising diffusion probabilistic model (Ho et al. 2020); "
                                     "ancestral and DDIM (Song et al. 2021) sampling, "
                                     "variational bound in bits/dim")
class DDPM(ModelFamily):
    """Ho et al. 2020's DDPM: one noise-prediction network ``eps`` trained with the simple loss;
    ancestral and DDIM sampling, the variational bound (see the module docstring)."""

    sampling_network: ClassVar[bool] = False  # ancestral / DDIM steps of the denoiser
    Params = DDPMParams
    defaults: ClassVar[dict[str, Any]] = {
        "optim": {"lr": 2e-4, "betas": (0.9, 0.999)},  # Ho et al. Appendix B
        # the paper's batch and EMA decay; the doctor's sample probes would each run T network
        # passes per sample, so it is off by default
        "train": {"batch_size": 128, "ema_decay": 0.9999, "doctor": False},
    }
    capabilities: ClassVar[frozenset[str]] = frozenset({"sample", "log_prob"})
    data_kinds: ClassVar[tuple[str, ...]] = ("images", "points")
    ema_networks: ClassVar[tuple[str, ...]] = ("eps",)  # samples and the bound use the EMA copy
    adversarial: ClassVar[bool] = False
    tiny: ClassVar[dict[str, Any]] = {"model.timesteps": 20, "model.width": 8, "model.levels": 2,
                                      "model.nll_timesteps": 5, "model.sample_steps": 5}
    tiny_data: ClassVar[str] = "images"

    eps: nn.Module

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        return unet_sizes(cfg)

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        """Refuse the adversarial loss and the G/D optimizer keys, which would be ignored."""
        super().validate_config(cfg)
        refuse_gan_keys(cfg)

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        self.is_image = bool(info.get("is_image"))
        if p.timesteps < 2:
            raise ConfigError(f"model.timesteps must be >= 2, got {p.timesteps}.")
        if not 0 < p.beta_start <= p.beta_end < 1:
            raise ConfigError(f"model.beta_start/beta_end must satisfy 0 < start <= end < 1, got "
                              f"{p.beta_start} and {p.beta_end}.")
        if p.nll_timesteps < 1:
            raise ConfigError(f"model.nll_timesteps must be >= 1, got {p.nll_timesteps}.")
        if not 0 <= p.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {p.dropout}.")
        self.sched = Schedule(p.timesteps, p.beta_start, p.beta_end)
        self.T = p.timesteps
        self.sigma2 = self.sched.model_variance(p.variance)  # [T + 1] float64
        self.default_options = check_options(
            "ddpm", self.T, {"sampler": p.sampler, "steps": p.sample_steps or self.T,
                             "eta": p.eta}, prefix="model.")
        arch = p.arch if p.arch != "auto" else ("unet" if self.is_image else "mlp")
        self.arch = arch
        self.eps = build_net(self.sample_shape, self.is_image, arch, p)

    # -- declarations -------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"eps": self.eps}

    def phases(self) -> list[Phase]:
        return [Phase("simple", "eps", self.simple_loss)]

    def likelihood(self) -> dict[str, str]:
        """Images: the density of dequantised 8-bit images equal to the bound on P(x) over each
        bin; points: a Gaussian-decoder density; a lower bound either way."""
        return {"space": "dequantized" if self.is_image else "continuous", "kind": "lower-bound"}

    # -- training -----------------------------------------------------------------------------
    def predict_eps(self, net: nn.Module, xt: Tensor, t: Tensor) -> Tensor:
        """eps_theta(x_t, t) for integer timesteps ``t [N]``."""
        return net(xt, t.to(xt.device).float())

    def simple_loss(self, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        """Ho et al. Algorithm 1 / eq. 14: mean squared error of the predicted noise, t uniform
        on {1..T}; t and eps come from the training noise generator."""
        x0 = ctx.batch["x"]
        g = ctx.generator
        t = torch.randint(1, self.T + 1, (len(x0),), generator=g, device=g.device).to(x0.device)
        eps = torch.randn(x0.shape, generator=g, device=g.device).to(x0.device, x0.dtype)
        xt = self.sched.q_sample(x0, t, eps)
        loss = (self.predict_eps(ctx.net("eps"), xt, t) - eps).pow(2).mean()
        return loss, {"loss/simple": loss.detach()}

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, n: int, *, generator: torch.Generator | None = None, cond: Any = None,
               **options: Any) -> Tensor:
        """``n`` samples by the ``sampler`` option (``ancestral`` or ``ddim``) in ``steps``
        network passes; ``eta`` (ddim) and ``clip`` (clip x0_hat to [-1, 1]; images: on)."""
        clip = options.pop("clip", self.is_image)
        merged = {**self.default_options, **options}
        if "eta" not in options and merged["sampler"] == "ancestral":
            merged["eta"] = 0.0  # model.eta is the DDIM default
        opts = check_options("ddpm", self.T, merged)
        x = torch.randn(n, *self.sample_shape, generator=generator, device=self.device)
        x = self.reverse(x, opts["sampler"], opts["steps"], opts["eta"], bool(clip), generator)
        return x.clamp(-1, 1) if self.is_image else x

    def reverse(self, x: Tensor, sampler: str, steps: int, eta: float, clip: bool,
                generator: torch.Generator | None) -> Tensor:
        """Run the reverse chain from ``x = x_T`` over the sub-sequence of ``steps`` timesteps;
        returns x_0 (the predicted x_0 of the last step)."""
        taus = subsequence(self.T, steps)
        ab = self.sched.abar
        for i in reversed(range(len(taus))):
            t, s = taus[i], (taus[i - 1] if i > 0 else 0)
            tt = torch.full((len(x),), t, dtype=torch.long)
            e = self.predict_eps(self.eps, x, tt)
            abt, abs_ = float(ab[t]), float(ab[s])
            x0 = (x - math.sqrt(1 - abt) * e) / math.sqrt(abt)
            if clip:
                x0 = x0.clamp(-1, 1)
            if s == 0:
                return x0
            e = (x - math.sqrt(abt) * x0) / math.sqrt(1 - abt)  # the noise consistent with x0
            beta = 1 - abt / abs_  # the respaced beta of step s -> t
            if sampler == "ancestral":
                mean = (math.sqrt(abs_) * beta / (1 - abt)) * x0 \
                    + (math.sqrt(1 - beta) * (1 - abs_) / (1 - abt)) * x
                if self.p.variance == "beta":  # = beta_t itself when steps = T
                    var = beta
                else:
                    var = (1 - abs_) / (1 - abt) * beta
                x = mean + math.sqrt(var) * self._noise(x, generator)
            else:
                var = eta ** 2 * (1 - abs_) / (1 - abt) * beta
                x = math.sqrt(abs_) * x0 + math.sqrt(max(1 - abs_ - var, 0.0)) * e
                if eta > 0:
                    x = x + math.sqrt(var) * self._noise(x, generator)
        return x

    def preview(self, ds: Any, n: int = 64, seed: int = 0,
                nets: dict[str, nn.Module] | None = None) -> tuple[Tensor, int | None]:
        """The training-time sample grids use DDIM with at most 50 steps: T ancestral steps for
        every grid would cost more than the training between grids on a CPU."""
        return self.draw(n, seed, nets=nets, sampler="ddim", steps=min(self.T, 50), eta=0.0), None

    @staticmethod
    def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    # -- the variational bound ----------------------------------------------------------------
    def _x0(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.sample_shape:
            shape = ", ".join(map(str, self.sample_shape))
            raise ConfigError(f"x must have shape [N, {shape}] like the training data, got "
                              f"{list(x.shape)}.")
        return levels(x) / 127.5 - 1 if self.is_image else x

    def prior_term(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per example, ``[N]`` (float64)."""
        x0 = x0.double()
        abT = float(self.sched.abar[self.T])
        mean, var = math.sqrt(abT) * x0, torch.full_like(x0, 1 - abT)
        return normal_kl(mean, var, torch.zeros_like(x0), torch.ones_like(x0)).flatten(1).sum(1)

    def kl_term(self, x0: Tensor, t: Tensor, generator: torch.Generator | None) -> Tensor:
        """L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) per example for
        timesteps ``t [N]`` (each >= 2), x_t drawn from q(x_t | x_0); ``[N]`` float64."""
        eps = self._noise(x0, generator)
        xt = self.sched.q_sample(x0, t, eps)
        x0_hat = self.sched.predict_x0(xt, t, self.predict_eps(self.eps, xt, t))
        m_q, v_q = self.sched.q_posterior(x0.double(), xt.double(), t)
        m_p, _ = self.sched.q_posterior(x0_hat.double(), xt.double(), t)
        v_p = self.sigma2[t.cpu()].to(x0.device).view(-1, *([1] * (x0.dim() - 1))).expand_as(m_p)
        return normal_kl(m_q, v_q, m_p, v_p).flatten(1).sum(1)

    def decoder_term(self, x0: Tensor, generator: torch.Generator | None) -> Tensor:
        """L_0 = -log p_theta(x_0 | x_1) per example, ``[N]`` float64: the discretised
        Gaussian (images) or the Gaussian density (points) of N(mu_theta(x_1, 1), sigma_1^2)."""
        t = torch.ones(len(x0), dtype=torch.long)
        xt = self.sched.q_sample(x0, t, self._noise(x0, generator))
        x0_hat = self.sched.predict_x0(xt, t, self.predict_eps(self.eps, xt, t))
        mean, _ = self.sched.q_posterior(x0_hat.double(), xt.double(), t)  # = x0_hat at t = 1
        var = float(self.sigma2[1])
        if self.is_image:
            ll = discretized_gaussian_log_likelihood(x0, mean, torch.tensor(math.sqrt(var)))
        else:
            ll = -0.5 * (_LOG_2PI + math.log(var) + (x0.double() - mean) ** 2 / var)
        return -ll.flatten(1).sum(1)

    def vlb_terms(self, x: Tensor, timesteps: int,
                  generator: torch.Generator | None) -> dict[str, Tensor]:
        """The bound's parts per example (nats, float64 ``[N]``): ``prior`` (L_T), ``diffusion``
        (the stratified estimate of sum_{t=2}^T L_{t-1}) and ``decoder`` (L_0)."""
        x0 = self._x0(x)
        diff = torch.zeros(len(x0), dtype=torch.float64, device=x0.device)
        for t, size in stratified_timesteps(self.T, timesteps, len(x0), generator):
            diff = diff + size * self.kl_term(x0, t, generator)
        return {"prior": self.prior_term(x0), "diffusion": diff,
                "decoder": self.decoder_term(x0, generator)}

    def log_prob(self, x: Tensor, *, generator: torch.Generator | None = None,
                 timesteps: int | None = None, **options: Any) -> Tensor:
        """The variational lower bound ``-L`` per example in nats, ``[N]``: on images of the
        8-bit image's probability, returned as the dequantised density (+ D log 256; see the
        module docstring), on points a density. ``timesteps``: strata of {2..T} on which the
        sum of the L_{t-1} is estimated (default ``model.nll_timesteps``)."""
        if options:
            raise ConfigError(f"model 'ddpm' has no log_prob option(s) "
                              f"{', '.join(sorted(options))} (it takes timesteps).")
        k = self.p.nll_timesteps if timesteps is None else timesteps
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"timesteps must be a positive integer, got {k!r}.")
        terms = self.vlb_terms(x, k, generator)
        lp = -(terms["prior"] + terms["diffusion"] + terms["decoder"])
        if self.is_image:
            lp = lp + math.prod(self.sample_shape) * math.log(256)
        return lp


# --- helpers shared with the score family -------------------------------------------------------
def unet_sizes(cfg: Any) -> ImageSizes:
    """The image sizes of the time-conditioned networks: any with ``model.arch=mlp``, else
    square sizes the U-Net halves ``model.levels - 1`` times."""
    lv = int(cfg.model.get("levels", 3))
    if cfg.model.get("arch", "auto") == "mlp":
        return ANY_SIZE
    return ImageSizes(lambda n: unet_accepts(n, lv),
                      f"square sizes divisible by {2 ** (lv - 1)} (model.levels={lv})")


def build_net(shape: tuple[int, ...], is_image: bool, arch: str, p: Any) -> nn.Module:
    """The noise-conditioned network: a :class:`TimeUNet` for images, a :class:`TimeMLP` for
    points (``arch=mlp`` on images flattens them)."""
    if arch == "unet":
        if not is_image:
            raise ConfigError("model.arch=unet needs images; use model.arch=mlp for points.")
        if p.levels < 1:
            raise ConfigError(f"model.levels must be >= 1, got {p.levels}.")
        return TimeUNet(shape[0], p.width, p.levels, p.attention, p.dropout)
    dim = math.prod(shape)
    net = TimeMLP(dim, p.hidden, p.depth)
    return net if not is_image else _Flat(net, shape)


class _Flat(nn.Module):
    """An MLP on flattened images: ``[N, C, H, W] -> [N, C, H, W]``."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.net, self.shape = net, tuple(shape)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(x.flatten(1), t).view(-1, *self.shape)


def check_options(model: str, T: int, opts: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Validate DDPM sampling options ``sampler``/``steps``/``eta``; one-line errors."""
    unknown = set(opts) - {"sampler", "steps", "eta"}
    if unknown:
        raise ConfigError(f"model '{model}' has no sampling option(s) "
                          f"{', '.join(sorted(unknown))} (it takes sampler, steps, eta, clip).")
    sampler, steps, eta = opts["sampler"], opts["steps"], opts["eta"]
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown {prefix}sampler '{sampler}'; samplers: "
                          f"{', '.join(SAMPLERS)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ConfigError(f"{prefix}{'sample_' if prefix else ''}steps must be an integer in "
                          f"[1, T = {T}], got {steps!r}.")
    if isinstance(eta, bool) or not isinstance(eta, int | float) or eta < 0:
        raise ConfigError(f"{prefix}eta must be a number >= 0, got {eta!r}.")
    if sampler == "ancestral" and eta != 0 and not prefix:
        raise ConfigError("eta applies to sampler=ddim (ancestral sampling is DDIM's eta = 1 "
                          "with the posterior variance).")
    return {"sampler": sampler, "steps": int(steps), "eta": float(eta)}
