"""Parameter groups: the unit a structured criterion scores and a pruner removes.

A :class:`Group` is a set of parameter elements removed together (one channel of a
conv with its batch-norm entries and the matching input channels of every
consumer, one attention head, one MLP neuron). Each member is a
:class:`ParamSlice`: a parameter name, a dimension and the indices along it
(``dim=None`` means flat indices into the flattened parameter).

A :class:`GroupLayout` is the vectorised form of a list of groups: per
``(parameter, dim)``, which indices belong to which group. Summing a tensor over
every group is then one reduction per parameter and one ``index_add`` — no
per-group loop, no host-device traffic until the caller asks for the result.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class ParamSlice:
    """Elements ``index`` (a 1-D integer tensor) of parameter ``name`` along ``dim`` (flat when ``dim`` is None)."""

    name: str
    dim: int | None
    index: Tensor

    def mask(self, shape: torch.Size, device: torch.device | str = "cpu") -> Tensor:
        """Boolean mask shaped like the parameter, true on the selected elements."""
        return self.mark(torch.zeros(shape, dtype=torch.bool, device=device))

    def mark(self, mask: Tensor) -> Tensor:
        """Set the selected elements of ``mask`` (a contiguous boolean tensor shaped like the parameter) to true, in
        place; return it. Marking many slices into one mask costs their indices, not a parameter-sized OR each."""
        index = self.index.to(mask.device)
        if self.dim is None:
            mask.view(-1)[index] = True
        else:
            mask.index_fill_(self.dim, index, True)
        return mask


@dataclass(frozen=True)
class Group:
    """A set of parameter elements removed together; ``label`` names it for reports."""

    slices: tuple[ParamSlice, ...]
    label: str = ""
    layer: str = field(default="", compare=False)

    @classmethod
    def from_masks(cls, masks: Mapping[str, Tensor], label: str = "") -> "Group":
        """Build a group from boolean masks shaped like the parameters they select."""
        slices = tuple(
            ParamSlice(name, None, mask.reshape(-1).nonzero().reshape(-1).cpu())
            for name, mask in masks.items()
            if bool(mask.any())
        )
        return cls(slices, label)

    def names(self) -> set[str]:
        return {s.name for s in self.slices}

    def masks(self, shapes: Mapping[str, torch.Size], device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Boolean masks per parameter name (union of this group's slices)."""
        out: dict[str, Tensor] = {}
        for s in self.slices:
            if s.name not in out:
                out[s.name] = torch.zeros(shapes[s.name], dtype=torch.bool, device=device)
            s.mark(out[s.name])
        return out

    def size(self, shapes: Mapping[str, torch.Size]) -> int:
        """Number of distinct parameter elements in the group."""
        return sum(int(m.sum()) for m in self.masks(shapes).values())


def check_groups(groups: Iterable[Group], parameter_names: Iterable[str]) -> list[Group]:
    """Validate that every group names existing parameters; return the groups as a list."""
    known = set(parameter_names)
    groups = list(groups)
    for g in groups:
        unknown = g.names() - known
        if unknown:
            raise ValueError(f"group {g.label!r} names unknown or frozen parameters {sorted(unknown)}")
    return groups


Members = dict[tuple[str, int | None], tuple[Tensor, Tensor]]
"""``(parameter name, dim) → (index along dim, group id)``: one pair per element-group membership."""


def per_index(tensor: Tensor, dim: int | None) -> Tensor:
    """Sums of ``tensor`` per index along ``dim`` (the flattened tensor when ``dim`` is None)."""
    if dim is None:
        return tensor.reshape(-1)
    return tensor.transpose(0, dim).reshape(tensor.shape[dim], -1).sum(1)


def along(values: Tensor, shape: torch.Size, dim: int | None) -> Tensor:
    """A per-index vector along ``dim`` (or per flat element) shaped to broadcast against ``shape``."""
    if dim is None:
        return values.view(shape)
    return values.view([-1 if d == dim else 1 for d in range(len(shape))])


def _selected_along_several_dims(groups: Sequence[Group]) -> set[str]:
    """The parameters some group selects along more than one dim (or along a dim and element by element)."""
    several = set()
    for group in groups:
        dims: dict[str, set[int | None]] = defaultdict(set)
        for s in group.slices:
            dims[s.name].add(s.dim)
        several |= {name for name, found in dims.items() if len(found) > 1}
    return several


