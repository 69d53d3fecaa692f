"""Results store: one Parquet part per cell, written atomically, read back by columns as one table.

A results location is a local folder or a pyarrow filesystem URI (``file://``,
``s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http``, ``gs://``...)
shared by the cluster's nodes. Cell ``cell_id`` is written to
``<root>/<cell_id>.parquet`` under a temporary name and renamed, so a reader
never sees half a part, a re-run overwrites a failed cell's part with its new
outcome, and two writers of the same cell leave exactly one part. Stored error
messages are plain text (terminal control codes removed).

``oba store compact`` (:mod:`oba.store.compaction`) folds parts into hive-partitioned
files; readers see loose parts and compacted files as one table, the newest row
of each cell winning (:mod:`oba.store.scan`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from oba._messages import plain
from oba.store.atomic_write import write_atomic
from oba.store.scan import (
    LOOSE,
    StoredFile,
    UnreadablePart,
    compacted_row_files,
    list_files,
    newest_per_cell,
    read_compacted_row,
    read_files,
    read_loose_with_manifest,
)

SCHEMA_VERSION = 6
"""2: ``pruned_acc`` is the accuracy after batch-norm recalibration, ``pruned_acc_raw`` before it.
Version 1 rows (no recalibration) are read with their ``pruned_acc`` as ``pruned_acc_raw``.
3: adds criterion_config, fidelity_abs, fidelity_precision, fidelity_k.
4: adds dense_weights, dense_weights_sha256.
5: adds the iterative protocol's stage, stages, stage_ratio and schedule (one row per cell and stage; a one-shot
cell is stage 1 of 1, its stage_ratio its ratio, its schedule "one-shot").
Older rows read back with the columns they lack as null."""

EARLIER_STAGE = "-stage"
"""Row ids ``<cell_id>-stage<k>`` are an iterative cell's earlier stages; the last stage's row has the cell's id."""


def is_earlier_stage(row_id: str) -> bool:
    """Whether ``row_id`` is an iterative cell's earlier stage (not a cell of its own)."""
    return EARLIER_STAGE in row_id


