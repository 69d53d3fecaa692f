"""Parameter groups: the unit a structured criterion scores and a pruner removes.

A :class:`Group` is a set of parameter elements removed together (one channel of a
conv with its batch-norm entries and the matching input channels of every
consumer, one attention head, one MLP neuron). Each member is a
:class:`ParamSlice`: a parameter name, a dimension and the indices along it
(``dim=None`` means flat indices into the flattened parameter).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
from torch import Tensor


@dataclass(frozen=True)
class ParamSlice:
    """Elements ``index`` of parameter ``name`` along ``dim`` (flat when ``dim`` is None)."""

    name: str
    dim: int | None
    index: Tensor

    def select(self, tensor: Tensor) -> Tensor:
        """The selected elements of ``tensor`` (a tensor shaped like the parameter)."""
        index = self.index.to(tensor.device)
        if self.dim is None:
            return tensor.reshape(-1).index_select(0, index)
        return tensor.index_select(self.dim, index)

    def mask(self, shape: torch.Size, device: torch.device | str = "cpu") -> Tensor:
        """Boolean mask shaped like the parameter, true on the selected elements."""
        mask = torch.zeros(shape, dtype=torch.bool, device=device)
        index = self.index.to(device)
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

    def sum(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Σ of ``tensors`` over the group's elements (tensors keyed by parameter name)."""
        parts = [s.select(tensors[s.name]).sum() for s in self.slices]
        if not parts:
            raise ValueError(f"group {self.label!r} selects no parameter elements")
        return torch.stack(parts).sum()

    def masks(self, shapes: Mapping[str, torch.Size], device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Boolean masks per parameter name (union of this group's slices)."""
        out: dict[str, Tensor] = {}
        for s in self.slices:
            m = s.mask(shapes[s.name], device)
            out[s.name] = out[s.name] | m if s.name in out else m
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
