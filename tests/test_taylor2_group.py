"""taylor2-group (formerly oba-group) against the explicitly built Hessian, and its probed estimator's unbiasedness."""
from __future__ import annotations

import itertools

import pytest
import torch
from reference import gradient_and_hessian
from torch import nn

import oba.criteria as criteria
from oba import Group, ParamSlice
from oba.core.groups import GroupLayout
from oba.criteria.taylor2_group import Taylor2Group, sign_probe

LOSS = nn.CrossEntropyLoss()


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def batches_for(sizes=(4, 6)):
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(n, 4, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator))
        for n in sizes
    ]


def neuron_groups() -> list[Group]:
    """Hidden neuron j: row j of the first layer, its bias, column j of the second layer."""
    return [
        Group(
            (
                ParamSlice("0.weight", 0, torch.tensor([j])),
                ParamSlice("0.bias", 0, torch.tensor([j])),
                ParamSlice("2.weight", 1, torch.tensor([j])),
            ),
            f"neuron{j}",
        )
        for j in range(5)
    ] + [Group((ParamSlice("2.bias", None, torch.tensor([0, 2])),), "bias02")]


def flat_masks(model: nn.Module, groups: list[Group]) -> torch.Tensor:
    shapes = {n: p.shape for n, p in model.named_parameters()}
    rows = []
    for group in groups:
        masks = group.masks(shapes)
        rows.append(torch.cat([masks.get(n, torch.zeros(s, dtype=torch.bool)).reshape(-1) for n, s in shapes.items()]))
    return torch.stack(rows)


def explicit_changes(model: nn.Module, batches, groups: list[Group]) -> torch.Tensor:
    """mean_b (−g_Sᵀθ_S + ½ θ_Sᵀ H_SS θ_S) with the explicit Hessian."""
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    vectors = flat_masks(model, groups) * theta
    total = torch.zeros(len(groups), dtype=torch.float64)
    for batch in batches:
        g, h = gradient_and_hessian(model, batch, LOSS)
        total += -vectors @ g + 0.5 * ((vectors @ h) * vectors).sum(1)
    return total / len(batches)