@dataclass(frozen=True)
class GroupLayout:
    """Which of ``num_groups`` groups hold which parameter elements, as index tensors.

    A slice along ``dim`` selects whole hyperplanes, so one index along ``dim``
    stands for all of them. Pairs are unique: a group's repeated indices count
    once (a group is a set of elements). Groups may overlap one another. Where a
    group selects one parameter along two dims (a 1×1 convolution whose input and
    output channels are both the residual stream's, as in MobileNetV3), that
    parameter's memberships are listed per element (``dim`` None), so that an
    element on both of a group's hyperplanes counts once.
    """

    num_groups: int
    members: Members

    @classmethod
    def of(cls, groups: Sequence[Group], shapes: Mapping[str, torch.Size]) -> "GroupLayout":
        """The layout of ``groups`` over parameters of the given shapes (index tensors on the CPU)."""
        indices: dict[tuple[str, int | None], list[Tensor]] = defaultdict(list)
        owners: dict[tuple[str, int | None], list[int]] = defaultdict(list)
        for gid, group in enumerate(groups):
            if not group.slices:
                raise ValueError(f"group {group.label!r} selects no parameter elements")
            for s in group.slices:
                indices[(s.name, s.dim)].append(s.index)
                owners[(s.name, s.dim)].append(gid)
        per_element = _selected_along_several_dims(groups)
        for (name, dim), parts in list(indices.items()):
            if name in per_element and dim is not None:
                elements = torch.arange(shapes[name].numel()).view(shapes[name])
                flat = [elements.index_select(dim, part.cpu()).reshape(-1) for part in parts]
                indices[(name, None)] += flat
                owners[(name, None)] += owners.pop((name, dim))
                del indices[(name, dim)]
        members: Members = {}
        for (name, dim), parts in indices.items():
            size = shapes[name].numel() if dim is None else shapes[name][dim]
            index = torch.cat([part.cpu() for part in parts])
            gid = torch.repeat_interleave(torch.tensor(owners[(name, dim)]), torch.tensor([p.numel() for p in parts]))
            key = torch.unique(gid * size + index)
            members[(name, dim)] = (key % size, key // size)
        return cls(len(groups), members)

    def names(self) -> set[str]:
        """The parameters any group touches."""
        return {name for name, _ in self.members}

    def to(self, device: torch.device | str) -> "GroupLayout":
        """The same layout with its index tensors on ``device``."""
        moved = {key: (index.to(device), gid.to(device)) for key, (index, gid) in self.members.items()}
        return GroupLayout(self.num_groups, moved)

    def sums(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """``Σ_{i∈G} t_i`` for every group, float64 on the tensors' device (``tensors`` keyed by name).

        One reduction per ``(parameter, dim)`` and one ``index_add``; nothing is
        copied to the host, so a caller on a GPU synchronises once, when it reads
        the result. The layout's index tensors must be on the tensors' device.
        """
        device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
        total = torch.zeros(self.num_groups, dtype=torch.float64, device=device)
        for (name, dim), (index, gid) in self.members.items():
            total.index_add_(0, gid, per_index(tensors[name].detach(), dim).double()[index])
        return total


_RECENT_LAYOUTS: list[tuple[list[Group], dict[str, torch.Size], dict[str, GroupLayout]]] = []
_REMEMBERED = 4


def layout_of(groups: Sequence[Group], shapes: Mapping[str, torch.Size], device: torch.device | str = "cpu") -> GroupLayout:
    """:meth:`GroupLayout.of` on ``device``, remembered for the last few group lists.

    A list is recognised by the identity of its groups (the same ``Group``
    objects in the same order) and equal shapes, so scoring the same groups
    again (another criterion, another batch) skips building the layout and
    copying its indices to the device.
    """
    shapes = dict(shapes)
    by_device = _remembered(groups, shapes)
    if by_device is None:
        by_device = {"cpu": GroupLayout.of(groups, shapes)}
        _RECENT_LAYOUTS.insert(0, (list(groups), shapes, by_device))
        del _RECENT_LAYOUTS[_REMEMBERED:]
    key = str(torch.device(device))
    if key not in by_device:
        by_device[key] = by_device["cpu"].to(device)
    return by_device[key]


def _remembered(groups: Sequence[Group], shapes: dict[str, torch.Size]) -> dict[str, GroupLayout] | None:
    """The remembered layouts (by device) of exactly these group objects and shapes, moved to the front."""
    for i, (known, known_shapes, by_device) in enumerate(_RECENT_LAYOUTS):
        if len(known) == len(groups) and known_shapes == shapes and all(a is b for a, b in zip(known, groups)):
            _RECENT_LAYOUTS.insert(0, _RECENT_LAYOUTS.pop(i))
            return by_device
    return None
