"""Grouped convolutions are pruned in whole channel groups, and every criterion scores exactly what goes."""
from __future__ import annotations

import copy
import math
from typing import Sequence

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torch.func import functional_call

import oba
import oba.criteria as criteria
from oba import Group
from oba.core.measure import count_macs
from oba.pruning.dependency_groups import find_groups, remove_units

LOSS = nn.functional.cross_entropy
CRITERIA = ("magnitude-l1", "taylor", "oba", "obd")


class SqueezeExcite(nn.Module):
    """x · σ(fc2(relu(fc1(mean over space of x)))), the gates as 1x1 convs with biases."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class Bottleneck(nn.Module):
    """1x1 → 3x3 with ``groups`` → (squeeze-excitation) → 1x1, batch norms, and a residual (projected when needed)."""

    def __init__(self, c_in: int, width: int, c_out: int, groups: int, stride: int = 1, se: int = 0) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.se = SqueezeExcite(width, se) if se else nn.Identity()
        self.conv3, self.bn3 = nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        projected = stride > 1 or c_in != c_out
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
                         if projected else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.se(torch.relu(self.bn2(self.conv2(y))))
        return torch.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


class GroupedNet(nn.Module):
    """Stem conv, bottleneck blocks, global average pool, linear head."""

    def __init__(self, blocks: Sequence[Bottleneck], stem: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(blocks[-1].conv3.out_channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def resnext_style() -> GroupedNet:
    """One ResNeXt bottleneck: groups=4 of 4 channels, identity residual."""
    return GroupedNet([Bottleneck(16, 16, 16, groups=4)])


def regnet_style() -> GroupedNet:
    """Two RegNet-Y blocks: group width 8 (groups = 32 / 8), squeeze-excitation, a strided projected first block."""
    return GroupedNet([Bottleneck(16, 32, 32, groups=4, stride=2, se=8), Bottleneck(32, 32, 32, groups=4, se=8)])


BLOCKS = {"resnext": resnext_style, "regnet": regnet_style}


def randomised(model: nn.Module) -> nn.Module:
    """``model`` in float64, eval mode, with batch-norm affine parameters and statistics away from their defaults."""
    model = model.double().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return model


def batches(n: int = 2, size: int = 8, dtype: torch.dtype = torch.float64) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(3, 3, size, size, generator=generator, dtype=dtype), torch.randint(0, 10, (3,), generator=generator))
            for _ in range(n)]


def all_units(model: nn.Module, example: Tensor) -> list[Group]:
    return [unit for group in find_groups(model, example)[1] for unit in group.units]


def unit_masks(model: nn.Module, unit: Group) -> dict[str, Tensor]:
    return unit.masks({name: p.shape for name, p in model.named_parameters()})


def removed_copy(model: nn.Module, example: Tensor, units_by_group: dict[int, list[int]]) -> nn.Module:
    """A copy of ``model`` with ``units_by_group`` (group index → unit numbers) physically removed."""
    pruned = copy.deepcopy(model)
    dg, groups = find_groups(pruned, example)
    for index, units in units_by_group.items():
        remove_units(dg, groups[index], units)
    return pruned


def grouped_convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]


def hook_macs(model: nn.Module, example: Tensor) -> int:
    """MACs of one forward counted from layer shapes: a conv output element costs c_in/groups · kernel taps."""
    total = 0

    def count(module: nn.Module, _inputs: tuple, out: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        else:
            total += out.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def test_a_grouped_unit_is_one_channel_group_on_both_sides() -> None:
    model = resnext_style()
    _, groups = find_groups(model, torch.randn(1, 3, 8, 8))
    (grouped,) = [g for g in groups if g.kind == "groups"]
    assert len(grouped) == 4 and grouped.min_units == 2
    assert set(grouped.layers) == {"blocks.0.conv1", "blocks.0.conv2"}
    for j, unit in enumerate(grouped.units):
        channels = list(range(4 * j, 4 * j + 4))
        assert {(s.name, s.dim): s.index.tolist() for s in unit.slices} == {
            ("blocks.0.conv1.weight", 0): channels, ("blocks.0.bn1.weight", 0): channels,
            ("blocks.0.bn1.bias", 0): channels, ("blocks.0.conv2.weight", 0): channels,
            ("blocks.0.bn2.weight", 0): channels, ("blocks.0.bn2.bias", 0): channels,
            ("blocks.0.conv3.weight", 1): channels,
        }
    conv1, conv2, conv3 = 64 * 16 * 16, 64 * 16 * 4 * 9, 64 * 16 * 16  # 8x8 outputs × widths × inputs per output
    assert grouped.unit_macs.tolist() == pytest.approx([(conv1 + conv2 + conv3) / 4] * 4)


@pytest.mark.parametrize("block", list(BLOCKS))
def test_unit_elements_are_exactly_the_parameters_removal_removes(block: str) -> None:
    """Tag every parameter element with its own number; removing a unit must remove exactly the unit's elements."""
    model, example = randomised(BLOCKS[block]()), torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        start = 0
        for p in model.parameters():
            p.copy_(torch.arange(start, start + p.numel(), dtype=torch.float64).view_as(p))
            start += p.numel()
    everything = set(range(start))
    _, groups = find_groups(model, example)
    assert any(g.kind == "groups" for g in groups)
    for index, group in enumerate(groups):
        for u, unit in enumerate(group.units):
            tagged = {int(v) for name, mask in unit_masks(model, unit).items() for v in dict(model.named_parameters())[name][mask]}
            pruned = removed_copy(model, example, {index: [u]})
            kept = {int(v) for p in pruned.parameters() for v in p.detach().reshape(-1)}
            assert everything - kept == tagged, unit.label


