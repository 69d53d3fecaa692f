"""Name → criterion registry (:func:`oba.criteria.get`, in :mod:`oba.criteria.lookup`, builds one).

Criteria register themselves with :func:`register`; third-party packages can
add more through the ``oba.criteria`` entry-point group, and any caller can
name an object directly as ``"package.module:object"``. Listing the names
imports nothing: built-in names are read from the decorators in the source (:mod:`oba._registry`), entry points are listed
from package metadata and loaded only when their criterion is asked for.
"""
from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Callable, TypeVar

from oba._registry import Registry

if TYPE_CHECKING:
    from oba.criteria.base import Criterion

T = TypeVar("T", bound=type)

RETIRED = {
    "oba-group": "taylor2-group (the same criterion, renamed: it is a second-order Taylor score)",
    "oba-hvp": "fastoba (θ⊙Hθ, exactly twice oba-hvp's scores, with the released reduction)",
    "oba-functional": "oba (the paper's OBA) or oba-released (the authors' released scorer)",
}
"""Names that no longer resolve, each with its successor: ``get`` answers them in one line."""

RENAMED_IN_ROWS = {"oba": "taylor2", "oba-group": "taylor2-group"}
"""How rows stored before schema version 6 name today's criteria (``oba`` then meant today's ``taylor2``)."""

CRITERIA: Registry[Callable[..., Criterion]] = Registry("criterion", "criteria", "oba.criteria")
_ENTRY_POINT_GROUP = "oba.criteria"
DOTTED_HINT = " (or 'module:object' for a criterion defined elsewhere)"


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make ``name`` resolve to the decorated criterion class."""

    def decorate(factory: T) -> T:
        factory.name = name
        return CRITERIA.register(name)(factory)

    return decorate


def entry_points_by_name() -> dict[str, EntryPoint]:
    """Criteria that installed packages advertise in the ``oba.criteria`` entry-point group (none loaded).

    Read afresh on every call, so a package installed (or put on ``sys.path``)
    after the first lookup is still found.
    """
    return {entry.name: entry for entry in entry_points(group=_ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Sorted names of every registered criterion (built-in and entry points); imports none of them."""
    return sorted(set(CRITERIA.names()) | set(entry_points_by_name()))
