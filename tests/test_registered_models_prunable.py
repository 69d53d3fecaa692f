"""Every registered model is prunable by the structured pruner: it runs afterwards and hits the MACs target."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import oba
from oba.core.measure import count_macs


@pytest.mark.parametrize("name", oba.models.names())
def test_registered_model_prunes_to_target(name: str) -> None:
    torch.manual_seed(0)
    model = oba.models.create(name, num_classes=10, in_chans=3, image_size=32).eval()
    example = torch.randn(1, 3, 32, 32)
    batches = [(torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)))]
    dense = count_macs(model, example)
    model, record = oba.prune(model, example, batches, nn.functional.cross_entropy, "magnitude-l1", ratio=0.3, steps=1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert abs((1 - count_macs(model, example) / dense) - 0.3) <= 0.05
    kinds = {w["kind"] for w in record.layer_widths.values()}
    assert kinds == {"heads", "neurons"} if name.startswith("vit") else "channels" in kinds
    assert any(w["remaining"] < w["dense"] for w in record.layer_widths.values())