@pytest.mark.parametrize("block", list(BLOCKS))
def test_zeroing_a_unit_computes_what_removing_it_computes(block: str) -> None:
    model, (x, _) = randomised(BLOCKS[block]()), batches(1)[0]
    example = x[:1]
    _, groups = find_groups(model, example)
    for index, group in enumerate(groups):
        for u, unit in enumerate(group.units):
            zeroed = copy.deepcopy(model)
            with torch.no_grad():
                for name, mask in unit_masks(model, unit).items():
                    dict(zeroed.named_parameters())[name][mask] = 0.0
            torch.testing.assert_close(removed_copy(model, example, {index: [u]})(x), zeroed(x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("block", list(BLOCKS))
def test_removing_several_channel_groups_at_once_computes_what_zeroing_them_computes(block: str) -> None:
    model, (x, _) = randomised(BLOCKS[block]()), batches(1)[0]
    _, groups = find_groups(model, x[:1])
    chosen = {index: [0, 2] for index, group in enumerate(groups) if group.kind == "groups"}
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for index, units in chosen.items():
            for u in units:
                for name, mask in unit_masks(model, groups[index].units[u]).items():
                    dict(zeroed.named_parameters())[name][mask] = 0.0
    pruned = removed_copy(model, x[:1], chosen)
    assert [c.groups for c in grouped_convs(pruned)] == [c.groups - 2 for c in grouped_convs(model)]
    torch.testing.assert_close(pruned(x), zeroed(x), rtol=1e-9, atol=1e-12)


def second_order_change(model: nn.Module, data: Sequence[tuple[Tensor, Tensor]], masks: dict[str, Tensor]) -> Tensor:
    """mean_b [f_b'(0) + ½ f_b''(0)] with f_b(t) = L_b(θ + t δ), δ = −θ on ``masks``: both derivatives by autograd in t."""
    theta = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    total = torch.zeros((), dtype=torch.float64)
    for x, y in data:
        t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        moved = {name: p - t * p * masks[name] if name in masks else p for name, p in theta.items()}
        loss = LOSS(functional_call(model, {**moved, **buffers}, (x,)), y)
        (first,) = torch.autograd.grad(loss, t, create_graph=True)
        (second,) = torch.autograd.grad(first, t)
        total += first.detach() + 0.5 * second
    return total / len(data)


@pytest.mark.parametrize("block", list(BLOCKS))
def test_taylor2_group_is_the_second_order_loss_change_of_removing_each_unit(block: str) -> None:
    model, data = randomised(BLOCKS[block]()), batches()
    units = all_units(model, data[0][0][:1])
    expected = torch.stack([second_order_change(model, data, unit_masks(model, unit)) for unit in units])
    changes = criteria.get("taylor2-group", mode="eval").group_loss_changes(model, data, LOSS, units)
    torch.testing.assert_close(changes, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["magnitude-l1", "taylor", "taylor2", "obd"])
@pytest.mark.parametrize("block", list(BLOCKS))
def test_group_scores_reduce_over_every_element_a_unit_removes(block: str, name: str) -> None:
    model, data = randomised(BLOCKS[block]()), batches()
    units = all_units(model, data[0][0][:1])
    criterion = criteria.get(name, mode="eval")
    scores = criterion.parameter_scores(model, data, LOSS)
    expected = torch.stack([sum(scores[n][m].sum() for n, m in unit_masks(model, u).items()).abs() for u in units])
    torch.testing.assert_close(criterion.group_scores(model, data, LOSS, units), expected.double(), rtol=1e-9, atol=1e-12)


def check_pruned(model: nn.Module, record: oba.PruneRecord, example: Tensor, classes: int = 10) -> None:
    """Runs forward and backward, groups consistent and fewer somewhere, MACs as reported and as counted by hand."""
    x = torch.randn(2, *example.shape[1:])
    out = model.train()(x)
    assert out.shape == (2, classes)
    out.sum().backward()
    for conv in grouped_convs(model):
        assert conv.in_channels % conv.groups == 0 and conv.out_channels % conv.groups == 0
        assert conv.weight.shape[:2] == (conv.out_channels, conv.in_channels // conv.groups)
    assert record.macs_pruned == hook_macs(model, example) < record.macs_dense
    assert all(w["remaining"] >= 2 for w in record.layer_widths.values() if w["kind"] == "groups")


@pytest.mark.parametrize("allocation", ["global", "uniform"])
@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("block", list(BLOCKS))
def test_blocks_prune_in_whole_groups(block: str, criterion: str, allocation: str) -> None:
    """Uniform allocation takes from every layer, so there grouped convs must have lost groups."""
    model, example = BLOCKS[block](), torch.randn(1, 3, 16, 16)
    dense_groups = [c.groups for c in grouped_convs(model)]
    assert hook_macs(model, example) == count_macs(model, example)
    model, record = oba.prune(model, example, batches(1, 16, torch.float32), LOSS, criterion, ratio=0.3, steps=2,
                              structure="channels", allocation=allocation)
    check_pruned(model, record, example)
    if allocation == "uniform":
        assert all(c.groups < dense for c, dense in zip(grouped_convs(model), dense_groups))


def test_unsupported_grouped_convs_are_refused() -> None:
    for conv in (nn.Conv2d(8, 4, 3, groups=4), nn.ConvTranspose2d(8, 8, 3, groups=2)):
        model = nn.Sequential(nn.Conv2d(3, 8, 1), conv, nn.Flatten(), nn.LazyLinear(5))
        model(torch.randn(1, 3, 6, 6))
        with pytest.raises(NotImplementedError, match="grouped convolution 1"):
            find_groups(model, torch.randn(1, 3, 6, 6))


@pytest.mark.slow
@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("name", ["resnext50_32x4d", "regnet_x_400mf"])
def test_torchvision_grouped_models_prune(name: str, criterion: str) -> None:
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    example = torch.randn(1, 3, 32, 32)
    data = [(torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)))]
    assert hook_macs(model, example) == count_macs(model, example)
    model, record = oba.prune(model, example, data, LOSS, criterion, ratio=0.3, steps=2, structure="channels")
    check_pruned(model, record, example)
    assert abs(record.macs_removed - 0.3) <= 0.05
    assert any(w["kind"] == "groups" and w["remaining"] < w["dense"] for w in record.layer_widths.values())
