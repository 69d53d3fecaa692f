"""A configured criterion by name: built-in, advertised by an installed package, or ``"module:object"``."""
from __future__ import annotations

import importlib
from typing import Any, Callable

from oba.criteria.base import Criterion
from oba.criteria.registry import CRITERIA, DOTTED_HINT, RETIRED, entry_points_by_name, names, register


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
    if name in RETIRED:
        raise ValueError(f"criterion {name!r} was retired; its successor is {RETIRED[name]}")
    if name in CRITERIA:
        factory = CRITERIA.get(name)
    elif name in (advertised := entry_points_by_name()):
        factory = register(name)(advertised[name].load())
    elif ":" in name:
        factory = _resolve_dotted(name)
    else:
        raise ValueError(f"unknown criterion {name!r}; valid criteria: {', '.join(names())}{DOTTED_HINT}")
    criterion = factory(**options)
    if not isinstance(criterion, Criterion):
        raise ValueError(f"{name!r} did not produce an oba.criteria.Criterion (got {type(criterion).__name__})")
    if not criterion.name:
        criterion.name = name
    return criterion
