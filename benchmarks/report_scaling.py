"""What ``oba report``, ``oba leaderboard``, ``oba check`` and a cold ``finished`` cost on stores of 10^3, 10^4
and 10^5 cells, as a finished run leaves them or as a killed one does.

A store as a large run leaves it (compacted at its end, ``[run] compact_parts``)
is written directly in the compacted layout — one Parquet file per
suite/model/dataset — from the synthetic rows of ``store_scaling.py`` (3
models × 2 datasets × 10 criteria × 6 ratios × seeds, about 1 % failed). With
``--loose N`` the last N cells are then written again as loose parts through
``ResultStore`` with no manifest: at most what a run killed at any moment
leaves, since it folds its finished parts whenever ``compact_parts`` (2000 by
default) have gathered. Each command then runs as a user runs it, in a fresh
process under ``/usr/bin/time -v``: wall time and peak resident memory, imports
included. ``finished`` (run first, so cold: every loose part is opened) is
``ResultStore(store).finished()``; ``check`` compares the store with itself.

    PYTHONPATH=. .venv/bin/python benchmarks/report_scaling.py [--sizes 1000 10000 100000] [--loose 2000] [--root DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_scaling import synthetic_row  # noqa: E402 (the benchmark beside this one)

from oba.store.results import SCHEMA, SCHEMA_VERSION, ResultStore  # noqa: E402
from oba.store.scan import PARTITION_KEYS, partition_folder, stamp  # noqa: E402

JSON_COLUMNS = ("config", "criterion_config", "layer_widths", "package_versions")


def compacted_store(root: Path, size: int) -> Path:
    """A compacted store of ``size`` synthetic cells under ``root`` (rebuilt every time)."""
    folder = root / f"compacted-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    records = []
    for i in range(size):
        row = synthetic_row(i)
        record = {name: row.get(name) for name in SCHEMA.names}
        record.update(schema_version=SCHEMA_VERSION, stage=1, stages=1, stage_ratio=row["ratio"], schedule="one-shot")
        for name in JSON_COLUMNS:
            record[name] = json.dumps(record[name], sort_keys=name != "layer_widths")
        records.append(record)
    table = pa.Table.from_pylist(records, schema=SCHEMA)
    keys = sorted({tuple(r[k] for k in PARTITION_KEYS) for r in records})
    for values in keys:
        mask = [tuple(r[k] for k in PARTITION_KEYS) == values for r in records]
        part = partition_folder(str(folder), values)
        os.makedirs(part, exist_ok=True)
        pq.write_table(table.filter(pa.array(mask)).drop_columns(list(PARTITION_KEYS)), f"{part}/part-{stamp()}.parquet")
    return folder


def add_loose_parts(store: Path, size: int, loose: int) -> None:
    """Write the last ``loose`` of ``size`` cells again as loose parts (a newer row of each; no manifest)."""
    results = ResultStore(str(store))
    for i in range(max(0, size - loose), size):
        results.write({**synthetic_row(i), "stage": 1, "stages": 1, "stage_ratio": synthetic_row(i)["ratio"],
                       "schedule": "one-shot"})


FINISHED = "import sys; from oba.store.results import ResultStore; print(len(ResultStore(sys.argv[1]).finished()))"


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident GB of ``command`` (``/usr/bin/time -v``); it must succeed."""
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", done.stderr).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** k for k, p in enumerate(reversed(parts)))
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) / 1024 ** 2
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--loose", type=int, default=0, help="cells written again as loose parts (no manifest)")
    parser.add_argument("--root", default="/tmp/oba-report-scaling")
    args = parser.parse_args()
    root = Path(args.root)
    oba = [sys.executable, "-m", "oba.cli"]
    print("| cells | loose parts | `finished`, cold | `oba check` | `oba report` | `oba leaderboard` | report HTML | "
          "leaderboard folder |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        store = compacted_store(root, size)
        add_loose_parts(store, size, args.loose)
        out = root / f"out-{size}"
        shutil.rmtree(out, ignore_errors=True)
        finished = timed([sys.executable, "-c", FINISHED, str(store)])
        checked = timed([*oba, "check", str(store), "--baseline", str(store)])
        report = timed([*oba, "report", str(store), "-o", str(out / "report.html"), "--leaderboard", str(out / "board")])
        board = timed([*oba, "leaderboard", str(store), "-o", str(out / "board"), "--report", str(out / "report.html")])
        html_mb = (out / "report.html").stat().st_size / 1e6
        board_mb = sum(p.stat().st_size for p in (out / "board").iterdir()) / 1e6
        print(f"| {size:,} | {min(args.loose, size):,} | " + " | ".join(
            f"{seconds:.1f} s, {gb:.2f} GB" for seconds, gb in (finished, checked, report, board))
              + f" | {html_mb:.1f} MB | {board_mb:.1f} MB |", flush=True)


if __name__ == "__main__":
    main()
