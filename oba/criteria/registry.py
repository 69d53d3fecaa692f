"""Name → criterion registry.

Criteria register themselves with :func:`register`; third-party packages can
add more through the ``oba.criteria`` entry-point group, and any caller can
name an object directly as ``"package.module:object"``. Listing the names
imports nothing: built-in names are declared below, entry points are listed
from package metadata and loaded only when their criterion is asked for.
"""
from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..registry import Registry

if TYPE_CHECKING:
    from .base import Criterion

T = TypeVar("T", bound=type)

BUILTINS = {
    "oba": "oba.criteria.oba", "oba-hvp": "oba.criteria.oba", "oba-group": "oba.criteria.oba_group",
    "oba-functional": "oba.criteria.oba_functional",
    "taylor": "oba.criteria.taylor", "random": "baselines.random",
    "magnitude-l1": "baselines.magnitude", "magnitude-l2": "baselines.magnitude",
    "obd": "baselines.obd", "obd-hutchinson": "baselines.obd", "kfac-obd": "baselines.kfac", "kfac-obs": "baselines.kfac",
}
"""Every built-in criterion and the module that registers it."""

_CRITERIA: Registry[Callable[..., Criterion]] = Registry("criterion", "criteria", BUILTINS)
_ENTRY_POINT_GROUP = "oba.criteria"
_DOTTED_HINT = " (or 'module:object' for a criterion defined elsewhere)"


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make ``name`` resolve to the decorated criterion class."""

    def decorate(factory: T) -> T:
        factory.name = name
        return _CRITERIA.register(name)(factory)

    return decorate


def _entry_points() -> dict[str, EntryPoint]:
    """Criteria that installed packages advertise in the ``oba.criteria`` entry-point group (none loaded).

    Read afresh on every call, so a package installed (or put on ``sys.path``)
    after the first lookup is still found.
    """
    return {entry.name: entry for entry in entry_points(group=_ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Sorted names of every registered criterion (built-in and entry points); imports none of them."""
    return sorted(set(_CRITERIA.names()) | set(_entry_points()))


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
    from .base import Criterion

    if name in _CRITERIA:
        factory = _CRITERIA.get(name)
    elif name in (advertised := _entry_points()):
        factory = register(name)(advertised[name].load())
    elif ":" in name:
        factory = _resolve_dotted(name)
    else:
        raise ValueError(f"unknown criterion {name!r}; valid criteria: {', '.join(names())}{_DOTTED_HINT}")
    criterion = factory(**options)
    if not isinstance(criterion, Criterion):
        raise ValueError(f"{name!r} did not produce an oba.criteria.Criterion (got {type(criterion).__name__})")
    if not criterion.name:
        criterion.name = name
    return criterion
