"""VAE: the variational autoencoder of Kingma & Welling 2014, "Auto-Encoding Variational Bayes"
(seed 000/001 §3.2 "From AE to VAE" and §3.2.4 "The Limits of VAE", deck 003 "Variational
Autoencoder").

An encoder ``E`` maps x to the mean and log-variance of a diagonal Gaussian q(z|x); a decoder
``dec`` maps z to the parameters of p(x|z). Training maximises the evidence lower bound

    ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || N(0, I)) <= log p(x)

(seed eq. 4, deck 003 "Objective (ELBO)") with one reparameterised sample z = mu + sigma * eps,
eps ~ N(0, I), and the KL term in closed form (the paper's SGVB estimator B, eq. 7 and
Appendix B). Everything is in nats per image (per point for 2-D data).

Decoders (``model.decoder``):

- ``bernoulli`` (images): p(x|z) = prod Bernoulli(x_i; sigmoid(logit_i)) over binary pixels. The
  grey images (in [-1, 1]) are read as probabilities p = (x + 1) / 2; training targets are
  *dynamically binarised*, a fresh Bernoulli(p) draw per pixel at every step from the training
  noise generator (Salakhutdinov & Murray 2008; Burda et al. 2016). Evaluation (``log_prob``,
  ``encode``) uses one *fixed* binarisation: a threshold field u ~ U[0, 1)^(C x H x W) drawn once
  from ``torch.Generator().manual_seed(EVAL_BINARIZATION_SEED)``; pixel i is 1 when p_i > u_i.
  Each image is thus one Bernoulli(p) draw, always the same one, independent of the batching
  (images share the thresholds, so their draws are not independent of each other); binary
  inputs (p in {0, 1}) are unchanged.
- ``gaussian``: p(x|z) = prod N(x_i; m_i, sigma_i^2) with a learned log-sigma, per pixel or per
  coordinate (``model.sigma=pixel``) or one for all (``global``). On images the 256 grey levels
  k are *dequantised* (Theis et al. 2016, "A note on the evaluation of generative models"):
  y = (k + u) / 256 with u ~ U[0, 1), so y lies in [0, 1]^D and the density is a density; m is a
  sigmoid. ``log_prob`` is then in nats per image of the density on [0, 1]^D, and
  ``E_u[log p(y)] - D log 256`` lower-bounds the log-probability of the 8-bit image (bits per
  dimension = ``(D log 256 - log_prob) / (D log 2)``). On 2-D points the data are modelled as
  they are (m linear, nats per point in the data's units). Adam moves log-sigma by about the
  learning rate per step, so it learns at ``model.sigma_lr_mult`` (10) times the decoder's rate.

Architectures (``model.arch``): ``mlp``, the paper's MLP (Appendix C: one hidden layer of 500
tanh units for MNIST; ``hidden``/``depth`` configurable), for images and points; ``conv``, a
DCGAN-like pair for images (strided 4x4 convolutions, the stage count from the resolution
as in DCGAN, ``width`` channels doubling per stage) without batch norm, so the networks compute
the same function in training and in evaluation (an image's likelihood never depends on the
other images of its batch).

``log_prob(x, k=1)`` is the ELBO per image; with ``k > 1`` the importance-weighted bound of
Burda et al. 2016 ("Importance Weighted Autoencoders"), log (1/k) sum_j p(x, z_j) / q(z_j|x),
z_j ~ q(z|x), which increases with k toward log p(x); chunked over k so that k = 5000 fits.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.sizes import ANY_SIZE, STAGED, ImageSizes
from ..errors import ConfigError
from ..games.phase import Phase, StepContext
from ..likelihood import (
    EVAL_BINARIZATION_SEED,
    dequantize,
    dynamic_binarize,
    fixed_binarize,
)
from ..nn import conv_stages, downsampling_trunk, mlp, prod
from ..registry import MODELS
from .base import ModelFamily, ParamGroup, Params, refuse_gan_keys

__all__ = ["EVAL_BINARIZATION_SEED", "VAE", "bernoulli_log_lik", "gaussian_kl",
           "gaussian_log_lik", "log_normal"]

#: Decoder rows per chunk of the importance-weighted bound: k samples x batch images are decoded
#: this many at a time (the MLP decoder's 784 logits: ~50 MB per chunk in float32).
IW_CHUNK_ROWS = 16384
_LOG_2PI = math.log(2 * math.pi)


# --- the densities ------------------------------------------------------------------------------
def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row, ``[N]`` (Kingma & Welling, Appendix B):
    ``0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def log_normal(x: Tensor, mean: Tensor, log_sigma: Tensor) -> Tensor:
    """log N(x; mean, exp(log_sigma)^2) summed over the last dimension."""
    return (-0.5 * _LOG_2PI - log_sigma - 0.5 * ((x - mean) * torch.exp(-log_sigma)).pow(2)).sum(-1)


def bernoulli_log_lik(x: Tensor, logits: Tensor) -> Tensor:
    """log prod_i Bernoulli(x_i; sigmoid(logits_i)) over the last dimension; x in {0, 1}.

    ``x * l - softplus(l)``: the stable form of ``x log s(l) + (1 - x) log(1 - s(l))``.
    """
    return (x * logits - F.softplus(logits)).sum(-1)


def gaussian_log_lik(x: Tensor, mean: Tensor, log_sigma: Tensor) -> Tensor:
    """log prod_i N(x_i; mean_i, sigma_i^2) over the last dimension (as :func:`log_normal`)."""
    return log_normal(x, mean, log_sigma)


# --- networks -----------------------------------------------------------------------------------
class MLPEncoder(nn.Module):
    """x [N, *shape] -> (mu, logvar) of q(z|x), each [N, latent]."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.net = mlp(prod(shape), hidden, depth, 2 * latent_dim, nn.Tanh())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(x.flatten(1)).chunk(2, dim=1)
        return mu, logvar


