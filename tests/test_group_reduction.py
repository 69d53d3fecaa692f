"""Vectorised group reduction against a brute-force per-group sum, and its device contract."""
from __future__ import annotations

import torch
from nets import SmallResNet, tiny_vit, vgg_style

from oba.core.groups import Group, GroupLayout, ParamSlice, layout_of
from oba.criteria.base import reduce_groups
from oba.pruning.dependency_groups import find_groups


def brute_force(scores: dict[str, torch.Tensor], groups: list[Group]) -> torch.Tensor:
    """Σ over each group's distinct elements, one group at a time, from boolean masks, in float64."""
    shapes = {name: t.shape for name, t in scores.items()}
    return torch.tensor(
        [sum(scores[n].double()[m].sum() for n, m in g.masks(shapes).items()).item() for g in groups],
        dtype=torch.float64,
    )


def model_units(model: torch.nn.Module, example: torch.Tensor) -> list[Group]:
    _, groups = find_groups(model, example)
    return [unit for group in groups for unit in group.units]


def test_reduction_over_real_channel_units_equals_the_per_group_sum() -> None:
    torch.manual_seed(0)
    for model, example in [
        (vgg_style(), torch.randn(1, 3, 32, 32)),
        (SmallResNet(), torch.randn(1, 3, 16, 16)),
        (tiny_vit(), torch.randn(1, 3, 16, 16)),
    ]:
        units = model_units(model, example)
        scores = {n: torch.randn_like(p) for n, p in model.named_parameters()}
        expected = brute_force(scores, units)
        # float32 partial sums: error within a few ulps of each group's absolute mass
        tolerance = 1e-6 * brute_force({n: s.abs() for n, s in scores.items()}, units)
        assert ((reduce_groups(scores, units, signed=True) - expected).abs() <= tolerance).all()
        assert ((reduce_groups(scores, units) - expected.abs()).abs() <= tolerance).all()


def test_overlapping_repeated_and_flat_slices_count_each_element_once_per_slice_dim() -> None:
    scores = {"w": torch.arange(12.0).reshape(3, 4), "b": torch.tensor([1.0, -2.0, 4.0])}
    groups = [
        Group((ParamSlice("w", 0, torch.tensor([0, 0, 2])), ParamSlice("b", 0, torch.tensor([0]))), "rows 0,2"),
        Group((ParamSlice("w", 1, torch.tensor([3])),), "column 3"),
        Group((ParamSlice("w", None, torch.tensor([5, 6, 5])), ParamSlice("b", None, torch.tensor([2]))), "flat"),
    ]
    # rows 0 and 2: (0+1+2+3) + (8+9+10+11) + b0 = 44 + 1; column 3: 3+7+11; flat: 5+6 + b2
    assert reduce_groups(scores, groups, signed=True).tolist() == [45.0, 21.0, 15.0]
    assert brute_force(scores, groups).tolist() == [45.0, 21.0, 15.0]


def test_layout_is_remembered_by_group_identity_not_by_position() -> None:
    shapes = {"w": torch.Size([4, 2])}
    first = [Group((ParamSlice("w", 0, torch.tensor([i])),), f"row {i}") for i in range(4)]
    same_positions_other_rows = [Group((ParamSlice("w", 0, torch.tensor([3 - i])),), f"row {3 - i}") for i in range(4)]
    scores = {"w": torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])}
    assert layout_of(first, shapes) is layout_of(list(first), shapes)
    assert reduce_groups(scores, first, signed=True).tolist() == [2.0, 4.0, 6.0, 8.0]
    assert reduce_groups(scores, same_positions_other_rows, signed=True).tolist() == [8.0, 6.0, 4.0, 2.0]
    assert layout_of(first, {"w": torch.Size([5, 2])}) is not layout_of(first, shapes)


def test_sums_stay_on_the_scores_device_without_reading_them() -> None:
    """On the meta device nothing can be read back: any host copy or sync inside the reduction would raise."""
    model = vgg_style()
    units = model_units(model, torch.randn(1, 3, 32, 32))
    shapes = {n: p.shape for n, p in model.named_parameters()}
    scores = {n: torch.empty(shape, device="meta") for n, shape in shapes.items()}
    sums = layout_of(units, shapes, "meta").sums(scores)
    assert sums.device.type == "meta" and sums.shape == (len(units),) and sums.dtype == torch.float64


def test_layout_members_are_the_group_elements_as_index_and_group_pairs() -> None:
    groups = [
        Group((ParamSlice("w", 0, torch.tensor([1, 0])),), "a"),
        Group((ParamSlice("w", 0, torch.tensor([1])), ParamSlice("w", None, torch.tensor([7]))), "b"),
    ]
    members = GroupLayout.of(groups, {"w": torch.Size([2, 4])}).members
    assert set(members) == {("w", None)}  # group b selects w along a dim and element by element: listed per element
    index, gid = members[("w", None)]
    assert sorted(zip(gid.tolist(), index.tolist())) == [(0, e) for e in range(8)] + [(1, e) for e in (4, 5, 6, 7)]


def test_layout_members_keep_hyperplanes_when_no_group_selects_a_parameter_along_two_dims() -> None:
    groups = [Group((ParamSlice("w", 0, torch.tensor([1, 0])),), "a"), Group((ParamSlice("w", 0, torch.tensor([1])),), "b")]
    index, gid = GroupLayout.of(groups, {"w": torch.Size([2, 4])}).members[("w", 0)]
    assert sorted(zip(gid.tolist(), index.tolist())) == [(0, 0), (0, 1), (1, 1)]
