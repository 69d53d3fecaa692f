"""The fine-tuned model of each finished stage of an iterative cell, kept so that an interrupted cell resumes.

Entry ``stages/<row id>.pt`` of the checkpoint cache (a local folder or an
object-storage URI: :mod:`oba.store.cache_folder`) holds plain data, never code:
``{"format": 1, "state_dict": {name: tensor}, "modules": {module name:
{attribute: value}}}``, the pruned model's tensors and the attributes of its
modules that pruning changes, with their train/eval flags (:data:`RESTORED`;
numbers, strings and tuples or lists of them). It is read with
``weights_only=True`` and rebuilt on a fresh dense model of the same
architecture: every attribute it names must already exist on that module with a
value of the same type, every tensor replaces the model's tensor of that name
with one of the stored shape, and the tensors must then be exactly the model's
(strict ``load_state_dict``). An entry that cannot be read or does not fit
raises :class:`StageModelUnusable` naming it. The entry is written atomically
before the stage's row is stored, so a stage stored "ok" has its model.
"""
from __future__ import annotations

import io
import os
from typing import Any

import torch
from torch import Tensor, nn

from oba._errors import UserError
from oba.store.cache_folder import LocalFolder, ObjectFolder, cache_folder
from oba.training.checkpoints import default_cache_dir
from oba.training.tensor_files import CheckpointUnreadable, first_line, load_exactly, read_tensors

FORMAT = 1
RESTORED = frozenset({
    "training", "in_channels", "out_channels", "groups", "num_features", "num_channels", "in_features", "out_features",
    "normalized_shape", "embed_dim", "kdim", "vdim", "num_heads", "head_dim", "attn_dim", "embedding_dim",
    "num_parameters", "hidden_size", "input_size",
})
"""The module attributes a stage entry records and restores: the train/eval flag, and those pruning changes with a
layer's width."""
PLAIN = (int, float, bool, str)


class StageModelUnusable(UserError, ValueError):
    """A kept stage model that cannot be read or does not fit the model it is rebuilt on (one line, naming it)."""


def _entry(row_id: str) -> str:
    return f"stages/{row_id}.pt"


def _folder(cache_dir: str | os.PathLike[str] | None) -> LocalFolder | ObjectFolder:
    return cache_folder(cache_dir if cache_dir is not None else default_cache_dir())


def _is_plain(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(type(item) in PLAIN for item in value)
    return type(value) in PLAIN


def _same_kind(value: Any, current: Any) -> bool:
    """Whether ``value`` is plain and of ``current``'s type (for a tuple or list: with items of its items' types)."""
    if type(value) is not type(current) or not _is_plain(value):
        return False
    return not isinstance(value, (tuple, list)) or {type(i) for i in value} <= {type(i) for i in current}


def _structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Each module's :data:`RESTORED` attributes with plain values, by qualified module name (``""``: the model)."""
    modules = {}
    for name, module in model.named_modules():
        attributes = {a: v for a, v in vars(module).items() if a in RESTORED and _is_plain(v)}
        if attributes:
            modules[name] = attributes
    return modules


def save_stage_model(cache_dir: str | os.PathLike[str] | None, row_id: str, model: nn.Module) -> None:
    """Keep ``model`` (the stage's fine-tuned model) as the stage ``row_id``'s entry, atomically."""
    payload = {"format": FORMAT, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "modules": _structure(model)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    _folder(cache_dir).write_atomic(_entry(row_id), lambda handle: handle.write(buffer.getvalue()))


def _read_entry(folder: LocalFolder | ObjectFolder, entry: str) -> dict[str, Any]:
    """The entry's payload, checked to be a dict of the current format with its two parts."""
    where = folder.where(entry)
    try:
        payload = read_tensors(folder.read_bytes(entry), where)
    except OSError as err:
        raise StageModelUnusable(f"{where}: cannot be read ({first_line(err)})") from None
    except CheckpointUnreadable as err:
        raise StageModelUnusable(str(err)) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise StageModelUnusable(f"{where}: not a kept stage model of format {FORMAT}")
    if not isinstance(payload.get("state_dict"), dict) or not isinstance(payload.get("modules"), dict):
        raise StageModelUnusable(f"{where}: a kept stage model needs a 'state_dict' and a 'modules' dict")
    return payload


def _submodule(model: nn.Module, name: Any) -> nn.Module | None:
    """``model``'s module of qualified name ``name`` (``""``: the model), or None."""
    if not isinstance(name, str):
        return None
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _set_structure(model: nn.Module, modules: dict[Any, Any], where: Any) -> None:
    """Set each recorded attribute on ``model``'s module, where it exists with a value of the same type."""
    for name, attributes in modules.items():
        module = _submodule(model, name)
        if module is None or not isinstance(attributes, dict):
            raise StageModelUnusable(f"{where}: names module {name!r}, which the model does not have")
        for attribute, value in attributes.items():
            current = vars(module).get(attribute) if attribute in RESTORED else None
            if current is None or not _same_kind(value, current):
                raise StageModelUnusable(f"{where}: module {name!r} has no restorable attribute {attribute!r} "
                                         f"that takes a {type(value).__name__}")
            setattr(module, attribute, value)


def _reshape_tensors(model: nn.Module, state: dict[Any, Any], where: Any) -> None:
    """Replace each of ``model``'s parameters and buffers named in ``state`` by an empty one of the stored shape."""
    for key, stored in state.items():
        owner_name, _, attribute = key.rpartition(".") if isinstance(key, str) else ("", "", "")
        owner = _submodule(model, owner_name)
        parameters, buffers = (owner._parameters, owner._buffers) if owner is not None else ({}, {})
        current = parameters.get(attribute, buffers.get(attribute))
        if not isinstance(stored, Tensor) or current is None:
            raise StageModelUnusable(f"{where}: holds {key!r}, which is no parameter or buffer of the model")
        empty = torch.empty(stored.shape, dtype=current.dtype, device=current.device)
        if attribute in parameters:
            setattr(owner, attribute, nn.Parameter(empty, requires_grad=current.requires_grad))
        else:
            buffers[attribute] = empty


def load_stage_model(cache_dir: str | os.PathLike[str] | None, row_id: str, skeleton: nn.Module,
                     device: torch.device | str) -> nn.Module | None:
    """The model kept for stage ``row_id``, rebuilt on ``skeleton`` (a fresh dense model of the same architecture,
    changed in place) and moved to ``device``; None when there is none.

    Raises :class:`StageModelUnusable`, naming the entry, when it cannot be read or does not fit ``skeleton``.
    """
    folder, entry = _folder(cache_dir), _entry(row_id)
    if not folder.exists(entry):
        return None
    where = folder.where(entry)
    payload = _read_entry(folder, entry)
    _set_structure(skeleton, payload["modules"], where)
    _reshape_tensors(skeleton, payload["state_dict"], where)
    try:
        load_exactly(skeleton, payload["state_dict"], where)
    except CheckpointUnreadable as err:
        raise StageModelUnusable(str(err)) from None
    return skeleton.to(device)
