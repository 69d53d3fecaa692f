"""Reading a results location's files by columns, the newest row of each cell winning.

A results location holds three kinds of Parquet files (:mod:`oba.store.results`):

* loose parts ``<root>/<cell_id>.parquet``, one row each, as runs write them;
* parts taken by a compaction in progress, ``<root>/_folding/<stamp>-<id>/<cell_id>.parquet``;
* compacted files ``<root>/suite=S/model=M/dataset=D/part-<stamp>-<id>.parquet``,
  hive-partitioned (the three key columns live in the folder names, not the file).

Precedence, when a cell has rows in several files: a loose part beats a taken
part, which beats a compacted row; among files of one kind the later name (its
``<stamp>`` is a zero-padded nanosecond time) wins. A loose part present after a
compaction took the cell's part was written after it, so it is newer; the rule
needs no clock comparison between writers.

Files are read by a pool of threads, only the asked columns; an unreadable file is
named and skipped. Key columns of loose parts are cached in a manifest
(``<root>/_manifest/``), keyed by each part's name, size and modification time,
so a warm ``statuses()`` opens only the parts written since.
"""
from __future__ import annotations

import time
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from oba._messages import one_line

PARTITION_KEYS = ("suite", "model", "dataset")
FOLDING = "_folding"
MANIFEST = "_manifest"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
SETTLING_NS = 2_000_000_000
"""Parts this much older than the newest part are cached in the manifest (see :func:`read_loose_with_manifest`)."""
READERS = 8
"""Threads reading files at once (object stores answer each request slowly; local reads overlap decoding)."""
MERGE_EVERY = 1000
LOOSE, TAKEN, COMPACTED = 2, 1, 0
"""Precedence of the three kinds of files (higher wins)."""


@dataclass(frozen=True)
class StoredFile:
    """One Parquet file of a results location: its kind (precedence), path, size and modification time (ns)."""

    kind: int
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class UnreadablePart:
    """A stored file that cannot be read, and why (one line)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"unreadable result part {self.path}: {self.reason}"


def stamp() -> str:
    """A name prefix that sorts by creation time: nanoseconds since the epoch, zero-padded, and a random suffix."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


def partition_folder(root: str, values: Sequence[str | None]) -> str:
    """``root/suite=…/model=…/dataset=…`` with each value URI-encoded (pyarrow's hive flavour)."""
    segments = [f"{key}={NULL_PARTITION if v is None else urllib.parse.quote(str(v), safe='')}"
                for key, v in zip(PARTITION_KEYS, values)]
    return "/".join([root, *segments])


def partition_values(root: str, folder: str) -> tuple[str | None, ...]:
    """The (suite, model, dataset) of a partition folder: :func:`partition_folder` inverted."""
    segments = folder[len(root):].strip("/").split("/")
    values = [segment.split("=", 1)[1] for segment in segments]
    return tuple(None if v == NULL_PARTITION else urllib.parse.unquote(v) for v in values)


def _mtime_ns(info: pafs.FileInfo) -> int:
    return int(info.mtime_ns) if info.mtime_ns is not None else 0


