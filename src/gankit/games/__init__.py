"""Reusable training objectives and the phase contract.

- :mod:`gankit.games.phase`: :class:`Phase` and :class:`StepContext`, what a family declares and
  what its losses see;
- :mod:`gankit.games.adversarial`: the adversarial game (:class:`Game`,
  :func:`adversarial_phases`) with its losses, penalties and tricks, parametrised by its players.

Likelihood objectives (the VAE's ELBO) are single phases written by their family.
"""

from .adversarial import DView, Game, Terms, adversarial_phases
from .phase import Batch, Burst, Phase, StepContext

__all__ = ["Batch", "Burst", "DView", "Game", "Phase", "StepContext", "Terms", "adversarial_phases"]
