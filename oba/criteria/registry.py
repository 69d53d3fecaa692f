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
    "oba": "oba.criteria.oba", "oba-released": "oba.criteria.oba", "fastoba": "oba.criteria.oba",
    "taylor-depth": "oba.criteria.oba",
    "taylor2": "oba.criteria.taylor2", "taylor2-group": "oba.criteria.taylor2_group",
    "taylor": "oba.criteria.taylor", "random": "baselines.random",
    "magnitude-l1": "baselines.magnitude", "magnitude-l2": "baselines.magnitude",
    "obd": "baselines.obd", "obd-hutchinson": "baselines.obd", "kfac-obd": "baselines.kfac", "kfac-obs": "baselines.kfac",
}
"""Every built-in criterion and the module that registers it."""

RETIRED = {
    "oba-group": "taylor2-group (the same criterion, renamed: it is a second-order Taylor score)",
    "oba-hvp": "fastoba (θ⊙Hθ, exactly twice oba-hvp's scores, with the released reduction)",
    "oba-functional": "oba (the paper's OBA) or oba-released (the authors' released scorer)",
}
"""Names that no longer resolve, each with its successor: ``get`` answers them in one line."""

RENAMED_IN_ROWS = {"oba": "taylor2", "oba-group": "taylor2-group"}
"""How rows stored before schema version 6 name today's criteria (``oba`` then meant today's ``taylor2``)."""

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

    if name in RETIRED:
        raise ValueError(f"criterion {name!r} was retired; its successor is {RETIRED[name]}")
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
