"""Cache of dense (unpruned) checkpoints: trained per (model, dataset, recipe, seed), or given as pretrained weights.

A checkpoint is made once and loaded by every later request, from any
process. A trained one is keyed by a hash of the canonical JSON of the model
name, dataset name and options, recipe and seed, and of the device type for a
checkpoint trained on anything but the CPU (weights trained on a GPU differ from
the CPU's; CPU keys stay those of checkpoints cached before devices were told
apart). Pretrained weights
(:class:`~oba.models.weights.Weights`) are never trained: they are read from
where the user keeps them (SHA-256 checked), evaluated on the validation and
test splits, and cached under a hash of the model, dataset and options and the
weights' source and pin — one entry for every seed, and for every node of a
cluster that shares the cache, so only the node that prepares it needs the
weights file. Files live in the cache folder (argument, else the ``OBA_CACHE``
environment variable, else ``.cache/checkpoints`` under the working directory),
a local folder or a pyarrow filesystem URI such as
``s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http``
(:mod:`oba.store.cache_folder`):

    <key>.pt     {"format", "key", "model", "info", "state_dict"} (torch.save)
    <key>.json   metadata: the identity above, val/test metrics, and for a
                 trained model best epoch, training seconds, device (and the
                 GPU's name on CUDA), who trained it and when; for weights, ``weights`` (source, SHA-256
                 and file they were read from), device, who evaluated them and when
    <key>.lock   lock file of a local folder; never deleted
    <key>.lease  the maker's lease on object storage, while it makes the entry

Provenance (:attr:`DenseCheckpoint.weights`, ``weights_sha256``): weights give
their canonical source and the SHA-256 of their file; a trained model gives
``"trained"`` and the SHA-256 of its cached ``<key>.pt``; a user checkpoint
file gives its path and SHA-256.

Every file is read with ``weights_only=True`` (tensors and plain values, never
code). A cached entry that cannot be read or does not fit its model (a corrupt
or planted file) is made again in its place, with a warning naming it; a user's
checkpoint file that cannot is an error naming it (:class:`CheckpointUnreadable`,
one line), and is left alone.

Concurrency: a request that finds no usable ``<key>.pt`` takes the folder's
exclusive lock for it (``fcntl.flock`` on a local folder, a lease on object
storage), checks again, and only then trains; the others wait and load what the
winner wrote. Both files are written to a temporary name and moved into place,
the ``.pt`` last, so a visible ``.pt`` always has its metadata beside it and is
never half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oba import data as datasets
from oba import models
from oba.data import DatasetInfo, Splits
from oba.models.weights import Weights, load_weights, sha256_of
from oba.store.cache_folder import LocalFolder, ObjectFolder, cache_folder
from oba.training.execution import default_device
from oba.training.tensor_files import CheckpointUnreadable, first_line, load_exactly, read_tensors
from oba.training.train import Recipe, evaluate, train

log = logging.getLogger(__name__)

CACHE_ENV = "OBA_CACHE"
FORMAT_VERSION = 1
PAYLOAD_KEYS = frozenset({"format", "key", "model", "info", "state_dict"})


@dataclass
class DenseCheckpoint:
    """A dense model ready to use, with where it came from.

    ``trained`` is true only for the request that trained it (false when it was
    loaded from the cache, from a user-given file or from pretrained weights).
    ``weights`` and ``weights_sha256`` say where the weights came from (see the
    module docstring).
    """

    model: nn.Module
    info: DatasetInfo
    metadata: dict[str, Any]
    path: Path | str
    """Where the weights are: a local path, or the path inside the cache's object store."""
    trained: bool
    weights: str
    weights_sha256: str


def default_cache_dir() -> Path:
    """``$OBA_CACHE`` when set, else ``.cache/checkpoints`` under the working directory."""
    return Path(os.environ.get(CACHE_ENV) or Path.cwd() / ".cache" / "checkpoints")