class ConvEncoder(nn.Module):
    """image [N, C, R, R] -> (mu, logvar) of q(z|x): DCGAN's discriminator trunk (4x4 stride-2
    convolutions, LeakyReLU 0.2), no batch norm, a linear head to 2 x latent."""

    def __init__(self, channels: int, resolution: int, latent_dim: int, width: int,
                 max_width: int) -> None:
        super().__init__()
        self.trunk, features = downsampling_trunk(channels, resolution, width, max_width)
        self.head = nn.Linear(features, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x).flatten(1)  # [N, C_last * s0 * s0]
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """z [N, latent] -> the parameters of p(x|z): ``body(z)`` gives logits (Bernoulli) or the
    pre-activation of the mean (Gaussian), reshaped to ``shape``; ``log_sigma`` is the learned
    Gaussian scale, ``[*shape]`` per pixel or ``[1]`` global (absent for Bernoulli)."""

    def __init__(self, body: nn.Module, shape: tuple[int, ...], sigma: str | None) -> None:
        super().__init__()
        self.body = body
        self.shape = tuple(shape)
        self.log_sigma: nn.Parameter | None = None
        if sigma is not None:
            self.log_sigma = nn.Parameter(torch.zeros(self.shape if sigma == "pixel" else (1,)))

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z).reshape(-1, *self.shape)


class ConvDecoderBody(nn.Module):
    """z [N, latent] -> [N, C, R, R]: DCGAN's generator (a linear projection to s0 x s0 maps,
    4x4 stride-2 transposed convolutions, ReLU) without batch norm and without output
    activation (the decoder's distribution applies it)."""

    def __init__(self, channels: int, resolution: int, latent_dim: int, width: int,
                 max_width: int) -> None:
        super().__init__()
        k, s0 = conv_stages(resolution)
        chans = [min(width * 2 ** i, max_width) for i in reversed(range(k))]  # e.g. [64, 32]
        self.s0, self.c0 = s0, chans[0]
        self.project = nn.Linear(latent_dim, chans[0] * s0 * s0)
        ups: list[nn.Module] = []
        for i in range(k - 1):
            ups += [nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, 1), nn.ReLU()]
        ups.append(nn.ConvTranspose2d(chans[-1], channels, 4, 2, 1))
        self.ups = nn.Sequential(*ups)

    def forward(self, z: Tensor) -> Tensor:
        h = torch.relu(self.project(z)).view(-1, self.c0, self.s0, self.s0)  # [N, C0, s0, s0]
        return self.ups(h)


