"""gankit: generative adversarial networks, trained, sampled, evaluated and diagnosed.

Public API::

    import gankit
    run = gankit.train("dcgan", data="mnist5k", steps=2000)
    images = run.generator.sample(64, seed=0)
    g = gankit.load(run.run_dir)          # later, from disk
    gankit.resume(run.run_dir, steps=4000)
"""

__version__ = "0.1.0"

from .api import Run, Sampler, load, resume, train  # noqa: E402
from .config import Config  # noqa: E402
from .errors import GankitError  # noqa: E402
from .models.custom import GAN  # noqa: E402
from .train.trainer import Callback, Trainer  # noqa: E402

__all__ = ["train", "resume", "load", "Run", "Sampler", "GAN", "Trainer", "Callback", "Config",
           "GankitError", "__version__"]
