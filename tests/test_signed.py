"""Criteria with a signed group estimate run ``signed``: group score Σ s instead of |Σ s|, lowest pruned first."""
from __future__ import annotations

from typing import Sequence

import pytest
import torch
from nets import MLP
from torch import Tensor, nn

import oba
from oba.criteria import Criterion, trainable_parameters
from oba.pruning.allocation import normalise

LOSS = nn.functional.cross_entropy
SIGNED = {"taylor", "taylor2", "taylor2-group"}


class FixedSums(Criterion):
    """Preset per-parameter scores, declared a signed estimate (for checking what the pruner removes)."""

    name = "fixed-signed"
    signed_estimate = True

    def __init__(self, scores: dict[str, Tensor], signed: bool) -> None:
        super().__init__(signed=signed)
        self.scores = scores

    def parameter_scores(self, model: nn.Module, batches: Sequence, loss_fn) -> dict[str, Tensor]:
        return {n: self.scores.get(n, torch.zeros_like(p)) for n, p in trainable_parameters(model).items()}


def _mlp_and_batches() -> tuple[nn.Module, list[tuple[Tensor, Tensor]]]:
    torch.manual_seed(0)
    model = MLP().double().eval()
    return model, [(torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 3, (5,))) for _ in range(2)]


def _neurons() -> list[oba.Group]:
    """Hidden neuron j of fc1: its weight row, its bias and the fc2 column that reads it."""
    return [
        oba.Group((oba.ParamSlice("fc1.weight", 0, torch.tensor([j])), oba.ParamSlice("fc1.bias", 0, torch.tensor([j])),
                   oba.ParamSlice("fc2.weight", 1, torch.tensor([j]))), label=f"n{j}")
        for j in range(7)
    ]


def _hand_sums(scores: dict[str, Tensor]) -> Tensor:
    return torch.stack(
        [scores["fc1.weight"][j].sum() + scores["fc1.bias"][j] + scores["fc2.weight"][:, j].sum() for j in range(7)]
    ).double()


@pytest.mark.parametrize("name", ["taylor2", "taylor"])
def test_signed_group_scores_are_the_hand_sums_and_unsigned_ones_their_magnitude(name: str) -> None:
    model, batches = _mlp_and_batches()
    want = _hand_sums(oba.criteria.get(name).parameter_scores(model, batches, LOSS))
    assert bool((want < 0).any() and (want > 0).any()), "the check needs sums of both signs"
    signed = oba.criteria.get(name, signed=True).group_scores(model, batches, LOSS, _neurons())
    unsigned = oba.criteria.get(name).group_scores(model, batches, LOSS, _neurons())
    torch.testing.assert_close(signed, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(unsigned, want.abs(), rtol=1e-12, atol=0)


def test_signed_taylor2_group_scores_are_its_predicted_loss_changes() -> None:
    model, batches = _mlp_and_batches()
    changes = oba.criteria.get("taylor2-group").group_loss_changes(model, batches, LOSS, _neurons())
    assert bool((changes < 0).any() and (changes > 0).any())
    signed = oba.criteria.get("taylor2-group", signed=True).group_scores(model, batches, LOSS, _neurons())
    torch.testing.assert_close(signed, changes, rtol=0, atol=0)
    torch.testing.assert_close(oba.criteria.get("taylor2-group").group_scores(model, batches, LOSS, _neurons()), changes.abs())


def test_exactly_the_criteria_with_a_signed_estimate_say_so() -> None:
    flags = {name: type(oba.criteria.get(name)).signed_estimate for name in oba.criteria.names()}
    assert {name for name, flag in flags.items() if flag} == SIGNED


@pytest.mark.parametrize("name", ["magnitude-l1", "magnitude-l2"])
def test_signed_is_rejected_for_a_criterion_without_a_signed_estimate(name: str) -> None:
    with pytest.raises(ValueError, match="no signed loss-change estimate"):
        oba.criteria.get(name, signed=True)


@pytest.mark.parametrize("name", ["oba", "oba-released", "fastoba", "taylor-depth"])
def test_the_oba_criteria_have_no_signed_form(name: str) -> None:
    with pytest.raises(ValueError, match="has no signed loss-change estimate"):
        oba.criteria.get(name, signed=True)
    assert oba.criteria.get(name, signed=False).config()["signed"] is False


@pytest.mark.parametrize("reduction", ["released", "released-weights"])
def test_the_released_reductions_refuse_signed_scores(reduction: str) -> None:
    criterion = oba.criteria.get("taylor", signed=True, reduction=reduction)
    with pytest.raises(ValueError, match="no signed form"):
        criterion.group_scores(*_mlp_and_batches(), LOSS, _neurons())


def test_signed_is_recorded_in_the_config() -> None:
    assert oba.criteria.get("taylor", signed=True).config() == {"name": "taylor", "mode": None, "signed": True,
                                                                 "reduction": "abs-sum", "normaliser": "mean"}
    assert oba.criteria.get("taylor2-group", probes=2, signed=True).config()["signed"] is True
    assert oba.criteria.get("magnitude-l1").config()["signed"] is False


def test_normalising_keeps_the_sign_and_divides_by_the_magnitudes() -> None:
    # mean |s| = (2 + 1 + 4) / 3; the plain mean (1) would leave the scores as they are.
    torch.testing.assert_close(normalise(torch.tensor([-2.0, 1.0, 4.0]), "mean"), torch.tensor([-6.0, 3.0, 12.0]) / 7)
    torch.testing.assert_close(normalise(torch.tensor([-8.0, 2.0]), "max"), torch.tensor([-1.0, 0.25]))


@pytest.mark.parametrize("signed", [True, False])
def test_structured_pruning_removes_the_lowest_signed_sums_first_when_signed(signed: bool) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    original = model[0].weight.detach().clone()
    channel_sum = torch.tensor([5.0, -4.0, 3.0, 0.2, 4.0, -0.3, 6.0, 7.0])
    scores = {"0.weight": (channel_sum / original[0].numel()).view(8, 1, 1, 1).expand_as(original).clone()}
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,)))]
    model, _ = oba.prune(model, torch.randn(1, 3, 8, 8), batches, LOSS, FixedSums(scores, signed), ratio=0.2,
                         steps=1, layer_cap=0.5, ignored_layers=[model[2]])
    kept = [int(torch.nonzero((original == w).flatten(1).all(1))[0]) for w in model[0].weight.detach()]
    removed = sorted(set(range(8)) - set(kept))
    assert removed, "ratio 0.2 must remove channels of the first conv"
    ranked = channel_sum if signed else channel_sum.abs()
    assert removed == sorted(torch.argsort(ranked)[: len(removed)].tolist())
    assert (1 in removed) == signed, "the channel estimated to lower the loss most goes first only when signed"


def test_unstructured_pruning_masks_the_lowest_signed_scores_when_signed() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    scores = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    _, record = oba.prune(model, torch.randn(1, 6), [(torch.randn(4, 6), torch.randint(0, 3, (4,)))], LOSS,
                          FixedSums(scores, signed=True), ratio=0.3, structure="unstructured", steps=1)
    everything = torch.cat([scores["0.weight"].flatten(), scores["2.weight"].flatten()])
    threshold = everything.sort().values[round(0.3 * everything.numel()) - 1]
    for name in ("0.weight", "2.weight"):
        assert torch.equal(~record.masks[name], scores[name] <= threshold)
