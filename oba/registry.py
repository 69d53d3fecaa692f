"""A name → object registry filled by a decorator, as timm does for models.

Criteria, models and datasets each keep one :class:`Registry`. Built-in
modules register their entries when imported; a registry imports them the
first time it is asked for a name, so ``import oba`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` and ``plural`` word the error messages)."""

    def __init__(self, kind: str, plural: str, builtin_modules: Sequence[str]) -> None:
        self.kind, self.plural = kind, plural
        self._builtin_modules = tuple(builtin_modules)
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make ``name`` resolve to the decorated object."""

        def decorate(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._entries[name]!r}")
            self._entries[name] = entry
            return entry

        return decorate

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtin_modules:
                importlib.import_module(module)

    def names(self) -> list[str]:
        """Sorted names of every registered entry."""
        self._load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._entries

    def get(self, name: str, hint: str = "") -> T:
        """The entry called ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
        self._load_builtins()
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.plural}: {', '.join(self.names())}{hint}")
        return self._entries[name]
