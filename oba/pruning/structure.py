"""A model's MAC counts and prunable groups, measured again only after its structure changed.

Tracing the dependency graph and counting MACs each cost a forward pass (or
several); within one pruning run both are asked for many times between two
changes of the model. :class:`ModelStructure` answers from what it measured
last until :meth:`ModelStructure.changed` is called, so the graph is traced
only when groups are needed for a model whose structure changed, and MACs are
counted at most once per change (a trace reuses that count).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch_pruning as tp
from torch import nn

from oba._messages import one_line
from oba.core.measure import macs_by_module
from oba.pruning.dependency_groups import PrunableGroup, find_groups
from oba.pruning.forward_check import forward_failure
from oba.pruning.graph import UnsupportedModel


class ModelStructure:
    """Lazily measured MACs and groups of ``model`` (see the module docstring).

    ``macs`` is :func:`~oba.core.measure.macs_by_module` of ``model`` as given, when the
    caller already has it (e.g. counted once for every cell of a dense model).
    """

    def __init__(self, model: nn.Module, example_inputs: Any, ignored_layers: Sequence[nn.Module] = (),
                 macs: dict[str, int] | None = None) -> None:
        self.model, self.example_inputs, self.ignored_layers = model, example_inputs, ignored_layers
        self._macs = dict(macs) if macs is not None else None
        self._traced: tuple[tp.DependencyGraph, list[PrunableGroup]] | None = None
        self._pruned = False

    def changed(self) -> None:
        """The model's structure changed (units were removed): forget what was measured."""
        self._macs = self._traced = None
        self._pruned = True

    def macs_by_module(self) -> dict[str, int]:
        """MACs of one forward per module name ("" is the total), counted if not known since the last change.

        Raises :class:`~oba.pruning.graph.UnsupportedModel`, naming the module, when the forward fails after units
        were removed (a width the model keeps outside the traced graph)."""
        if self._macs is None:
            try:
                self._macs = macs_by_module(self.model, self.example_inputs)
            except Exception as err:
                if not self._pruned:
                    raise
                failure = forward_failure(self.model, self.example_inputs) or f"{type(err).__name__}: {one_line(str(err))}"
                raise UnsupportedModel(f"{type(self.model).__name__}: its forward fails once units are removed, "
                                       f"{failure}") from err
        return self._macs

    def macs(self) -> int:
        """MACs of one forward of the model as it is now."""
        return self.macs_by_module()[""]

    def groups(self) -> tuple[tp.DependencyGraph, list[PrunableGroup]]:
        """Dependency graph and prunable groups of the model as it is now, traced if not known since the last change."""
        if self._traced is None:
            self._traced = find_groups(self.model, self.example_inputs, self.ignored_layers, self.macs_by_module())
        return self._traced
