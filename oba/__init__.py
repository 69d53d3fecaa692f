"""Optimal Brain Apoptosis and a benchmark suite for pruning criteria.

Public API: :func:`prune`, :func:`fidelity`, :mod:`criteria` / :mod:`models` /
:mod:`data` (``names``, ``get``/``create``/``load``, ``register``),
:class:`Group` / :class:`ParamSlice`, :func:`find_groups`, and the cost
measurements in :mod:`oba.core.measure`. Each is imported on first use, so that
``import oba`` (and the command line's ``--help`` and ``list``) never waits for torch.
"""
from oba._lazy import lazy_exports

__version__ = "0.1.0"
_EXPORTS = {
    "criteria": ".criteria", "data": ".data", "models": ".models",
    "fidelity": ".ranking_fidelity", "loss_changes": ".ranking_fidelity",
    "Group": ".groups", "ParamSlice": ".groups",
    "PruneRecord": ".pruning", "find_groups": ".pruning", "prune": ".pruning",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
