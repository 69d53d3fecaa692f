"""Grouped convolutions, pruned in whole channel groups.

A conv with ``g`` groups (``1 < g``, not depthwise) maps input group j, channels
``j·c_in/g … (j+1)·c_in/g − 1``, to output group j alone; its weight is
``c_out × c_in/g × k…``. It keeps a valid shape only when whole groups go:
removing group j removes the weight rows and bias entries of its output
channels ``j·c_out/g … (j+1)·c_out/g − 1``, the producers of its input channels
and everything coupled to either side, and ``groups`` drops by one. The weight
has no input-channel dim to slice, so input channels own no parameters and no
MACs of their own: ``c_out/g`` rows carry the group's share ``MACs/g``.

Torch-Pruning's dependency graph gives the input side and the output side of
such a conv as two coupled groups (its *parts* here). :func:`link_grouped`
joins them: a unit is a connected set of (part, root index) pairs, where the
root indices reaching one channel group of one grouped conv, on either side,
are connected. Every unit then holds whole channel groups of every grouped
conv it touches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import torch
from torch import nn


def is_grouped(module: nn.Module) -> bool:
    """A conv whose channel groups are pruned whole: ``1 < groups``, not depthwise (``groups = c_in = c_out``)."""
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and not module.groups == module.in_channels == module.out_channels
    )


def check_supported(name: str, conv: nn.modules.conv._ConvNd) -> None:
    """Refuse grouped convs the dependency graph mis-couples: transposed, or ``groups = c_out ≠ c_in``."""
    if conv.transposed or conv.groups == conv.out_channels:
        raise NotImplementedError(
            f"grouped convolution {name} (groups={conv.groups}, in={conv.in_channels}, out={conv.out_channels}"
            f"{', transposed' if conv.transposed else ''}) is not supported"
        )


@dataclass(frozen=True)
class GroupedConv:
    """A grouped conv inside a prunable group: ``unit_of_group[j]`` is the unit that removes its channel group j."""

    conv: nn.modules.conv._ConvNd
    unit_of_group: list[int]

    def removed(self, units: Sequence[int]) -> list[int]:
        """The conv's channel groups that ``units`` remove."""
        chosen = set(units)
        return [j for j, unit in enumerate(self.unit_of_group) if unit in chosen]


@dataclass
class Linked:
    """Parts (indices into the coupled groups) joined through grouped convs, and their units.

    ``unit_of[k][r]`` is the unit of root index ``r`` of part ``parts[k]``; units are numbered in the
    order of their first (part, root index), so removing some keeps the others' order.
    """

    parts: list[int]
    unit_of: list[dict[int, int]]
    n_units: int
    convs: list[GroupedConv]


class _UnionFind:
    """Disjoint sets over hashable nodes."""

    def __init__(self) -> None:
        self.parent: dict[Hashable, Hashable] = {}

    def find(self, node: Hashable) -> Hashable:
        self.parent.setdefault(node, node)
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, a: Hashable, b: Hashable) -> None:
        self.parent[self.find(a)] = self.find(b)


Sides = dict[nn.Module, dict[bool, tuple[int, Any]]]


def _sides(parts: Sequence[Sequence[Any]], is_out: Callable[[Callable], bool]) -> Sides:
    """Grouped conv → {is output side: (part index, its Torch-Pruning group item)}."""
    sides: Sides = {}
    for p, items in enumerate(parts):
        for item in items:
            module = item.dep.target.module
            if is_grouped(module):
                sides.setdefault(module, {})[is_out(item.dep.handler)] = (p, item)
    return sides


def link_grouped(parts: Sequence[Sequence[Any]], is_out: Callable[[Callable], bool]) -> tuple[list[Linked], set[int]]:
    """Join the coupled groups (``parts``: lists of Torch-Pruning group items) through grouped convs.

    Returns the linked sets and the parts to drop: those linked to a grouped conv whose other
    side is not prunable (absent from ``parts``), since its groups could not go whole.
    """
    nodes, links = _UnionFind(), _UnionFind()
    complete: list[nn.Module] = []
    broken: set[int] = set()
    for conv, by_side in _sides(parts, is_out).items():
        if len(by_side) < 2:
            broken.update(p for p, _ in by_side.values())
            continue
        complete.append(conv)
        for side, (p, item) in by_side.items():
            links.union(("part", p), ("conv", conv))
            width = (conv.out_channels if side else conv.in_channels) // conv.groups
            for index, root in zip(item.idxs, item.root_idxs):
                nodes.union(("root", p, root), ("group", len(complete) - 1, index // width))
    touched = [p for p in range(len(parts)) if ("part", p) in links.parent]
    broken_sets = {links.find(("part", p)) for p in broken}
    dropped = broken | {p for p in touched if links.find(("part", p)) in broken_sets}
    members: dict[Hashable, list[int]] = {}
    for p in touched:
        if p not in dropped:
            members.setdefault(links.find(("part", p)), []).append(p)
    convs_of: dict[Hashable, list[tuple[int, nn.Module]]] = {}
    for k, conv in enumerate(complete):
        convs_of.setdefault(links.find(("conv", conv)), []).append((k, conv))
    linked = [_linked(ps, convs_of[key], parts, nodes) for key, ps in members.items()]
    return linked, dropped


def _linked(ps: list[int], convs: list[tuple[int, nn.Module]], parts: Sequence[Sequence[Any]], nodes: _UnionFind) -> Linked:
    """Number the units of the linked parts ``ps`` joined by ``convs`` (number, conv) (see :class:`Linked`)."""
    unit_number: dict[Hashable, int] = {}
    unit_of: list[dict[int, int]] = []
    for p in ps:
        roots = {}
        for root in parts[p][0].root_idxs:
            roots[root] = unit_number.setdefault(nodes.find(("root", p, root)), len(unit_number))
        unit_of.append(roots)
    grouped = [
        GroupedConv(conv, [unit_number[nodes.find(("group", k, j))] for j in range(conv.groups)])
        for k, conv in convs
    ]
    return Linked(ps, unit_of, len(unit_number), grouped)


def group_channels(conv: nn.modules.conv._ConvNd, groups: Sequence[int], out: bool) -> list[int]:
    """The output (``out``) or input channels of ``conv``'s channel groups ``groups``."""
    width = (conv.out_channels if out else conv.in_channels) // conv.groups
    return [j * width + c for j in sorted(groups) for c in range(width)]


def drop_conv_groups(conv: nn.modules.conv._ConvNd, removed: Sequence[int]) -> None:
    """Remove channel groups ``removed`` of ``conv``: their weight rows and bias entries; ``groups``, widths to match."""
    rows = group_channels(conv, removed, out=True)
    keep = torch.ones(conv.out_channels, dtype=torch.bool)
    keep[rows] = False
    keep = keep.nonzero().squeeze(1).to(conv.weight.device)
    conv.in_channels -= len(group_channels(conv, removed, out=False))
    conv.out_channels -= len(rows)
    conv.groups -= len(removed)
    conv.weight = nn.Parameter(conv.weight.detach()[keep], requires_grad=conv.weight.requires_grad)
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach()[keep], requires_grad=conv.bias.requires_grad)