def list_files(fs: pafs.FileSystem, root: str) -> list[StoredFile]:
    """Every result file under ``root``: loose parts, taken parts and compacted files (hidden temporaries excluded)."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    except FileNotFoundError:
        return []
    files: list[StoredFile] = []
    for info in infos:
        name = info.base_name
        if info.type == pafs.FileType.File and name.endswith(".parquet") and not name.startswith("."):
            files.append(StoredFile(LOOSE, info.path, info.size, _mtime_ns(info)))
        elif info.type == pafs.FileType.Directory and (name == FOLDING or name.startswith(f"{PARTITION_KEYS[0]}=")):
            kind = TAKEN if name == FOLDING else COMPACTED
            for inner in fs.get_file_info(pafs.FileSelector(info.path, recursive=True, allow_not_found=True)):
                if (inner.type == pafs.FileType.File and inner.base_name.endswith(".parquet")
                        and not inner.base_name.startswith(".")):
                    files.append(StoredFile(kind, inner.path, inner.size, _mtime_ns(inner)))
    return files


def _partitioning() -> ds.Partitioning:
    return ds.partitioning(pa.schema([(k, pa.string()) for k in PARTITION_KEYS]), flavor="hive")


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order and type (null where it has none)."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    return pa.table({f.name: table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
                     for f in schema}, schema=schema)


def _read_compacted(fs: pafs.FileSystem, root: str, path: str, schema: pa.Schema) -> pa.Table:
    dataset = ds.dataset([path], format="parquet", filesystem=fs, partitioning=_partitioning(), partition_base_dir=root)
    return _conform(dataset.to_table(columns=[c for c in schema.names if c in dataset.schema.names]), schema)


def _read_part(fs: pafs.FileSystem, path: str, schema: pa.Schema) -> pa.Table:
    with fs.open_input_file(path) as source:
        parquet = pq.ParquetFile(source)
        present = set(parquet.schema_arrow.names)
        return _conform(parquet.read(columns=[c for c in schema.names if c in present]), schema)


def compacted_row_files(fs: pafs.FileSystem, root: str, partition: Sequence[str | None]) -> dict[str, str]:
    """``row id → path`` of the newest compacted file of ``partition`` (suite, model, dataset) holding each row;
    only the files' ``cell_id`` columns are read."""
    folder = partition_folder(root, partition)
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except OSError:
        return {}
    where: dict[str, str] = {}
    for info in sorted((i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                        and not i.base_name.startswith(".")), key=lambda i: i.path):
        with fs.open_input_file(info.path) as source:
            where.update(dict.fromkeys(pq.read_table(source, columns=["cell_id"])["cell_id"].to_pylist(), info.path))
    return where


def read_compacted_row(fs: pafs.FileSystem, path: str, row_id: str, partition: Sequence[str | None]) -> dict:
    """Row ``row_id`` of the compacted file ``path`` of ``partition``, the partition's columns added back."""
    with fs.open_input_file(path) as source:
        table = pq.read_table(source)
    row = table.filter(pc.equal(table["cell_id"], row_id)).to_pylist()[-1]
    return {**row, **dict(zip(PARTITION_KEYS, partition))}


def read_files(fs: pafs.FileSystem, root: str, files: Iterable[StoredFile], schema: pa.Schema
               ) -> tuple[pa.Table, list[UnreadablePart]]:
    """The rows of ``files`` in ``schema`` (absent columns null), newest row per cell only, and the unreadable files.

    ``schema`` must include ``cell_id``. Files are read by :data:`READERS` threads
    and their rows merged into contiguous tables every :data:`MERGE_EVERY` files,
    so memory stays proportional to the rows read, not to the number of files.
    """
    ordered = sorted(files, key=lambda f: (f.kind, f.path))

    def read(file: StoredFile) -> pa.Table | UnreadablePart:
        try:
            if file.kind == COMPACTED:
                return _read_compacted(fs, root, file.path, schema)
            return _read_part(fs, file.path, schema)
        except (OSError, pa.ArrowException) as err:
            return UnreadablePart(file.path, one_line(str(err)) or type(err).__name__)

    merged: list[pa.Table] = []
    pending: list[pa.Table] = []
    unreadable: list[UnreadablePart] = []
    with ThreadPoolExecutor(READERS) as pool:
        for outcome in pool.map(read, ordered):
            if isinstance(outcome, UnreadablePart):
                unreadable.append(outcome)
                continue
            pending.append(outcome)
            if len(pending) == MERGE_EVERY:
                merged.append(pa.concat_tables(pending).combine_chunks())
                pending = []
    tables = merged + ([pa.concat_tables(pending).combine_chunks()] if pending else [])
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return newest_per_cell(table), sorted(unreadable, key=lambda u: u.path)


def newest_per_cell(table: pa.Table) -> pa.Table:
    """The last row of each ``cell_id`` in ``table``'s order (rows sorted by precedence, lowest first)."""
    order = pa.array(range(len(table)), pa.int64())
    last = (pa.table({"cell_id": table["cell_id"], "row": order})
            .group_by("cell_id", use_threads=False).aggregate([("row", "max")])["row_max"])
    return table.take(last.take(pc.sort_indices(last)))


