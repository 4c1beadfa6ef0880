"""Adversarial losses and regularisers, chosen by name from registries."""

from . import fgan as fgan  # registers the f-GAN losses fgan-kl, fgan-js, ...
from .adversarial import AdversarialLoss, d_accuracy, get_loss
from .regularizers import Regularizer, clip_weights, dragan, r1, wgan_gp

__all__ = [
           "AdversarialLoss",
           "Regularizer",
           "clip_weights",
           "d_accuracy",
           "dragan",
           "get_loss",
           "r1",
           "wgan_gp",
]
