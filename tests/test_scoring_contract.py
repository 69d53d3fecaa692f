"""The criterion contract: registry behaviour and scoring without side effects.

The contract runs over every registered criterion (:func:`oba.criteria.names`), so a new one is tested as soon as
it is registered."""
from __future__ import annotations

import pytest
import torch
from nets import ResidualCNN, tiny_vit
from torch import nn

import oba

LOSS = nn.functional.cross_entropy
CORE = ["oba", "oba-released", "fastoba", "taylor2", "taylor"]


def test_registry_lists_core_criteria_sorted() -> None:
    names = oba.criteria.names()
    assert names == sorted(names)
    assert set(CORE) <= set(names)


def test_unknown_criterion_names_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        oba.criteria.get("obaa")
    for name in CORE:
        assert name in str(err.value)


@pytest.mark.parametrize("retired, successor", [("oba-hvp", "fastoba"), ("oba-functional", "oba-released"),
                                                ("oba-group", "taylor2-group")])
def test_a_retired_criterion_names_its_successor(retired: str, successor: str) -> None:
    assert retired not in oba.criteria.names()
    with pytest.raises(ValueError, match=f"criterion '{retired}' was retired; its successor is .*{successor}"):
        oba.criteria.get(retired)


def test_dotted_criterion_spec_resolves() -> None:
    crit = oba.criteria.get("oba.criteria.taylor:Taylor")
    assert isinstance(crit, oba.criteria.Criterion)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", oba.criteria.names())
@pytest.mark.parametrize("start_training", [True, False])
@pytest.mark.parametrize("mode", [None, "eval", "train"])
def test_scoring_leaves_state_and_mode_untouched(name: str, start_training: bool, mode: str | None) -> None:
    model = ResidualCNN()
    model.train(start_training)
    model.bn1.eval()
    flags = {n: m.training for n, m in model.named_modules()}
    before = _snapshot(model)
    batches = [(torch.randn(4, 2, 6, 6), torch.randint(0, 3, (4,))) for _ in range(2)]
    try:
        scores = oba.criteria.get(name, mode=mode).parameter_scores(model, batches, LOSS)
    except ValueError as refused:  # per-sample criteria refuse batch norm in train mode, and say so
        assert "batch norm in train mode" in str(refused)
        scores = None
    after = _snapshot(model)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert all(p.grad is None for p in model.parameters())
    if scores is None:
        assert mode == "train" or (mode is None and start_training)
        return
    assert scores.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(s.shape == p.shape for (n, p) in model.named_parameters() for s in [scores[n]])
    assert all(s.dtype == torch.float32 and torch.isfinite(s).all() for s in scores.values())


@pytest.mark.parametrize("name", oba.criteria.names())
def test_the_same_criterion_scores_the_same_model_the_same_way_twice(name: str) -> None:
    model = ResidualCNN().eval()
    batches = [(torch.randn(4, 2, 6, 6), torch.randint(0, 3, (4,))) for _ in range(2)]
    first = oba.criteria.get(name, mode="eval").parameter_scores(model, batches, LOSS)
    again = oba.criteria.get(name, mode="eval").parameter_scores(model, batches, LOSS)
    assert all(torch.equal(first[n], again[n]) for n in first)


@pytest.mark.parametrize("name", ["taylor2", "oba", "fastoba"])
def test_scoring_mode_changes_the_scores_of_a_batchnorm_net(name: str) -> None:
    model = ResidualCNN()
    batches = [(torch.randn(4, 2, 6, 6), torch.randint(0, 3, (4,)))]
    train = oba.criteria.get(name, mode="train").parameter_scores(model, batches, LOSS)
    evaluated = oba.criteria.get(name, mode="eval").parameter_scores(model, batches, LOSS)
    assert not torch.allclose(train["conv1.weight"], evaluated["conv1.weight"])


@pytest.mark.parametrize("name", ["taylor2", "oba"])
def test_fused_attention_model_scores_through_math_kernel(name: str) -> None:
    model = tiny_vit(classes=3, dim=16, depth=1, heads=2, image=8).eval()
    assert model.blocks[0].attn.fused_attn
    batches = [(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,)))]
    scores = oba.criteria.get(name).parameter_scores(model, batches, LOSS)
    assert torch.isfinite(scores["blocks.0.attn.qkv.weight"]).all()
    assert scores["blocks.0.attn.qkv.weight"].abs().sum() > 0


@pytest.mark.parametrize("name", CORE)
def test_empty_calibration_set_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="calibration batch"):
        oba.criteria.get(name).parameter_scores(ResidualCNN(), [], LOSS)
