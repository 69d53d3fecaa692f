"""Coupled pruning groups from Torch-Pruning's dependency graph.

Torch-Pruning traces the model and returns, for every prunable root layer, the
set of coupled pruning operations (a conv's output channels, its batch norm,
every consumer's input channels, everything tied through residual adds). Here
each such coupled set becomes a :class:`PrunableGroup` whose *units* (one
channel, one MLP neuron, or one attention head) are :class:`oba.Group` objects
listing the exact parameter elements removed with that unit.

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

from ..batches import forward
from ..groups import Group, ParamSlice
from ..measure import macs_by_module

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclass
class PrunableGroup:
    """All units (channels, neurons or heads) of one coupled Torch-Pruning group."""

    name: str
    root: nn.Module
    root_fn: Callable
    units: list[Group]
    unit_root_indices: list[list[int]]
    unit_macs: Tensor
    kind: str
    attention: nn.Module | None = None
    layers: list[str] = field(default_factory=list)

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
    """(parameter name, dim) pairs a channel operation touches on ``module``."""
    prefix = f"{module_name}." if module_name else ""
    has_bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        if module.groups > 1 and not depthwise:
            raise NotImplementedError(f"grouped convolution {module_name} (groups={module.groups}) is not supported")
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
    """Estimated MACs removed per unit: each touched Conv/Linear's cost per channel, summed."""
    cost = torch.zeros(n_units, dtype=torch.float64)
    for item in items:
        module = item.dep.target.module
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or module not in names:
            continue
        is_out = dg.is_out_channel_pruning_fn(item.dep.handler)
        width = module.weight.shape[0] if is_out else module.weight.shape[1] * getattr(module, "groups", 1)
        per_index = macs.get(names[module], 0) / max(width, 1)
        for root in item.root_idxs:
            cost[unit_of(root)] += per_index
    return cost


def _attention_core_macs(attention: nn.Module, name: str, macs: dict[str, int]) -> float:
    children = sum(macs.get(f"{name}.{child}", 0) for child, _ in attention.named_children())
    return max(macs.get(name, 0) - children, 0) / attention.num_heads


def find_groups(
    model: nn.Module, example_inputs: Any, ignored_layers: Sequence[nn.Module] = (), macs: dict[str, int] | None = None
) -> tuple[tp.DependencyGraph, list[PrunableGroup]]:
    """Trace ``model`` and return its dependency graph and prunable groups.

    The classifier (last layer producing the output width) and ``ignored_layers``
    keep their output width; groups reaching an unwrapped parameter
    (a transformer's residual stream) are skipped. ``macs`` is
    :func:`~oba.measure.macs_by_module` of ``model`` as it is now, when the caller
    has it (it is counted otherwise).
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
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
    finally:
        for module, training in flags:
            module.training = training
    if head is not None:
        ignored.append(head)
    macs = macs if macs is not None else macs_by_module(model, example_inputs)
    attention_of_qkv = {m.qkv: m for m in model.modules() if is_attention(m)}
    groups: list[PrunableGroup] = []
    for tp_group in dg.get_all_groups(ignored_layers=ignored, root_module_types=(nn.modules.conv._ConvNd, nn.Linear)):
        items = list(tp_group.items)
        if any(isinstance(item.dep.target.module, nn.Parameter) for item in items):
            continue
        root = items[0].dep.target.module
        attention = attention_of_qkv.get(root)
        unit_of = _unit_of_root(root, attention)
        n_units = attention.num_heads if attention is not None else len(items[0].root_idxs)
        per_unit: dict[tuple[str, int], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        layers: list[str] = []
        for item in items:
            module = item.dep.target.module
            if module not in names:
                continue
            is_out = dg.is_out_channel_pruning_fn(item.dep.handler)
            if is_out and isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and names[module] not in layers:
                layers.append(names[module])
            for key in _param_slices(names[module], module, is_out):
                for idx, root_idx in zip(item.idxs, item.root_idxs):
                    per_unit[key][unit_of(root_idx)].append(idx)
        units = []
        root_indices: list[list[int]] = [[] for _ in range(n_units)]
        for root_idx in items[0].root_idxs:
            root_indices[unit_of(root_idx)].append(root_idx)
        for u in range(n_units):
            slices = tuple(
                ParamSlice(pname, dim, torch.tensor(sorted(set(by_unit[u])), dtype=torch.long))
                for (pname, dim), by_unit in per_unit.items()
                if by_unit.get(u)
            )
            units.append(Group(slices, label=f"{names[root]}[{u}]", layer=names[root]))
        unit_macs = _unit_macs(items, names, macs, unit_of, n_units, dg)
        if attention is not None:
            unit_macs += _attention_core_macs(attention, names[attention], macs)
        groups.append(
            PrunableGroup(
                name=names[root],
                root=root,
                root_fn=items[0].dep.handler,
                units=units,
                unit_root_indices=root_indices,
                unit_macs=unit_macs,
                kind="heads" if attention is not None else ("neurons" if isinstance(root, nn.Linear) else "channels"),
                attention=attention,
                layers=layers,
            )
        )
    return dg, groups


def remove_units(dg: tp.DependencyGraph, group: PrunableGroup, units: Sequence[int]) -> None:
    """Physically remove ``units`` of ``group`` (and everything coupled to them)."""
    if not units:
        return
    root_indices = sorted(i for u in units for i in group.unit_root_indices[u])
    dg.get_pruning_group(group.root, group.root_fn, root_indices).prune()
