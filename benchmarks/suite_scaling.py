"""Wall time of a suite against the sum of its cells' compute time, at 1 and at 2 concurrent trials.

Dense checkpoints are prepared (and cached) by a first, untimed pass over the
same cache folder, so both timed runs measure the cells alone. Each timed run
writes to a fresh results folder.

    .venv/bin/python benchmarks/suite_scaling.py suites/smoke.toml [--concurrency 1 2]
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

from oba.store.results import ResultStore
from oba.suite.cells import dense_keys, expand
from oba.suite.config import load_suite
from oba.suite.runner import run_suite
from oba.suite.trial import _prepare_dense


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    suite = load_suite(args.suite)
    cache = os.path.abspath(suite.run.get("cache_dir") or ".cache/checkpoints")
    for key in dense_keys(expand(suite)):
        _prepare_dense(*key, suite, cache, suite.data.get("root"), 2, "cpu")
    rows = []
    for n in args.concurrency:
        results = tempfile.mkdtemp(prefix=f"oba-scaling-{n}-")
        start = time.perf_counter()
        summary = run_suite(suite, results, max_concurrent=n, num_cpus=max(args.concurrency), stream=io.StringIO())
        wall = time.perf_counter() - start
        frame = ResultStore(results).read()
        compute = float(frame["compute_seconds"].sum())
        rows.append((n, len(frame), summary.failed, wall, compute))
    print(f"suite {suite.name}: {len(expand(suite))} cells")
    print("| concurrent trials | cells | failed | wall s | Σ cell compute s | wall ÷ (Σ compute ÷ concurrency) |")
    print("|---|---|---|---|---|---|")
    for n, cells, failed, wall, compute in rows:
        print(f"| {n} | {cells} | {failed} | {wall:.0f} | {compute:.0f} | {wall / (compute / n):.2f} |")
    if len(rows) >= 2:
        print(f"speedup {rows[0][0]}→{rows[-1][0]} concurrent: {rows[0][3] / rows[-1][3]:.2f}×")


if __name__ == "__main__":
    main()
