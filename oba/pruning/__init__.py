"""Structured (channels, neurons, heads) and unstructured (weight masks) pruning."""
from .api import STRUCTURES, PruneRecord, prune
from .groups import PrunableGroup, find_groups
from .unstructured import apply_masks

__all__ = ["STRUCTURES", "PruneRecord", "prune", "PrunableGroup", "find_groups", "apply_masks"]
