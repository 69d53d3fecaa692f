"""Name → criterion registry.

Criteria register themselves with :func:`register`; third-party packages can
add more through the ``oba.criteria`` entry-point group, and any caller can
name an object directly as ``"package.module:object"``.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, TypeVar

from ..registry import Registry
from .base import Criterion

T = TypeVar("T", bound=type)

_CRITERIA: Registry[Callable[..., Criterion]] = Registry(
    "criterion", "criteria", ("oba.criteria.oba", "oba.criteria.taylor", "oba.criteria.oba_group", "baselines")
)
_ENTRY_POINT_GROUP = "oba.criteria"
_DOTTED_HINT = " (or 'module:object' for a criterion defined elsewhere)"


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make ``name`` resolve to the decorated criterion class."""

    def decorate(factory: T) -> T:
        factory.name = name
        return _CRITERIA.register(name)(factory)

    return decorate


def _load_entry_points() -> None:
    """Register criteria that installed packages advertise in the ``oba.criteria`` entry-point group.

    Scanned by :func:`names` and whenever :func:`get` meets an unknown name, so a
    package installed (or put on ``sys.path``) after the first lookup is still
    found. Built-in names win over entry points.
    """
    for entry in entry_points(group=_ENTRY_POINT_GROUP):
        if entry.name not in _CRITERIA:
            register(entry.name)(entry.load())


def names() -> list[str]:
    """Sorted names of every registered criterion (built-in and entry points)."""
    _load_entry_points()
    return _CRITERIA.names()


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
    if name not in _CRITERIA:
        _load_entry_points()
    if name not in _CRITERIA and ":" in name:
        factory = _resolve_dotted(name)
    else:
        factory = _CRITERIA.get(name, hint=_DOTTED_HINT)
    criterion = factory(**options)
    if not isinstance(criterion, Criterion):
        raise ValueError(f"{name!r} did not produce an oba.criteria.Criterion (got {type(criterion).__name__})")
    if not criterion.name:
        criterion.name = name
    return criterion
