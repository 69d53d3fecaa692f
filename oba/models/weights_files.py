"""Reading a weights file, local or behind a pyarrow-filesystem URI: its SHA-256, and its state dict (torch.save
read with ``weights_only=True``, or safetensors), every error naming the file."""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs
import safetensors.torch
import torch
from torch import Tensor

from oba._errors import UserError

_CHUNK = 1 << 20


class WeightsError(UserError, ValueError):
    """Weights that cannot be used: missing, a wrong SHA-256, an unknown source, or a model they do not fit."""


def sha256_of(location: str | os.PathLike[str]) -> str:
    """The SHA-256 (hex) of a local file or a pyarrow-filesystem URI, read in chunks."""
    digest = hashlib.sha256()
    with _open(os.fspath(location)) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _open(location: str) -> Any:
    if "://" in location:
        fs, path = pafs.FileSystem.from_uri(location)
        return fs.open_input_stream(path)
    return open(location, "rb")


def read_state_dict(location: str) -> dict[str, Tensor]:
    """The state dict in a weights file (torch.save or safetensors; unwrapped from ``state_dict``/``model``)."""
    safe = urlparse(location).path.endswith(".safetensors")
    try:
        if "://" in location:
            with _open(location) as handle:
                data = handle.read()
            loaded = safetensors.torch.load(data) if safe else torch.load(io.BytesIO(data), map_location="cpu",
                                                                              weights_only=True)
        else:
            loaded = safetensors.torch.load_file(location) if safe else torch.load(location, map_location="cpu",
                                                                                   weights_only=True)
    except Exception as err:  # torch and safetensors raise many kinds; all mean an unreadable file
        raise WeightsError(f"weights file {location} cannot be read as a state dict: {type(err).__name__}: "
                           f"{' '.join(str(err).split())[:300]}") from err
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise WeightsError(f"weights file {location} holds no state dict of tensors")
    return dict(loaded)
