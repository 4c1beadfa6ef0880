"""Validated registries.

Models, losses, regularizers, datasets, feature extractors and metrics are chosen by name from a
:class:`Registry`, never through ``if/elif`` chains on strings. Looking up an unknown name raises a
:class:`~gankit.errors.ConfigError` that lists the choices and suggests the closest one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object, its one-line description and its metadata (e.g. a dataset's kind,
    classes, fitting feature extractor and metrics; read by whoever needs them, so no module
    keeps lists of names)."""

    name: str
    obj: T
    description: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A name -> object mapping with descriptions and helpful errors."""

    def __init__(self, kind: str, populate: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._populate = populate  # module whose import registers the entries

    def _ensure(self) -> None:
        """Import the module that registers the entries, once, on first lookup."""
        if self._populate is not None:
            mod, self._populate = self._populate, None
            import importlib

            importlib.import_module(mod)

    def register(self, name: str, obj: T | None = None, *, description: str = "",
                 meta: dict[str, Any] | None = None) -> Any:
        """Register ``obj`` under ``name`` (with optional ``meta``data); usable as a decorator
        when ``obj`` is omitted."""

        def add(o: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            desc = description or ((getattr(o, "__doc__", None) or "").strip().splitlines() or [""])[0]
            self._entries[name] = Entry(name, o, desc, dict(meta or {}))
            return o

        if obj is not None:
            return add(obj)
        return add

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        self._ensure()
        if name not in self._entries:
            choices = sorted(self._entries)
            raise ConfigError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, choices)}; "
                f"choices: {', '.join(choices)}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._ensure()
        return iter(self._entries[k] for k in sorted(self._entries))

    def __len__(self) -> int:
        self._ensure()
        return len(self._entries)


MODELS: Registry[Any] = Registry("model", "gankit.models")
LOSSES: Registry[Any] = Registry("loss", "gankit.losses")
REGULARIZERS: Registry[Any] = Registry("regularizer", "gankit.losses")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset", "gankit.data")
FEATURES: Registry[Any] = Registry("feature extractor", "gankit.metrics")
METRICS: Registry[Any] = Registry("metric", "gankit.metrics")
