"""Pruning criteria: the interface, the registry, every criterion (OBA, Taylor and the baselines), and fidelity.

The registry (``names``, ``register``) imports no criterion until one is asked for
(``get``); the interface (``Criterion`` and its helpers) is imported on first use.
"""
from oba._lazy import lazy_exports
from oba.criteria.registry import names, register

_INTERFACE = {name: "oba.criteria.base" for name in (
    "Criterion", "SeededCriterion", "reduce_groups", "scoring_context", "step_seed", "trainable_parameters",
)} | {"get": "oba.criteria.lookup"}
__all__ = ["names", "register", *_INTERFACE]
__getattr__ = lazy_exports(__name__, _INTERFACE)
