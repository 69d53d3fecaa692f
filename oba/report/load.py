"""Read a results table from wherever it lives, in the store's column schema.

A source is a pandas DataFrame, a results folder (what
:class:`oba.store.results.ResultStore` writes: loose parts and compacted files), a folder
whose sub-folders are results folders (e.g. one per suite, as ``results/reference``;
their rows are combined, side files such as ``band.json`` and sub-folders without
parts ignored), a single Parquet file, or a hive-partitioned Parquet dataset
folder (its ``.parquet`` files only), given as a local path or a pyarrow
filesystem URI. Whatever the source, the table returned has every column of
:data:`oba.store.results.SCHEMA` (missing ones filled with nulls), numeric metric columns
as floats and the identity columns as strings ("" where null). ``columns``
names the columns a reader needs: only those (and the identity columns) are
read from Parquet; the others are left null.

:func:`load_results` refuses a results folder with an unreadable part;
:func:`read_results` skips such parts and names them, for readers (report,
leaderboard) that can show the rest.
"""
from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from oba._errors import UserError
from oba._messages import one_line
from oba.criteria.registry import RENAMED_IN_ROWS
from oba.report.stages import ONE_SHOT, STAGE_COLUMNS
from oba.store.results import COLUMNS, ResultStore, UnreadablePart, filesystem
from oba.store.scan import FOLDING, PARTITION_KEYS

NUMERIC_COLUMNS = (
    "ratio",
    "stage_ratio",
    "dense_acc",
    "pruned_acc_raw",
    "pruned_acc",
    "final_acc",
    "dense_top5",
    "final_top5",
    "macs_speedup",
    "latency_dense_ms",
    "latency_pruned_ms",
    "latency_speedup",
    "scoring_seconds",
    "gradient_seconds",
    "scoring_seconds_per_grad",
    "fidelity",
    "fidelity_abs",
    "fidelity_precision",
    "compute_seconds",
)
TEXT_KEYS = ("suite", "model", "dataset", "criterion", "structure", "allocation", "status")
IDENTITY_COLUMNS = ("cell_id", "suite", "model", "dataset", "criterion", "structure", "allocation", "ratio", "seed",
                    "status", "schema_version", *STAGE_COLUMNS)
"""Always read, whatever columns a reader asks for."""


class ResultsUnreadable(UserError):
    """A results source does not exist, is not Parquet, holds no results, or lacks the identity columns."""


@dataclass(frozen=True)
class LoadedResults:
    """A normalised results table and the parts of its folder that were skipped as unreadable."""

    table: pd.DataFrame
    skipped: list[UnreadablePart] = field(default_factory=list)


