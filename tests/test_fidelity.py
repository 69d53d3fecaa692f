"""Actual loss changes of removing a group, and the Spearman fidelity built on them."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from oba import Group, ParamSlice
from oba.ranking_fidelity import fidelity, loss_changes

LOSS = nn.CrossEntropyLoss()


def convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(54, 3)
    ).double()


def batches_for(sizes=(4, 6)):
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(n, 2, 5, 5, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator))
        for n in sizes
    ]


def channel_groups() -> list[Group]:
    return [
        Group(
            tuple(ParamSlice(name, 0, torch.tensor([c])) for name in ("0.weight", "0.bias", "1.weight", "1.bias")),
            f"ch{c}",
        )
        for c in range(6)
    ]


def manual_changes(model: nn.Module, batches, groups: list[Group]) -> torch.Tensor:
    """Zero each channel on a deep copy and measure the mean batch loss directly."""
    import copy

    def mean_loss(m: nn.Module) -> float:
        with torch.no_grad():
            return sum(float(LOSS(m(x), y)) for x, y in batches) / len(batches)

    base = mean_loss(copy.deepcopy(model))
    out = []
    for group in groups:
        pruned = copy.deepcopy(model)
        with torch.no_grad():
            for s in group.slices:
                pruned.get_parameter(s.name).index_fill_(s.dim, s.index, 0.0)
        out.append(mean_loss(pruned) - base)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_loss_changes_match_manual_zeroing_and_restore_model(mode: str) -> None:
    model = convnet().train(mode == "train")
    batches, groups = batches_for(), channel_groups()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    changes = loss_changes(model, batches, LOSS, groups)
    torch.testing.assert_close(changes, manual_changes(model, batches, groups), rtol=1e-12, atol=1e-14)
    assert bool((changes != 0).all())
    assert model.training == (mode == "train")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_fidelity_of_perfect_and_reversed_scores() -> None:
    model, batches, groups = convnet().eval(), batches_for(), channel_groups()
    actual = loss_changes(model, batches, LOSS, groups)
    assert fidelity(model, batches, LOSS, groups, actual) == pytest.approx(1.0)
    assert fidelity(model, batches, LOSS, groups, -actual) == pytest.approx(-1.0)
    assert fidelity(model, batches, LOSS, groups, actual.tolist(), sample=3, seed=5) == pytest.approx(1.0)


def test_fidelity_sampling_is_seeded() -> None:
    model, batches, groups = convnet().eval(), batches_for(), channel_groups()
    actual = loss_changes(model, batches, LOSS, groups)
    # Ranks 0..5 of the actual change, with the top and bottom swapped: imperfect on most subsets.
    ranks = actual.argsort().argsort().double()
    scores = torch.where(ranks == 0, 5.0, torch.where(ranks == 5, 0.0, ranks))
    full = fidelity(model, batches, LOSS, groups, scores)
    assert full == pytest.approx(1 - 6 * (25 + 25) / (6 * 35))
    by_seed = [fidelity(model, batches, LOSS, groups, scores, sample=4, seed=s) for s in range(6)]
    assert by_seed == [fidelity(model, batches, LOSS, groups, scores, sample=4, seed=s) for s in range(6)]
    assert len(set(by_seed)) > 1


def test_fidelity_rejects_mismatched_scores() -> None:
    model, batches, groups = convnet(), batches_for(), channel_groups()
    with pytest.raises(ValueError, match="one score per group"):
        fidelity(model, batches, LOSS, groups, torch.ones(5))
