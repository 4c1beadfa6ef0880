"""Downstream utility of synthetic data: does it help a classifier?

- **Classification accuracy score** (CAS; Ravuri & Vinyals 2019, "Classification Accuracy Score
  for Conditional Generative Models"): train a classifier only on class-conditional samples, test
  it on real held-out data, and compare with the same classifier trained on as many real images.
- **Augmentation gain** (the seeds' "data augmentation with GAN", chapter 002 §6, deck 003
  "Applications"): a classifier trained on a small labelled real subset vs on that subset plus
  labelled synthetic samples, both tested on real held-out data.

The classifier is the LeNet architecture of ``lenet-mnist`` (fresh, seeded initialisation) for
single-channel images resized to 28x28; training is a fixed, seeded recipe (Adam 1e-3, batch 64,
``epochs`` epochs), so numbers are comparable across models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .lenet import LeNet, prepare_digits


def train_classifier(x: Tensor, y: Tensor, num_classes: int, *, epochs: int = 8, seed: int = 0,
                     batch: int = 64) -> LeNet:
    """A LeNet trained from scratch on images ``x [N, C, H, W]`` in [-1, 1], labels ``y``."""
    if num_classes != 10:
        raise ConfigError("the utility classifier is the 10-class LeNet (digit datasets)")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = LeNet()
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        xs = prepare_digits(x.float())
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(len(xs), generator=g)
            for i in range(0, len(xs), batch):
                idx = perm[i:i + batch]
                loss = F.cross_entropy(net(xs[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return net.eval()


@torch.inference_mode()
def accuracy(net: LeNet, x: Tensor, y: Tensor) -> float:
    pred = torch.cat([net(prepare_digits(x[i:i + 500].float())).argmax(1)
                      for i in range(0, len(x), 500)])
    return float((pred == y).float().mean())


def classification_accuracy_score(sampler: Any, train: Any, *, n: int = 4000, epochs: int = 8,
                                  seed: int = 0) -> dict[str, float]:
    """CAS of a conditional ``sampler`` on a dataset with a test split (``train`` = Dataset)."""
    if not getattr(sampler, "conditional", False):
        raise ConfigError("classification accuracy score needs a conditional model (e.g. cgan)")
    if train.x_test is None or train.y_test is None:
        raise ConfigError(f"dataset '{train.name}' has no labelled test split")
    k = train.num_classes
    labels = torch.arange(n) % k
    fake = sampler.sample(n, seed=seed, labels=labels.tolist())
    cas = accuracy(train_classifier(fake, labels, k, epochs=epochs, seed=seed),
                   train.x_test, train.y_test)
    m = min(n, len(train))
    real = accuracy(train_classifier(train.x[:m], train.y[:m], k, epochs=epochs, seed=seed),
                    train.x_test, train.y_test)
    return {"cas": cas, "cas_real_baseline": real, "cas_n": float(n)}


def augmentation_gain(sampler: Any, train: Any, *, n_labelled: int = 200, n_synth: int = 2000,
                      epochs: int = 15, seed: int = 0) -> dict[str, float]:
    """Test accuracy with ``n_labelled`` real images alone vs plus ``n_synth`` labelled samples."""
    if not getattr(sampler, "conditional", False):
        raise ConfigError("augmentation gain needs a conditional model (labelled samples)")
    if train.x_test is None or train.y_test is None:
        raise ConfigError(f"dataset '{train.name}' has no labelled test split")
    k = train.num_classes
    rng = np.random.default_rng(seed)
    y = train.y.numpy()
    per = max(1, n_labelled // k)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per, replace=False) for c in range(k)])
    xr, yr = train.x[idx], train.y[idx]
    labels = torch.arange(n_synth) % k
    fake = sampler.sample(n_synth, seed=seed, labels=labels.tolist())
    base = accuracy(train_classifier(xr, yr, k, epochs=epochs, seed=seed), train.x_test, train.y_test)
    # Equal numbers of optimisation steps would favour the bigger set; we keep equal epochs over
    # the real subset by repeating it so it weighs as much as the synthetic part.
    reps = max(1, n_synth // len(xr))
    xa = torch.cat([xr.repeat(reps, 1, 1, 1), fake])
    ya = torch.cat([yr.repeat(reps), labels])
    aug = accuracy(train_classifier(xa, ya, k, epochs=max(1, epochs // 2), seed=seed),
                   train.x_test, train.y_test)
    return {"acc_real_only": base, "acc_real_plus_synthetic": aug, "augmentation_gain": aug - base,
            "n_labelled": float(len(xr)), "n_synthetic": float(n_synth)}
