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
    """Training stopped by Ctrl-C at ``step`` of ``run_dir``; ``saved`` is the step of the newest
    checkpoint on disk (``step`` itself after one Ctrl-C, an earlier one after a second Ctrl-C
    that stopped at once, ``None`` when none was written yet)."""

    def __init__(self, run_dir: object, step: int, saved: int | None = None) -> None:
        super().__init__(f"interrupted at step {step}")
        self.run_dir, self.step, self.saved = run_dir, step, saved

    def message(self) -> str:
        """One truthful line: where it stopped, what is saved, how to continue."""
        if self.saved is None:
            return (f"interrupted at step {self.step}, before the first checkpoint; "
                    f"`gankit resume {self.run_dir}` trains it again from step 0")
        if self.saved == self.step:
            return (f"interrupted at step {self.step}; checkpoint saved. Continue with: "
                    f"gankit resume {self.run_dir}")
        return (f"interrupted at step {self.step} without saving it; the newest checkpoint is "
                f"step {self.saved}. Continue from there with: gankit resume {self.run_dir}")