# --- the family ---------------------------------------------------------------------------------
class VAEParams(Params):
    arch: Literal["mlp", "conv"] = "mlp"
    latent_dim: int = 20  # the paper's MNIST runs used 3-200; 20 is its common middle
    # None: bernoulli on images, gaussian on points
    decoder: Literal["bernoulli", "gaussian"] | None = None
    sigma: Literal["pixel", "global"] = "pixel"  # the Gaussian decoder's learned log-sigma
    # Adam moves a parameter by about lr per step, so log-sigma would need ~5,000 steps at 1e-3
    # to fall from 0 toward log(1/256); its lr is this multiple of the decoder's (measured on
    # MNIST-5k, MLP 200 units, 1,500 steps: 6.17 bits/dim with x10, 7.52 with x1).
    sigma_lr_mult: float = 10.0
    hidden: int = 500  # mlp: units per hidden layer (500 for MNIST in the paper)
    depth: int = 1  # mlp: hidden layers of the encoder and of the decoder (1 in the paper)
    width: int = 32  # conv: channels of the highest-resolution stage, doubling per stage
    max_width: int = 256


@MODELS.register("vae", description="variational autoencoder (Kingma & Welling 2014, "
                                    "'Auto-Encoding Variational Bayes'); ELBO, IWAE bound")
