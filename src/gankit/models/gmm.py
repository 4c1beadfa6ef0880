"""GMM: a Gaussian mixture fitted by expectation maximisation (Dempster, Laird & Rubin 1977,
"Maximum likelihood from incomplete data via the EM algorithm"), with scikit-learn's
``GaussianMixture`` as the EM engine (seed 000/001 §2.1.2 Box 2 and Fig. 6; deck 003
"Gaussian Mixture Models").

    p(v) = sum_k pi_k N(v; mu_k, Sigma_k)      (full covariances)

Three ways to put a mixture on the data (``model.space``):

- ``pixels`` (images): an independent 1-D mixture of ``model.k`` Gaussians per pixel,
  p(y) = prod_i sum_k pi_ik N(z_i; mu_ik, s_ik^2) |dz_i/dy_i|. This is the seed's thought
  experiment ("randomly draw the required number of voxel values from the distribution ... will
  almost look like random noise, because we did not model the spatial relation of the gray
  values"): every pixel's marginal is right, their joint is not, and samples are noise.
  The 8-bit grey levels k are dequantised, y = (k + u) / 256 with u ~ U[0, 1) (Theis et al.
  2016), and mapped to the real line by z = logit(alpha + (1 - 2 alpha) y) (the logit of Dinh
  et al. 2017, RealNVP), where the mixture lives; its Jacobian
  log|dz/dy| = log(1 - 2 alpha) - log s - log(1 - s), s = alpha + (1 - 2 alpha) y, makes
  ``log_prob`` a density of the dequantised image on [0, 1]^D. (The mixture's mass beyond
  logit(alpha) and logit(1 - alpha) maps outside [0, 1]; it is not renormalised, so the
  density integrates to slightly less than 1 on [0, 1]^D and bits per dimension err high.)
- ``pca`` (images, the default): one mixture over whole images in the space of their first
  ``model.components`` principal components, whitened (scikit-learn's ``PCA``): codes
  c = W (y - m) / s with W the principal directions and s^2 their variances. Samples are codes
  drawn from the mixture and mapped back, y = m + W^T (s * c): they look like digits. To make
  ``log_prob`` a density on the image space (not only on the C codes), the D - C discarded
  directions get the isotropic Gaussian of probabilistic PCA (Tipping & Bishop 1999), with the
  maximum-likelihood variance sigma^2 = the mean discarded eigenvalue (``PCA.noise_variance_``):
  log p(y) = log p_mix(c) - sum_j log s_j + log N(r; 0, sigma^2 I_{D-C}), r the residual of y
  outside the principal subspace. It is exact, of dequantised images (a density on R^D, whose
  mass outside [0, 1]^D is not renormalised). ``sample`` returns the mean image of a code by
  default (``mean=False`` adds the residual noise, the model's full draw).
- points (ring8, grid25, any 2-D data; ``model.space`` unset): one full-covariance mixture on the
  coordinates; ``log_prob`` is its exact density in the data's units.

Training is one ``closed_form`` phase, ``EM``: every step is one EM iteration (an E-step and an
M-step of scikit-learn, warm-started from the parameters of the previous step) over the whole
training split; the first step also initialises (k-means with ``random_state = train.seed``,
scikit-learn's default) and, in the ``pca`` mode, fits the PCA. ``train.steps`` is thus the
number of EM iterations (scikit-learn's ``max_iter``, 100 by default); a run of T steps equals
``GaussianMixture(max_iter=T, tol=0, random_state=seed).fit`` on the same data. The dequantised
training data are drawn once from ``train.seed``. Every fitted quantity (weights, means,
covariances, precision Cholesky factors, the PCA's mean, directions, scales and residual
variance) is a float64 buffer, so checkpoints, ``gankit.load`` and resumption are exact.

Defaults are scikit-learn's (after Dempster et al.): k-means initialisation, ``reg_covar`` 1e-6
added to the covariance diagonals, 100 iterations; ``model.k`` 10 components (one per digit
class for MNIST), ``model.components`` 50 principal components, ``model.alpha`` 1e-6.

``encode`` gives each example's component responsibilities p(k | x) (per pixel in the ``pixels``
mode: a soft classification of intensities, the tissue classes of the seed's Box 2), or, with
``codes=True`` in the ``pca`` mode, its whitened PCA code.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..games.phase import Phase, StepContext
from ..likelihood import dequantize, levels
from ..nn import prod
from ..registry import MODELS
from .base import ModelFamily, Params, refuse_gan_keys

__all__ = ["GMM", "mixture_log_prob"]

_LOG_2PI = math.log(2 * math.pi)
#: Offset of the seed of the training data's dequantisation noise from ``train.seed``.
DEQUANT_SEED_OFFSET = 4049


def mixture_log_prob(v: Tensor, weights: Tensor, means: Tensor, prec_chol: Tensor) -> Tensor:
    """Log-density ``[N, P, K]`` of each component (weight included) of ``P`` independent
    full-covariance mixtures at ``v [N, P, d]``: ``log pi_k + log N(v; mu_k, Sigma_k)`` with
    ``Sigma_k^-1 = L_k L_k^T`` (``prec_chol [P, K, d, d]``, scikit-learn's
    ``precisions_cholesky_``), ``weights [P, K]``, ``means [P, K, d]``. Its log-sum-exp over K
    is scikit-learn's ``score_samples``."""
    d = v.shape[-1]
    y = torch.einsum("npd,pkde->npke", v, prec_chol)
    y = y - torch.einsum("pkd,pkde->pke", means, prec_chol)[None]
    log_det = torch.log(torch.diagonal(prec_chol, dim1=-2, dim2=-1)).sum(-1)  # [P, K]
    return -0.5 * (d * _LOG_2PI + y.pow(2).sum(-1)) + log_det + torch.log(weights)[None]


