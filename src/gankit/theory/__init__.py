"""``gankit theory``: the seeds' worked arguments reproduced with numbers and a plot each.

Every experiment is a function registered in :data:`EXPERIMENTS` under a short name. It is
deterministic (fixed seeds), runs in a few seconds on a laptop CPU and returns an
:class:`~gankit.theory._common.Outcome`; :func:`run` writes ``<name>.png`` and ``<name>.json``
(numbers, explanation, seed reference, assumptions) into an output directory.

Experiments (seed = the source documents in ``seeds/``):

- ``kl-discrete``: forward vs reverse KL on nine points (chapter 000/001 §3.2.2 Box 3, §3.2.3).
- ``kl-gaussian``: mean-seeking forward KL vs mode-seeking reverse KL (000 §3.2.3 Fig. 12;
  002 §3.2 Fig. 4).
- ``js-saturation``: JS saturates at log 2 while KL and W1 keep growing (002 §3.2 Fig. 3).
- ``gan-vs-wgan-gradient``: saturated GAN discriminator vs WGAN critic (002 §5.1 Fig. 15;
  Arjovsky et al. 2017 Fig. 2).
- ``earth-mover``: the shovelled piles of 000 §3.6.1 Figure 15, D_W = 7, by linear programming.
- ``optimal-discriminator``: D*(x) = p_data / (p_data + p_g) (000 §3.4 Eq. 6; Goodfellow et al.
  2014 Prop. 1) recovered by training.
- ``gmm-intensities``: a four-component GMM fitted by EM to an MR phantom's intensity histogram
  recovers its tissue classes; drawn voxel by voxel it is noise (000 §2.1.2 Box 2, Fig. 6).
- ``sampling``: inverse-CDF, rejection (with the envelope constant M = sup p/q) and
  Metropolis-Hastings sampling of a 1-D mixture, each KS-tested (000 §2.1.4).
- ``saturating-gradients``: log(1 - D(G(z))) vs -log D(G(z)) (000 §3.4; Goodfellow et al. 2014 §3).
- ``score-field``: the score of a two-Gaussian mixture and (annealed) Langevin samples from it
  (000 §5.1 Fig. 27; Song & Ermon 2019 Fig. 3).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..registry import Registry
from ._common import Outcome, jsonable, pyplot, single_threaded_torch

#: Theory experiments by name; each entry is a zero-argument function returning an Outcome.
EXPERIMENTS: Registry[Callable[[], Outcome]] = Registry("theory experiment")

# The experiment modules register themselves into EXPERIMENTS on import, so they must be imported
# after it exists.
from . import (  # noqa: F401  (each module registers its experiments)
    discriminators,
    divergences,
    earth_mover,
    kl,
    mixtures,
    sampling,
    saturation,
    score_field,
)

__all__ = ["EXPERIMENTS", "Outcome", "names", "run"]


def names() -> list[str]:
    """The registered experiment names, sorted."""
    return EXPERIMENTS.names()


def run(name: str, out_dir: Path | str) -> dict[str, Any]:
    """Run experiment ``name`` and write ``<name>.png`` and ``<name>.json`` into ``out_dir``.

    Returns the dict that was written as JSON: ``name``, ``numbers``, ``explanation``,
    ``reference``, ``assumptions``, ``png`` (the figure's path) and ``seconds`` (wall time).
    An unknown name raises :class:`~gankit.errors.ConfigError` listing the choices.
    """
    fn = EXPERIMENTS.get(name)  # validates the name before anything is created on disk
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with single_threaded_torch():
        outcome = fn()
    seconds = time.perf_counter() - t0
    png = out / f"{name}.png"
    plt = pyplot()
    try:
        outcome.figure.savefig(png, dpi=110, bbox_inches="tight")
    finally:
        plt.close(outcome.figure)  # the lab may run all experiments in one process
    result: dict[str, Any] = jsonable(
        {
            "name": name,
            "numbers": outcome.numbers,
            "explanation": outcome.explanation,
            "reference": outcome.reference,
            "assumptions": outcome.assumptions,
            "png": str(png),
            "seconds": round(seconds, 3),
        }
    )
    # Write the JSON last and atomically: its presence signals a complete result.
    tmp = out / f".{name}.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out / f"{name}.json")
    return result
