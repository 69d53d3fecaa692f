"""The fine-tuned model of each finished stage of an iterative cell, kept so that an interrupted cell resumes.

Entry ``stages/<row id>.pt`` of the checkpoint cache (a local folder or an
object-storage URI: :mod:`oba.cache_folder`) holds the whole module as
``torch.save`` pickles it: a pruned model's layer widths differ from any fresh
model's, so its weights alone could not rebuild it. The entry is written
atomically before the stage's row is stored, so a stage stored "ok" has its
model. These files are this project's own cache and are loaded with
``weights_only=False`` (they hold module classes): never point the cache at
files from elsewhere.
"""
from __future__ import annotations

import io
import os

import torch
from torch import nn

from ..cache_folder import LocalFolder, ObjectFolder, cache_folder
from ..checkpoints import default_cache_dir


def _entry(row_id: str) -> str:
    return f"stages/{row_id}.pt"


def _folder(cache_dir: str | os.PathLike[str] | None) -> LocalFolder | ObjectFolder:
    return cache_folder(cache_dir if cache_dir is not None else default_cache_dir())


def save_stage_model(cache_dir: str | os.PathLike[str] | None, row_id: str, model: nn.Module) -> None:
    """Keep ``model`` (the stage's fine-tuned model) as the stage ``row_id``'s entry, atomically."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    _folder(cache_dir).write_atomic(_entry(row_id), lambda handle: handle.write(buffer.getvalue()))


def load_stage_model(cache_dir: str | os.PathLike[str] | None, row_id: str, device: torch.device) -> nn.Module | None:
    """The model kept for stage ``row_id`` on ``device``, or None when there is none."""
    folder = _folder(cache_dir)
    if not folder.exists(_entry(row_id)):
        return None
    return torch.load(io.BytesIO(folder.read_bytes(_entry(row_id))), map_location=device, weights_only=False)
