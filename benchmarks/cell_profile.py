"""Where one smoke cell's time goes: cumulative seconds of each pipeline stage, from cProfile.

Runs one cell of a suite twice in this process (1 thread, as a trial does): the first
run builds the dense model's shared context (data, dense checkpoint — trained when the
cache is empty —, batches, dense latency, fidelity's ground truth), the second is what
every further cell of that dense model costs on a reused Ray actor.

Usage (from the repository root):

    .venv/bin/python benchmarks/cell_profile.py --model resnet8 --criterion taylor --cache /tmp/cell-profile
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oba.suite.cell import run_cell  # noqa: E402
from oba.suite.cells import expand  # noqa: E402
from oba.suite.config import load_suite  # noqa: E402

STAGES = {
    "dense context (data, checkpoint, batches, fidelity ground truth)": ("context.py", "_build"),
    "gradient pass (unit of scoring time)": ("measure.py", "gradient_seconds"),
    "prune (scoring, allocation, removal, MACs)": ("api.py", "prune"),
    "  of which: scoring": ("base.py", "group_scores"),
    "BN recalibration (between rounds and after pruning)": ("recalibration.py", "recalibrate_batchnorm"),
    "test-set evaluations": ("train.py", "evaluate"),
    "latency": ("measure.py", "measure_latency"),
    "fine-tuning (incl. its validation)": ("train.py", "fine_tune"),
}


def _cumulative(stats: pstats.Stats, filename: str, function: str) -> float:
    total = 0.0
    for (file, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if name == function and file.endswith(filename):
            total += cumulative
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="suites/smoke.toml")
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--criterion", default="taylor")
    parser.add_argument("--cache", default="/tmp/oba-cell-profile", help="dense-checkpoint cache")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cells = [c for c in expand(load_suite(ROOT / args.suite))
             if c.model == args.model and c.criterion == args.criterion]
    cell = cells[0]
    print(f"cell: {cell.label()}")
    for run in ("first (builds the context)", "second (context reused)"):
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        row = run_cell(cell, cache_dir=args.cache)
        profile.disable()
        wall = time.perf_counter() - start
        if row["status"] != "ok":
            print(row["error"])
            return 1
        stats = pstats.Stats(profile)
        print(f"\n{run}: {wall:.2f} s")
        print("| stage | seconds | share |\n|---|---|---|")
        for label, (filename, function) in STAGES.items():
            seconds = _cumulative(stats, filename, function)
            print(f"| {label} | {seconds:.2f} | {seconds / wall:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
