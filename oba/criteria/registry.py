"""Name → criterion registry.

Criteria register themselves with :func:`register`; third-party packages can
add more through the ``oba.criteria`` entry-point group, and any caller can
name an object directly as ``"package.module:object"``.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, TypeVar

from .base import Criterion

T = TypeVar("T", bound=type)

_REGISTRY: dict[str, Callable[..., Criterion]] = {}
_BUILTINS_LOADED = False
_ENTRY_POINT_GROUP = "oba.criteria"


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make ``name`` resolve to the decorated criterion class."""

    def decorate(factory: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"criterion {name!r} is already registered by {_REGISTRY[name]!r}")
        _REGISTRY[name] = factory
        factory.name = name
        return factory

    return decorate


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    importlib.import_module("oba.criteria.oba")
    importlib.import_module("oba.criteria.taylor")
    importlib.import_module("oba.criteria.oba_group")
    importlib.import_module("baselines")


def _load_entry_points() -> None:
    """Register criteria that installed packages advertise in the ``oba.criteria`` entry-point group.

    Scanned by :func:`names` and whenever :func:`get` meets an unknown name, so a
    package installed (or put on ``sys.path``) after the first lookup is still
    found. Built-in names win over entry points.
    """
    for entry in entry_points(group=_ENTRY_POINT_GROUP):
        if entry.name not in _REGISTRY:
            factory = entry.load()
            factory.name = entry.name
            _REGISTRY[entry.name] = factory


def names() -> list[str]:
    """Sorted names of every registered criterion (built-in and entry points)."""
    _load_builtins()
    _load_entry_points()
    return sorted(_REGISTRY)


def _resolve_dotted(spec: str) -> Callable[..., Criterion]:
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import criterion {spec!r}: {err}") from err
    return target


def get(name: str, **options: Any) -> Criterion:
    """Return a configured criterion.

    ``name`` is a registered name or ``"module:object"``; ``options`` go to the
    criterion's constructor. An unknown name raises ``ValueError`` listing the
    valid names.
    """
    _load_builtins()
    if name not in _REGISTRY:
        _load_entry_points()
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif ":" in name:
        factory = _resolve_dotted(name)
    else:
        raise ValueError(
            f"unknown criterion {name!r}; valid criteria: {', '.join(names())} "
            "(or 'module:object' for a criterion defined elsewhere)"
        )
    criterion = factory(**options)
    if not isinstance(criterion, Criterion):
        raise ValueError(f"{name!r} did not produce an oba.criteria.Criterion (got {type(criterion).__name__})")
    if not criterion.name:
        criterion.name = name
    return criterion
