"""Optimal Brain Apoptosis and a benchmark suite for pruning criteria.

Public API: :func:`prune`, :func:`fidelity`, :mod:`criteria` / :mod:`models` /
:mod:`data` (``names``, ``get``/``create``/``load``, ``register``),
:class:`Group` / :class:`ParamSlice`, :func:`find_groups`, and the cost
measurements in :mod:`oba.measure`.
"""
from . import criteria, data, models
from .fidelity import fidelity, loss_changes
from .groups import Group, ParamSlice
from .pruning import PruneRecord, find_groups, prune

__all__ = ["criteria", "data", "models", "fidelity", "loss_changes", "Group", "ParamSlice", "PruneRecord", "find_groups", "prune"]
__version__ = "0.1.0"
