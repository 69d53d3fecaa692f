"""How per-parameter scores become one score per unit (channel, neuron, head): the group reduction.

Every criterion records its reduction in its config; each defaults to its authors' choice,
and a suite may impose one on all (``[prune] reduction``).

- ``abs-sum``: ``|Σ_{i∈G} s_i|`` over every element of the unit, norm layers included
  (``Σ s_i`` when the criterion is signed).
- ``released``: the released OBA code's reduction. The unit's elements in each parameter
  layer (Linear/Conv) form one *member*: its output channels (weight rows with their bias
  entries) or its input columns. A member scores ``Σ_j |Σ_{index j} s|``, the absolute sum
  per index along its dim, summed over the unit's indices (one index for a conv channel;
  a channel flattened into a Linear layer's 64 input columns sums 64 absolute values).
  The unit's score is the mean of its members' scores; norm-layer elements are not
  counted, and a member that is zero on every unit of its coupled group is left out of
  the mean (the released ``HessianImportance`` with ``multivariable`` and ``_reduce``).
- ``released-weights``: as ``released`` with output channels' biases left out (the released
  FastOBA's reduction).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from oba._registry import Registry
from oba.core.connectivity import layer_parameters
from oba.core.groups import Group, ParamSlice, layout_of

Reduction = Callable[[nn.Module, dict[str, Tensor], Sequence[Group], bool], Tensor]
REDUCTIONS: Registry[Reduction] = Registry("reduction", "reductions", __name__, decorator="REDUCTIONS.register")


def reduce_groups(scores: dict[str, Tensor], groups: Sequence[Group], signed: bool = False) -> Tensor:
    """``|Σ_{i∈G} s_i|`` for each group (``Σ_{i∈G} s_i`` when ``signed``), as a float64 CPU tensor.

    Vectorised over groups (:func:`~oba.core.groups.layout_of`), summed in float64 on
    the scores' device (all scores on one device), copied to the host once.
    """
    if not groups:
        return torch.zeros(0, dtype=torch.float64)
    device = next(iter(scores.values())).device
    sums = layout_of(groups, {name: t.shape for name, t in scores.items()}, device).sums(scores).cpu()
    return sums if signed else sums.abs()


@REDUCTIONS.register("abs-sum")
def abs_sum(model: nn.Module, scores: dict[str, Tensor], groups: Sequence[Group], signed: bool) -> Tensor:
    """``|Σ_{i∈G} s_i|`` (``Σ s_i`` when signed)."""
    return reduce_groups(scores, groups, signed)


@dataclass(frozen=True)
class _Members:
    """Units split into member hyperplanes: ``planes[k]`` is one index of one member (an output channel's weight
    row with its bias entry, or one input column), ``member[k]`` its member's number, ``owner``/``key`` per member."""

    planes: list[Group]
    member: Tensor
    owner: Tensor
    key: list[tuple[str, str, str]]


_LAST: list[tuple[list[Group], bool, _Members]] = []


def _members(model: nn.Module, groups: Sequence[Group], with_bias: bool) -> _Members:
    """The member decomposition of ``groups`` (remembered for the last list of unit objects)."""
    if _LAST and _LAST[0][1] == with_bias and len(_LAST[0][0]) == len(groups) and all(
            a is b for a, b in zip(_LAST[0][0], groups)):
        return _LAST[0][2]
    layers = set(layer_parameters(model))
    planes: list[Group] = []
    member_of_plane: list[int] = []
    owner: list[int] = []
    keys: list[tuple[str, str, str]] = []
    for unit, group in enumerate(groups):
        by_member: dict[tuple[str, str], dict[int, list[ParamSlice]]] = defaultdict(lambda: defaultdict(list))
        for s in group.slices:
            module, _, kind = s.name.rpartition(".")
            if s.name not in layers or (kind == "bias" and not with_bias):
                continue
            role = "in" if kind == "weight" and s.dim not in (0, None) else "out"
            for index in s.index.tolist():
                by_member[(module, role)][index].append(ParamSlice(s.name, s.dim, torch.tensor([index])))
        for (module, role), by_index in by_member.items():
            for index, slices in by_index.items():
                planes.append(Group(tuple(slices), f"{group.label}:{module}:{role}:{index}"))
                member_of_plane.append(len(owner))
            owner.append(unit)
            keys.append((group.layer, module, role))
    members = _Members(planes, torch.tensor(member_of_plane, dtype=torch.long), torch.tensor(owner, dtype=torch.long), keys)
    _LAST[:] = [(list(groups), with_bias, members)]
    return members


def _member_mean(model: nn.Module, scores: dict[str, Tensor], groups: Sequence[Group], signed: bool,
                 with_bias: bool) -> Tensor:
    """Mean over each unit's parameter-layer members of Σ over the member's indices of ``|Σ index|`` (docstring)."""
    if signed:
        raise ValueError("the released reduction takes |Σ member|: it has no signed form (use reduction='abs-sum')")
    result = torch.zeros(len(groups), dtype=torch.float64)
    members = _members(model, groups, with_bias)
    if not members.planes:
        return result
    planes = reduce_groups(scores, members.planes).abs()
    per_member = torch.zeros(len(members.key), dtype=torch.float64).index_add_(0, members.member, planes)
    alive: dict[tuple[str, str, str], bool] = defaultdict(bool)
    for key, value in zip(members.key, per_member.tolist()):
        alive[key] = alive[key] or value != 0.0
    counted = torch.tensor([alive[k] for k in members.key], dtype=torch.bool)
    owners = members.owner[counted]
    result.index_add_(0, owners, per_member[counted])
    count = torch.zeros(len(groups), dtype=torch.float64).index_add_(0, owners, torch.ones(len(owners), dtype=torch.float64))
    return result / count.clamp(min=1.0)


@REDUCTIONS.register("released")
def released(model: nn.Module, scores: dict[str, Tensor], groups: Sequence[Group], signed: bool) -> Tensor:
    """The released OBA reduction: mean over parameter-layer members of ``|Σ member|``, output biases included."""
    return _member_mean(model, scores, groups, signed, with_bias=True)


@REDUCTIONS.register("released-weights")
def released_weights(model: nn.Module, scores: dict[str, Tensor], groups: Sequence[Group], signed: bool) -> Tensor:
    """The released FastOBA reduction: as ``released`` with output-channel biases left out."""
    return _member_mean(model, scores, groups, signed, with_bias=False)
