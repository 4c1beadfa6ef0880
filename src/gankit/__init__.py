"""gankit: generative adversarial networks, trained, sampled, evaluated and diagnosed.

Public API::

    import gankit
    run = gankit.train("dcgan", data="mnist5k", steps=2000)
    images = run.generator.sample(64, seed=0)
    g = gankit.load(run.run_dir)          # later, from disk
    gankit.resume(run.run_dir, steps=4000)
"""

__version__ = "0.1.0"

# Before torch is imported (below): idle OpenMP threads sleep instead of spinning against other
# processes (gankit.threads; an explicit user setting wins). OpenMP reads these once, at load.
from .threads import openmp_env as _openmp_env

_openmp_env()

from .api import Run, Sampler, TrainedModel, evaluate_run, load, resume, train
from .config import Config
from .errors import GankitError
from .models.custom import GAN
from .train.trainer import Callback, Trainer

__all__ = [
           "GAN",
           "Callback",
           "Config",
           "GankitError",
           "Run",
           "Sampler",
           "TrainedModel",
           "Trainer",
           "__version__",
           "evaluate_run",
           "load",
           "resume",
           "train",
]
