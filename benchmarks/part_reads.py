"""What reading loose result parts costs per part: whole rows as used now, whole rows rebuilt column by column
(what every part went through before ccdaa23), and the two columns ``finished`` reads.

N synthetic parts (``store_scaling.synthetic_row``) are written once under ``--root``; each reading is timed
``--repeats`` times in this process, in turns, and the fastest kept (the machine is shared):

    PYTHONPATH=. .venv/bin/python benchmarks/part_reads.py [--parts 2000] [--repeats 3] [--root DIR]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_scaling import synthetic_row  # noqa: E402 (the benchmark beside this one)

from oba.store import scan as store_scan  # noqa: E402
from oba.store.results import SCHEMA, ResultStore  # noqa: E402
from oba.store.scan import LOOSE, read_files  # noqa: E402


def rebuilt(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Every column cast and the table rebuilt, whether or not the schema already matched."""
    return pa.table({f.name: table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
                     for f in schema}, schema=schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", default="/tmp/oba-part-reads")
    args = parser.parse_args()
    store = ResultStore(f"{args.root}/parts-{args.parts}")
    have = {f.path for f in store.files() if f.kind == LOOSE}
    for i in range(len(have), args.parts):
        store.write(synthetic_row(i))
    files = [f for f in store.files() if f.kind == LOOSE]
    two = pa.schema([SCHEMA.field("cell_id"), SCHEMA.field("status")])
    conform = store_scan._conform

    def whole_rebuilt() -> None:
        store_scan._conform = rebuilt
        try:
            read_files(store.fs, store.root, files, SCHEMA)
        finally:
            store_scan._conform = conform

    readings: dict[str, Callable[[], object]] = {
        "whole rows, used as read (now)": lambda: read_files(store.fs, store.root, files, SCHEMA),
        "whole rows, rebuilt column by column (before)": whole_rebuilt,
        "cell_id and status (finished, cold)": lambda: read_files(store.fs, store.root, files, two),
    }
    best = {name: float("inf") for name in readings}
    for _ in range(args.repeats):
        for name, read in readings.items():
            began = time.perf_counter()
            read()
            best[name] = min(best[name], time.perf_counter() - began)
    print(f"| reading {len(files)} parts | s | ms a part |")
    print("|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} | {seconds / len(files) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