def manifest_schema(columns: Sequence[str], schema: pa.Schema) -> pa.Schema:
    """The manifest's columns: the part's name, size and mtime, then ``columns`` typed as in ``schema``."""
    return pa.schema([("part", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
                      *[schema.field(c) for c in columns]])


class Manifest:
    """A cache of the key columns of loose parts, valid for a part while its name, size and mtime are unchanged.

    Losing or corrupting the manifest costs only time: an entry that does not match a
    part's listing is ignored and the part is read again.
    """

    def __init__(self, fs: pafs.FileSystem, root: str, schema: pa.Schema) -> None:
        self.fs, self.folder, self.schema = fs, f"{root}/{MANIFEST}", schema

    def _files(self) -> list[str]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.folder, allow_not_found=True))
        except OSError:
            return []
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                      and not i.base_name.startswith("."))

    def entries(self) -> tuple[pa.Table, list[str]]:
        """The newest readable manifest file's rows (empty when none), and every manifest file's path."""
        files = self._files()
        for path in reversed(files):
            try:
                with self.fs.open_input_file(path) as source:
                    table = pq.read_table(source)
                return table.select(self.schema.names).cast(self.schema), files
            except (OSError, pa.ArrowException, KeyError):
                continue
        return self.schema.empty_table(), files

    def replace(self, table: pa.Table, old: list[str]) -> None:
        """Write ``table`` as the newest manifest, then remove the ``old`` files; a store that refuses is left as is."""
        name = stamp()
        temporary, final = f"{self.folder}/.{name}.tmp", f"{self.folder}/{name}.parquet"
        try:
            self.fs.create_dir(self.folder, recursive=True)
            with self.fs.open_output_stream(temporary) as sink:
                pq.write_table(table.cast(self.schema), sink)
            self.fs.move(temporary, final)
            for path in old:
                self.fs.delete_file(path)
        except (OSError, pa.ArrowException):
            return


def read_loose_with_manifest(fs: pafs.FileSystem, root: str, loose: list[StoredFile], schema: pa.Schema
                             ) -> tuple[pa.Table, list[UnreadablePart]]:
    """The rows of the ``loose`` parts in ``schema``: cached ones from the manifest, the rest read, then cached.

    The manifest is rewritten when any part had to be read. Where modification
    times are whole seconds (object stores), parts modified within
    :data:`SETTLING_NS` of the newest part are not cached: a part rewritten within
    the same second at the same size would otherwise look unchanged.
    """
    manifest = Manifest(fs, root, manifest_schema(schema.names, schema))
    cached, old_files = manifest.entries()
    listing = pa.table({"part": pa.array([_name(f) for f in loose], pa.string()),
                        "size": pa.array([f.size for f in loose], pa.int64()),
                        "mtime_ns": pa.array([f.mtime_ns for f in loose], pa.int64())})
    valid = listing.join(cached, keys=["part", "size", "mtime_ns"], join_type="inner").select(manifest.schema.names)
    known = set(valid["part"].to_pylist())
    fresh = {_name(f): f for f in loose if _name(f) not in known}
    read, unreadable = read_files(fs, root, fresh.values(), schema)
    if len(read):
        coarse = all(f.mtime_ns % 1_000_000_000 == 0 for f in loose)
        settled = max(f.mtime_ns for f in loose) - SETTLING_NS if coarse else None
        names = [f"{cell_id}.parquet" for cell_id in read["cell_id"].to_pylist()]
        matches = [i for i, name in enumerate(names) if name in fresh and (settled is None or fresh[name].mtime_ns < settled)]
        additions = read.take(pa.array(matches, pa.int64()))
        columns = {"part": pa.array([names[i] for i in matches], pa.string()),
                   "size": pa.array([fresh[names[i]].size for i in matches], pa.int64()),
                   "mtime_ns": pa.array([fresh[names[i]].mtime_ns for i in matches], pa.int64()),
                   **{c: additions[c] for c in schema.names}}
        manifest.replace(pa.concat_tables([valid, pa.table(columns).cast(manifest.schema)]), old_files)
    return pa.concat_tables([valid.select(schema.names).cast(schema), read]), unreadable


def _name(file: StoredFile) -> str:
    return file.path.rsplit("/", 1)[-1]