def test_exact_equals_explicit_hessian_block() -> None:
    model, batches, groups = mlp(), batches_for(), neuron_groups()
    criterion = criteria.get("taylor2-group")
    expected = explicit_changes(model, batches, groups)
    torch.testing.assert_close(criterion.group_loss_changes(model, batches, LOSS, groups), expected, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(criterion.group_scores(model, batches, LOSS, groups), expected.abs(), rtol=1e-10, atol=1e-14)


def test_exact_allows_overlapping_groups() -> None:
    model, batches = mlp(), batches_for()
    groups = neuron_groups()[:2] + [Group((ParamSlice("0.weight", None, torch.arange(6)),), "overlap")]
    torch.testing.assert_close(
        criteria.get("taylor2-group").group_loss_changes(model, batches, LOSS, groups),
        explicit_changes(model, batches, groups),
        rtol=1e-10,
        atol=1e-14,
    )


def _crossing_groups() -> list[Group]:
    """Groups over a 3×3 matrix as a 1×1 convolution from the residual stream to itself has them: unit i selects row i
    and column i; and one group selecting a row and, element by element, two entries (one on that row)."""
    rows_and_columns = [Group((ParamSlice("w", 0, torch.tensor([i])), ParamSlice("w", 1, torch.tensor([i]))), f"u{i}")
                        for i in range(3)]
    return rows_and_columns + [Group((ParamSlice("w", 0, torch.tensor([2])), ParamSlice("w", None, torch.tensor([7, 1]))),
                                     "mixed")]


def _elements(group: Group, shape: torch.Size) -> torch.Tensor:
    return group.masks({"w": shape}, "cpu")["w"]


def test_an_element_on_both_of_a_groups_hyperplanes_counts_once() -> None:
    shape = torch.Size([3, 3])
    groups = _crossing_groups()
    values = torch.arange(1.0, 10.0).view(shape)
    sums = GroupLayout.of(groups, {"w": shape}).sums({"w": values})
    expected = torch.stack([values[_elements(g, shape)].sum() for g in groups]).double()
    assert torch.equal(sums, expected)
    assert sums[0] == 1 + 2 + 3 + 4 + 7  # row 0 and column 0 share w[0, 0], counted once


def test_the_sign_probe_estimator_is_exact_over_every_sign_pattern_for_groups_spanning_two_dims() -> None:
    """E_ε[ε_G · Σ_{e∈G} θ_e (H v(ε))_e] = θ_Gᵀ H θ_G, v(ε) = Σ_G' ε_G' θ_G': averaged over all 2^4 sign patterns,
    against the quadratic form of each group's masked θ (ground truth)."""
    shape = torch.Size([3, 3])
    groups = _crossing_groups()
    generator = torch.Generator().manual_seed(0)
    theta = {"w": torch.randn(shape, dtype=torch.float64, generator=generator)}
    root = torch.randn(9, 9, dtype=torch.float64, generator=generator)
    hessian = root + root.T
    layout = GroupLayout.of(groups, {"w": shape})
    estimates = []
    for pattern in itertools.product((-1.0, 1.0), repeat=len(groups)):
        signs = torch.tensor(pattern, dtype=torch.float64)
        v = sign_probe(layout, signs, theta)["w"]
        hv = (hessian @ v.reshape(-1)).view(shape)
        estimates.append(signs * layout.sums({"w": theta["w"] * hv}))
    exact = torch.stack([(theta["w"] * _elements(g, shape)).reshape(-1) @ hessian
                         @ (theta["w"] * _elements(g, shape)).reshape(-1) for g in groups])
    torch.testing.assert_close(torch.stack(estimates).mean(0), exact, rtol=1e-12, atol=1e-12)


def test_probed_scores_a_group_spanning_two_dims_of_one_parameter() -> None:
    model, batches = mlp(), batches_for()
    both = Group((ParamSlice("0.weight", 0, torch.tensor([0])), ParamSlice("0.weight", 1, torch.tensor([0]))), "cross")
    scores = criteria.get("taylor2-group", probes=2).group_scores(model, batches, LOSS, [both])
    exact = criteria.get("taylor2-group").group_scores(model, batches, LOSS, [both])
    torch.testing.assert_close(scores, exact, rtol=1e-10, atol=1e-14)  # one group: every probe's estimate is exact


def test_group_membership_lists_each_group_element_once() -> None:
    shapes = {n: p.shape for n, p in mlp().named_parameters()}
    groups = neuron_groups() + [Group((ParamSlice("2.bias", None, torch.tensor([2, 2, 1])),), "dup")]
    membership = GroupLayout.of(groups, shapes).members
    assert set(membership) == {("0.weight", 0), ("0.bias", 0), ("2.weight", 1), ("2.bias", None)}
    index, gid = membership[("2.weight", 1)]
    assert sorted(zip(gid.tolist(), index.tolist())) == [(j, j) for j in range(5)]
    index, gid = membership[("2.bias", None)]
    assert sorted(zip(gid.tolist(), index.tolist())) == [(5, 0), (5, 2), (6, 1), (6, 2)]


def probed_estimates(model: nn.Module, batches, groups: list[Group], probes: int, seeds: int) -> torch.Tensor:
    return torch.stack(
        [
            Taylor2Group(probes=probes, seed=seed).group_loss_changes(model, batches, LOSS, groups)
            for seed in range(seeds)
        ]
    )


def probe_variance(model: nn.Module, batches, groups: list[Group], probes: int) -> torch.Tensor:
    """Variance of one estimate: per batch and probe, ε_G θ_Gᵀ H θ_G' (G' ≠ G) has variance
    Σ_{G'≠G} (θ_Gᵀ H θ_G')², halved by the ½, averaged over probes and batches."""
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    vectors = flat_masks(model, groups) * theta
    variance = torch.zeros(len(groups), dtype=torch.float64)
    for batch in batches:
        cross = vectors @ gradient_and_hessian(model, batch, LOSS)[1] @ vectors.T
        variance += 0.25 * (cross.square().sum(1) - cross.diagonal().square()) / probes
    return variance / len(batches) ** 2


@pytest.mark.parametrize("overlapping", [False, True])
def test_probed_estimator_is_unbiased(overlapping: bool) -> None:
    model, batches, groups = mlp(), batches_for(), neuron_groups()
    if overlapping:
        # Input feature i of the first layer overlaps every neuron group (it holds W1[:, i]).
        groups += [Group((ParamSlice("0.weight", 1, torch.tensor([i])),), f"in{i}") for i in range(4)]
    exact = explicit_changes(model, batches, groups)
    probes, seeds = 4, 100
    estimates = probed_estimates(model, batches, groups, probes, seeds)
    variance = probe_variance(model, batches, groups, probes)
    assert bool((variance > 0).all())
    torch.testing.assert_close(estimates.var(0), variance, rtol=0.5, atol=0)
    standard_error = (variance / seeds).sqrt()
    assert bool(((estimates.mean(0) - exact).abs() <= 4 * standard_error).all())


def test_options_are_recorded() -> None:
    assert criteria.get("taylor2-group", probes=3, seed=7).config() == {
        "name": "taylor2-group",
        "mode": None,
        "signed": False,
        "reduction": "abs-sum",
        "normaliser": "mean",
        "probes": 3,
        "seed": 7,
        "step_seeds": {},
    }


def test_quadratic_loss_prediction_is_exact() -> None:
    """A linear model with MSE is exactly quadratic in θ: ΔL̂ equals the real ΔL."""
    from oba.criteria.fidelity import fidelity, loss_changes

    torch.manual_seed(0)
    model = nn.Linear(6, 8).double()
    generator = torch.Generator().manual_seed(2)
    batches = []
    for n in (5, 7):
        x = torch.randn(n, 6, generator=generator, dtype=torch.float64)
        batches.append((x, model(x).detach() + 0.1 * torch.randn(n, 8, generator=generator, dtype=torch.float64)))
    loss = nn.MSELoss()
    rows = [
        Group((ParamSlice("weight", 0, torch.tensor([o])), ParamSlice("bias", 0, torch.tensor([o]))), f"out{o}")
        for o in range(8)
    ]
    columns = [Group((ParamSlice("weight", 1, torch.tensor([i])),), f"in{i}") for i in range(6)]
    for groups in (rows, columns):
        predicted = criteria.get("taylor2-group").group_loss_changes(model, batches, loss, groups)
        actual = loss_changes(model, batches, loss, groups)
        torch.testing.assert_close(predicted, actual, rtol=0, atol=1e-10)
        assert bool((actual > 0).all())
        scores = criteria.get("taylor2-group").group_scores(model, batches, loss, groups)
        assert fidelity(model, batches, loss, groups, scores) == pytest.approx(1.0, abs=1e-12)