SCHEMA = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("suite", pa.string()),
        ("cell_id", pa.string()),
        ("model", pa.string()),
        ("dataset", pa.string()),
        ("criterion", pa.string()),
        ("structure", pa.string()),
        ("allocation", pa.string()),
        ("ratio", pa.float64()),
        ("seed", pa.int64()),
        ("stage", pa.int64()),
        ("stages", pa.int64()),
        ("stage_ratio", pa.float64()),
        ("schedule", pa.string()),
        ("config", pa.string()),
        ("criterion_config", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("dense_weights", pa.string()),
        ("dense_weights_sha256", pa.string()),
        ("dense_acc", pa.float64()),
        ("pruned_acc_raw", pa.float64()),
        ("pruned_acc", pa.float64()),
        ("final_acc", pa.float64()),
        ("dense_top5", pa.float64()),
        ("final_top5", pa.float64()),
        ("macs_dense", pa.int64()),
        ("macs_pruned", pa.int64()),
        ("params_dense", pa.int64()),
        ("params_pruned", pa.int64()),
        ("macs_speedup", pa.float64()),
        ("latency_dense_ms", pa.float64()),
        ("latency_pruned_ms", pa.float64()),
        ("latency_speedup", pa.float64()),
        ("scoring_seconds", pa.float64()),
        ("gradient_seconds", pa.float64()),
        ("scoring_seconds_per_grad", pa.float64()),
        ("fidelity", pa.float64()),
        ("fidelity_abs", pa.float64()),
        ("fidelity_precision", pa.float64()),
        ("fidelity_k", pa.int64()),
        ("layer_widths", pa.string()),
        ("compute_seconds", pa.float64()),
        ("git_sha", pa.string()),
        ("package_versions", pa.string()),
        ("device", pa.string()),
        ("ray_node", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)
COLUMNS = SCHEMA.names
_JSON_COLUMNS = ("config", "criterion_config", "layer_widths", "package_versions")
"""Stored as JSON text; ``layer_widths`` keeps the network's layer order, the others sort their keys."""
KEY_COLUMNS = ("cell_id", "status", "error", "suite", "model", "dataset", "criterion", "structure", "allocation",
               "ratio", "seed")
"""What ``statuses``, ``oba status`` and a run's plan and summary read; cached per loose part in the store's
manifest (a run's summary reads them at its end, so a store a run wrote is warm)."""


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and root path of a local path or URI (``s3://b/p?endpoint_override=…`` included)."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def _projection(columns: Sequence[str] | None) -> pa.Schema:
    """The schema of ``columns`` (every column when None), ``cell_id`` always included; unknown names refused."""
    wanted = list(COLUMNS) if columns is None else ["cell_id", *[c for c in columns if c != "cell_id"]]
    unknown = [c for c in wanted if c not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown result columns {unknown}; the store has {', '.join(COLUMNS)}")
    return pa.schema([SCHEMA.field(c) for c in wanted])


class ResultStore:
    """Parquet parts under ``location`` (a folder path or a pyarrow filesystem URI)."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.fs, self.root = filesystem(location)

    def _part(self, cell_id: str) -> str:
        return f"{self.root}/{cell_id}.parquet"

    def _ensure_root(self) -> None:
        self.fs.create_dir(self.root, recursive=True)

    def write(self, row: Mapping[str, Any]) -> str:
        """Write one cell's row atomically; return the part's path."""
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown result columns {sorted(unknown)}")
        if not row.get("cell_id"):
            raise ValueError("a result row needs a cell_id")
        record = {name: row.get(name) for name in COLUMNS}
        record["schema_version"] = SCHEMA_VERSION
        if record["error"] is not None:
            record["error"] = plain(str(record["error"]))
        for name in _JSON_COLUMNS:
            if record[name] is not None and not isinstance(record[name], str):
                record[name] = json.dumps(record[name], sort_keys=name != "layer_widths")
        table = pa.Table.from_pylist([record], schema=SCHEMA)
        self._ensure_root()
        return write_atomic(self.fs, self._part(row["cell_id"]), lambda sink: pq.write_table(table, sink))

    def exists(self) -> bool:
        """Whether the location is there (a folder, or a prefix holding objects)."""
        return self.fs.get_file_info(self.root).type != pafs.FileType.NotFound

    def files(self) -> list[StoredFile]:
        """Every result file: loose parts, parts a compaction has taken, compacted files."""
        return list_files(self.fs, self.root)

    def versions(self) -> dict[str, Any]:
        """``cell_id → modification time`` of every loose part (one listing of the top folder; no part is opened)."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False))
        except FileNotFoundError:
            return {}
        return {info.base_name[: -len(".parquet")]: info.mtime for info in infos
                if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
                and not info.base_name.startswith(".")}

    def read_cell(self, cell_id: str, columns: Sequence[str] | None = None) -> dict[str, Any]:
        """The stored row of one cell's loose part, only ``columns`` when given (``FileNotFoundError`` when it has
        no part)."""
        with self.fs.open_input_file(self._part(cell_id)) as source:
            return pq.read_table(source, columns=columns).to_pylist()[0]

    def read_table(self, columns: Sequence[str] | None = None) -> tuple[pa.Table, list[UnreadablePart]]:
        """The newest row of every stored cell, only ``columns`` (all when None; ``cell_id`` always), and the
        files that cannot be read.

        Columns older parts lack are null. When ``columns`` are all in
        :data:`KEY_COLUMNS`, loose parts are read through the manifest.
        """
        schema = _projection(columns)
        files = self.files()
        loose = [f for f in files if f.kind == LOOSE]
        others, unreadable = read_files(self.fs, self.root, [f for f in files if f.kind != LOOSE], schema)
        if set(schema.names) <= set(KEY_COLUMNS):
            keys = pa.schema([SCHEMA.field(c) for c in KEY_COLUMNS])
            table, broken = read_loose_with_manifest(self.fs, self.root, loose, keys)
            table = table.select(schema.names)
        else:
            table, broken = read_files(self.fs, self.root, loose, schema)
        return newest_per_cell(pa.concat_tables([others, table])), sorted(unreadable + broken, key=lambda u: u.path)

    def read_readable(self, columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, list[UnreadablePart]]:
        """:meth:`read_table` as a DataFrame (empty, with the asked columns, when nothing is readable)."""
        table, unreadable = self.read_table(columns)
        return table.to_pandas(), unreadable

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Every stored cell as one table (empty, with the asked columns, when nothing is stored).

        A file that cannot be read raises ``OSError`` naming its path.
        """
        frame, unreadable = self.read_readable(columns)
        if unreadable:
            raise OSError(str(unreadable[0]))
        return frame

    def statuses(self) -> dict[str, str]:
        """``cell_id → status`` of every stored cell (reads two columns; warm through the manifest)."""
        table = self.read(["cell_id", "status"])
        return dict(zip(table["cell_id"], table["status"]))

    def finished(self, cell_ids: Iterable[str] | None = None) -> set[str]:
        """Cells stored with ``status == "ok"`` (restricted to ``cell_ids`` when given)."""
        done = {cid for cid, status in self.statuses().items() if status == "ok"}
        return done if cell_ids is None else done & set(cell_ids)


class StoredRows:
    """Stored rows looked up by id and partition (suite, model, dataset): a row's loose part first, else the
    partition's compacted files, the newest file winning.

    Each partition's compacted cell ids are read once, on its first lookup; the
    row itself only where found. A row folded after that is not seen (the
    caller recomputes it); a run never folds the rows of a trial that is still
    running (:mod:`oba.store.rolling_compaction`).
    """

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.index: dict[tuple[str | None, ...], dict[str, str]] = {}

    def get(self, row_id: str, partition: tuple[str | None, ...]) -> dict[str, Any] | None:
        """The row stored as ``row_id`` in ``partition``, or None."""
        try:
            return self.store.read_cell(row_id)
        except FileNotFoundError:
            pass
        if partition not in self.index:
            self.index[partition] = compacted_row_files(self.store.fs, self.store.root, partition)
        path = self.index[partition].get(row_id)
        return None if path is None else read_compacted_row(self.store.fs, path, row_id, partition)
