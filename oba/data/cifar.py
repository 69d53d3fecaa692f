"""CIFAR-10 and CIFAR-100 through torchvision's loaders (python-pickle format).

``root`` holds ``cifar-10-batches-py/`` or ``cifar-100-python/`` as extracted
from the official archives; ``download=True`` fetches them there, nothing is
downloaded otherwise. Validation is carved from the official train split
(``val_fraction``, default 10 %, stratified, fixed seed); test is the official
test split. Train-split augmentation: random 32×32 crop with 4-pixel padding and
horizontal flip; every split is normalised with the dataset's channel statistics.

torchvision checks each file against the official md5. ``verify_checksums=False``
loads files that merely have the right names and format (hand-made or
re-packed sets, the test suite's tiny files) through minimal subclasses that
only drop the md5s; reading is torchvision's own code.
"""

from __future__ import annotations

import functools
import os

from torchvision import transforms
from torchvision.datasets import CIFAR10, CIFAR100

from oba.data import DatasetInfo, Splits, register, require_root
from oba.data.splits import carve_validation

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


class UncheckedCIFAR10(CIFAR10):
    """torchvision's CIFAR10 with the per-file md5 checks dropped (files must still exist and parse)."""

    train_list = [[filename, None] for filename, _ in CIFAR10.train_list]
    test_list = [[filename, None] for filename, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class UncheckedCIFAR100(CIFAR100):
    """torchvision's CIFAR100 with the per-file md5 checks dropped (files must still exist and parse)."""

    train_list = [[filename, None] for filename, _ in CIFAR100.train_list]
    test_list = [[filename, None] for filename, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


def _expected_files(cls: type[CIFAR10]) -> list[str]:
    return [filename for filename, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _check_files(name: str, label: str, cls: type[CIFAR10], root: str | None, download: bool) -> str:
    """Raise ``FileNotFoundError`` naming the missing files and the expected folder (unless ``download``);
    else say where the files are, or where they will be downloaded from and to."""
    root = require_root(name, root)
    folder = os.path.join(root, cls.base_folder)
    expected = _expected_files(cls)
    missing = [f for f in expected if not os.path.isfile(os.path.join(folder, f))]
    if missing and not download:
        raise FileNotFoundError(
            f"{label} not found: expected {', '.join(missing)} in {folder}. Pass download=True (in a suite: "
            f"[data] download = true) to fetch {cls.filename} from {cls.url}, or extract that archive into {root}"
        )
    if missing:
        return f"{label}: {len(missing)} of its {len(expected)} files missing in {folder}, to be downloaded from {cls.url}"
    return f"{label}: all {len(expected)} files in {folder}"


def _load(
    name: str,
    label: str,
    cls: type[CIFAR10],
    unchecked: type[CIFAR10],
    num_classes: int,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    root: str | None,
    download: bool,
    val_fraction: float,
    verify_checksums: bool,
) -> Splits:
    _check_files(name, label, cls, root, download)
    root = require_root(name, root)
    folder = os.path.join(root, cls.base_folder)
    dataset_cls = cls if verify_checksums else unchecked
    normalize = transforms.Normalize(*stats)
    plain = transforms.Compose([transforms.ToTensor(), normalize])
    augmented = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
    )
    try:
        train_augmented = dataset_cls(root, train=True, transform=augmented, download=download)
        train_plain = dataset_cls(root, train=True, transform=plain)
        test = dataset_cls(root, train=False, transform=plain)
    except RuntimeError as err:
        raise RuntimeError(
            f"{label} files in {folder} failed torchvision's md5 check ({err}). Re-download them with "
            "download=True, or pass verify_checksums=False to load files that are not the official ones"
        ) from err
    train, val = carve_validation(train_augmented, train_plain, train_plain.targets, val_fraction)
    info = DatasetInfo(name=name, num_classes=num_classes, in_chans=3, image_size=32)
    return Splits(train=train, val=val, test=test, info=info)


@register("cifar10", files=functools.partial(_check_files, "cifar10", "CIFAR-10", CIFAR10))
def cifar10(
    root: str | None = None, download: bool = False, val_fraction: float = 0.1, verify_checksums: bool = True
) -> Splits:
    """CIFAR-10: 45,000 train / 5,000 val (carved) / 10,000 test at the defaults."""
    return _load(
        "cifar10",
        "CIFAR-10",
        CIFAR10,
        UncheckedCIFAR10,
        10,
        CIFAR10_STATS,
        root,
        download,
        val_fraction,
        verify_checksums,
    )


@register("cifar100", files=functools.partial(_check_files, "cifar100", "CIFAR-100", CIFAR100))
def cifar100(
    root: str | None = None, download: bool = False, val_fraction: float = 0.1, verify_checksums: bool = True
) -> Splits:
    """CIFAR-100 (fine labels): 45,000 train / 5,000 val (carved) / 10,000 test at the defaults."""
    return _load(
        "cifar100",
        "CIFAR-100",
        CIFAR100,
        UncheckedCIFAR100,
        100,
        CIFAR100_STATS,
        root,
        download,
        val_fraction,
        verify_checksums,
    )
