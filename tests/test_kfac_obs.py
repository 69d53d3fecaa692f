"""K-FAC as in EigenDamage: true-Fisher factors, the OBS compensating update, and the pruning hook.

Ground truth is explicit: ``H = kron(G, A) + λI`` formed densely in float64 (row-major
``vec`` of ``W̃ = [W | b]``), the OBS update of a removed set S solved from it
directly, ``δ = −H⁻¹_{:,S} (H⁻¹_SS)⁻¹ w_S``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pytest
import torch
from torch import Tensor, nn

import oba
import oba.criteria as criteria
from oba.core.kronecker_factors import kronecker_factors
from oba.criteria import Criterion, trainable_parameters
from oba.criteria.base import step_seed
from oba.criteria.kfac import damping_value, obs_update

LOSS = nn.CrossEntropyLoss()
DAMPING = 0.05


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def batches() -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(n, 4, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator))
        for n in (6, 9)
    ]


def augmented(layer: nn.Linear) -> Tensor:
    return torch.cat([layer.weight.detach(), layer.bias.detach().unsqueeze(1)], dim=1)


def explicit_curvature(a: Tensor, g: Tensor) -> Tensor:
    curvature = torch.kron(g, a)
    return curvature + damping_value(a, g, DAMPING) * torch.eye(curvature.shape[0], dtype=curvature.dtype)


def explicit_update(weight: Tensor, curvature: Tensor, removed: Tensor) -> Tensor:
    """``−H⁻¹_{:,S} (H⁻¹_SS)⁻¹ w_S`` with a dense inverse, zeroed on S."""
    s = removed.reshape(-1).nonzero()[:, 0]
    inverse = torch.linalg.inv(curvature)
    delta = -inverse[:, s] @ torch.linalg.solve(inverse[s][:, s], weight.reshape(-1)[s])
    return delta.reshape(weight.shape).masked_fill(removed, 0)


def quadratic_loss(delta: Tensor, curvature: Tensor) -> Tensor:
    return 0.5 * delta.reshape(-1) @ curvature @ delta.reshape(-1)


def masks_of(shape: tuple[int, int]) -> dict[str, Tensor]:
    """Removed sets of an (out, in + 1) matrix: scattered weights, one row, a column, rows and columns."""
    scattered = torch.zeros(shape, dtype=torch.bool)
    scattered[0, 1] = scattered[2, 3] = scattered[2, 0] = scattered[4, 4] = True
    row = torch.zeros(shape, dtype=torch.bool)
    row[1] = True
    column = torch.zeros(shape, dtype=torch.bool)
    column[:, 2] = True
    rows_and_columns = torch.zeros(shape, dtype=torch.bool)
    rows_and_columns[[0, 3]] = True
    rows_and_columns[:, [1, 2]] = True
    return {"scattered": scattered, "row": row, "column": column, "rows_and_columns": rows_and_columns}


@pytest.mark.parametrize("case", ["scattered", "row", "column", "rows_and_columns"])
def test_obs_update_equals_explicit_kronecker_solve(case: str) -> None:
    model, data = mlp(), batches()
    a, g = kronecker_factors(model, data, LOSS)["0"]
    weight = augmented(model[0])
    removed = masks_of(tuple(weight.shape))[case]
    curvature = explicit_curvature(a, g)
    expected = explicit_update(weight, curvature, removed)
    delta = obs_update(weight, a, g, DAMPING, removed)
    torch.testing.assert_close(delta, expected, rtol=0, atol=1e-8 * float(expected.abs().max()))
    assert bool((delta[removed] == 0).all())
    plain = -weight.masked_fill(~removed, 0)
    # The compensated removal is the minimiser of the quadratic model with δ_S = −w_S: never worse.
    assert float(quadratic_loss(plain + delta, curvature)) < float(quadratic_loss(plain, curvature))


@pytest.mark.parametrize("zero", ["g", "a"])
@pytest.mark.parametrize("case", ["scattered", "row"])
def test_obs_update_of_a_layer_without_curvature_is_zero_not_nan(case: str, zero: str) -> None:
    """A layer whose outputs get no gradient (dead channels: G = 0) or see no input (A = 0) has H = 0 and λ = 0; the
    least-norm OBS update is 0, where dividing by H's zero eigenvalues gave NaN weights (RegNet and ShuffleNetV2 at
    32 pixels, batches of two)."""
    model, data = mlp(), batches()
    a, g = kronecker_factors(model, data, LOSS)["0"]
    a, g = (a, torch.zeros_like(g)) if zero == "g" else (torch.zeros_like(a), g)
    weight = augmented(model[0])
    delta = obs_update(weight, a, g, DAMPING, masks_of(tuple(weight.shape))[case])
    assert torch.equal(delta, torch.zeros_like(weight))


def test_compensation_updates_each_layer_from_its_own_factors() -> None:
    model, data = mlp(), batches()
    criterion = criteria.get("kfac-obs", damping=DAMPING, seed=3)
    criterion.reseed(2)
    factors = kronecker_factors(model, data, LOSS, fisher="true", seed=step_seed(3, 2))
    row = masks_of((5, 5))["row"]
    scattered = torch.zeros(3, 6, dtype=torch.bool)
    scattered[0, 0] = scattered[1, 4] = scattered[2, 5] = True
    removed = {"0.weight": row[:, :4], "0.bias": row[:, 4], "2.weight": scattered[:, :5], "2.bias": scattered[:, 5]}
    updates = criterion.compensation(model, data, LOSS, removed)
    for name, mask in (("0", row), ("2", scattered)):
        a, g = factors[name]
        weight = augmented(model.get_submodule(name))
        expected = explicit_update(weight, explicit_curvature(a, g), mask)
        got = torch.cat([updates[f"{name}.weight"], updates[f"{name}.bias"].unsqueeze(1)], dim=1)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-8 * float(expected.abs().max()))
    assert criteria.get("kfac-obs", obs_update=False).compensation(model, data, LOSS, removed) == {}
    assert criteria.get("kfac-obd").compensation(model, data, LOSS, removed) == {}


def test_true_fisher_draws_labels_from_the_seeded_generator() -> None:
    model, data = mlp(), batches()
    true = kronecker_factors(model, data, LOSS, fisher="true", seed=5)["2"][1]
    again = kronecker_factors(model, data, LOSS, fisher="true", seed=5)["2"][1]
    other = kronecker_factors(model, data, LOSS, fisher="true", seed=6)["2"][1]
    empirical = kronecker_factors(model, data, LOSS, fisher="empirical")["2"][1]
    assert torch.equal(true, again)
    assert not torch.allclose(true, other) and not torch.allclose(true, empirical)
    # For the last layer G is E[(p − e_y)(p − e_y)ᵀ] with y drawn from p = softmax(z) by the same generator.
    generator = torch.Generator().manual_seed(5)
    total, count = torch.zeros(3, 3, dtype=torch.float64), 0
    with torch.no_grad():
        for x, _ in data:
            p = model(x).softmax(1)
            y = torch.multinomial(p, 1, generator=generator)[:, 0]
            residual = p - nn.functional.one_hot(y, 3).double()
            total += residual.T @ residual
            count += len(y)
    torch.testing.assert_close(true, total / count, rtol=1e-10, atol=1e-14)


def test_config_records_fisher_seed_and_update() -> None:
    obs = criteria.get("kfac-obs").config()
    assert (obs["fisher"], obs["seed"], obs["obs_update"]) == ("true", 0, True)
    obd = criteria.get("kfac-obd", fisher="empirical", seed=2).config()
    assert (obd["fisher"], obd["seed"]) == ("empirical", 2) and "obs_update" not in obd
    with pytest.raises(ValueError, match="fisher"):
        criteria.get("kfac-obs", fisher="mc")


class ShiftOnRemoval(Criterion):
    """Fixed scores; its compensation records what was removed and adds 1 to every parameter element."""

    name = "shift"

    def __init__(self, scores: dict[str, Tensor]) -> None:
        super().__init__()
        self.scores = scores
        self.removed: list[dict[str, Tensor]] = []

    def parameter_scores(self, model: nn.Module, batches: Sequence, loss_fn) -> dict[str, Tensor]:
        return {n: self.scores.get(n, torch.zeros_like(p)) for n, p in trainable_parameters(model).items()}

    def compensation(self, model: nn.Module, batches: Sequence, loss_fn, removed: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self.removed.append({n: m.clone() for n, m in removed.items()})
        return {n: torch.ones_like(p) for n, p in trainable_parameters(model).items()}


def test_structured_pruning_applies_the_update_before_removing_units() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    first, second = model[0].weight.detach().clone(), model[2].weight.detach().clone()
    channel_score = torch.tensor([5.0, 0.1, 3.0, 0.2, 4.0, 0.3, 6.0, 7.0])
    criterion = ShiftOnRemoval({"0.weight": channel_score.view(8, 1, 1, 1).expand_as(first).clone()})
    data = [(torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,)))]
    oba.prune(model, torch.randn(1, 3, 8, 8), data, LOSS, criterion, ratio=0.2, steps=1, normalisation="none",
              layer_cap=0.5, ignored_layers=[model[2]])
    assert len(criterion.removed) == 1
    removed = criterion.removed[0]
    channels = removed["0.weight"].flatten(1).all(1)
    kept = (~channels).nonzero()[:, 0]
    assert 0 < int(channels.sum()) < 8
    assert torch.equal(removed["0.bias"], channels)
    assert torch.equal(removed["2.weight"], channels.view(1, 8, 1, 1).expand_as(second))
    torch.testing.assert_close(model[0].weight.detach(), first[kept] + 1)
    torch.testing.assert_close(model[2].weight.detach(), second[:, kept] + 1)


def test_unstructured_pruning_applies_the_update_to_unmasked_weights() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    criterion = ShiftOnRemoval({n: torch.randn_like(p) for n, p in model.named_parameters()})
    _, record = oba.prune(model, torch.randn(1, 6), [(torch.randn(4, 6), torch.randint(0, 3, (4,)))], LOSS,
                          criterion, ratio=0.3, structure="unstructured", steps=1)
    for name in ("0.weight", "2.weight"):
        mask = record.masks[name]
        assert torch.equal(criterion.removed[0][name], ~mask)
        param = dict(model.named_parameters())[name].detach()
        assert bool((param[~mask] == 0).all())
        torch.testing.assert_close(param[mask], original[name][mask] + 1)

