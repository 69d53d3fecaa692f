"""ImageNet (or any ImageNet-layout set) through torchvision's ImageFolder.

Expected layout: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>``
with the same class folders in both (the usual "val re-sorted into class
folders" form). Validation is carved from ``train`` (``val_fraction``, default
2 %, stratified, fixed seed); test is the official ``val`` folder. Train
transform: RandomResizedCrop(``image_size``) + horizontal flip; evaluation:
Resize(``image_size`` × 256/224) + CenterCrop(``image_size``); both normalised
with the ImageNet channel statistics. Nothing is ever downloaded.
"""

from __future__ import annotations

import os

from torchvision import transforms
from torchvision.datasets import ImageFolder

from oba.data import DatasetInfo, Splits, register, require_root
from oba.data.splits import carve_validation

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LAYOUT_HELP = (
    "ImageNet must be laid out as root/train/<class>/*.JPEG and root/val/<class>/*.JPEG (one folder per class)"
)


def _check_layout(root: str | None, download: bool) -> str:
    """Raise unless ``root/train`` and ``root/val`` are folders holding class folders (``ValueError`` on ``download``);
    else say how many class folders each holds, and where."""
    root = require_root("imagenet", root)
    if download:
        raise ValueError("imagenet cannot be downloaded automatically; " + LAYOUT_HELP)
    counts = []
    for split in ("train", "val"):
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder} does not exist. {LAYOUT_HELP}")
        counts.append(sum(entry.is_dir() for entry in os.scandir(folder)))
        if not counts[-1]:
            raise FileNotFoundError(f"{folder} holds no class folder. {LAYOUT_HELP}")
    return f"ImageNet layout: {counts[0]} class folders in {os.path.join(root, 'train')}, {counts[1]} in {os.path.join(root, 'val')}"


@register("imagenet", files=_check_layout)
def imagenet(
    root: str | None = None, download: bool = False, val_fraction: float = 0.02, image_size: int = 224
) -> Splits:
    """ImageFolder train/val trees under ``root``; number of classes taken from the folders."""
    _check_layout(root, download)
    root = require_root("imagenet", root)
    normalize = transforms.Normalize(*IMAGENET_STATS)
    augmented = transforms.Compose(
        [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
    )
    plain = transforms.Compose(
        [
            transforms.Resize(round(image_size * 256 / 224)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            normalize,
        ]
    )
    train_augmented = ImageFolder(os.path.join(root, "train"), transform=augmented)
    train_plain = ImageFolder(os.path.join(root, "train"), transform=plain)
    test = ImageFolder(os.path.join(root, "val"), transform=plain)
    if test.classes != train_plain.classes:
        only_train = sorted(set(train_plain.classes) - set(test.classes))
        only_val = sorted(set(test.classes) - set(train_plain.classes))
        raise ValueError(
            f"class folders differ between {root}/train and {root}/val (only in train: {only_train[:5]}, "
            f"only in val: {only_val[:5]}). {LAYOUT_HELP}"
        )
    train, val = carve_validation(train_augmented, train_plain, train_plain.targets, val_fraction)
    info = DatasetInfo(name="imagenet", num_classes=len(train_plain.classes), in_chans=3, image_size=image_size)
    return Splits(train=train, val=val, test=test, info=info)
