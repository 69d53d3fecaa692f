"""Imports deferred to first use, so that importing a package or running a light command stays cheap.

``oba``, ``oba.criteria`` and ``oba.data`` export names whose modules import
torch; :func:`lazy_exports` gives such a package a module ``__getattr__``
(PEP 562) that imports the defining module only when a name is first used.

A few third-party packages are heavy and needed only by some paths (Ray by a run
but not by a dry run, a report or the gate; timm and torchvision by models named
after them). A module declares each at its top as ``ray = lazy_module("ray")``:
the dependency is visible where imports are, and the import happens at the first
attribute access (``ray.init``). ``tests/test_import_graph.py`` lists which
packages may be lazy, and why.
"""
from __future__ import annotations

import importlib
import types
from typing import Any, Callable, Mapping


class LazyModule(types.ModuleType):
    """A stand-in for the module ``name`` that imports it on the first access to one of its attributes."""

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attribute)


def lazy_module(name: str) -> Any:
    """A :class:`LazyModule` for ``name`` (a dotted module path such as ``"ray.train.torch"``)."""
    return LazyModule(name)


def loaded(module: Any) -> types.ModuleType:
    """The real module behind a :class:`LazyModule` (importing it now), or ``module`` itself."""
    return importlib.import_module(module.__name__) if isinstance(module, LazyModule) else module


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` resolving ``exports`` (``name → module``, relative to the package).

    A module named after the attribute itself (``"criteria": ".criteria"``)
    resolves to that module; any other name to the module's attribute of that
    name. Unknown names raise ``AttributeError`` as usual.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name], package)
        return module if module.__name__ == f"{package}.{name}" else getattr(module, name)

    return __getattr__
