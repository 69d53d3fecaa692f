"""A name → object registry filled by a decorator, as timm does for models.

Criteria, models and datasets each keep one :class:`Registry`. Its built-in
entries are declared up front as ``{name: module}``, so their names are known
without importing anything (``oba list`` never imports torch); a built-in
module is imported the first time one of its entries is asked for, and
registers its entries then. Other code may register more entries at any time.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Mapping, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` and ``plural`` word the error messages).

    ``builtins`` maps every built-in name to the module that registers it.
    """

    def __init__(self, kind: str, plural: str, builtins: Mapping[str, str]) -> None:
        self.kind, self.plural = kind, plural
        self._builtins = dict(builtins)
        self._builtin_modules = frozenset(self._builtins.values())
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make ``name`` resolve to the decorated object.

        A built-in module may register only the names declared for it, so that
        :meth:`names` stays true without importing it.
        """

        def decorate(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._entries[name]!r}")
            module = getattr(entry, "__module__", None)
            if name in self._builtins and module != self._builtins[name]:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._builtins[name]}")
            if module in self._builtin_modules and self._builtins.get(name) != module:
                raise ValueError(
                    f"built-in module {module} registers {self.kind} {name!r}, which its registry does not declare "
                    f"for it; add {name!r}: {module!r} to the registry's built-ins"
                )
            self._entries[name] = entry
            return entry

        return decorate

    def plugins(self) -> frozenset[str]:
        """The names registered that are not built-in (plugins', or a test's)."""
        return frozenset(self._entries.keys() - self._builtins.keys())

    def unregister(self, name: str) -> None:
        """Forget entry ``name``, which must not be a built-in (a plugin's, or one a test registered)."""
        if name in self._builtins:
            raise ValueError(f"{self.kind} {name!r} is built in and cannot be unregistered")
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """Sorted names of every built-in and registered entry (imports nothing)."""
        return sorted(self._builtins.keys() | self._entries.keys())

    def __contains__(self, name: str) -> bool:
        return name in self._builtins or name in self._entries

    def get(self, name: str) -> T:
        """The entry called ``name``, importing its built-in module if needed.

        An unknown name raises ``ValueError`` listing the valid ones.
        """
        if name not in self._entries and name in self._builtins:
            module = self._builtins[name]
            importlib.import_module(module)
            if name not in self._entries:
                raise RuntimeError(f"built-in module {module} did not register {self.kind} {name!r}")
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.plural}: {', '.join(self.names())}")
        return self._entries[name]
