"""Randomised criteria (random, obd-hutchinson, probed taylor2-group, true-Fisher K-FAC) draw per (base seed, pruning step) and record it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch
from reference import flat_parameters, gradient_and_hessian
from torch import Tensor, nn

import oba
import oba.criteria as criteria
from oba import Group, ParamSlice
from oba.criteria.random import Random
from oba.suite.cells import Cell

LOSS = nn.CrossEntropyLoss()
SEEDED = [("random", {}), ("obd-hutchinson", {"k": 2}), ("taylor2-group", {"probes": 2}), ("kfac-obd", {}), ("kfac-obs", {})]


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def batches() -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (6,), generator=gen))
            for _ in range(2)]


def hidden_units() -> list[Group]:
    return [
        Group((ParamSlice("0.weight", 0, torch.tensor([c])), ParamSlice("0.bias", 0, torch.tensor([c])),
               ParamSlice("2.weight", 1, torch.tensor([c]))), f"h{c}")
        for c in range(5)
    ]


def unit_masks(model: nn.Module) -> list[Tensor]:
    """Flat masks of the hidden units, built by hand in ``flat_parameters`` order."""
    masks = []
    for c in range(5):
        parts = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in model.named_parameters()}
        parts["0.weight"][c] = True
        parts["0.bias"][c] = True
        parts["2.weight"][:, c] = True
        masks.append(torch.cat([m.reshape(-1) for m in parts.values()]))
    return masks


def expected_step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=(step,)).generate_state(1, dtype=np.uint64)[0]) >> 1


def draw(name: str, options: dict, seed: int, step: int) -> Tensor:
    criterion = criteria.get(name, seed=seed, **options)
    criterion.reseed(step)
    return criterion.group_scores(mlp(), batches(), LOSS, hidden_units())


@pytest.mark.parametrize("name, options", SEEDED)
def test_draws_depend_on_base_seed_and_step_only(name: str, options: dict) -> None:
    reference = draw(name, options, seed=3, step=1)
    assert torch.equal(draw(name, options, seed=3, step=1), reference)
    assert not torch.equal(draw(name, options, seed=4, step=1), reference)
    assert not torch.equal(draw(name, options, seed=3, step=2), reference)


class RecordingRandom(Random):
    """The random criterion, keeping what it drew at every call."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.drawn: list[dict[str, Tensor]] = []

    def parameter_scores(self, model: nn.Module, batches: Sequence, loss_fn) -> dict[str, Tensor]:
        scores = super().parameter_scores(model, batches, loss_fn)
        self.drawn.append(scores)
        return scores


def test_pruning_steps_draw_afresh_and_record_seeds_that_reproduce_the_draws() -> None:
    model = mlp()
    criterion = RecordingRandom(seed=5)
    _, record = oba.prune(model, torch.randn(1, 4, dtype=torch.float64), batches(), LOSS, criterion, ratio=0.5,
                          structure="unstructured", steps=3)
    first, second, third = criterion.drawn
    assert not torch.equal(first["0.weight"], second["0.weight"])
    assert not torch.equal(second["0.weight"], third["0.weight"])
    config = record.criterion_config
    assert config["seed"] == 5
    assert config["step_seeds"] == {str(k): expected_step_seed(5, k) for k in (1, 2, 3)}
    for step, drawn in zip((1, 2, 3), criterion.drawn):
        gen = torch.Generator().manual_seed(config["step_seeds"][str(step)])
        for name, p in model.named_parameters():
            assert torch.equal(drawn[name], torch.rand(p.shape, generator=gen, dtype=p.dtype))


def test_hutchinson_seed_reproduces_its_scores() -> None:
    """Rebuild D = mean_b mean_z z ⊙ H_b z from the recorded seed and the explicit Hessian."""
    model, data = mlp(), batches()
    criterion = criteria.get("obd-hutchinson", k=3, seed=2)
    criterion.reseed(4)
    scores = criterion.parameter_scores(model, data, LOSS)
    seeds = criterion.config()["step_seeds"]
    assert list(seeds) == ["4"]
    gen = torch.Generator().manual_seed(seeds["4"])
    shapes = [p.shape for p in model.parameters()]
    _, _, theta = flat_parameters(model)
    diagonal = torch.zeros_like(theta)
    for batch in data:
        _, hessian = gradient_and_hessian(model, batch, LOSS)
        for _ in range(3):
            z = torch.cat([(torch.randint(0, 2, s, generator=gen, dtype=torch.int8).double() * 2 - 1).reshape(-1)
                           for s in shapes])
            diagonal += z * (hessian @ z)
    expected = 0.5 * diagonal / (3 * len(data)) * theta**2
    torch.testing.assert_close(torch.cat([scores[n].reshape(-1) for n, _ in model.named_parameters()]), expected,
                               rtol=1e-10, atol=1e-14)


