"""The raw rows beside a leaderboard: every cell as CSV and as Parquet, and the boards as JSON.

The raw rows keep every stage row of an iterative cell (with its stage columns), in stage order after the cell's
seed.

All three are written so that the same results give the same bytes: rows in a
fixed order, JSON keys sorted, NaN written as null.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CELL_ORDER = ["model", "dataset", "structure", "allocation", "ratio", "schedule", "criterion", "seed", "stage", "cell_id"]
CSV_FILE = "cells.csv"
PARQUET_FILE = "cells.parquet"
JSON_FILE = "board.json"


def ordered_cells(results: pd.DataFrame) -> pd.DataFrame:
    """The rows in :data:`CELL_ORDER`, index reset."""
    return results.sort_values(CELL_ORDER, kind="stable").reset_index(drop=True)


def _plain(value: Any) -> Any:
    """JSON-ready: NaN → None, tuples → lists, numpy scalars → Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_raw_rows(results: pd.DataFrame, directory: Path) -> dict[str, Path]:
    """Write ``cells.csv`` and ``cells.parquet`` (every column, every row) into ``directory``."""
    cells = ordered_cells(results)
    paths = {"csv": directory / CSV_FILE, "parquet": directory / PARQUET_FILE}
    cells.to_csv(paths["csv"], index=False, lineterminator="\n")
    pq.write_table(pa.Table.from_pandas(cells, preserve_index=False), paths["parquet"])
    return paths


def write_json(document: dict[str, Any], path: Path) -> Path:
    """Write ``document`` as indented JSON with sorted keys and NaN as null."""
    path.write_text(json.dumps(_plain(document), indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