class VAE(ModelFamily):
    """The variational autoencoder (Kingma & Welling 2014): encoder ``E``, decoder ``dec``, one
    ``ELBO`` phase; samples, log-likelihood bounds, codes (see the module docstring)."""

    @classmethod
    def valid_image_sizes(cls, cfg: Any) -> ImageSizes:
        """Strided conv stages for images (any size with the MLP architecture)."""
        return STAGED if cfg.model.get("arch", "auto") in ('conv',) else ANY_SIZE

    Params = VAEParams
    defaults: ClassVar[dict[str, Any]] = {
        # Adam (Kingma & Ba 2015) with its paper's defaults; Kingma & Welling used Adagrad.
        "optim": {"lr": 1e-3, "betas": (0.9, 0.999)},
        "train": {"batch_size": 100},  # the paper's minibatch M = 100
    }
    capabilities: ClassVar[frozenset[str]] = frozenset({"sample", "log_prob", "encode", "decode"})
    data_kinds: ClassVar[tuple[str, ...]] = ("images", "points")
    # No EMA: the ELBO is a likelihood bound maximised by plain stochastic gradient ascent, not a
    # game whose iterates circle an equilibrium (the reason GANs average G's weights), and an
    # averaged decoder alone would no longer match the encoder's posterior that log_prob and
    # encode use.
    ema_networks: ClassVar[tuple[str, ...]] = ()
    adversarial: ClassVar[bool] = False
    tiny: ClassVar[dict[str, Any]] = {"model.hidden": 16, "model.latent_dim": 4}
    tiny_data: ClassVar[str] = "images"

    E: nn.Module
    dec: Decoder

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        self.is_image = bool(info.get("is_image"))
        self.latent_dim = p.latent_dim
        self.decoder = p.decoder or ("bernoulli" if self.is_image else "gaussian")
        if p.latent_dim < 1:
            raise ConfigError(f"model.latent_dim must be >= 1, got {p.latent_dim}.")
        if p.sigma_lr_mult <= 0:
            raise ConfigError(f"model.sigma_lr_mult must be > 0, got {p.sigma_lr_mult}.")
        if not self.is_image and self.decoder == "bernoulli":
            raise ConfigError(f"model.decoder=bernoulli models binary pixels; '{info['name']}' "
                              f"holds points, use model.decoder=gaussian.")
        if not self.is_image and p.arch == "conv":
            raise ConfigError(f"model.arch=conv needs images; '{info['name']}' holds points, "
                              f"use model.arch=mlp.")
        shape = self.sample_shape
        if p.arch == "mlp":
            if p.hidden < 1 or p.depth < 0:
                raise ConfigError(f"model.hidden must be >= 1 and model.depth >= 0, got "
                                  f"{p.hidden} and {p.depth}.")
            self.E = MLPEncoder(shape, p.latent_dim, p.hidden, p.depth)
            body: nn.Module = mlp(p.latent_dim, p.hidden, p.depth, prod(shape), nn.Tanh())
        else:
            c, r = shape[0], shape[-1]
            if shape[-2] != r:
                raise ConfigError(f"model.arch=conv needs square images, got {shape[-2]}x{r} "
                                  f"(resize with data.image_size).")
            self.E = ConvEncoder(c, r, p.latent_dim, p.width, p.max_width)
            body = ConvDecoderBody(c, r, p.latent_dim, p.width, p.max_width)
        self.dec = Decoder(body, shape, p.sigma if self.decoder == "gaussian" else None)

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        """Besides ``tricks.*`` (refused by the base class), refuse the adversarial loss and the
        G/D optimizer keys, which a VAE would silently ignore."""
        super().validate_config(cfg)
        refuse_gan_keys(cfg)

    # -- declarations -----------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"E": self.E, "dec": self.dec}

    def phases(self) -> list[Phase]:
        return [Phase("ELBO", ("E", "dec"), self.elbo_loss)]

    def param_groups(self, name: str, net: nn.Module) -> list[ParamGroup]:
        """The Gaussian decoder's log-sigma learns at ``model.sigma_lr_mult`` x the lr."""
        sigma = getattr(net, "log_sigma", None)
        if name != "dec" or sigma is None or not sigma.requires_grad:
            return super().param_groups(name, net)
        body = [p for p in net.parameters() if p.requires_grad and p is not sigma]
        return [ParamGroup(body, name="body"),
                ParamGroup([sigma], lr_mult=self.p.sigma_lr_mult, name="log_sigma")]

    # -- data in the decoder's space --------------------------------------------------------
    def _check(self, x: Tensor, what: str = "x") -> Tensor:
        if tuple(x.shape[1:]) != self.sample_shape:
            shape = ", ".join(map(str, self.sample_shape))
            raise ConfigError(f"{what} must have shape [N, {shape}] like the training data, got "
                              f"{list(x.shape)}.")
        return x

    def train_target(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """What the decoder models during training: a dynamic binarisation (Bernoulli), a
        dequantisation (Gaussian images) or the data itself (points)."""
        if self.decoder == "bernoulli":
            return dynamic_binarize(x, generator)
        if self.is_image:
            return dequantize(x, generator)
        return x

    def eval_target(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """What ``log_prob``/``encode`` evaluate: the fixed binarisation (Bernoulli), a
        dequantisation with ``generator`` (Gaussian images) or the data itself (points)."""
        if self.decoder == "bernoulli":
            return self.binarize(x)
        if self.is_image:
            return dequantize(x, generator)
        return x

    def binarize(self, x: Tensor) -> Tensor:
        """The fixed evaluation binarisation of images ``x`` in [-1, 1], shared by every binary
        model (:func:`gankit.likelihood.fixed_binarize`)."""
        return fixed_binarize(x)

    def likelihood(self) -> dict[str, str]:
        """Bernoulli: of the fixed binarisation; Gaussian: a density of dequantised images
        or of points; always a lower bound (ELBO / IWAE)."""
        space = ("binary" if self.decoder == "bernoulli" else
                 "dequantized" if self.is_image else "continuous")
        return {"space": space, "kind": "lower-bound"}

    def encoder_input(self, t: Tensor) -> Tensor:
        """The encoder sees targets in [0, 1] rescaled to [-1, 1] (centred); points as they are."""
        return t * 2 - 1 if self.is_image else t

    # -- the model's pieces -----------------------------------------------------------------
    def posterior(self, E: nn.Module, t: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of q(z|t), each ``[N, latent]``."""
        return E(self.encoder_input(t))

    def rec_log_lik(self, dec: nn.Module, z: Tensor, t: Tensor) -> Tensor:
        """log p(t|z) per row, ``[N]``, for ``z [N, latent]`` and targets ``t [N, *shape]``."""
        out = dec(z).flatten(1)  # [N, D] logits or mean pre-activation
        t = t.flatten(1)
        if self.decoder == "bernoulli":
            return bernoulli_log_lik(t, out)
        mean = torch.sigmoid(out) if self.is_image else out
        return gaussian_log_lik(t, mean, dec.log_sigma.flatten().expand_as(mean))

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
        """z = mu + sigma * eps (Kingma & Welling §2.4)."""
        return mu + torch.exp(0.5 * logvar) * eps

    def elbo_terms(self, E: nn.Module, dec: nn.Module, t: Tensor,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """``(rec, kl)`` per image, ``[N]`` each: one-sample log p(t|z) and the analytic KL."""
        mu, logvar = self.posterior(E, t)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = self.reparameterize(mu, logvar, eps)
        return self.rec_log_lik(dec, z, t), gaussian_kl(mu, logvar)

    def elbo_loss(self, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        """The negative ELBO averaged over the batch, in nats per image; the target draw
        (binarisation/dequantisation) and eps both come from the training noise generator."""
        t = self.train_target(ctx.batch["x"], ctx.generator)
        rec, kl = self.elbo_terms(ctx.net("E"), ctx.net("dec"), t, ctx.generator)
        rec_m, kl_m = rec.mean(), kl.mean()
        loss = kl_m - rec_m
        return loss, {"loss/elbo": loss.detach(), "loss/rec": -rec_m.detach(),
                      "loss/kl": kl_m.detach()}

    def log_weights(self, t: Tensor, mu: Tensor, logvar: Tensor, k: int,
                    generator: torch.Generator | None) -> Tensor:
        """Importance log-weights ``[k, N]`` of targets ``t [N, *shape]`` under the posterior
        ``(mu, logvar)`` of q(z|t): log p(t|z_j) + log p(z_j) - log q(z_j|t), z_j ~ q(z|t)."""
        n, L = mu.shape
        eps = torch.randn((k, n, L), generator=generator, device=mu.device, dtype=mu.dtype)
        z = self.reparameterize(mu, logvar, eps)  # [k, N, L]
        rec = self.rec_log_lik(self.dec, z.flatten(0, 1),
                               t.unsqueeze(0).expand(k, *t.shape).flatten(0, 1)).view(k, n)
        log_p_z = (-0.5 * _LOG_2PI - 0.5 * z.pow(2)).sum(-1)  # [k, N]
        # (z - mu) / sigma = eps
        log_q_z = (-0.5 * _LOG_2PI - 0.5 * logvar - 0.5 * eps.pow(2)).sum(-1)
        return rec + log_p_z - log_q_z

    def iwae_bound(self, t: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        """The importance-weighted bound ``[N]`` of targets ``t`` (Burda et al. 2016 eq. 8),
        log (1/k) sum_j w_j, as a streaming log-sum-exp over chunks of at most
        ``IW_CHUNK_ROWS`` decoded rows, so only one chunk of weights is ever held. k = 1 is the
        one-sample ELBO with a Monte-Carlo KL (Kingma & Welling's estimator A), equal in
        expectation to ``rec - kl`` of :meth:`elbo_terms`."""
        mu, logvar = self.posterior(self.E, t)  # [N, L] each, encoded once for all k
        total = torch.full((len(t),), -math.inf, device=t.device, dtype=mu.dtype)
        chunk = max(1, IW_CHUNK_ROWS // len(t))
        for j in range(0, k, chunk):
            lw = self.log_weights(t, mu, logvar, min(chunk, k - j), generator)  # [m, N]
            total = torch.logaddexp(total, torch.logsumexp(lw, 0))
        return total - math.log(k)

    # -- capabilities -----------------------------------------------------------------------
    def _to_data(self, out: Tensor, generator: torch.Generator | None, mean: bool) -> Tensor:
        """Decoder output -> data space: images in [-1, 1], points as they are."""
        if self.decoder == "bernoulli":
            p = torch.sigmoid(out)
            return (p if mean else torch.bernoulli(p, generator=generator)) * 2 - 1
        if not self.is_image:
            if mean:
                return out
            noise = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
            return out + self.dec.log_sigma.exp() * noise
        m = torch.sigmoid(out)
        if mean:  # the grey level whose dequantisation bin is centred at m
            return ((256 * m - 0.5) / 127.5 - 1).clamp(-1, 1)
        noise = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
        y = m + self.dec.log_sigma.exp() * noise  # a draw of the dequantised density
        return (256 * y).floor().clamp(0, 255) / 127.5 - 1  # its 8-bit grey level

    def decode(self, z: Tensor, *, generator: torch.Generator | None = None,
               mean: bool | None = None, **options: Any) -> Tensor:
        """Samples from codes ``z [N, latent]``: the decoder's mean (images in [-1, 1]), or with
        ``mean=False`` a draw of p(x|z) (binary pixels, 8-bit grey levels, noisy points).
        Default: the mean for images, a draw for points (the points' noise is part of the
        model; an image's pixel noise is not what one wants to look at)."""
        if options:
            raise ConfigError(f"model 'vae' has no option(s) {', '.join(sorted(options))} "
                              f"(it takes mean).")
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(f"codes must have shape [N, {self.latent_dim}], got {list(z.shape)}.")
        use_mean = self.is_image if mean is None else bool(mean)
        return self._to_data(self.dec(z.to(self.device)), generator, use_mean)

    def sample(self, n: int, *, generator: torch.Generator | None = None, cond: Any = None,
               mean: bool | None = None, **options: Any) -> Tensor:
        """``n`` samples: prior draws z ~ N(0, I) decoded by :meth:`decode` (``mean`` as there)."""
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        return self.decode(z, generator=generator, mean=mean, **options)

    def log_prob(self, x: Tensor, *, generator: torch.Generator | None = None, k: int = 1,
                 **options: Any) -> Tensor:
        """A lower bound of log p(x) per sample in nats, ``[N]``: the ELBO (one reparameterised
        sample, analytic KL) with ``k=1``, the importance-weighted bound with ``k > 1``.

        Bernoulli: of the fixed binarisation of x; Gaussian images: of one dequantisation of x
        (density on [0, 1]^D); points: of x in its own units. Randomness from ``generator``.
        """
        if options:
            raise ConfigError(f"model 'vae' has no log_prob option(s) "
                              f"{', '.join(sorted(options))} (it takes k).")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}.")
        t = self.eval_target(self._check(x), generator)
        if k == 1:
            rec, kl = self.elbo_terms(self.E, self.dec, t, generator)
            return rec - kl
        return self.iwae_bound(t, int(k), generator)

    def encode(self, x: Tensor, *, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """The posterior mean E[z|x] ``[N, latent]`` of each sample (Bernoulli: of its fixed
        binarisation; Gaussian images: of its grey levels at their bin centres)."""
        if options:
            raise ConfigError(f"model 'vae' has no encode option(s) {', '.join(sorted(options))}.")
        x = self._check(x)
        if self.decoder == "bernoulli":
            t = self.binarize(x)
        elif self.is_image:
            t = (((x + 1) * 127.5).round().clamp(0, 255) + 0.5) / 256
        else:
            t = x
        return self.posterior(self.E, t)[0]
