"""Coupled pruning groups from Torch-Pruning's dependency graph.

Torch-Pruning traces the model and returns, for every prunable root layer, the
set of coupled pruning operations (a conv's output channels, its batch norm,
every consumer's input channels, everything tied through residual adds). Here
each such coupled set becomes a :class:`PrunableGroup` whose *units* (one
channel, one MLP neuron, one attention head, or one channel group of grouped
convs: :mod:`.grouped_convs`) are :class:`oba.Group` objects listing the exact
parameter elements removed with that unit.

Transformer residual width (groups that reach position/class embeddings) is
never pruned; heads of timm ``Attention`` modules are pruned whole.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn

from oba.core.groups import Group, ParamSlice
from oba.core.measure import macs_by_module
from oba.core.model_calls import forward
from oba.pruning.graph import UnsupportedModel, build_graph
from oba.pruning.grouped_convs import (
    GroupedConv,
    check_supported,
    drop_conv_groups,
    group_channels,
    is_grouped,
    link_grouped,
)

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclass
class RootPart:
    """One coupled Torch-Pruning group inside a :class:`PrunableGroup`: root layer, handler, root indices per unit."""

    root: nn.Module
    root_fn: Callable
    unit_root_indices: list[list[int]]


@dataclass
class PrunableGroup:
    """All units (channels, neurons, heads, or channel groups) of one coupled Torch-Pruning group.

    Grouped convs join the coupled groups of their two sides into one (:mod:`.grouped_convs`):
    ``coupled`` holds those beyond the root's, ``grouped_convs`` which unit removes which channel group.
    ``min_units`` must remain: two for channel groups, so that a grouped conv stays grouped (a conv
    left with one group would be traced as a plain conv, its units as channels).
    """

    name: str
    root: nn.Module
    root_fn: Callable
    units: list[Group]
    unit_root_indices: list[list[int]]
    unit_macs: Tensor
    kind: str
    attention: nn.Module | None = None
    layers: list[str] = field(default_factory=list)
    coupled: list[RootPart] = field(default_factory=list)
    grouped_convs: list[GroupedConv] = field(default_factory=list)
    min_units: int = 1

    def __len__(self) -> int:
        return len(self.units)


def is_attention(module: nn.Module) -> bool:
    """A timm-style attention block: fused ``qkv`` projection and a ``num_heads`` attribute."""
    return isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "num_heads") and hasattr(module, "head_dim")


def sync_attention_heads(model: nn.Module) -> None:
    """After heads were removed, make every attention module's head count match its ``qkv``."""
    for module in model.modules():
        if is_attention(module):
            heads = module.qkv.out_features // (3 * module.head_dim)
            module.num_heads = heads
            if hasattr(module, "attn_dim"):
                module.attn_dim = heads * module.head_dim


def classifier_layer(model: nn.Module, example_inputs: Any) -> nn.Module | None:
    """The last Linear/Conv layer run whose output width equals the model output's width."""
    executed: list[tuple[nn.Module, Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, _inp, out: executed.append((mod, out)))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    try:
        with torch.no_grad():
            output = forward(model, example_inputs)
    finally:
        for h in hooks:
            h.remove()
    width = output.shape[-1] if output.dim() == 2 else output.shape[1]
    for module, out in reversed(executed):
        out_width = out.shape[-1] if isinstance(module, nn.Linear) else out.shape[1]
        if out_width == width:
            return module
    return None


def _param_slices(module_name: str, module: nn.Module, is_out: bool) -> list[tuple[str, int]]:
    """(parameter name, dim) pairs a channel operation touches on ``module``.

    A grouped conv's input channels touch none: its weight rows go with its output channels.
    """
    prefix = f"{module_name}." if module_name else ""
    has_bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.modules.conv._ConvNd):
        if is_grouped(module) and not is_out:
            return []
        depthwise = module.groups > 1 and not is_grouped(module)
        if is_out or depthwise:
            return [(prefix + "weight", 0)] + ([(prefix + "bias", 0)] if has_bias else [])
        return [(prefix + "weight", 1)]
    if isinstance(module, nn.Linear):
        if is_out:
            return [(prefix + "weight", 0)] + ([(prefix + "bias", 0)] if has_bias else [])
        return [(prefix + "weight", 1)]
    if isinstance(module, _NORMS):
        if getattr(module, "weight", None) is None:
            return []
        dim = module.weight.dim() - 1
        return [(prefix + "weight", dim)] + ([(prefix + "bias", dim)] if has_bias else [])
    if any(True for _ in module.parameters(recurse=False)):
        raise NotImplementedError(f"no channel mapping for parametrised layer {module_name} ({type(module).__name__})")
    return []


def _unit_of_root(group_root: nn.Module, attention: nn.Module | None) -> Callable[[int], int]:
    if attention is None:
        return lambda r: r
    width = attention.num_heads * attention.head_dim
    head_dim = attention.head_dim
    return lambda r: (r % width) // head_dim


