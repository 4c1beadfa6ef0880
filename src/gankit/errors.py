"""User-facing errors.

Every mistake a user can make (bad path, corrupt image, unknown config key, incompatible
checkpoint ...) raises a :class:`GankitError`. The CLI turns it into one clear message and exit
code 2; the Python API lets it propagate so callers can catch it.
"""

from __future__ import annotations


class GankitError(Exception):
    """Base class of every error caused by user input rather than by a bug."""

    exit_code = 2


class ConfigError(GankitError):
    """Unknown or invalid configuration key or value."""


class DataError(GankitError):
    """Missing, unreadable, corrupt or inconsistent data."""


class CheckpointError(GankitError):
    """Missing, corrupt or incompatible run directory / checkpoint."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C after saving a checkpoint (``run_dir``, ``step``)."""

    def __init__(self, run_dir: object, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.run_dir, self.step = run_dir, step