def _projection(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    return list(dict.fromkeys([*IDENTITY_COLUMNS, *columns]))


def _is_results_folder(entries: list[pafs.FileInfo]) -> bool:
    """Whether a folder's entries are a results store's: loose parts, compacted partitions or taken parts."""
    return any((e.type == pafs.FileType.File and e.base_name.endswith(".parquet") and not e.base_name.startswith("."))
               or (e.type == pafs.FileType.Directory
                   and (e.base_name.startswith(f"{PARTITION_KEYS[0]}=") or e.base_name == FOLDING))
               for e in entries)


def _listing(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    """The entries of folder ``path`` (not recursive)."""
    return fs.get_file_info(pafs.FileSelector(path, recursive=False))


def _child(location: str, name: str) -> str:
    """The location of ``location``'s sub-folder ``name`` (a URI keeps its scheme and query)."""
    if "://" not in location:
        return os.path.join(location, name)
    parts = urllib.parse.urlsplit(location)
    return urllib.parse.urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{urllib.parse.quote(name)}"))


def _read_stores(location: str, stores: dict[str, str], columns: list[str] | None
                 ) -> tuple[pd.DataFrame, list[UnreadablePart]]:
    """The rows of ``stores`` (label → results store location) as one table (each row names its suite), and their
    unreadable parts; :class:`ResultsUnreadable` when they have parts and none reads.

    Only result parts and compacted files are opened, never side files. Two
    stores holding the same cells (e.g. two runs of one suite) are refused:
    their rows would count twice.
    """
    frames: dict[str, pd.DataFrame] = {}
    skipped: list[UnreadablePart] = []
    for label, store in stores.items():
        frames[label], unreadable = ResultStore(store).read_readable(columns)
        skipped += unreadable
    _refuse_shared_cells(location, frames)
    filled = [frame for frame in frames.values() if not frame.empty]
    if not filled and skipped:
        raise ResultsUnreadable(f"{location}: none of its {len(skipped)} result part(s) can be read; first: {skipped[0]}")
    return (pd.concat(filled, ignore_index=True) if filled else next(iter(frames.values()))), skipped


def _refuse_shared_cells(location: str, frames: dict[str, pd.DataFrame]) -> None:
    """:class:`ResultsUnreadable` naming two sub-folders of ``location`` that hold rows of the same cell."""
    owner: dict[str, str] = {}
    for name, frame in frames.items():
        for cell in frame["cell_id"]:
            if owner.setdefault(cell, name) != name:
                raise ResultsUnreadable(f"{location}: sub-folders {owner[cell]} and {name} both hold cell {cell} "
                                        "(two runs of one suite?); give one of them")


def _read_folder(location: str, fs: pafs.FileSystem, path: str, columns: list[str] | None
                 ) -> tuple[pd.DataFrame, list[UnreadablePart]]:
    """A folder: a results store, a folder of stores (one per sub-folder), or a hive-partitioned Parquet dataset."""
    entries = _listing(fs, path)
    if _is_results_folder(entries):
        return _read_stores(location, {location: location}, columns)
    folders = sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory and not e.base_name.startswith("."))
    if any("=" in name for name in folders):
        return _read_dataset(location, fs, path, columns), []
    stores = [name for name in folders if _is_results_folder(_listing(fs, f"{path}/{name}"))]
    if not stores:
        raise ResultsUnreadable(f"{location}: no results here (a results folder holds one .parquet part per cell, "
                                "or sub-folders that do)")
    return _read_stores(location, {name: _child(location, name) for name in stores}, columns)


def _read_location(location: str, columns: list[str] | None) -> tuple[pd.DataFrame, list[UnreadablePart]]:
    try:
        fs, path = filesystem(location)
        info = fs.get_file_info(path)
    except (OSError, ValueError) as exc:
        raise ResultsUnreadable(f"{location}: {one_line(str(exc))}") from exc
    if info.type == pafs.FileType.NotFound:
        raise ResultsUnreadable(f"{location}: no such file or folder")
    try:
        if info.type == pafs.FileType.File:
            with fs.open_input_file(path) as source:
                return _read_file(source, columns), []
        return _read_folder(location, fs, path, columns)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ResultsUnreadable(f"{location}: not readable as Parquet results ({one_line(str(exc))})") from exc


def _present(columns: list[str] | None, names: list[str]) -> list[str] | None:
    return None if columns is None else [c for c in columns if c in names]


def _read_file(source: pa.NativeFile, columns: list[str] | None) -> pd.DataFrame:
    """One Parquet file, only the ``columns`` it has (all when None)."""
    parquet = pq.ParquetFile(source)
    return parquet.read(columns=_present(columns, parquet.schema_arrow.names)).to_pandas()


def _read_dataset(location: str, fs: pafs.FileSystem, path: str, columns: list[str] | None) -> pd.DataFrame:
    """The ``.parquet`` files of a dataset folder (hive partitions understood; side files and hidden or ``_`` names
    left out), only the ``columns`` they have (all when None)."""
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(f.path for f in found if f.type == pafs.FileType.File and f.base_name.endswith(".parquet")
                   and not any(part.startswith((".", "_")) for part in f.path[len(path):].split("/")))
    if not files:
        raise ResultsUnreadable(f"{location}: no results here (no .parquet file in this dataset folder)")
    dataset = ds.dataset(files, filesystem=fs, format="parquet", partitioning="hive", partition_base_dir=path)
    return dataset.to_table(columns=_present(columns, dataset.schema.names)).to_pandas()


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with every schema column present, metrics as floats and keys as strings.

    Rows of schema version 1 had no batch-norm recalibration: their ``pruned_acc``
    becomes ``pruned_acc_raw`` and ``pruned_acc`` is left empty (once: a
    normalised table comes back unchanged). Rows older than schema version 5
    (no iterative protocol) are one-shot cells: stage 1 of 1, ``stage_ratio`` their
    ratio, schedule ``"one-shot"``. Rows older than schema version 6 name criteria as before OBA followed its
    paper (``oba`` then was today's ``taylor2``): their criterion is renamed (:data:`~oba.criteria.registry.RENAMED_IN_ROWS`).
    """
    table = frame.copy()
    for name in COLUMNS:
        if name not in table.columns:
            table[name] = None
    for name in NUMERIC_COLUMNS:
        table[name] = pd.to_numeric(table[name], errors="coerce").astype(float)
    for name in TEXT_KEYS:
        table[name] = table[name].astype(object).where(table[name].notna(), "").astype(str)
    for name in ("seed", "fidelity_k"):
        table[name] = pd.to_numeric(table[name], errors="coerce")
    version_one = (pd.to_numeric(table["schema_version"], errors="coerce") == 1) & table["pruned_acc_raw"].isna()
    table.loc[version_one, "pruned_acc_raw"] = table.loc[version_one, "pruned_acc"]
    table.loc[version_one, "pruned_acc"] = float("nan")
    before_six = pd.to_numeric(table["schema_version"], errors="coerce") < 6
    table.loc[before_six, "criterion"] = table.loc[before_six, "criterion"].replace(RENAMED_IN_ROWS)
    _fill_stages(table)
    return table.reset_index(drop=True)


def _fill_stages(table: pd.DataFrame) -> None:
    """Give rows without stage columns (schema version 4 and older) those of a one-shot cell, in place."""
    for name in ("stage", "stages"):
        table[name] = pd.to_numeric(table[name], errors="coerce").fillna(1).astype("int64")
    table["stage_ratio"] = table["stage_ratio"].fillna(table["ratio"])
    schedule = table["schedule"]
    table["schedule"] = schedule.astype(object).where(schedule.notna() & (schedule != ""), ONE_SHOT).astype(str)


def read_results(source: str | os.PathLike[str] | pd.DataFrame, columns: Sequence[str] | None = None) -> LoadedResults:
    """Read ``source`` into a normalised table, skipping (and naming) the unreadable parts of a results folder.

    ``columns``: the columns to read besides :data:`IDENTITY_COLUMNS` (every column when None).

    Raises :class:`ResultsUnreadable` when nothing can be read: no such
    location, not Parquet, no results in it, or no identity columns.
    """
    if isinstance(source, pd.DataFrame):
        where, frame, skipped = "the results table", source, []
    else:
        where = os.fspath(source)
        frame, skipped = _read_location(where, _projection(columns))
    missing = [c for c in ("model", "dataset", "criterion", "ratio", "seed", "status") if c not in frame.columns]
    if missing:
        raise ResultsUnreadable(f"{where}: results lack the columns {missing}")
    return LoadedResults(normalise(frame), skipped)


def load_results(source: str | os.PathLike[str] | pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read ``source`` into a normalised results table; raise :class:`ResultsUnreadable` on failure.

    Unlike :func:`read_results`, one unreadable part of a results folder fails the
    whole read (naming that part).
    """
    loaded = read_results(source, columns)
    if loaded.skipped:
        raise ResultsUnreadable(f"{os.fspath(source)}: {loaded.skipped[0]}")
    return loaded.table
