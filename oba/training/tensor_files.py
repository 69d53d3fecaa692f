"""Reading a file of tensors that may be hostile: ``weights_only=True`` always, every error naming the file."""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oba._errors import UserError


class CheckpointUnreadable(UserError, ValueError):
    """A checkpoint file that cannot be read, or does not fit its model; the message names it, on one line."""


def read_tensors(source: bytes | Path, where: Path | str) -> Any:
    """What ``torch.load`` reads from ``source`` (bytes, or a file) with ``weights_only=True``: tensors and plain
    values, never code. :class:`CheckpointUnreadable` naming ``where`` when it cannot be read so."""
    try:
        return torch.load(io.BytesIO(source) if isinstance(source, bytes) else source, map_location="cpu",
                          weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointUnreadable(f"{where}: not a readable file of tensors and plain values (corrupt, or holding "
                                   f"objects whose loading could run code, which weights_only=True refuses)") from None
    except Exception as err:  # a corrupt file fails in many ways; each is this file's fault
        raise CheckpointUnreadable(f"{where}: cannot be read ({first_line(err)})") from None


def first_line(err: BaseException) -> str:
    """The error's type and the first line of its message, for a one-line report."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def load_exactly(model: nn.Module, state: Any, where: Path | str) -> None:
    """Load ``state`` into ``model`` (strictly): :class:`CheckpointUnreadable` naming ``where`` unless it is a
    dict of tensors with exactly the model's names and shapes."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointUnreadable(f"{where}: its state dict is not a dict of named tensors")
    expected = model.state_dict()
    missing, extra = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    misshapen = sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)
    problems = [f"{len(keys)} {what} (first {keys[0]!r})" for what, keys in
                (("missing tensors", missing), ("unexpected tensors", extra), ("tensors of another shape", misshapen))
                if keys]
    if problems:
        raise CheckpointUnreadable(f"{where}: its state dict does not fit {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state)
