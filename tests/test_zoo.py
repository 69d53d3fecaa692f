"""The model zoo (:mod:`oba.models.zoo`): every torchvision classifier and one model of each major timm family, random
init, at the smallest input it accepts, passes the suites' preflight probe and is pruned by ``oba`` to 20 % fewer
MACs (``magnitude-l1`` above :data:`~oba.models.zoo.LARGE_MODEL_PARAMETERS`; the :data:`SLOW` ones are probed only),
or is refused by the probe in one line with the reason :data:`~oba.models.zoo.REFUSALS` gives; and RegNet, ResNeXt
and ShuffleNetV2 prune with every criterion (MobileNetV3: ``test_double_backward_activations.py``).

These tests run in their own pytest-xdist group (``zoo``): the README's test command gives them one worker and every
other test the other.
"""
from __future__ import annotations

import copy
import re

import pytest
import torch
import torchvision
from cheap_criteria import cheap
from torch import nn

import oba
from oba.core.measure import count_macs, count_params
from oba.models import create
from oba.models.zoo import LARGE_MODEL_PARAMETERS, REFUSALS, ZooModel, at_smallest_input, zoo_names
from oba.pruning.probe import pruning_problem

pytestmark = pytest.mark.zoo
LOSS = nn.functional.cross_entropy
RATIO = 0.2
SLOW = {
    "timm:densenet121", "timm:inception_v3", "torchvision:convnext_base", "torchvision:convnext_large",
    "torchvision:convnext_small", "torchvision:densenet161", "torchvision:densenet169", "torchvision:densenet201",
    "torchvision:efficientnet_b1", "torchvision:efficientnet_b2", "torchvision:efficientnet_b3",
    "torchvision:efficientnet_b4", "torchvision:efficientnet_b5", "torchvision:efficientnet_b6",
    "torchvision:efficientnet_b7", "torchvision:efficientnet_v2_l", "torchvision:efficientnet_v2_m",
    "torchvision:regnet_x_16gf", "torchvision:regnet_x_32gf", "torchvision:regnet_y_128gf",
    "torchvision:regnet_y_16gf", "torchvision:regnet_y_32gf", "torchvision:regnet_y_8gf", "torchvision:resnet101",
    "torchvision:resnet152", "torchvision:resnext101_32x8d", "torchvision:resnext101_64x4d", "torchvision:vit_b_16",
    "torchvision:vit_h_14", "torchvision:vit_l_16", "torchvision:vit_l_32", "torchvision:wide_resnet101_2",
}
"""Models whose whole case (probe, then ``oba``) took more than 10 s on the 2-core machine, two cases at a time
(2026-12-08): marked slow. Here they are probed only — their groups built, one unit of every group removed, a forward
run — and their families' smaller members are pruned; ``benchmarks/zoo.py`` prunes every zoo model with several
criteria (docs/models.md)."""
REFUSAL_BOUND = 5.0
"""Graph-build bound (seconds) while a model documented as refused is probed: the bound, not its length, is tested."""


def _cases() -> list:
    return [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else []) for name in zoo_names()]


def assert_prunes(built: ZooModel, criterion: str) -> None:
    """``criterion`` removes 20 ± 1 % of ``built``'s MACs (pruning it in place); the pruned model keeps its output
    shape, runs backward with finite gradients, and has the MACs its record reports (an independent count)."""
    size = built.size
    example = torch.randn(1, 3, size, size)
    batches = [(torch.randn(2, 3, size, size), torch.randint(0, 10, (2,)))]
    dense = count_macs(built.model, example)
    pruned, record = oba.prune(built.model, example, batches, LOSS, cheap(criterion), ratio=RATIO, steps=1)
    assert record.macs_dense == dense and abs(record.macs_removed - RATIO) <= 0.01, record.macs_removed
    out = pruned.train()(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)
    LOSS(out, torch.randint(0, 10, (2,))).backward()
    assert not [n for n, p in pruned.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
    assert count_macs(pruned.eval(), example) == record.macs_pruned


@pytest.mark.parametrize("name", _cases())
def test_a_zoo_model_prunes_or_is_refused_for_its_documented_reason(name: str) -> None:
    """The suites' preflight probe (one unit of every group removed, then a forward) refuses exactly the documented
    models, each in one line matching its reason; every other model passes it, and prunes (:data:`SLOW`: probed
    only)."""
    refusal = REFUSALS.get(name)
    built = at_smallest_input(name)
    size = built.size
    problem = pruning_problem(built.model, torch.randn(1, 3, size, size), REFUSAL_BOUND if refusal else None)
    if refusal is not None:
        assert problem is not None and re.search(refusal.pattern, problem) and "\n" not in problem, problem
        return
    assert problem is None
    del built
    if name in SLOW:
        return
    model = create(name, 10, in_chans=3, image_size=size).eval()
    assert_prunes(ZooModel(name, model, size), "oba" if count_params(model) <= LARGE_MODEL_PARAMETERS else "magnitude-l1")


def test_every_documented_refusal_is_a_zoo_model_with_a_reason() -> None:
    assert set(REFUSALS) <= set(zoo_names())
    assert all(r.pattern and r.why for r in REFUSALS.values())


FAMILIES = ("regnet_x_400mf", "regnet_y_400mf", "resnext50_32x4d", "shufflenet_v2_x0_5")


@pytest.fixture(scope="module")
def families() -> dict[str, ZooModel]:
    torch.manual_seed(0)
    return {name: ZooModel(name, torchvision.models.get_model(name, num_classes=10).eval(), 32) for name in FAMILIES}


@pytest.mark.slow
@pytest.mark.parametrize("criterion", oba.criteria.names())
@pytest.mark.parametrize("name", FAMILIES)
def test_regnet_resnext_and_shufflenet_prune_with_every_criterion(families, name: str, criterion: str) -> None:
    family = families[name]
    assert_prunes(ZooModel(name, copy.deepcopy(family.model), family.size), criterion)