def checkpoint_key(
    model_name: str,
    dataset_name: str,
    recipe: Recipe,
    seed: int,
    dataset_options: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> str:
    """The cache key: the first 20 hex digits of SHA-256 over the canonical JSON of the identity.

    ``seed`` replaces ``recipe.seed`` (it seeds both initialisation and training);
    ``dataset_options`` are resolved against the dataset's defaults first, so
    leaving an option out and giving its default value are the same key.
    ``device``'s type (not its index) is part of the identity unless it is the
    CPU, so CPU keys are unchanged from before devices were told apart.
    """
    options = datasets.resolve_options(dataset_name, dataset_options)
    identity = _identity(model_name, dataset_name, replace(recipe, seed=seed), options, torch.device(device))
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def _identity(
    model_name: str, dataset_name: str, recipe: Recipe, dataset_options: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "model": model_name,
        "dataset": dataset_name,
        "dataset_options": dataset_options,
        "recipe": recipe.to_dict(),
        "seed": recipe.seed,
        **({} if device.type == "cpu" else {"device_type": device.type}),
    }


def device_metadata(device: torch.device) -> dict[str, str]:
    """Where a checkpoint was trained: ``device``, and on CUDA the GPU's name as ``gpu``."""
    if device.type == "cuda":
        return {"device": str(device), "gpu": torch.cuda.get_device_name(device)}
    return {"device": str(device)}


def weights_key(
    model_name: str, dataset_name: str, weights: Weights, dataset_options: dict[str, Any] | None = None
) -> str:
    """The cache key of pretrained ``weights`` evaluated on a dataset (no seed: the weights do not depend on it)."""
    identity = _weights_identity(model_name, dataset_name, weights, datasets.resolve_options(dataset_name, dataset_options))
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def _weights_identity(model_name: str, dataset_name: str, weights: Weights, dataset_options: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "model": model_name, "dataset": dataset_name, "dataset_options": dataset_options,
            **weights.identity()}


def dense_source(settings: dict[str, Any]) -> Recipe | Weights:
    """How a suite's resolved ``[dense]`` settings make the dense model: :class:`Weights` when they name
    ``weights``, else the training :class:`Recipe`."""
    return Weights.from_settings(settings) if "weights" in settings else Recipe.from_dict(settings)


def dense_checkpoint(
    model_name: str,
    dataset_name: str,
    recipe: Recipe | Weights,
    seed: int,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    dataset_options: dict[str, Any] | None = None,
    data: Splits | None = None,
    data_root: str | os.PathLike[str] | None = None,
    download: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    num_workers: int | None = None,
) -> DenseCheckpoint:
    """Dense ``model_name`` on ``dataset_name`` with ``recipe`` and ``seed``: loaded if cached, else made and cached.

    A :class:`Recipe` trains the model; ``seed`` replaces ``recipe.seed`` and
    also seeds the initial weights. :class:`Weights` load it instead (never
    trained; ``seed`` is unused): the weights file must be in place unless the
    weights allow a download, and the model is evaluated once.
    ``data`` saves re-loading the dataset when the caller already has its
    splits (it must be ``dataset_name`` with ``dataset_options``); otherwise the
    dataset is loaded with ``data_root``/``download``/``dataset_options`` only
    if training or evaluation is needed. ``checkpoint`` bypasses the cache: a user file,
    either written by this module or a bare state dict for
    ``models.create(model_name, ...)``; its metadata is the JSON beside it when
    there is one, else its validation and test metrics are measured; one that
    cannot be read or does not fit raises :class:`CheckpointUnreadable`. A cached
    entry that cannot be read or does not fit is made again in its place, with a
    warning naming it. The model is returned on ``device`` (default: CUDA when
    available) in eval mode.
    """
    device = torch.device(device) if device is not None else default_device()
    options = datasets.resolve_options(dataset_name, dataset_options)

    def splits() -> Splits:
        if data is not None:
            if data.info.name != dataset_name:
                raise ValueError(f"data holds {data.info.name!r} but dataset_name is {dataset_name!r}")
            return data
        return datasets.load(dataset_name, root=data_root, download=download, **options)

    if checkpoint is not None:
        return _load_user_checkpoint(Path(checkpoint), model_name, splits, device)

    folder = cache_folder(cache_dir if cache_dir is not None else default_cache_dir())
    if isinstance(recipe, Weights):
        key = weights_key(model_name, dataset_name, recipe, options)
    else:
        recipe = replace(recipe, seed=seed)
        key = checkpoint_key(model_name, dataset_name, recipe, seed, options, device)
    name = f"{key}.pt"
    if folder.exists(name):
        with contextlib.suppress(CheckpointUnreadable):  # made again below, under the maker's lock
            return _load_cached(folder, key, device)
    with folder.exclusive(key):
        log.info("holding the maker's lock on dense checkpoint %s", key)
        cached = _usable_cached(folder, key, device)
        if cached is not None:
            return cached
        split_data = splits()
        if isinstance(recipe, Weights):
            model, metadata = _evaluate_weights(model_name, recipe, split_data, device)
            identity = _weights_identity(model_name, dataset_name, recipe, options)
        else:
            model, metadata = _train(model_name, recipe, seed, key, split_data, device, num_workers)
            identity = _identity(model_name, dataset_name, recipe, options, device)
        metadata = {**identity, "key": key, "info": asdict(split_data.info), **metadata}
        written = _write_entry(folder, key, model_name, model, split_data.info, metadata)
    source, digest = _provenance(written, metadata)
    return DenseCheckpoint(model=model, info=split_data.info, metadata=metadata, path=folder.where(name),
                           trained=not isinstance(recipe, Weights), weights=source, weights_sha256=digest)


def _write_entry(folder: LocalFolder | ObjectFolder, key: str, model_name: str, model: nn.Module, info: DatasetInfo,
                 metadata: dict[str, Any]) -> bytes:
    """Write a cache entry, ``<key>.json`` (the metadata) then ``<key>.pt`` (tensors and plain values only), each
    atomically; return the bytes of the ``.pt`` file."""
    folder.write_atomic(f"{key}.json", lambda f: f.write(json.dumps(metadata, indent=2).encode()))
    payload = {
        "format": FORMAT_VERSION,
        "key": key,
        "model": model_name,
        "info": asdict(info),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    folder.write_atomic(f"{key}.pt", lambda f: f.write(buffer.getvalue()))
    return buffer.getvalue()


def _train(
    model_name: str, recipe: Recipe, seed: int, key: str, split_data: Splits, device: torch.device,
    num_workers: int | None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A model trained with ``recipe`` from a ``seed``-ed initialisation, and its training metadata."""
    log.info("training dense checkpoint %s (%s on %s, seed %d)", key, model_name, split_data.info.name, seed)
    torch.manual_seed(seed)
    model = models.create(model_name, split_data.info.num_classes, split_data.info.in_chans, split_data.info.image_size)
    result = train(model, split_data, recipe, device=device, num_workers=num_workers)
    return model, {
        **{k: v for k, v in result.to_dict().items() if k != "seconds"},
        "train_seconds": result.seconds,
        **device_metadata(device),
        "torch": torch.__version__,
        "trained_by": {"host": socket.gethostname(), "pid": os.getpid()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _evaluate_weights(
    model_name: str, weights: Weights, split_data: Splits, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The model with ``weights`` loaded, in eval mode on ``device``, and its metadata with val/test metrics."""
    info = split_data.info
    model = models.create(model_name, info.num_classes, info.in_chans, info.image_size)
    file = load_weights(model, model_name, weights, f"{info.name}: {info.num_classes} classes, "
                                                     f"{info.in_chans}×{info.image_size}² inputs")
    model.to(device).eval()
    return model, {
        "weights": {"source": file.source, "sha256": file.sha256, "file": file.location},
        "val": evaluate(model, split_data.val),
        "test": evaluate(model, split_data.test),
        **device_metadata(device),
        "torch": torch.__version__,
        "evaluated_by": {"host": socket.gethostname(), "pid": os.getpid()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _provenance(payload: bytes, metadata: dict[str, Any]) -> tuple[str, str]:
    """(source, SHA-256) of a cached checkpoint: its weights' when it was made from weights, else its ``.pt`` bytes'."""
    weights = metadata.get("weights")
    if weights is not None:
        return weights["source"], weights["sha256"]
    return "trained", hashlib.sha256(payload).hexdigest()


def _cached_model(payload: Any, where: Path | str) -> tuple[DatasetInfo, nn.Module]:
    """The dataset info and the model with its weights loaded, of a payload this module wrote."""
    if not isinstance(payload, dict) or not PAYLOAD_KEYS <= payload.keys():
        raise CheckpointUnreadable(f"{where}: not a dense checkpoint (it needs {', '.join(sorted(PAYLOAD_KEYS))})")
    if payload["format"] != FORMAT_VERSION:
        raise CheckpointUnreadable(
            f"{where} has checkpoint format {str(payload['format'])[:40]!r}; this version reads {FORMAT_VERSION}")
    if not isinstance(payload["model"], str) or not isinstance(payload["info"], dict):
        raise CheckpointUnreadable(f"{where}: its 'model' is not a name or its 'info' not a dict")
    try:
        info = DatasetInfo(**payload["info"])
        model = models.create(payload["model"], info.num_classes, info.in_chans, info.image_size)
    except (TypeError, ValueError) as err:
        raise CheckpointUnreadable(f"{where}: {first_line(err)}") from None
    load_exactly(model, payload["state_dict"], where)
    return info, model


def _cached_metadata(folder: LocalFolder | ObjectFolder, key: str) -> dict[str, Any]:
    """The metadata ``<key>.json`` beside a cached checkpoint: a JSON object whose ``weights``, if any, name their
    source and SHA-256."""
    where = folder.where(f"{key}.json")
    try:
        metadata = json.loads(folder.read_bytes(f"{key}.json"))
    except (FileNotFoundError, ValueError) as err:
        raise CheckpointUnreadable(f"{where}: cannot be read ({first_line(err)})") from None
    if not isinstance(metadata, dict):
        raise CheckpointUnreadable(f"{where}: not a JSON object")
    weights = metadata.get("weights")
    if weights is not None and not (isinstance(weights, dict) and {"source", "sha256"} <= weights.keys()):
        raise CheckpointUnreadable(f"{where}: its 'weights' do not name their source and SHA-256")
    return metadata


def _load_cached(folder: LocalFolder | ObjectFolder, key: str, device: torch.device) -> DenseCheckpoint:
    """Checkpoint ``key`` of ``folder`` on ``device``: :class:`CheckpointUnreadable` naming the file when its
    contents cannot be read or do not fit (an ``OSError`` reading it propagates)."""
    where = folder.where(f"{key}.pt")
    raw = folder.read_bytes(f"{key}.pt")
    info, model = _cached_model(read_tensors(raw, where), where)
    metadata = _cached_metadata(folder, key)
    source, digest = _provenance(raw, metadata)
    return DenseCheckpoint(model=model.to(device).eval(), info=info, metadata=metadata, path=where, trained=False,
                           weights=source, weights_sha256=digest)


def _usable_cached(folder: LocalFolder | ObjectFolder, key: str, device: torch.device) -> DenseCheckpoint | None:
    """Cached checkpoint ``key``, or None when there is none or it is unusable: then a warning names the file,
    which the caller makes again in its place."""
    if not folder.exists(f"{key}.pt"):
        return None
    try:
        return _load_cached(folder, key, device)
    except CheckpointUnreadable as err:
        log.warning("ignoring a cached dense checkpoint: %s; making it again in its place", err)
        return None


def _load_user_checkpoint(
    path: Path, model_name: str, splits: Callable[[], Splits], device: torch.device
) -> DenseCheckpoint:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = read_tensors(path, path)
    written_here = isinstance(payload, dict) and {"format", "model", "info", "state_dict"} <= payload.keys()
    if written_here:
        if payload["model"] != model_name:
            raise CheckpointUnreadable(f"{path} holds a {str(payload['model'])[:60]!r} model, not {model_name!r}")
        if path.with_suffix(".json").is_file():
            cached = _load_cached(LocalFolder(path.parent), path.stem, device)
            return replace(cached, path=path, weights=str(path), weights_sha256=sha256_of(path))
    state = payload["state_dict"] if written_here else payload
    split_data = splits()
    info = split_data.info
    model = models.create(model_name, info.num_classes, info.in_chans, info.image_size)
    load_exactly(model, state, path)
    model.to(device).eval()
    metadata = {
        "model": model_name,
        "dataset": info.name,
        "source": str(path),
        "info": asdict(info),
        "val": evaluate(model, split_data.val),
        "test": evaluate(model, split_data.test),
    }
    return DenseCheckpoint(model=model, info=info, metadata=metadata, path=path, trained=False, weights=str(path),
                           weights_sha256=sha256_of(path))
