"""A criterion package outside the project, as a researcher would write one.

``HalfMagnitude`` registers through the ``oba.criteria`` entry-point group
(see the dist-info beside this package) and can also be named directly as
``oba_test_plugin:HalfMagnitude``. ``Exploding`` always fails, to check that a
failed cell is stored with its error; ``Garish`` fails with terminal colour codes
in its message, to check that they are not stored.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from oba.criteria import Criterion, trainable_parameters


class HalfMagnitude(Criterion):
    """``s_i = |θ_i| / 2``: a magnitude criterion defined outside the project."""

    def parameter_scores(self, model: nn.Module, batches: Sequence, loss_fn) -> dict[str, Tensor]:
        return {name: p.detach().abs() / 2 for name, p in trainable_parameters(model).items()}


class Exploding(Criterion):
    """Raises on every call."""

    def parameter_scores(self, model: nn.Module, batches: Sequence, loss_fn) -> dict[str, Tensor]:
        raise RuntimeError("this criterion always fails")


class Garish(Criterion):
    """Raises an error whose message carries terminal colour codes, as Ray's own messages do."""

    def parameter_scores(self, model: nn.Module, batches: Sequence, loss_fn) -> dict[str, Tensor]:
        raise RuntimeError("\x1b[31mcoloured\x1b[0m failure")
