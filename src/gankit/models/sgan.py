"""Semi-supervised GAN: D is a K-class classifier with an implicit "fake" class (chapter 002 §4.1).

Odena 2016 ("Semi-Supervised Learning with Generative Adversarial Networks") turns D into a
classifier over K real classes plus one fake class; Salimans et al. 2016 ("Improved Techniques
for Training GANs", §5) note that the fake logit can be fixed to 0, so D outputs K logits
``l_1..l_K`` and

    D(x) = P(real | x) = Z(x) / (Z(x) + 1),   Z(x) = sum_k exp(l_k(x)),

i.e. the real/fake logit is ``log Z(x) = logsumexp(l)``. D minimises

    L_sup   = -E_{(x, y) labelled} log softmax(l(x))_y          (cross-entropy over the K classes)
    L_unsup = -E_x log D(x) - E_z log(1 - D(G(z)))              (the GAN loss on logit log Z)

with the supervised term on a small, fixed, class-balanced labelled subset (``model.n_labels``,
default 100 as in Salimans et al.'s MNIST experiment) and the unsupervised term on all data.
G is unconditional; it minimises Salimans et al.'s feature-matching loss (§3.1: the squared
distance between the mean D features of real and fake batches; seed 000 Box 4, deck 003 "Feature
Matching") or the non-saturating loss ``-log D(G(z))`` (``model.g_loss``).

The labelled subset is drawn once from ``train.seed`` and the labels, and stored in the family
buffer ``labelled_idx`` (checkpointed as ``family.safetensors``), so a resumed run keeps exactly the
same labelled examples. After training, :meth:`SGAN.classify` gives D's class logits; ``gankit.load(run_dir).model`` is
the trained classifier (D's weights and the labelled subset ``labelled_idx`` included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..data.sizes import STAGED
from ..errors import ConfigError
from ..losses import get_loss
from ..nn import spectral_norm_all
from ..registry import MODELS
from .base import DView, Game, GANFamily, Phase, Terms, adversarial_phases
from .dcgan import DCDiscriminator, DCGANParams, DCGenerator


class SGANParams(DCGANParams):
    n_labels: int = Field(100, ge=1)  # size of the labelled subset (at most the training set)
    g_loss: Literal["feature_matching", "nonsaturating"] = "feature_matching"
    lambda_sup: float = 1.0  # weight of the supervised cross-entropy in D's loss


class SGANDiscriminator(nn.Module):
    """image [N, C, R, R] -> K class logits [N, K]; the fake class is implicit (logit 0).

    The convolutional body is DCGAN's (:class:`DCDiscriminator`'s ``features``); the single
    real/fake unit of DCGAN is replaced by K class units.
    """

    def __init__(self, channels: int, resolution: int, width: int, max_width: int,
                 batchnorm: bool, n_classes: int) -> None:
        super().__init__()
        body = DCDiscriminator(channels, resolution, width, max_width, batchnorm=batchnorm)
        self.features = body.features  # [N, C, R, R] -> [N, F', s0, s0]
        self.classes = nn.Linear(body.head.in_features, n_classes)
        nn.init.normal_(self.classes.weight, 0.0, 0.02)  # DCGAN init for the new head
        nn.init.zeros_(self.classes.bias)

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features [N, F] (what feature matching compares)."""
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classes(self.embed(x))  # [N, K]


def real_logit(logits: Tensor) -> Tensor:
    """The real/fake logit ``log Z = logsumexp_k l_k`` [N], so ``sigmoid`` of it is Z / (Z + 1)."""
    return torch.logsumexp(logits, dim=1)


