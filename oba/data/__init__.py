"""Name → dataset registry, with fixed seeded train/validation/test splits.

``load(name, root=None, download=False, **options)`` returns a :class:`Splits`:
three torch Datasets yielding ``(image tensor, int label)`` plus a
:class:`DatasetInfo` (num_classes, in_chans, image_size). All three splits are
made together because they are carved from the same data with a fixed seed
(:data:`SPLIT_SEED`): the validation split is for model selection, the test
split only for reporting. Augmentation, where a source has any, is applied to
the train split only. ``options`` are source-specific (e.g. the synthetic
set's size) and, unlike ``root``, change the data: callers that key results
on a dataset include them. :func:`check_files` tells whether an on-disk
dataset's files are where :func:`load` will look, without reading them, and
says where they are.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from oba._lazy import lazy_exports
from oba._registry import Registry

if TYPE_CHECKING:
    from torch.utils.data import Dataset

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


class FilesCheck(Protocol):
    def __call__(self, root: str | None, download: bool) -> str: ...


DATASETS: Registry[DatasetSource] = Registry("dataset", "datasets", __name__)
_FILE_CHECKS: dict[str, FilesCheck] = {}
names = DATASETS.names


def register(name: str, files: FilesCheck | None = None) -> Callable[[DatasetSource], DatasetSource]:
    """Decorator: make ``name`` resolve to the decorated loader ``(root, download, **options) -> Splits``.

    The loader's keyword parameters other than ``root`` and ``download`` are
    the dataset's options; :func:`load` rejects any others by name. A source
    read from disk gives ``files(root, download)``: it raises what the loader
    would for missing files (``FileNotFoundError`` naming the expected files and
    layout, ``ValueError`` without a root), reads no data, and otherwise returns
    one line saying where the files are (or where they will be downloaded to).
    """
    add = DATASETS.register(name)

    def decorate(source: DatasetSource) -> DatasetSource:
        add(source)
        if files is not None:
            _FILE_CHECKS[name] = files
        return source

    return decorate


def data_root(root: str | os.PathLike[str] | None = None) -> str | None:
    """Where on-disk datasets are read from: ``root``, else the ``OBA_DATA`` environment variable, else None."""
    return os.fspath(root) if root is not None else os.environ.get(DATA_ROOT_ENV)


NO_FILES = "no files needed (embedded in an installed package, or generated)"
"""What :func:`check_files` says of a dataset that is not read from disk."""


def check_files(name: str, root: str | os.PathLike[str] | None = None, download: bool = False) -> str:
    """Raise, as :func:`load` would, when dataset ``name``'s files are not under ``root``; read nothing.

    Returns one line saying where the files are, or :data:`NO_FILES`. Embedded
    and synthetic sets always pass; so do sources that will download what is
    missing (``download=True``).
    """
    DATASETS.get(name)
    check = _FILE_CHECKS.get(name)
    return NO_FILES if check is None else check(root=data_root(root), download=download)


def load(name: str, root: str | os.PathLike[str] | None = None, download: bool = False, **options: Any) -> Splits:
    """The fixed train/val/test splits of dataset ``name``.

    ``root`` is where on-disk datasets live (default: the ``OBA_DATA``
    environment variable); embedded and synthetic sets ignore it. ``download``
    lets sources that can fetch their files do so; nothing is downloaded
    otherwise, and missing files raise ``FileNotFoundError`` naming the expected
    path. An unknown name raises ``ValueError`` listing the valid names.
    """
    source = DATASETS.get(name)
    resolved_options = resolve_options(name, options)
    return source(root=data_root(root), download=download, **resolved_options)


def resolve_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every option of dataset ``name``: the given values over the source's defaults.

    Two option dicts that describe the same data resolve to the same dict, so
    callers key cached results on this. Unknown options raise ``ValueError``
    naming the valid ones; so does an unknown dataset.
    """
    parameters = {
        key: param.default
        for key, param in inspect.signature(DATASETS.get(name)).parameters.items()
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
            f"dataset {name!r} is read from disk and no root is given: set [data] root in the suite, pass root=..., "
            f"or set the {DATA_ROOT_ENV} environment variable"
        )
    return root


_SPLITTING = {name: "oba.data.splits" for name in ("SPLIT_SEED", "carve_validation", "is_in_memory", "make_loader",
                                            "stratified_split", "tensor_splits")}
__all__ = ["DatasetInfo", "Splits", "check_files", "data_root", "load", "names", "register", "resolve_options",
           *_SPLITTING]
__getattr__ = lazy_exports(__name__, _SPLITTING)
