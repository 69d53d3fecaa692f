"""A criterion package outside the project, as a researcher would write one.

``HalfMagnitude`` registers through the ``oba.criteria`` entry-point group
(see the dist-info beside this package) and can also be named directly as
``oba_test_plugin:HalfMagnitude``. ``Exploding`` always fails, to check that a
failed cell is stored with its error; ``Garish`` fails with terminal colour codes
in its message, to check that they are not stored. ``DiesOnce`` and
``AlwaysDies`` end their worker process abruptly, as a lost node or a crash in
native code would: a trial dies with the cell.
"""
from __future__ import annotations

import os
from pathlib import Path
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


class DiesOnce(HalfMagnitude):
    """Ends its process the first time it scores (creating the file ``$OBA_TEST_DIED``), then scores as HalfMagnitude."""

    def parameter_scores(self, model: nn.Module, batches: Sequence, loss_fn) -> dict[str, Tensor]:
        marker = Path(os.environ["OBA_TEST_DIED"])
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return super().parameter_scores(model, batches, loss_fn)


class AlwaysDies(Criterion):
    """Ends its process every time it scores."""

    def parameter_scores(self, model: nn.Module, batches: Sequence, loss_fn) -> dict[str, Tensor]:
        os._exit(1)