def _unit_macs(
    items: Iterable[Any], names: dict[nn.Module, str], macs: dict[str, int], unit_of: Callable[[int], int], n_units: int, dg: tp.DependencyGraph
) -> Tensor:
    """Estimated MACs removed per unit: each touched Conv/Linear's cost per channel, summed.

    A grouped conv costs ``MACs/c_out`` per output channel and nothing per input channel.
    """
    cost = [0.0] * n_units
    for item in items:
        module = item.dep.target.module
        is_out = dg.is_out_channel_pruning_fn(item.dep.handler)
        layer = isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and module in names
        if not layer or (is_grouped(module) and not is_out):
            continue
        width = module.weight.shape[0] if is_out else module.weight.shape[1] * getattr(module, "groups", 1)
        per_index = macs.get(names[module], 0) / max(width, 1)
        for root in item.root_idxs:
            cost[unit_of(root)] += per_index
    return torch.tensor(cost, dtype=torch.float64)


def _attention_core_macs(attention: nn.Module, name: str, macs: dict[str, int]) -> float:
    children = sum(macs.get(f"{name}.{child}", 0) for child, _ in attention.named_children())
    return max(macs.get(name, 0) - children, 0) / attention.num_heads


def _units(
    parts: Sequence[Sequence[Any]], unit_ofs: Sequence[Callable[[int], int]], n_units: int,
    names: dict[nn.Module, str], label: str, dg: tp.DependencyGraph,
) -> tuple[list[Group], list[str]]:
    """The units of the coupled groups ``parts`` (root index → unit by ``unit_ofs``) and the layers whose outputs they prune."""
    per_unit: dict[tuple[str, int], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    layers: list[str] = []
    for items, unit_of in zip(parts, unit_ofs):
        for item in items:
            module = item.dep.target.module
            if module not in names:
                continue
            is_out = dg.is_out_channel_pruning_fn(item.dep.handler)
            if is_out and isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and names[module] not in layers:
                layers.append(names[module])
            for key in _param_slices(names[module], module, is_out):
                _check_in_range(key, module, item.idxs, label)
                for idx, root_idx in zip(item.idxs, item.root_idxs):
                    per_unit[key][unit_of(root_idx)].append(idx)
    slices: list[list[ParamSlice]] = [[] for _ in range(n_units)]
    for (pname, dim), by_unit in per_unit.items():
        indices = [sorted(set(found)) if len(found) > 1 else found for found in by_unit.values()]
        flat = torch.tensor([i for own in indices for i in own], dtype=torch.long)
        for u, index in zip(by_unit, flat.split([len(own) for own in indices])):
            slices[u].append(ParamSlice(pname, dim, index))
    units = [Group(tuple(own), label=f"{label}[{u}]", layer=label) for u, own in enumerate(slices)]
    return units, layers


def _check_in_range(key: tuple[str, int], module: nn.Module, indices: Sequence[int], label: str) -> None:
    """Raise :class:`UnsupportedModel` when Torch-Pruning mapped a group to elements the parameter does not have (its
    index mapping misread an op of the model), instead of pruning something else than the group's units."""
    name, dim = key
    size = module.get_parameter(name.rpartition(".")[2]).shape[dim]
    largest = max(indices, default=-1)
    if largest >= size:
        raise UnsupportedModel(f"cannot build pruning groups: Torch-Pruning maps the units of {label} to element "
                               f"{largest} of {name} along dim {dim}, which has {size}: its index mapping does not "
                               "fit this model")


def _root_part(items: Sequence[Any], unit_of: Callable[[int], int], n_units: int) -> RootPart:
    root_indices: list[list[int]] = [[] for _ in range(n_units)]
    for root_idx in items[0].root_idxs:
        root_indices[unit_of(root_idx)].append(root_idx)
    return RootPart(items[0].dep.target.module, items[0].dep.handler, root_indices)


def _prunable_group(
    parts: Sequence[Sequence[Any]], unit_ofs: Sequence[Callable[[int], int]], n_units: int, names: dict[nn.Module, str],
    macs: dict[str, int], dg: tp.DependencyGraph, attention: nn.Module | None = None,
    grouped_convs: Sequence[GroupedConv] = (),
) -> PrunableGroup:
    """One prunable group from coupled Torch-Pruning groups (one, or several joined by grouped convs)."""
    root_parts = [_root_part(items, unit_of, n_units) for items, unit_of in zip(parts, unit_ofs)]
    root = root_parts[0].root
    units, layers = _units(parts, unit_ofs, n_units, names, names[root], dg)
    per_part = [_unit_macs(items, names, macs, unit_of, n_units, dg) for items, unit_of in zip(parts, unit_ofs)]
    unit_macs = torch.stack(per_part).sum(0)
    if attention is not None:
        unit_macs += _attention_core_macs(attention, names[attention], macs)
        kind = "heads"
    else:
        kind = "groups" if grouped_convs else ("neurons" if isinstance(root, nn.Linear) else "channels")
    return PrunableGroup(
        name=names[root],
        root=root,
        root_fn=root_parts[0].root_fn,
        units=units,
        unit_root_indices=root_parts[0].unit_root_indices,
        unit_macs=unit_macs,
        kind=kind,
        attention=attention,
        layers=layers,
        coupled=root_parts[1:],
        grouped_convs=list(grouped_convs),
        min_units=2 if grouped_convs else 1,
    )


def find_groups(
    model: nn.Module, example_inputs: Any, ignored_layers: Sequence[nn.Module] = (), macs: dict[str, int] | None = None,
    seconds: float | None = None,
) -> tuple[tp.DependencyGraph, list[PrunableGroup]]:
    """Trace ``model`` and return its dependency graph and prunable groups.

    The classifier (last layer producing the output width) and ``ignored_layers``
    keep their output width; groups reaching an unwrapped parameter
    (a transformer's residual stream) are skipped. ``macs`` is
    :func:`~oba.core.measure.macs_by_module` of ``model`` as it is now, when the caller
    has it (it is counted otherwise). Building the graph and listing its groups must finish within ``seconds``
    (:func:`~oba.pruning.graph_deadline.build_seconds`).
    """
    model_device = next(model.parameters()).device
    names = {m: n for n, m in model.named_modules()}
    ignored = list(ignored_layers)
    if isinstance(example_inputs, Tensor):
        example_inputs = example_inputs.to(model_device)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        head = classifier_layer(model, example_inputs)
        dg = build_graph(model, example_inputs, seconds)
    finally:
        for module, training in flags:
            module.training = training
    if head is not None:
        ignored.append(head)
    macs = macs if macs is not None else macs_by_module(model, example_inputs)
    attention_of_qkv = {m.qkv: m for m in model.modules() if is_attention(m)}
    parts = [
        list(tp_group.items)
        for tp_group in dg.get_all_groups(ignored_layers=ignored, root_module_types=(nn.modules.conv._ConvNd, nn.Linear))
    ]
    parts = [items for items in parts if not any(isinstance(item.dep.target.module, nn.Parameter) for item in items)]
    for module in (item.dep.target.module for items in parts for item in items):
        if is_grouped(module):
            check_supported(names[module], module)
    linked, dropped = link_grouped(parts, dg.is_out_channel_pruning_fn)
    try:
        return dg, _prunable_groups(parts, linked, dropped, names, macs, dg, attention_of_qkv)
    except UnsupportedModel as err:
        raise UnsupportedModel(f"{type(model).__name__}: {err}") from None


def _prunable_groups(parts: list[list[Any]], linked: Sequence[Any], dropped: set[int], names: dict[nn.Module, str],
                     macs: dict[str, int], dg: tp.DependencyGraph, attention_of_qkv: dict[nn.Module, nn.Module],
                     ) -> list[PrunableGroup]:
    """The prunable groups of Torch-Pruning's ``parts``: those joined by grouped convolutions (``linked``) as one each,
    the others one by one, less ``dropped``."""
    first_of = {link.parts[0]: link for link in linked}
    skipped = dropped | {p for link in linked for p in link.parts}
    groups: list[PrunableGroup] = []
    for p, items in enumerate(parts):
        if p in first_of:
            link = first_of[p]
            unit_ofs = [unit_of.__getitem__ for unit_of in link.unit_of]
            groups.append(_prunable_group([parts[q] for q in link.parts], unit_ofs, link.n_units, names, macs, dg,
                                          grouped_convs=link.convs))
        elif p not in skipped:
            attention = attention_of_qkv.get(items[0].dep.target.module)
            n_units = attention.num_heads if attention is not None else len(items[0].root_idxs)
            unit_of = _unit_of_root(items[0].dep.target.module, attention)
            groups.append(_prunable_group([items], [unit_of], n_units, names, macs, dg, attention=attention))
    return groups


def remove_units(dg: tp.DependencyGraph, group: PrunableGroup, units: Sequence[int]) -> None:
    """Physically remove ``units`` of ``group`` (and everything coupled to them).

    Grouped convs lose whole channel groups (:func:`~.grouped_convs.drop_conv_groups`) instead of
    Torch-Pruning's channel pruning, which would slice their per-group input dim.
    """
    if not units:
        return
    removed = {grouped.conv: grouped.removed(units) for grouped in group.grouped_convs}
    for part in [RootPart(group.root, group.root_fn, group.unit_root_indices), *group.coupled]:
        _prune_part(dg, part, units, removed)
    for conv, conv_groups in removed.items():
        drop_conv_groups(conv, conv_groups)


def _prune_part(dg: tp.DependencyGraph, part: RootPart, units: Sequence[int], removed: dict[nn.Module, list[int]]) -> None:
    """Prune ``units`` of one coupled group, except the grouped convs in ``removed``: these must lose exactly
    the channels of their channel groups ``removed[conv]``, left to the caller."""
    root_indices = sorted(i for u in units for i in part.unit_root_indices[u])
    if not root_indices:
        return
    for item in dg.get_pruning_group(part.root, part.root_fn, root_indices).items:
        module = item.dep.target.module
        if module not in removed:
            item.dep(item.idxs)
        elif sorted(item.idxs) != group_channels(module, removed[module], dg.is_out_channel_pruning_fn(item.dep.handler)):
            raise RuntimeError(f"units would remove channels of grouped conv {module} outside whole channel groups")
