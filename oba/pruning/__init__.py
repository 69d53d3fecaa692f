"""Structured (channels, neurons, heads) and unstructured (weight masks) pruning."""
from oba.pruning.api import PruneRecord, prune
from oba.pruning.dependency_groups import PrunableGroup, find_groups
from oba.pruning.settings import STRUCTURES, PruneSettings
from oba.pruning.unstructured import apply_masks

__all__ = ["STRUCTURES", "PruneRecord", "PruneSettings", "prune", "PrunableGroup", "find_groups", "apply_masks"]