class GMMParams(Params):
    # None: pca on images; points take no space (one mixture on the coordinates)
    space: Literal["pixels", "pca"] | None = None
    k: int = 10  # mixture components (per pixel in the pixels mode)
    components: int = 50  # pca: principal components kept (whitened)
    alpha: float = 1e-6  # pixels: the logit's squeeze, z = logit(alpha + (1 - 2 alpha) y)
    reg_covar: float = 1e-6  # added to covariance diagonals (scikit-learn's default)
    init: Literal["kmeans", "k-means++", "random", "random_from_data"] = "kmeans"


@MODELS.register("gmm", description="Gaussian mixture fitted by EM (Dempster, Laird & Rubin "
                                    "1977) with scikit-learn: per pixel, over PCA-whitened "
                                    "images, or on points; exact likelihood of dequantised "
                                    "images (Theis et al. 2016)")
class GMM(ModelFamily):
    """A Gaussian mixture fitted by scikit-learn's EM, one iteration per training step (see the
    module docstring); no networks, its parameters are float64 buffers."""

    sampling_network: ClassVar[bool] = False  # a mixture: component choice, Cholesky factors
    Params = GMMParams
    defaults: ClassVar[dict[str, Any]] = {"train": {"steps": 100}}  # scikit-learn's max_iter
    capabilities: ClassVar[frozenset[str]] = frozenset({"sample", "log_prob", "encode"})
    data_kinds: ClassVar[tuple[str, ...]] = ("images", "points")
    adversarial: ClassVar[bool] = False
    tiny: ClassVar[dict[str, Any]] = {"model.k": 2, "model.components": 4}
    tiny_data: ClassVar[str] = "images"

    weights: Tensor
    means: Tensor
    covariances: Tensor
    precisions_cholesky: Tensor
    lower_bound: Tensor
    em_steps: Tensor

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        p = self.p
        self.is_image = bool(info.get("is_image"))
        dims = prod(self.sample_shape)
        if p.k < 1:
            raise ConfigError(f"model.k (mixture components) must be >= 1, got {p.k}.")
        if not 0 < p.alpha < 0.5:
            raise ConfigError(f"model.alpha must lie in (0, 0.5), got {p.alpha}.")
        if p.reg_covar < 0:
            raise ConfigError(f"model.reg_covar must be >= 0, got {p.reg_covar}.")
        if self.is_image:
            self.space = p.space or "pca"
        elif p.space is not None:
            raise ConfigError(f"model.space={p.space} is for images; '{info.get('name')}' holds "
                              f"points (leave model.space unset: one mixture on the coordinates).")
        else:
            self.space = "points"
        if self.space == "pca" and not 1 <= p.components < dims:
            raise ConfigError(f"model.components must lie in [1, {dims - 1}] for images of "
                              f"{dims} pixels, got {p.components}.")
        # P independent mixtures of K components over d dimensions each
        P, d = {"pixels": (dims, 1), "pca": (1, p.components), "points": (1, dims)}[self.space]
        self.P, self.d, self.K, self.dims = P, d, p.k, dims
        f64 = {"dtype": torch.float64}
        self.register_buffer("weights", torch.full((P, p.k), 1.0 / p.k, **f64))
        self.register_buffer("means", torch.zeros(P, p.k, d, **f64))
        eye = torch.eye(d, **f64).expand(P, p.k, d, d).clone()
        self.register_buffer("covariances", eye)
        self.register_buffer("precisions_cholesky", eye.clone())
        self.register_buffer("lower_bound", torch.zeros(P, **f64))  # scikit-learn's lower_bound_
        self.register_buffer("em_steps", torch.zeros((), dtype=torch.int64))
        if self.space == "pca":
            self.register_buffer("pca_mean", torch.zeros(dims, **f64))
            self.register_buffer("pca_components", torch.zeros(p.components, dims, **f64))
            self.register_buffer("pca_scale", torch.ones(p.components, **f64))
            self.register_buffer("pca_noise", torch.ones((), **f64))
        self._train_y: Tensor | None = None  # the dequantised training split (from the seed)

    @classmethod
    def validate_config(cls, cfg: Any) -> None:
        """Refuse the loss and optimizer keys: EM has neither (nor the ``tricks.*``)."""
        super().validate_config(cfg)
        refuse_gan_keys(cfg, optimizer=None, why="is fitted by EM, with no loss to optimise")

    # -- declarations -----------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {}

    def phases(self) -> list[Phase]:
        return [Phase("EM", (), self.em_step, kind="closed_form")]

    def likelihood(self) -> dict[str, str]:
        """Exact: a density of dequantised images (pixels, pca) or of points."""
        return {"space": "dequantized" if self.is_image else "continuous", "kind": "exact"}

    # -- between the data and the mixtures' spaces ------------------------------------------
    def _check(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.sample_shape:
            shape = ", ".join(map(str, self.sample_shape))
            raise ConfigError(f"x must have shape [N, {shape}] like the training data, got "
                              f"{list(x.shape)}.")
        return x.to(self.device, torch.float64)

    def _fitted(self) -> None:
        if int(self.em_steps) == 0:
            raise ConfigError("the mixture is not fitted yet: train it first (at least one step).")

    def squeeze(self, y: Tensor) -> Tensor:
        """pixels: dequantised values y in [0, 1] -> s = alpha + (1 - 2 alpha) y."""
        return self.p.alpha + (1 - 2 * self.p.alpha) * y

    def to_mixture(self, y: Tensor) -> Tensor:
        """Data ``y [N, *shape]`` (dequantised images in [0, 1], or points) -> the mixtures'
        inputs ``[N, P, d]``: logits per pixel, whitened PCA codes, or the points."""
        n = y.shape[0]
        flat = y.reshape(n, -1)
        if self.space == "pixels":
            return torch.logit(self.squeeze(flat)).unsqueeze(-1)
        if self.space == "pca":
            c = (flat - self.pca_mean) @ self.pca_components.T / self.pca_scale  # [N, C]
            return c.unsqueeze(1)
        return flat.unsqueeze(1)

    def log_jacobian(self, y: Tensor) -> Tensor:
        """``[N]``: log p(y) - sum_p log p_mix_p(v_p) for ``v = to_mixture(y)``: the logit's
        log|dz/dy| (pixels), the whitening's -sum log s_j plus the residual's Gaussian
        log-density (pca), 0 (points)."""
        n = y.shape[0]
        flat = y.reshape(n, -1)
        if self.space == "pixels":
            s = self.squeeze(flat)
            return (math.log(1 - 2 * self.p.alpha) - torch.log(s) - torch.log1p(-s)).sum(1)
        if self.space == "pca":
            diff = flat - self.pca_mean
            r = diff - (diff @ self.pca_components.T) @ self.pca_components  # [N, D]
            rest, var = self.dims - self.p.components, self.pca_noise
            log_res = -0.5 * rest * torch.log(2 * math.pi * var) - 0.5 * r.pow(2).sum(1) / var
            return log_res - torch.log(self.pca_scale).sum()
        return torch.zeros(n, dtype=y.dtype, device=y.device)

    def from_mixture(self, v: Tensor, generator: torch.Generator | None,
                     mean: bool) -> Tensor:
        """Mixture draws ``[N, P, d]`` -> data: 8-bit images in [-1, 1] or points."""
        n = v.shape[0]
        if self.space == "points":
            return v.reshape(n, *self.sample_shape)
        if self.space == "pixels":
            y = (torch.sigmoid(v.squeeze(-1)) - self.p.alpha) / (1 - 2 * self.p.alpha)
        else:
            y = self.pca_mean + (v.squeeze(1) * self.pca_scale) @ self.pca_components
            if not mean:  # the residual's isotropic noise, outside the principal subspace
                e = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
                e = e - (e @ self.pca_components.T) @ self.pca_components
                y = y + self.pca_noise.sqrt() * e
        k = (256 * y).floor().clamp(0, 255)  # the 8-bit level whose dequantisation bin holds y
        return (k / 127.5 - 1).reshape(n, *self.sample_shape)

    # -- training: EM by scikit-learn -------------------------------------------------------
    def training_data(self, ctx: StepContext) -> Tensor:
        """The whole training split in the model's data space (dequantised once from
        ``train.seed`` for images), float64 on the CPU, cached."""
        if self._train_y is None:
            x = ctx.tr.source.tensors()["x"]
            if not isinstance(x, Tensor):
                raise ConfigError("model 'gmm' fits EM on the whole training split in memory; "
                                  "streamed data cannot be used (set data.stream=false).")
            x = x.detach().to("cpu", torch.float64)
            if self.is_image:
                g = torch.Generator().manual_seed(self.cfg.train.seed + DEQUANT_SEED_OFFSET)
                x = dequantize(x, g)
            if len(x) < self.K:
                raise ConfigError(f"the training split has {len(x)} examples, fewer than the "
                                  f"model.k={self.K} mixture components.")
            self._train_y = x
        return self._train_y

    def fit_pca(self, y: Tensor) -> None:
        """Fit scikit-learn's PCA to the flattened dequantised images ``y`` (first step)."""
        from sklearn.decomposition import PCA

        if len(y) <= self.p.components:
            raise ConfigError(f"model.components={self.p.components} needs more training images "
                              f"than that, got {len(y)}.")
        pca = PCA(n_components=self.p.components, svd_solver="full")
        pca.fit(y.reshape(len(y), -1).numpy())
        dev = self.pca_mean.device
        self.pca_mean.copy_(torch.from_numpy(pca.mean_).to(dev))
        self.pca_components.copy_(torch.from_numpy(pca.components_).to(dev))
        self.pca_scale.copy_(torch.from_numpy(np.sqrt(pca.explained_variance_)).to(dev))
        self.pca_noise.fill_(float(pca.noise_variance_))

    def sklearn_mixture(self, p: int, warm: bool, max_iter: int = 1) -> Any:
        """scikit-learn's ``GaussianMixture`` for mixture ``p``: warm-started from the buffers
        (``warm``), or fresh (initialised from ``train.seed`` when fitted)."""
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(n_components=self.K, covariance_type="full", tol=0.0,
                             reg_covar=self.p.reg_covar, max_iter=max_iter,
                             init_params=self.p.init, random_state=self.cfg.train.seed,
                             warm_start=True)
        if warm:
            gm.weights_ = self.weights[p].cpu().numpy().copy()
            gm.means_ = self.means[p].cpu().numpy().copy()
            gm.covariances_ = self.covariances[p].cpu().numpy().copy()
            pc = self.precisions_cholesky[p].cpu().numpy().copy()
            gm.precisions_cholesky_ = pc
            gm.precisions_ = np.einsum("kij,klj->kil", pc, pc)
            gm.converged_ = False
            gm.lower_bound_ = float(self.lower_bound[p])
            gm.n_iter_ = int(self.em_steps)
            gm.n_features_in_ = self.d
        return gm

    def em_step(self, ctx: StepContext) -> tuple[None, dict[str, Tensor]]:
        """One EM iteration of every mixture over the whole training split (scikit-learn's
        E- and M-step, warm-started from the buffers); the first step initialises them."""
        from sklearn.exceptions import ConvergenceWarning

        y = self.training_data(ctx)
        first = int(self.em_steps) == 0
        if first and self.space == "pca":
            self.fit_pca(y)
        v = self.to_mixture(y.to(self.device)).cpu().numpy()  # [N, P, d]
        dev = self.weights.device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for p in range(self.P):
                gm = self.sklearn_mixture(p, warm=not first)
                gm.fit(v[:, p, :])
                self.weights[p] = torch.from_numpy(gm.weights_).to(dev)
                self.means[p] = torch.from_numpy(gm.means_).to(dev)
                self.covariances[p] = torch.from_numpy(gm.covariances_).to(dev)
                self.precisions_cholesky[p] = torch.from_numpy(gm.precisions_cholesky_).to(dev)
                self.lower_bound[p] = float(gm.lower_bound_)
        self.em_steps += 1
        # scikit-learn's lower bound: the mean log-likelihood of the data under the parameters
        # before this M-step; plus the mean log-Jacobian, it is in the data's space.
        ll = self.lower_bound.sum() + self.log_jacobian(y.to(self.device)).mean()
        stats = {"loss/nll": (-ll).float().to(ctx.device)}
        if self.is_image:
            bpd = (self.dims * math.log(256) - ll) / (self.dims * math.log(2))
            stats["loss/bpd"] = bpd.float().to(ctx.device)
        return None, stats

    # -- capabilities -----------------------------------------------------------------------
    def component_log_prob(self, v: Tensor) -> Tensor:
        """``[N, P, K]``: log pi_k + log N(v_p; mu_pk, Sigma_pk) of the mixtures' inputs."""
        return mixture_log_prob(v, self.weights, self.means, self.precisions_cholesky)

    def log_prob(self, x: Tensor, *, generator: torch.Generator | None = None,
                 **options: Any) -> Tensor:
        """The exact log-density per example in nats, ``[N]`` (float64): of one dequantisation
        of each image (randomness from ``generator``; a density on [0, 1]^D) or of each
        point."""
        if options:
            raise ConfigError(f"model 'gmm' has no log_prob option(s) "
                              f"{', '.join(sorted(options))}.")
        self._fitted()
        x = self._check(x)
        y = dequantize(x, generator) if self.is_image else x
        v = self.to_mixture(y)
        return torch.logsumexp(self.component_log_prob(v), -1).sum(1) + self.log_jacobian(y)

    def sample(self, n: int, *, generator: torch.Generator | None = None, cond: Any = None,
               mean: bool | None = None, **options: Any) -> Tensor:
        """``n`` draws: a component per mixture from the weights, then its Gaussian (for pixels:
        per pixel, independently). pca: ``mean`` (default True) returns the image of the drawn
        code, ``mean=False`` adds the residual noise of the discarded directions."""
        if options:
            raise ConfigError(f"model 'gmm' has no option(s) {', '.join(sorted(options))}"
                              + (" (it takes mean)." if self.space == "pca" else "."))
        if mean is not None and self.space != "pca":
            raise ConfigError(f"the option mean is for model.space=pca; this mixture is "
                              f"{self.space}.")
        self._fitted()
        dev, P, d = self.device, self.P, self.d
        u = torch.rand(n, P, generator=generator, device=dev, dtype=torch.float64)
        cdf = self.weights.cumsum(-1)  # [P, K]
        comp = torch.searchsorted(cdf.expand(n, P, self.K).contiguous(), u.unsqueeze(-1))
        comp = comp.squeeze(-1).clamp(max=self.K - 1)  # [n, P]
        eps = torch.randn(n, P, d, 1, generator=generator, device=dev, dtype=torch.float64)
        rows = torch.arange(P, device=dev).expand(n, P)
        chol = torch.linalg.cholesky(self.covariances)  # [P, K, d, d]
        v = self.means[rows, comp] + (chol[rows, comp] @ eps).squeeze(-1)  # [n, P, d]
        return self.from_mixture(v, generator, True if mean is None else bool(mean)).float()

    def encode(self, x: Tensor, *, generator: torch.Generator | None = None,
               codes: bool = False, **options: Any) -> Tensor:
        """Component responsibilities p(k | x): ``[N, K]`` (pca, points) or per pixel
        ``[N, *shape, K]`` (pixels), of the images' grey levels at their bin centres; with
        ``codes=True`` (pca) the whitened PCA codes ``[N, components]``."""
        if options:
            raise ConfigError(f"model 'gmm' has no encode option(s) {', '.join(sorted(options))}"
                              f" (it takes codes).")
        if codes and self.space != "pca":
            raise ConfigError(f"codes=True needs model.space=pca; this mixture is {self.space}.")
        self._fitted()
        x = self._check(x)
        y = (levels(x) + 0.5) / 256 if self.is_image else x
        v = self.to_mixture(y)
        if codes:
            return v.squeeze(1).float()
        resp = torch.softmax(self.component_log_prob(v), -1)  # [N, P, K]
        if self.space == "pixels":
            return resp.reshape(len(x), *self.sample_shape, self.K).float()
        return resp.squeeze(1).float()
