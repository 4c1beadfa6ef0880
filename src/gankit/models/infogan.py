"""InfoGAN: interpretable latent codes by maximising their mutual information with G's output.

Chen, Duan, Houthooft, Schulman, Sutskever & Abbeel 2016 ("InfoGAN: Interpretable Representation
Learning by Information Maximizing Generative Adversarial Nets"; survey 004 "GAN Variants", deck 003
"Mode Collapse: 5. Mutual Information Regularization"). G's input is incompressible noise ``z`` plus
a latent code ``c``: here one categorical code of ``model.n_cat`` categories (one-hot) and
``model.n_cont`` continuous codes ~ U[-1, 1] (the paper's MNIST setting: 62 noise dims, Cat(10),
two U[-1, 1]). An auxiliary head ``Q`` on D's convolutional body predicts the code from the image,
and the variational lower bound of the mutual information (paper eq. 4-5)

    L_I(G, Q) = E_{c ~ P(c), x ~ G(z, c)} [log Q(c | x)] + H(c)  <=  I(c; G(z, c))

is maximised by G and Q with weight ``model.lambda_info`` (paper: 1). ``-log Q(c | x)`` is the
cross-entropy of Q's categorical logits plus, for the continuous codes, the Gaussian NLL
``0.5 log 2 pi + log sigma + (c - mu)^2 / (2 sigma^2)`` summed over codes, with Q predicting
``mu`` and a fixed ``sigma = 1`` (the authors' code: ``Uniform(1, fix_std=True)``) or, with
``model.learn_std=true``, also ``log sigma`` (the factored Gaussian of the paper's appendix).

Who owns which parameters (no parameter is in two optimizers):

* ``D``: the DCGAN discriminator, i.e. the shared convolutional body *and* the real/fake head;
  stepped by the D phase. With ``model.info_in_d`` (default, as the authors' code where D's
  optimizer also minimises ``-lambda L_I``) the body also descends ``-lambda L_I`` on detached
  fakes in that phase, through the frozen Q head.
* ``Q``: only the Q head (FC-BN-LReLU-FC, as the paper's MNIST architecture); it is D-side,
  so it gets ``optim.lr_d``/``betas_d``.
* ``G``: the generator. The G phase (``opt=("G", "Q")``) minimises the adversarial G loss plus
  ``-lambda L_I`` in one backward pass and steps both G and Q; D's body is frozen there.

Optimisers follow the paper's appendix (Adam, lr 1e-3 for G and 2e-4 for D/Q, beta1 0.5).
The model is unconditional (``sample(labels=...)`` is refused); fix codes with
:meth:`InfoGAN.generate_with_codes`, e.g. one row per category::

    g = gankit.load(run_dir)
    z = torch.randn(10, g.model.noise_dim).repeat(10, 1)          # same noise in every row
    x = g.model.generate_with_codes(g.G, z, cat=torch.arange(10).repeat_interleave(10))

``sample(truncation=t)`` truncates the incompressible noise only (entries with ``|z| > t`` are
redrawn); the codes keep their own distributions (a one-hot category, U[-1, 1] continuous codes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..data.sizes import STAGED
from ..errors import ConfigError
from ..nn import dcgan_init, spectral_norm_all
from ..registry import MODELS
from ..tricks import d_layer_kwargs
from .base import DView, Game, GANFamily, Phase, Terms, adversarial_phases
from .dcgan import DCDiscriminator, DCGANParams, DCGenerator

LOG_2PI = math.log(2 * math.pi)
MIN_LOG_STD = math.log(1e-2)  # learned sigma >= 0.01, so the NLL stays bounded below


class InfoGANParams(DCGANParams):
    latent_dim: int = Field(62, ge=1)  # incompressible noise dims (the codes come on top)
    n_cat: int = Field(10, ge=0)  # categories of the one categorical code (0: none)
    n_cont: int = Field(2, ge=0)  # continuous codes ~ U[-1, 1]
    lambda_info: float = 1.0
    learn_std: bool = False  # Q predicts log sigma of the continuous codes (else sigma = 1)
    q_hidden: int = 128
    info_in_d: bool = True  # D's shared body also minimises the info loss in the D phase


class QHead(nn.Module):
    """D's penultimate features [N, F] -> code parameters [N, n_cat + n_cont (+ n_cont)]."""

    def __init__(self, in_features: int, hidden: int, n_cat: int, n_cont: int,
                 learn_std: bool) -> None:
        super().__init__()
        self.n_cat, self.n_cont, self.learn_std = n_cat, n_cont, learn_std
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden),
                                 nn.LeakyReLU(0.2, True),
                                 nn.Linear(hidden, n_cat + n_cont * (2 if learn_std else 1)))
        dcgan_init(self)

    def forward(self, h: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        """``(cat_logits [N, n_cat] or None, mu [N, n_cont], log_std [N, n_cont])``."""
        out = self.net(h)
        cat = out[:, :self.n_cat] if self.n_cat else None
        mu = out[:, self.n_cat:self.n_cat + self.n_cont]
        if self.learn_std:
            log_std = out[:, self.n_cat + self.n_cont:].clamp(min=MIN_LOG_STD)
        else:
            log_std = torch.zeros_like(mu)
        return cat, mu, log_std


def info_nll(q: tuple[Tensor | None, Tensor, Tensor], cat: Tensor | None,
             cont: Tensor) -> tuple[Tensor, Tensor]:
    """``-log Q(c | x)`` split as (categorical cross-entropy, continuous Gaussian NLL summed over
    codes), both averaged over the batch; a part that does not exist is 0."""
    cat_logits, mu, log_std = q
    l_cat = F.cross_entropy(cat_logits, cat) if cat_logits is not None else mu.new_zeros(())
    if mu.shape[1]:
        nll = 0.5 * LOG_2PI + log_std + 0.5 * ((cont - mu) * torch.exp(-log_std)).pow(2)
        l_cont = nll.sum(1).mean()
    else:
        l_cont = mu.new_zeros(())
    return l_cat, l_cont


@MODELS.register("infogan", description="InfoGAN: categorical + continuous latent codes, "
                                         "mutual-information term (Chen et al. 2016)")
class InfoGAN(GANFamily):
    """InfoGAN (Chen et al. 2016) on DCGAN networks; networks ``G``, ``D`` and ``Q``."""

    image_sizes = STAGED  # strided conv stages (gankit.nn.conv_stages)

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8, "model.latent_dim": 8, "model.q_hidden": 16}

    Params = InfoGANParams
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "nonsaturating"},
        "optim": {"lr_g": 1e-3, "lr_d": 2e-4, "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999)},
    }

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        if not info["is_image"]:
            raise ConfigError(f"model 'infogan' needs images; '{info['name']}' holds points")
        p = self.p
        if p.n_cat == 1:
            raise ConfigError("model.n_cat must be 0 (no categorical code) or >= 2")
        if p.n_cat + p.n_cont == 0:
            raise ConfigError("infogan needs a latent code: set model.n_cat >= 2 or model.n_cont >= 1")
        c, r = self.sample_shape[0], self.sample_shape[-1]
        self.noise_dim, self.n_cat, self.n_cont = p.latent_dim, p.n_cat, p.n_cont
        self.latent_dim = self.noise_dim + self.n_cat + self.n_cont  # G's input width
        self.G = DCGenerator(self.latent_dim, c, r, p.width, p.max_width)
        self.D = DCDiscriminator(c, r, p.width, p.max_width, batchnorm=not p.spectral_norm,
                                 **d_layer_kwargs(cfg))
        if p.spectral_norm:
            spectral_norm_all(self.D)
        f = math.prod(self.D.last_map)  # per-sample features of D's trunk
        self.Q = QHead(f, p.q_hidden, p.n_cat, p.n_cont, p.learn_std)

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, "Q": self.Q}

    # -- latent codes ------------------------------------------------------------------------
    def sample_codes(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", cat: int | Sequence[int] | Tensor | None = None,
                     cont: float | Sequence[float] | Tensor | None = None
                     ) -> tuple[Tensor | None, Tensor]:
        """Codes for ``n`` samples: ``(cat int64 [n] or None, cont [n, n_cont])``.

        ``cat``/``cont`` fix them (an int or ``n`` ints; a float, ``n_cont`` floats or an
        ``[n, n_cont]`` tensor); left ``None`` they are drawn from the prior.
        """
        if self.n_cat == 0:
            if cat is not None:
                raise ConfigError("this InfoGAN has no categorical code (model.n_cat=0)")
            c_cat = None
        elif cat is None:
            c_cat = torch.randint(self.n_cat, (n,), generator=generator, device=device)
        else:
            try:
                c_cat = torch.as_tensor(cat, dtype=torch.int64, device=device).expand(n).clone()
            except RuntimeError:
                raise ConfigError(f"cat must be one int or {n} ints") from None
            if c_cat.min() < 0 or c_cat.max() >= self.n_cat:
                raise ConfigError(f"categorical code must lie in [0, {self.n_cat - 1}]")
        if cont is None:
            c_cont = torch.rand(n, self.n_cont, generator=generator, device=device) * 2 - 1
        else:
            try:
                c_cont = torch.as_tensor(cont, dtype=torch.float32, device=device)
                c_cont = c_cont.expand(n, self.n_cont).clone()
            except RuntimeError:
                raise ConfigError(f"cont must be a float, {self.n_cont} floats or an "
                                  f"[{n}, {self.n_cont}] tensor") from None
        return c_cat, c_cont

    def latent_from(self, noise: Tensor, cat: Tensor | None, cont: Tensor) -> Tensor:
        """G's input ``[n, noise_dim + n_cat + n_cont]``: noise, one-hot category, continuous codes."""
        parts = [noise]
        if self.n_cat:
            parts.append(F.one_hot(cat, self.n_cat).to(noise.dtype))
        parts.append(cont.to(noise.dtype))
        return torch.cat(parts, 1)

    def split_latent(self, z: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """Inverse of :meth:`latent_from`: ``(noise, cat int64 [n] or None, cont [n, n_cont])``."""
        noise = z[:, :self.noise_dim]
        onehot = z[:, self.noise_dim:self.noise_dim + self.n_cat]
        cat = onehot.argmax(1) if self.n_cat else None
        return noise, cat, z[:, self.noise_dim + self.n_cat:]

    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> Tensor:
        noise = torch.randn(n, self.noise_dim, generator=generator, device=device)
        cat, cont = self.sample_codes(n, generator, device)
        return self.latent_from(noise, cat, cont)

    def truncate(self, z: Tensor, threshold: float, generator: torch.Generator | None) -> Tensor:
        """The truncation trick on the noise part of the latent only: the one-hot category and
        the U[-1, 1] codes are not Gaussian, and redrawing their entries would zero the one-hot
        code or bias the continuous ones."""
        noise, cat, cont = self.split_latent(z)
        if threshold <= 0:
            raise ConfigError(f"truncation must be > 0, got {threshold}")
        while True:
            bad = noise.abs() > threshold
            if not bad.any():
                return self.latent_from(noise, cat, cont)
            fresh = torch.randn(noise.shape, generator=generator, device=noise.device)
            noise = torch.where(bad, fresh, noise)

    def generate_with_codes(self, G: nn.Module, z: Tensor,
                            cat: int | Sequence[int] | Tensor | None = None,
                            cont: float | Sequence[float] | Tensor | None = None,
                            generator: torch.Generator | None = None) -> Tensor:
        """Images from noise ``z [n, noise_dim]`` and chosen codes (``None``: drawn)."""
        c_cat, c_cont = self.sample_codes(len(z), generator, z.device, cat, cont)
        return G(self.latent_from(z, c_cat, c_cont))

    # -- training ------------------------------------------------------------------------------
    def d_forward(self, D: nn.Module, x: Tensor, c: Tensor | None = None
                  ) -> tuple[Tensor, tuple[Tensor | None, Tensor, Tensor]]:
        """One pass through D's body: (real/fake score [N], Q's code parameters). Q reads the
        per-sample features, before any batch-statistics layer of D (``tricks.minibatch_*``)."""
        h = D.features(x).flatten(1)  # [N, F], shared by D's head and Q
        return D.head(D.batch_layers(h)).reshape(len(x)), self.Q(h)

    def d_score(self, out: tuple[Tensor, Any], n: int) -> Tensor:
        return out[0]

    def info_loss(self, q: tuple[Tensor | None, Tensor, Tensor], z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``-L_I + H(c)`` for fakes made from latents ``z`` (i.e. ``-E log Q(c | x)``), unweighted."""
        _, cat, cont = self.split_latent(z)
        l_cat, l_cont = info_nll(q, cat, cont)
        stats = {"loss/info/cat": l_cat.detach(), "loss/info/cont": l_cont.detach()}
        if self.n_cat:  # the bound itself for the categorical code: H(c) - CE <= I(c; x), nats
            stats["info/mi_cat_lb"] = math.log(self.n_cat) - l_cat.detach()
        return l_cat + l_cont, stats

    def phases(self) -> list[Phase]:
        p = self.p

        def latent(v: DView) -> Tensor:
            assert v.latent is not None  # the latent (holding the codes) of v's fake batch
            return v.latent

        def d_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            if not p.info_in_d:
                return {}, {}
            info, _ = self.info_loss(v.out_fake[1], latent(v))  # fakes are detached here
            return {"loss/D/info": p.lambda_info * info}, {}

        def g_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            info, stats = self.info_loss(v.out_fake[1], latent(v))
            return {"loss/G/info": p.lambda_info * info}, stats  # one backward: G and Q

        return adversarial_phases(self, Game(d_terms=d_terms, g_terms=g_terms, g_nets=("G", "Q")))
