"""Actual loss changes of removing a group, and the fidelity measures built on them."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from oba import Group, ParamSlice
from oba.criteria.fidelity import FidelityResult, fidelity, first_step_k, loss_changes, precision_at_k, rank_fidelity

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


def test_rank_fidelity_of_a_hand_worked_sample() -> None:
    # Score ranks 1 2 3 4. ΔL = −3, 1, −2, 4 has ranks 1 3 2 4: Σd² = 2, ρ = 1 − 6·2/(4·15) = 0.8.
    # |ΔL| = 3, 1, 2, 4 has ranks 3 1 2 4: Σd² = 4 + 1 + 1 = 6, ρ = 1 − 36/60 = 0.4.
    # k = 2: lowest scores {0, 1}, cheapest (lowest signed ΔL) {0, 2}: overlap 1, P@2 = 0.5.
    result = rank_fidelity(torch.tensor([1.0, 2.0, 3.0, 4.0]), [-3.0, 1.0, -2.0, 4.0], k=2)
    assert result == FidelityResult(signed=pytest.approx(0.8), abs=pytest.approx(0.4), precision=0.5, k=2)


def test_precision_at_k_of_hand_worked_samples() -> None:
    scores = [0.1, 0.5, 0.2, 0.9, 0.3]
    changes = [0.05, -0.2, 0.4, 0.1, 0.0]
    # Lowest scores: 0, 2, 4, 1, 3. Cheapest: 1, 4, 0, 3, 2.
    assert precision_at_k(scores, changes, 1) == 0.0
    assert precision_at_k(scores, changes, 2) == 0.0
    assert precision_at_k(scores, changes, 3) == pytest.approx(2 / 3)
    assert precision_at_k(scores, changes, 5) == 1.0
    # Three units tie for the lowest score: each holds one of the k = 1 places with probability 1/3.
    assert precision_at_k([1.0, 1.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0], 1) == pytest.approx(1 / 3)
    assert precision_at_k([1.0, 1.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0], 2) == pytest.approx(2 / 3)
    assert math.isnan(precision_at_k([1.0, float("nan")], [0.0, 1.0], 1))


def _brute_force_precision(scores: list[float], changes: list[float], k: int) -> float:
    """Mean overlap of the k lowest over every pair of tie-breaking orders (a permutation per side)."""
    n = len(scores)
    orders = list(itertools.permutations(range(n)))

    def lowest(values: list[float], order: tuple[int, ...]) -> set[int]:
        return set(sorted(range(n), key=lambda i: (values[i], order[i]))[:k])

    a = [lowest(scores, order) for order in orders]
    b = [lowest(changes, order) for order in orders]
    return sum(len(x & y) for x in a for y in b) / (len(a) * len(b) * k)


def test_precision_with_ties_is_the_mean_over_every_tie_break() -> None:
    generator = torch.Generator().manual_seed(3)
    for _ in range(4):
        scores = torch.randint(0, 3, (5,), generator=generator).double().tolist()
        changes = torch.randint(-1, 2, (5,), generator=generator).double().tolist()
        for k in range(1, 6):
            assert precision_at_k(scores, changes, k) == pytest.approx(_brute_force_precision(scores, changes, k))


def test_precision_rejects_a_k_outside_the_sample() -> None:
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k([1.0, 2.0], [1.0, 2.0], 3)
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k([1.0, 2.0], [1.0, 2.0], 0)


def test_first_step_k_is_the_first_steps_share_of_the_sample() -> None:
    assert first_step_k(64, 10, 100) == 6  # 6.4
    assert first_step_k(64, 11, 100) == 7  # 7.04
    assert first_step_k(6, 1, 12) == 1  # 0.5: halves round up
    assert first_step_k(6, 3, 12) == 2  # 1.5
    assert first_step_k(6, 5, 12) == 3  # 2.5
    assert first_step_k(64, 1, 100) == 1  # 0.64
    assert first_step_k(10, 0, 50) == 1  # at least one
    assert first_step_k(6, 12, 12) == 6
    with pytest.raises(ValueError):
        first_step_k(6, 13, 12)
