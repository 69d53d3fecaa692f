"""Pruning criteria: the interface, the registry, OBA and Taylor (baselines live in ``baselines/``)."""
from .base import Criterion, reduce_groups, scoring_context, trainable_parameters
from .registry import get, names, register

__all__ = ["Criterion", "get", "names", "register", "reduce_groups", "scoring_context", "trainable_parameters"]
