"""A name → object registry filled by a decorator, as timm does for models.

Criteria, models, datasets, pipelines and reductions each keep one :class:`Registry`. Its built-in entries are
the decorators in the source of its ``home`` (a package's modules, or one module): ``@register("name")`` is the
only thing to write, and the names are read from the source (``ast``) without importing anything (``oba list``
never imports torch). A built-in module is imported the first time one of its entries is asked for, and registers
its entries then. Other code may register more entries at any time.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
from functools import cached_property
from pathlib import Path
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


def declared_names(home: str, decorator: str) -> dict[str, str]:
    """``{name: module}`` for every ``@<decorator>("name", ...)`` in the source of ``home``: the modules directly
    inside a package (subpackages aside), or one module."""
    spec = importlib.util.find_spec(home)
    if spec is None:
        raise ModuleNotFoundError(f"no module named {home!r}")
    if spec.submodule_search_locations:
        files = {f"{home}.{path.stem}": path for folder in spec.submodule_search_locations
                 for path in sorted(Path(folder).glob("*.py")) if path.stem != "__init__"}
    else:
        files = {home: Path(spec.origin)}
    found: dict[str, str] = {}
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for call in getattr(node, "decorator_list", ()):
                if (isinstance(call, ast.Call) and ast.unparse(call.func) == decorator and call.args
                        and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
                    found[call.args[0].value] = module
    return found


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` and ``plural`` word the error messages).

    The built-ins are the ``@<decorator>("name")`` lines in ``home`` (:func:`declared_names`), read on first need.
    """

    def __init__(self, kind: str, plural: str, home: str, decorator: str = "register") -> None:
        self.kind, self.plural = kind, plural
        self.home, self.decorator = home, decorator
        self._entries: dict[str, T] = {}

    @cached_property
    def _builtins(self) -> dict[str, str]:
        return declared_names(self.home, self.decorator)

    @cached_property
    def _builtin_modules(self) -> frozenset[str]:
        return frozenset(self._builtins.values())

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make ``name`` resolve to the decorated object.

        A built-in module may register only the names its source declares literally, so that :meth:`names` stays
        true without importing it.
        """

        def decorate(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._entries[name]!r}")
            module = getattr(entry, "__module__", None)
            if name in self._builtins and module != self._builtins[name]:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._builtins[name]}")
            if module in self._builtin_modules and self._builtins.get(name) != module:
                raise ValueError(
                    f"built-in module {module} registers {self.kind} {name!r}, which its source does not declare; "
                    f"write the name literally: @{self.decorator}({name!r})"
                )
            self._entries[name] = entry
            return entry

        return decorate

    def builtins(self) -> dict[str, str]:
        """Every built-in name and the module that registers it."""
        return dict(self._builtins)

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
