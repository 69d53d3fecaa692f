"""Optimal Brain Apoptosis and a benchmark suite for pruning criteria.

Public API: :func:`prune` (with :class:`PruneSettings`), :func:`fidelity`, :mod:`criteria` / :mod:`models` /
:mod:`data` (``names``, ``get``/``create``/``load``, ``register``),
:class:`Group` / :class:`ParamSlice`, :func:`find_groups`, and the cost
measurements in :mod:`oba.core.measure`. Each is imported on first use, so that
``import oba`` (and the command line's ``--help`` and ``list``) never waits for torch.
"""
from oba._lazy import lazy_exports

__version__ = "0.1.0"
_EXPORTS = {
    "criteria": "oba.criteria", "data": "oba.data", "models": "oba.models",
    "fidelity": "oba.criteria.fidelity", "loss_changes": "oba.criteria.fidelity",
    "Group": "oba.core.groups", "ParamSlice": "oba.core.groups",
    "PruneRecord": "oba.pruning", "PruneSettings": "oba.pruning", "find_groups": "oba.pruning", "prune": "oba.pruning",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
