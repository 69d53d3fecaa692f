"""A suite's preflight check that a library model's pruning groups can be built at all.

Models named ``torchvision:NAME`` or ``timm:NAME`` can be anything: one whose
graph cannot be followed (``torchvision:swin_t``) or takes longer than the
bound must be refused before dense models are trained. Registered models are
not probed: tests/test_registered_models_prunable.py prunes each of them, and a
probe of the smoke suite's models would cost about a second each on two cores.
The probe builds a fresh model for 3×:data:`PROBE_SIZE`² inputs with 10 classes,
not the dataset's own shapes (those are known only once the dataset is loaded);
the graph's topology does not depend on them for the failures caught here, and
the trial builds its groups under the same bound anyway.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from oba import models
from oba._errors import UserError
from oba._messages import one_line
from oba.models.by_name import LIBRARIES
from oba.pruning.dependency_groups import find_groups, remove_units, sync_attention_heads
from oba.pruning.forward_check import forward_failure

PROBE_SIZE = 32


def is_library_model(name: str) -> bool:
    """``torchvision:NAME`` / ``timm:NAME`` (and not a registered model of that spelling)."""
    return name.split(":", 1)[0] in LIBRARIES and name not in models.names()


def groups_problem(name: str, seconds: float | None = None) -> str | None:
    """Why library model ``name`` cannot be pruned (:func:`pruning_problem`, on a fresh model), in one line starting
    ``model NAME:``; ``None`` if it can (or ``name`` is not a library model). The global RNG is left as it was."""
    if not is_library_model(name):
        return None
    with torch.random.fork_rng(devices=[]):
        model = models.create(name, num_classes=10, in_chans=3, image_size=PROBE_SIZE).eval()
        problem = pruning_problem(model, torch.randn(1, 3, PROBE_SIZE, PROBE_SIZE), seconds)
    return None if problem is None else f"model {name}: {problem}"


def pruning_problem(model: nn.Module, example_inputs: Any, seconds: float | None = None) -> str | None:
    """Why ``model`` cannot be pruned, in one line; ``None`` if it can. ``model`` is pruned: pass one to throw away.

    Its pruning groups must be built within ``seconds`` (:func:`~oba.pruning.graph_deadline.build_seconds`), and its
    forward must run once one unit of every group is removed: a width the model keeps outside the traced graph (a
    stored split size, a fixed kernel applied per channel) would otherwise break the first pruning step.
    """
    try:
        dg, groups = find_groups(model, example_inputs, seconds=seconds)
        for group in groups:
            if len(group) > group.min_units:
                remove_units(dg, group, [len(group) - 1])
        sync_attention_heads(model)
    except UserError as err:
        return one_line(str(err))
    except Exception as err:  # Torch-Pruning's own failures while removing (an index mapping it cannot do)
        return f"{type(model).__name__}: cannot remove units: {type(err).__name__}: {one_line(str(err))}"
    failure = forward_failure(model, example_inputs)
    if failure is None:
        return None
    return f"{type(model).__name__}: its forward fails once one unit of every pruning group is removed, {failure}"
