"""Splitting and loading helpers shared by the dataset sources: seeded stratified splits, in-memory splits, loaders."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset

from oba.data import DatasetInfo, Splits

SPLIT_SEED = 0


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
    replica: tuple[int, int] | None = None,
) -> DataLoader:
    """A DataLoader; shuffling order is fixed by ``seed``.

    In-memory data is always read in this process (workers would only add
    overhead, and the batches are the same). File-backed data gets
    ``num_workers`` worker processes (a suite passes its trial's CPUs), or with
    ``None`` one per CPU of the machine, at most 8. Workers persist across
    epochs; pinned memory is used when ``device`` is CUDA. ``replica=(rank,
    world)`` reads only that replica's share of each epoch (a
    ``DistributedSampler`` shuffled by ``seed``; call its ``set_epoch`` every epoch).
    """
    if is_in_memory(dataset):
        num_workers = 0
    elif num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if replica is not None:
        sampler = DistributedSampler(dataset, num_replicas=replica[1], rank=replica[0], shuffle=shuffle, seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        generator=generator,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda" if device is not None else False,
        persistent_workers=num_workers > 0,
    )
