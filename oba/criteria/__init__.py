"""Pruning criteria: the interface, the registry, OBA and Taylor (baselines live in ``baselines/``).

The registry (``names``, ``get``, ``register``) imports no criterion until one is
asked for; the interface (``Criterion`` and its helpers) is imported on first use.
"""
from ..lazy import lazy_exports
from .registry import get, names, register

_INTERFACE = {name: ".base" for name in (
    "Criterion", "SeededCriterion", "reduce_groups", "scoring_context", "step_seed", "trainable_parameters",
)}
__all__ = ["get", "names", "register", *_INTERFACE]
__getattr__ = lazy_exports(__name__, _INTERFACE)
