"""Optimal Brain Apoptosis and a benchmark suite for pruning criteria.

Public API: :func:`prune`, :mod:`criteria` (``names``, ``get``, ``register``),
:class:`Group` / :class:`ParamSlice`, :func:`find_groups`, and the cost
measurements in :mod:`oba.measure`.
"""
from . import criteria
from .groups import Group, ParamSlice
from .pruning import PruneRecord, find_groups, prune

__all__ = ["criteria", "Group", "ParamSlice", "PruneRecord", "find_groups", "prune"]
__version__ = "0.1.0"
