"""Name → dataset registry, with fixed seeded train/validation/test splits.

``load(name, root=None, download=False, **options)`` returns a :class:`Splits`:
three torch Datasets yielding ``(image tensor, int label)`` plus a
:class:`DatasetInfo` (num_classes, in_chans, image_size). All three splits are
made together because they are carved from the same data with a fixed seed
(:data:`SPLIT_SEED`): the validation split is for model selection, the test
split only for reporting. Augmentation, where a source has any, is applied to
the train split only. ``options`` are source-specific (e.g. the synthetic
set's size) and, unlike ``root``, change the data: callers that key results
on a dataset include them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ..registry import Registry

SPLIT_SEED = 0
DATA_ROOT_ENV = "OBA_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset's inputs and labels."""

    name: str
    num_classes: int
    in_chans: int
    image_size: int


@dataclass(frozen=True)
class Splits:
    """The train, validation and test splits of one dataset."""

    train: Dataset
    val: Dataset
    test: Dataset
    info: DatasetInfo

    def split(self, name: str) -> Dataset:
        """The split called ``name`` ("train", "val" or "test")."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; valid splits: train, val, test")
        return getattr(self, name)


class DatasetSource(Protocol):
    def __call__(self, root: str | None, download: bool) -> Splits: ...


_DATASETS: Registry[DatasetSource] = Registry(
    "dataset", "datasets", tuple(f"{__name__}.{m}" for m in ("embedded", "synthetic", "cifar", "imagenet"))
)
names = _DATASETS.names


def register(name: str) -> Callable[[DatasetSource], DatasetSource]:
    """Decorator: make ``name`` resolve to the decorated loader ``(root, download, **options) -> Splits``.

    The loader's keyword parameters other than ``root`` and ``download`` are
    the dataset's options; :func:`load` rejects any others by name.
    """
    return _DATASETS.register(name)


def load(name: str, root: str | os.PathLike[str] | None = None, download: bool = False, **options: Any) -> Splits:
    """The fixed train/val/test splits of dataset ``name``.

    ``root`` is where on-disk datasets live (default: the ``OBA_DATA``
    environment variable); embedded and synthetic sets ignore it. ``download``
    lets sources that can fetch their files do so; nothing is downloaded
    otherwise, and missing files raise ``FileNotFoundError`` naming the expected
    path. An unknown name raises ``ValueError`` listing the valid names.
    """
    source = _DATASETS.get(name)
    resolved_options = resolve_options(name, options)
    resolved_root = os.fspath(root) if root is not None else os.environ.get(DATA_ROOT_ENV)
    return source(root=resolved_root, download=download, **resolved_options)


def resolve_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every option of dataset ``name``: the given values over the source's defaults.

    Two option dicts that describe the same data resolve to the same dict, so
    callers key cached results on this. Unknown options raise ``ValueError``
    naming the valid ones; so does an unknown dataset.
    """
    parameters = {
        key: param.default
        for key, param in inspect.signature(_DATASETS.get(name)).parameters.items()
        if key not in ("root", "download")
    }
    unknown = sorted(set(options or {}) - set(parameters))
    if unknown:
        raise ValueError(f"dataset {name!r} has no options {unknown}; its options: {', '.join(parameters) or 'none'}")
    return {**parameters, **(options or {})}


def require_root(name: str, root: str | None) -> str:
    """``root``, or a ``ValueError`` telling the user how to give one for dataset ``name``."""
    if root is None:
        raise ValueError(
            f"dataset {name!r} is read from disk: pass root=... or set the {DATA_ROOT_ENV} environment variable"
        )
    return root


def stratified_split(
    labels: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int = SPLIT_SEED
) -> list[np.ndarray]:
    """Disjoint index arrays, one per fraction, covering all indices; every class is split in the same proportions.

    ``fractions`` must sum to 1. Per class, the shuffled indices are cut at the
    rounded cumulative fractions, so the result depends only on the labels and
    ``seed``. Each returned array is sorted.
    """
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must sum to 1 (got {list(fractions)})")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    bounds = np.cumsum((0.0, *fractions))
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cuts = np.rint(bounds * len(members)).astype(int)
        for part, start, stop in zip(parts, cuts[:-1], cuts[1:], strict=True):
            part.append(members[start:stop])
    return [np.sort(np.concatenate(part)) for part in parts]


def tensor_splits(
    name: str, images: np.ndarray, labels: np.ndarray, num_classes: int, fractions: Sequence[float] = (0.7, 0.15, 0.15)
) -> Splits:
    """In-memory splits of ``images`` (N, C, H, W floats) standardised with the train split's mean and std."""
    train_idx, val_idx, test_idx = stratified_split(labels, fractions)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    x = torch.from_numpy(((images - mean) / std).astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))

    def subset(index: np.ndarray) -> TensorDataset:
        return TensorDataset(x[index], y[index])

    info = DatasetInfo(name=name, num_classes=num_classes, in_chans=images.shape[1], image_size=images.shape[2])
    return Splits(train=subset(train_idx), val=subset(val_idx), test=subset(test_idx), info=info)


def carve_validation(
    train_augmented: Dataset, train_plain: Dataset, targets: Sequence[int], val_fraction: float
) -> tuple[Subset, Subset]:
    """Split an official train split into (train, val) with a fixed seed.

    ``train_augmented`` and ``train_plain`` are the same files under train and
    evaluation transforms; validation samples come from the plain one.
    """
    train_idx, val_idx = stratified_split(targets, (1.0 - val_fraction, val_fraction))
    return Subset(train_augmented, train_idx.tolist()), Subset(train_plain, val_idx.tolist())


def is_in_memory(dataset: Dataset) -> bool:
    """Whether ``dataset`` is a tensor dataset (or a subset of one), where loader workers only add overhead."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return isinstance(dataset, TensorDataset)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int | None = None,
    device: torch.device | str | None = None,
) -> DataLoader:
    """A DataLoader; shuffling order is fixed by ``seed``.

    ``num_workers=None`` picks 0 for in-memory data and up to 8 worker
    processes for file-backed data. Pinned memory is used when ``device`` is CUDA.
    """
    if num_workers is None:
        num_workers = 0 if is_in_memory(dataset) else min(8, os.cpu_count() or 1)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda" if device is not None else False,
        persistent_workers=num_workers > 0,
    )


__all__ = [
    "DatasetInfo",
    "Splits",
    "carve_validation",
    "load",
    "make_loader",
    "resolve_options",
    "names",
    "register",
    "stratified_split",
]
