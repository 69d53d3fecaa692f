"""A generated, learnable classification set for tests: one random prototype image per class plus noise."""

from __future__ import annotations

import numpy as np

from oba.data import Splits, register
from oba.data.splits import tensor_splits


@register("synthetic")
def synthetic(
    root: str | None = None,
    download: bool = False,
    num_classes: int = 4,
    image_size: int = 8,
    channels: int = 1,
    n: int = 256,
    noise: float = 1.0,
    seed: int = 0,
) -> Splits:
    """``n`` samples (balanced over ``num_classes``) of ``channels``×``image_size``² images, split 70/15/15.

    Sample i of class c is prototype_c + ``noise`` × N(0, 1); prototypes are
    N(0, 1) images. Everything is drawn from ``seed``.
    """
    if n < 3 * num_classes:
        raise ValueError(
            f"synthetic needs n ≥ 3 × num_classes to fill three splits (got n={n}, num_classes={num_classes})"
        )
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((num_classes, channels, image_size, image_size))
    labels = np.arange(n) % num_classes
    images = prototypes[labels] + noise * rng.standard_normal((n, channels, image_size, image_size))
    return tensor_splits("synthetic", images, labels, num_classes=num_classes)
