"""Where a model's forward fails: the innermost module running when it raised, and the error, on one line.

Pruning changes widths that some models keep elsewhere too (split sizes stored as attributes, a fixed blur kernel
applied with ``groups`` = channels, a norm's stored shape): the trace cannot see those, so a pruned model's forward
is the check (:func:`forward_failure`), and its answer names the module for the user.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from oba._messages import one_line
from oba.core.measure import evaluating
from oba.core.model_calls import forward


def forward_failure(model: nn.Module, example_inputs: Any) -> str | None:
    """``None`` when one eval-mode, no-grad forward of ``model`` on ``example_inputs`` runs; otherwise
    ``"at NAME (TYPE): ERROR: MESSAGE"`` for the innermost module that was running when it raised."""
    names = {module: name for name, module in model.named_modules()}
    running: list[nn.Module] = []

    def enter(module: nn.Module, _args: Any) -> None:
        running.append(module)

    def leave(module: nn.Module, _args: Any, _out: Any) -> None:
        running.pop()

    handles = [h for m in model.modules()
               for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        with evaluating(model):
            forward(model, example_inputs)
    except Exception as err:
        where = f"at {names[running[-1]] or 'the model'} ({type(running[-1]).__name__}): " if running else ""
        return f"{where}{type(err).__name__}: {one_line(str(err))}"
    finally:
        for handle in handles:
            handle.remove()
    return None
