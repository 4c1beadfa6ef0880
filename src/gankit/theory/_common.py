"""Shared plumbing of the theory lab: the result type, plotting setup, JSON conversion.

Kept separate from ``gankit.theory.__init__`` so that the experiment modules only depend on this
file and on the registry instance, never on each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Outcome:
    """What one theory experiment produces before :func:`gankit.theory.run` writes it out.

    ``numbers`` are the headline values (JSON-serialisable after :func:`jsonable`), ``explanation``
    says in a few sentences what the numbers show, ``reference`` names the seed section and paper
    the argument comes from, ``assumptions`` lists every value we had to choose where the seeds are
    silent, and ``figure`` is an open matplotlib figure that ``run`` saves and closes.
    """

    numbers: dict[str, Any]
    explanation: str
    reference: str
    assumptions: list[str] = field(default_factory=list)
    figure: Any = None


class Figures:
    """The pyplot entry points the lab uses, making figures of their own on an Agg canvas.

    Nothing global is touched (no ``matplotlib.use``, no pyplot figure registry), so the lab
    works on machines without a display and leaves a notebook's backend alone.
    """

    @staticmethod
    def subplots(*args: Any, figsize: tuple[float, float] | None = None, **kw: Any) -> Any:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        return fig, fig.subplots(*args, **kw)

    @staticmethod
    def Rectangle(*args: Any, **kw: Any) -> Any:  # pyplot's name
        from matplotlib.patches import Rectangle

        return Rectangle(*args, **kw)

    @staticmethod
    def close(fig: Any) -> None:
        """Nothing to release: the figure is not registered anywhere."""


def pyplot() -> Figures:
    """The lab's figure maker (see :class:`Figures`)."""
    return Figures()


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block, restoring the previous setting.

    The lab's networks are tiny (1-D inputs, <= 64 units): thread start-up and synchronisation
    cost more than they save, and on a shared 2-core machine two threads per process made the
    trainings 10-50x slower (measured: 0.4 s vs 25 s for the GAN discriminator under load).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays (recursively) into plain Python for :func:`json.dump`.

    Non-finite floats become strings ("inf", "nan") because strict JSON has no literal for them.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else str(x)
    return obj