def test_probed_taylor2_group_seed_reproduces_its_scores() -> None:
    """Rebuild the sign-probe estimate of −g_Sᵀθ_S + ½ θ_Sᵀ H_SS θ_S from the recorded seed and the explicit Hessian."""
    model, data = mlp(), batches()
    criterion = criteria.get("taylor2-group", probes=3, seed=9)
    criterion.reseed(2)
    scores = criterion.group_scores(model, data, LOSS, hidden_units())
    gen = torch.Generator().manual_seed(criterion.config()["step_seeds"]["2"])
    _, _, theta = flat_parameters(model)
    parts = torch.stack([theta * m for m in unit_masks(model)])
    total = torch.zeros(5, dtype=torch.float64)
    for batch in data:
        g, hessian = gradient_and_hessian(model, batch, LOSS)
        estimates = []
        for _ in range(3):
            signs = torch.randint(0, 2, (5,), generator=gen).double() * 2 - 1
            v = (signs[:, None] * parts).sum(0)
            estimates.append(signs * (parts @ (hessian @ v)))
        total += -(parts @ g) + 0.5 * torch.stack(estimates).mean(0)
    torch.testing.assert_close(scores, (total / len(data)).abs(), rtol=1e-10, atol=1e-14)


def test_a_criterion_without_randomness_records_no_seed() -> None:
    criterion = criteria.get("taylor2-group")
    criterion.reseed(1)
    criterion.group_scores(mlp(), batches(), LOSS, hidden_units())
    assert criterion.config()["step_seeds"] == {}
    empirical = criteria.get("kfac-obd", fisher="empirical")
    empirical.reseed(1)
    empirical.group_scores(mlp(), batches(), LOSS, hidden_units())
    assert empirical.config()["step_seeds"] == {}
    assert "seed" not in criteria.get("taylor").config()


def _cell(criterion: str, seed: int) -> Cell:
    return Cell("seeds", "x", {"criterion": criterion, "prune": {"mode": "eval"}, "seed": seed,
                               "criterion_options": {"k": 2} if criterion == "obd-hutchinson" else {}})


@pytest.mark.parametrize("name", ["random", "obd-hutchinson"])
def test_a_cell_seeds_its_criterion_with_the_cell_seed(name: str) -> None:
    from oba.suite.cell import cell_criterion

    def scores(seed: int) -> Tensor:
        criterion = cell_criterion(_cell(name, seed))
        assert criterion.seed == seed and criterion.mode == "eval"
        criterion.reseed(1)
        return criterion.group_scores(mlp(), batches(), LOSS, hidden_units())

    assert torch.equal(scores(1), scores(1))
    assert not torch.equal(scores(0), scores(1))


def test_a_cell_row_records_the_criterion_seeds(tmp_path: Path) -> None:
    from oba.store.results import ResultStore
    from oba.suite.cell import run_cell
    from oba.suite.cells import expand
    from oba.suite.config import load_suite
    from suites import tiny_suite

    path = tiny_suite(tmp_path, criteria=("random",), seeds=(1,))
    path.write_text(path.read_text().replace("steps = 1", "steps = 2", 1))
    (cell,) = expand(load_suite(path))
    row = run_cell(cell, cache_dir=str(tmp_path / "cache"))
    assert row["status"] == "ok", row.get("error")
    ResultStore(str(tmp_path / "results")).write(row)
    stored = json.loads(ResultStore(str(tmp_path / "results")).read_cell(cell.cell_id)["criterion_config"])
    assert stored["name"] == "random" and stored["mode"] == "eval" and stored["seed"] == 1
    assert stored["step_seeds"] == {str(k): expected_step_seed(1, k) for k in (1, 2)}


def test_a_suite_cannot_set_a_randomised_criterion_seed(tmp_path: Path) -> None:
    from oba.suite.config import SuiteError, load_suite
    from suites import tiny_suite

    path = tiny_suite(tmp_path, criteria=("random",))
    path.write_text(path.read_text() + '\n[criterion_options]\n"random" = { seed = 3 }\n')
    with pytest.raises(SuiteError, match="cell's seed"):
        load_suite(path)
