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

import torch

from oba import models
from oba._errors import UserError
from oba._messages import one_line
from oba.models.by_name import LIBRARIES
from oba.pruning.graph import build_graph

PROBE_SIZE = 32


def is_library_model(name: str) -> bool:
    """``torchvision:NAME`` / ``timm:NAME`` (and not a registered model of that spelling)."""
    return name.split(":", 1)[0] in LIBRARIES and name not in models.names()


def groups_problem(name: str, seconds: float | None = None) -> str | None:
    """Why library model ``name``'s pruning groups cannot be built within ``seconds``, in one line; ``None`` if they can
    (or ``name`` is not a library model). The global RNG is left as it was."""
    if not is_library_model(name):
        return None
    with torch.random.fork_rng(devices=[]):
        model = models.create(name, num_classes=10, in_chans=3, image_size=PROBE_SIZE).eval()
        try:
            build_graph(model, torch.randn(1, 3, PROBE_SIZE, PROBE_SIZE), seconds).get_all_groups()
        except UserError as err:
            return f"model {name}: {one_line(str(err))}"
        except Exception as err:  # Torch-Pruning's own failures (e.g. an index mapping it cannot do)
            return f"model {name}: cannot build pruning groups: {type(err).__name__}: {one_line(str(err))}"
    return None
