"""Fold a results location's loose parts into one Parquet file per (suite, model, dataset).

Steps, each safe to interrupt (readers apply :mod:`oba.store.scan`'s precedence
at every moment, so no cell is ever missing or counted twice):

1. take the compaction lease (one compaction at a time; runs may keep writing);
2. *take* every loose part by moving it to ``_folding/<stamp>/`` — a part a run
   writes afterwards is a new loose part, newer than anything taken, and wins;
3. for each partition a taken row belongs to, write a new file
   ``suite=S/model=M/dataset=D/part-<stamp>.parquet`` holding the partition's
   compacted rows and the taken ones, the newest row of each cell kept;
4. delete the partition's older compacted files, then the taken parts.

A *partial* compaction (``rows`` given) takes only the parts of those row ids
and, without ``merge``, writes each partition's taken rows as a new file beside
the older ones instead of rewriting them (a compacted file with a later name
wins, so the new rows still take precedence): what a run does while it runs
(:mod:`oba.store.rolling_compaction`), at a cost proportional to the rows taken.
A compaction that stopped midway leaves taken parts that readers still read and
the next compaction folds. An unreadable part is put back where it was (unless
a run has rewritten that cell meanwhile) and reported. On a local folder a move
is an atomic rename; on object storage it is a copy then a delete, so a part
rewritten between the two is lost — compact object storage while no run writes.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from oba._errors import UserError
from oba.store.atomic_write import write_atomic
from oba.store.lease import COMPACTION_LEASE, Lease
from oba.store.results import SCHEMA, ResultStore
from oba.store.scan import (
    COMPACTED,
    FOLDING,
    LOOSE,
    PARTITION_KEYS,
    TAKEN,
    StoredFile,
    UnreadablePart,
    newest_per_cell,
    partition_folder,
    partition_values,
    read_files,
    stamp,
)


@dataclass
class CompactionSummary:
    """What a compaction did: parts folded, files written and removed, cells stored (counted by a full compaction
    only), parts left unreadable."""

    folded: int = 0
    written: list[str] = field(default_factory=list)
    removed: int = 0
    cells: int | None = None
    unreadable: list[UnreadablePart] = field(default_factory=list)


def compact(location: str, *, ttl: float = 60.0, settle: float = 1.0, rows: Collection[str] | None = None,
            merge: bool = True) -> CompactionSummary:
    """Fold every loose part of ``location`` (only those of the row ids ``rows`` when given) into its partition's
    compacted file, merged with the older ones (``merge``) or written beside them (see the module docstring).

    Raises :class:`~oba.store.lease.LeaseHeld` while another compaction runs, :class:`~oba._errors.UserError` when
    ``location`` does not exist.
    """
    store = ResultStore(location)
    if not store.exists():
        raise UserError(f"results {location}: no such folder")
    with Lease(location, "compaction", name=COMPACTION_LEASE, ttl=ttl, settle=settle):
        return _compact(store, rows, merge)


def _row_id(file: StoredFile) -> str:
    return file.path.rsplit("/", 1)[-1][: -len(".parquet")]


def _take(store: ResultStore, loose: list[StoredFile]) -> None:
    """Move the ``loose`` parts into a new ``_folding/<stamp>/`` folder (a part gone meanwhile is skipped)."""
    folder = f"{store.root}/{FOLDING}/{stamp()}"
    store.fs.create_dir(folder, recursive=True)
    for part in loose:
        try:
            store.fs.move(part.path, f"{folder}/{part.path.rsplit('/', 1)[-1]}")
        except FileNotFoundError:
            continue


def _put_back(store: ResultStore, unreadable: list[UnreadablePart]) -> None:
    """Move unreadable taken parts back to the top folder, unless the cell has a new loose part there."""
    for part in unreadable:
        original = f"{store.root}/{part.path.rsplit('/', 1)[-1]}"
        if store.fs.get_file_info(original).type == pafs.FileType.NotFound:
            store.fs.move(part.path, original)


def _partition_values(table: pa.Table) -> list[tuple]:
    keys = table.select(list(PARTITION_KEYS)).group_by(list(PARTITION_KEYS), use_threads=False).aggregate([])
    return list(zip(*(keys[k].to_pylist() for k in PARTITION_KEYS)))


def _rows_of(table: pa.Table, values: tuple) -> pa.Table:
    mask = None
    for key, value in zip(PARTITION_KEYS, values):
        match = pc.is_null(table[key]) if value is None else pc.equal(table[key], value)
        mask = match if mask is None else pc.and_(mask, match)
    return table.filter(mask)


def _write(store: ResultStore, values: tuple, rows: pa.Table) -> str:
    folder = partition_folder(store.root, values)
    store.fs.create_dir(folder, recursive=True)
    name = f"part-{stamp()}"
    return write_atomic(store.fs, f"{folder}/{name}.parquet",
                        lambda sink: pq.write_table(rows.drop_columns(list(PARTITION_KEYS)), sink))


def _compact(store: ResultStore, rows: Collection[str] | None, merge: bool) -> CompactionSummary:
    summary = CompactionSummary()
    _take(store, [f for f in store.files() if f.kind == LOOSE and (rows is None or _row_id(f) in rows)])
    files = store.files()
    taken = [f for f in files if f.kind == TAKEN]
    compacted = [f for f in files if f.kind == COMPACTED]
    new_rows, summary.unreadable = read_files(store.fs, store.root, taken, SCHEMA)
    _put_back(store, summary.unreadable)
    kept = {u.path for u in summary.unreadable}
    partitions = set(_partition_values(new_rows))
    if merge:  # also merge the partitions that earlier folds left with several files
        folders = Counter(f.path.rsplit("/", 1)[0] for f in compacted)
        partitions |= {partition_values(store.root, folder) for folder, files in folders.items() if files > 1}
    for values in sorted(partitions, key=lambda v: tuple(str(x) for x in v)):
        folder = partition_folder(store.root, values) + "/"
        old = [f for f in compacted if f.path.startswith(folder)] if merge else []
        old_rows, unreadable = read_files(store.fs, store.root, old, SCHEMA)
        taken_rows = _rows_of(new_rows, values)
        if unreadable:  # never drop a compacted file that could not be folded, nor the parts meant for it
            summary.unreadable += unreadable
            cells = set(taken_rows["cell_id"].to_pylist())
            kept |= {f.path for f in taken if _row_id(f) in cells}
            continue
        summary.written.append(_write(store, values, newest_per_cell(pa.concat_tables([old_rows, taken_rows]))))
        for file in old:
            store.fs.delete_file(file.path)
        summary.removed += len(old)
    for file in taken:
        if file.path not in kept:
            store.fs.delete_file(file.path)
            summary.folded += 1
    _remove_empty_folding(store)
    if merge and rows is None:
        summary.cells = len(store.read_table(["cell_id"])[0])
    return summary


def _remove_empty_folding(store: ResultStore) -> None:
    folder = f"{store.root}/{FOLDING}"
    for info in store.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and not store.fs.get_file_info(pafs.FileSelector(info.path)):
            store.fs.delete_dir(info.path)
    if not store.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        store.fs.delete_dir_contents(folder, missing_dir_ok=True)
        if store.fs.get_file_info(folder).type == pafs.FileType.Directory:
            store.fs.delete_dir(folder)
