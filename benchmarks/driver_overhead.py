"""The runner's own cost per cell: a suite of N no-op cells (``oba run --fake-cell``), N = 10^3, 10^4, 10^5.

Each size runs in a fresh driver process on a fresh local Ray and a fresh
results folder; the no-op pipeline stores each cell's identity row and computes
nothing, so what is measured is the driver, Ray Tune and the store. Reported per
size: the driver's wall time (from loading the suite to the summary), that
time per cell, the marginal time per cell against the previous size
((T(N) − T(N_prev)) ÷ (N − N_prev), which cancels the fixed start-up cost), the
number of Tune trials, the driver process's peak resident memory, and the most
loose parts the results folder held at any moment of the run (sampled every
2 s; with ``[run] compact_parts`` the run folds its finished parts as it goes,
so this bounds what a run killed at any moment leaves for a cold reader), and
the loose parts and compacted files it ends with.

    .venv/bin/python benchmarks/driver_overhead.py [--sizes 1000 10000 100000] [--num-cpus 2] [--max-trials 1000]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SUITE = """\
[suite]
name = "noop-{cells}"

[grid]
models = ["resnet8"]
datasets = ["digits"]
criteria = ["magnitude-l1"]
ratios = [0.5]
seeds = {seeds}

[run]
max_trials = {max_trials}
"""


def one_size(cells: int, num_cpus: int, max_trials: int) -> dict[str, float]:
    """Run ``cells`` no-op cells in this process; return wall seconds, trials and peak RSS (MiB)."""
    from oba.suite.config import load_suite
    from oba.suite.packing import trial_count
    from oba.suite.runner import run_suite

    folder = Path(tempfile.mkdtemp(prefix=f"oba-noop-{cells}-"))
    suite_path = folder / "suite.toml"
    suite_path.write_text(SUITE.format(cells=cells, seeds=list(range(cells)), max_trials=max_trials))
    results = folder / "results"
    sampler = LooseParts(results)
    sampler.start()
    start = time.perf_counter()
    suite = load_suite(suite_path)
    summary = run_suite(suite, str(results), num_cpus=num_cpus, stream=io.StringIO(), pipeline="noop")
    wall = time.perf_counter() - start
    sampler.stopping.set()
    sampler.join()
    if summary.ran != cells or summary.failed:
        raise RuntimeError(f"{cells} cells: ran {summary.ran}, failed {summary.failed}: {summary.failures[:3]}")
    return {"cells": cells, "seconds": wall, "trials": trial_count(cells, max_trials, num_cpus),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "most_loose": sampler.most, "loose_at_end": _loose(results),
            "compacted_files": len(list(results.glob("suite=*/model=*/dataset=*/*.parquet")))}


def _loose(results: Path) -> int:
    """Loose parts in the top folder of ``results`` (one listing)."""
    try:
        return sum(1 for entry in os.scandir(results) if entry.name.endswith(".parquet") and entry.name[0] != ".")
    except FileNotFoundError:
        return 0


class LooseParts(threading.Thread):
    """The most loose parts the results folder held, sampled every ``interval`` seconds until ``stopping`` is set."""

    def __init__(self, results: Path, interval: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.results, self.interval, self.most = results, interval, 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.most = max(self.most, _loose(self.results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--max-trials", type=int, default=1000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.one:
        print(json.dumps(one_size(args.one, args.num_cpus, args.max_trials)))
        return
    print("| cells | Tune trials | driver wall s | per cell ms | marginal per cell ms | driver peak RSS MiB | "
          "most loose parts during the run | loose parts / compacted files at the end |")
    print("|---|---|---|---|---|---|---|---|")
    previous = None
    for cells in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(cells), "--num-cpus", str(args.num_cpus),
                              "--max-trials", str(args.max_trials)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        marginal = "" if previous is None else (
            f"{(row['seconds'] - previous['seconds']) / (cells - previous['cells']) * 1e3:.2f}")
        print(f"| {cells} | {row['trials']} | {row['seconds']:.0f} | {row['seconds'] / cells * 1e3:.2f} | {marginal} | "
              f"{row['peak_rss_mib']:.0f} | {row['most_loose']} | {row['loose_at_end']} / {row['compacted_files']} |",
              flush=True)
        previous = row


if __name__ == "__main__":
    main()