def choose_labelled(y: Tensor, n_labels: int, num_classes: int, seed: int) -> Tensor:
    """A class-balanced random subset of ``n_labels`` indices into ``y`` (sorted int64, CPU).

    Each class gets ``n_labels // K`` examples (the first ``n_labels % K`` classes one more); a
    class with too few examples gives all it has and the shortfall goes round-robin to classes
    with examples left. The draw depends only on ``y`` and ``seed``.
    """
    y = y.detach().cpu()
    m = min(n_labels, len(y))
    g = torch.Generator().manual_seed(seed)
    pools = [torch.nonzero(y == k).flatten() for k in range(num_classes)]
    pools = [p[torch.randperm(len(p), generator=g)] for p in pools]
    take = [min(m // num_classes + (k < m % num_classes), len(p)) for k, p in enumerate(pools)]
    short = m - sum(take)
    while short > 0:  # terminates: m <= len(y) = sum of pool sizes
        for k, p in enumerate(pools):
            if short > 0 and take[k] < len(p):
                take[k] += 1
                short -= 1
    return torch.cat([p[:t] for p, t in zip(pools, take)]).sort().values


@MODELS.register("sgan", description="semi-supervised GAN, K-class D with implicit fake class "
                                      "(Odena 2016; Salimans et al. 2016)")
class SGAN(GANFamily):
    """Semi-supervised GAN (Odena 2016; Salimans et al. 2016 §5); chapter 002 §4.1.

    Needs labelled data (only ``model.n_labels`` labels are used); G is unconditional, so
    ``sample()`` takes no labels. ``classify(x)`` returns D's class logits ``[N, K]``.
    """

    image_sizes = STAGED  # strided conv stages (gankit.nn.conv_stages)

    #: the tiny model of the fast contract test (tests/test_contract.py)
    tiny: ClassVar[dict[str, Any]] = {"model.width": 8, "model.n_labels": 12}

    Params = SGANParams
    needs_labels = True
    defaults: ClassVar[dict[str, Any]] = {
        "loss": {"name": "nonsaturating"},
        "optim": {"lr_g": 2e-4, "lr_d": 2e-4, "betas_g": (0.5, 0.999), "betas_d": (0.5, 0.999)},
    }

    labelled_idx: Tensor

    def __init__(self, cfg: Any, info: dict[str, Any]) -> None:
        super().__init__(cfg, info)
        if not info["is_image"]:
            raise ConfigError(f"model 'sgan' needs images; '{info['name']}' holds points")
        p = self.p
        if p.n_labels < self.num_classes:
            raise ConfigError(f"model.n_labels={p.n_labels} is fewer than the {self.num_classes} "
                              f"classes; the labelled subset needs one example per class")
        if not get_loss(cfg.loss.name).probabilistic:
            raise ConfigError("sgan defines D(x) = Z/(Z+1) (Salimans et al. 2016): use "
                              "loss.name=nonsaturating or minimax")
        c, r = self.sample_shape[0], self.sample_shape[-1]
        self.latent_dim = p.latent_dim
        self.G = DCGenerator(self.latent_dim, c, r, p.width, p.max_width)
        self.D = SGANDiscriminator(c, r, p.width, p.max_width, not p.spectral_norm,
                                   self.num_classes)
        if p.spectral_norm:
            spectral_norm_all(self.D)
        # Indices of the labelled subset into the training set; -1 until drawn at the first step
        # (the labels are only seen by the Trainer). A family buffer: checkpointed with the run.
        m = min(p.n_labels, int(info.get("n", p.n_labels)))
        self.register_buffer("labelled_idx", torch.full((m,), -1, dtype=torch.int64))
        self._subset_checked = False

    @property
    def conditional(self) -> bool:
        return False  # labels train D's classifier; G never sees them

    def d_score(self, out: Tensor, n: int) -> Tensor:
        return real_logit(out)  # [N]: log Z(x), the logit of D(x) = Z/(Z+1), from K logits

    def classify(self, x: Tensor) -> Tensor:
        """D's class logits ``[N, K]`` (call ``model.eval()`` first to use BN running stats)."""
        return self.D(x)

    def labelled_indices(self, y: Tensor) -> Tensor:
        """The fixed labelled subset, drawn from ``y`` and ``train.seed`` on first use."""
        if not self._subset_checked:  # one host sync per process, not per step
            if bool((self.labelled_idx < 0).any()):
                idx = choose_labelled(y, len(self.labelled_idx), self.num_classes,
                                      self.cfg.train.seed)
                self.labelled_idx.copy_(idx.to(self.labelled_idx.device))
            self._subset_checked = True
        return self.labelled_idx

    def supervised_loss(self, D: nn.Module, x: Tensor, y: Tensor, n: int,
                        generator: torch.Generator | None = None,
                        d_input: Callable[[Tensor], Tensor] | None = None
                        ) -> tuple[Tensor, Tensor]:
        """Cross-entropy of D's K logits on ``n`` examples drawn (with replacement) from the
        labelled subset of the whole training set ``x`` [M, C, H, W], ``y`` [M], seen through
        ``d_input`` (the step's augmentation/instance noise) when given.
        Returns ``(loss, accuracy)``; no example outside the subset is ever looked at."""
        idx = self.labelled_indices(y)
        pick = torch.randint(len(idx), (n,), generator=generator, device=idx.device)
        sel = idx[pick].to(x.device)
        xl = x[sel] if d_input is None else d_input(x[sel])
        logits = D(xl)  # [n, K]
        yl = y[sel]
        return F.cross_entropy(logits, yl), (logits.argmax(1) == yl).float().mean()

    def phases(self) -> list[Phase]:
        p = self.p

        def d_terms(v: DView) -> tuple[Terms, dict[str, Tensor]]:
            # L_sup on the fixed labelled subset; the adversarial part is L_unsup on logit log Z
            ctx = v.ctx
            data = ctx.tr.source.tensors()  # the whole training set on the device
            sup, acc = self.supervised_loss(v.D, data["x"], data["y"], ctx.n, ctx.generator,
                                            v.d_input)
            return {"loss/D/sup": p.lambda_sup * sup}, {"D/sup_acc": acc}

        # G: Salimans et al.'s feature matching on D's penultimate features (the trunk's output)
        # or, with model.g_loss=nonsaturating, the configured loss on log Z.
        return adversarial_phases(self, Game(d_terms=d_terms,
                                             feature_matching=p.g_loss == "feature_matching"))
