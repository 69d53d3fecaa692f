"""Results store: one Parquet part per cell, written atomically, read back as one table.

A results location is a local folder or a pyarrow filesystem URI (``file://``,
``s3://``, ``gs://``, ``hdfs://``...) shared by the cluster's nodes. Cell
``cell_id`` lives in ``<root>/<cell_id>.parquet``; it is written to a temporary
name and renamed, so a reader never sees half a part, a re-run overwrites a
failed cell's part with its new outcome, and two writers of the same cell leave
exactly one part. Stored error messages are plain text (terminal control codes
removed).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .messages import one_line, plain

SCHEMA_VERSION = 4
"""2: ``pruned_acc`` is the accuracy after batch-norm recalibration, ``pruned_acc_raw`` before it.
Version 1 rows (no recalibration) are read with their ``pruned_acc`` as ``pruned_acc_raw``.
3: adds criterion_config, fidelity_abs, fidelity_precision, fidelity_k.
4: adds dense_weights, dense_weights_sha256.
Older rows read back with the columns they lack as null."""

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


@dataclass(frozen=True)
class UnreadablePart:
    """A stored part that cannot be read, and why (one line)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"unreadable result part {self.path}: {self.reason}"


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    import os

    return pafs.LocalFileSystem(), os.path.abspath(location)


def _schema_columns_first(table: pa.Table) -> pa.Table:
    """``table`` with the schema's columns in schema order (null where absent), then any others it has."""
    columns = {f.name: table[f.name] if f.name in table.column_names else pa.nulls(len(table), f.type) for f in SCHEMA}
    columns.update({name: table[name] for name in table.column_names if name not in columns})
    return pa.table(columns)


class ResultStore:
    """Parquet parts under ``location`` (a folder path or a pyarrow filesystem URI)."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.fs, self.root = _filesystem(location)

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
        final = self._part(row["cell_id"])
        temporary = f"{self.root}/.{row['cell_id']}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(temporary) as sink:
            pq.write_table(table, sink)
        self.fs.move(temporary, final)
        return final

    def _part_infos(self) -> list[pafs.FileInfo]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False))
        except FileNotFoundError:
            return []
        return [
            info for info in infos
            if info.type == pafs.FileType.File and info.base_name.endswith(".parquet") and not info.base_name.startswith(".")
        ]

    def _parts(self) -> list[str]:
        return sorted(info.path for info in self._part_infos())

    def versions(self) -> dict[str, Any]:
        """``cell_id → modification time`` of every part (cheap: no part is opened)."""
        return {info.base_name[: -len(".parquet")]: info.mtime for info in self._part_infos()}

    def read_cell(self, cell_id: str) -> dict[str, Any]:
        """The stored row of one cell (``FileNotFoundError`` when it has none)."""
        with self.fs.open_input_file(self._part(cell_id)) as source:
            return pq.read_table(source).to_pylist()[0]

    def read_readable(self) -> tuple[pd.DataFrame, list[UnreadablePart]]:
        """Every part that can be read as one table, and those that cannot.

        The table has every schema column (empty when nothing is readable); a
        column that older parts lack is null in their rows.
        """
        tables, unreadable = [], []
        for path in self._parts():
            try:
                with self.fs.open_input_file(path) as source:
                    tables.append(pq.read_table(source))
            except (OSError, pa.ArrowException) as err:
                unreadable.append(UnreadablePart(path, one_line(str(err)) or type(err).__name__))
        if not tables:
            return SCHEMA.empty_table().to_pandas(), unreadable
        return _schema_columns_first(pa.concat_tables(tables, promote_options="default")).to_pandas(), unreadable

    def read(self) -> pd.DataFrame:
        """Every stored cell as one table (empty, with all columns, when nothing is stored).

        A part that cannot be read raises ``OSError`` naming that part's path.
        """
        frame, unreadable = self.read_readable()
        if unreadable:
            raise OSError(str(unreadable[0]))
        return frame

    def statuses(self) -> dict[str, str]:
        """``cell_id → status`` of every stored cell."""
        frame = self.read()
        return dict(zip(frame["cell_id"], frame["status"]))

    def finished(self, cell_ids: Iterable[str] | None = None) -> set[str]:
        """Cells stored with ``status == "ok"`` (restricted to ``cell_ids`` when given)."""
        done = {cid for cid, status in self.statuses().items() if status == "ok"}
        return done if cell_ids is None else done & set(cell_ids)
