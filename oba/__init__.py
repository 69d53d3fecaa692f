"""Optimal Brain Apoptosis and a benchmark suite for pruning criteria."""
from . import criteria
from .groups import Group, ParamSlice

__all__ = ["criteria", "Group", "ParamSlice"]
__version__ = "0.1.0"
