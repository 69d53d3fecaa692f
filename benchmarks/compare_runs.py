"""Two stored runs of one suite, cell by cell: what moved, and whether the criteria's order on each board held.

For each gated metric, over the cells both runs hold (matched by model, dataset, criterion, ratio, seed and stage, so
that runs whose protocols differ — and so whose cell ids differ — still pair up): how many cells differ, the mean and
largest absolute difference, and how many moved by more than 2 points (a change of exactly 2 is not); then, per dataset, model and ratio, the change
of the seed mean averaged over criteria and the Spearman correlation between the two runs' criterion seed means of
``pruned_acc``. Accuracies in percentage points, fidelity as 100·ρ.

Usage (from the repository root)::

    .venv/bin/python benchmarks/compare_runs.py OLD_RESULTS NEW_RESULTS
    # the committed reference at an earlier commit against today's:
    mkdir /tmp/old && git archive 5d63cac results/reference/smoke | tar -x -C /tmp/old
    .venv/bin/python benchmarks/compare_runs.py /tmp/old/results/reference/smoke results/reference/smoke
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oba.report.load import load_results  # noqa: E402

PAIRING = ["model", "dataset", "criterion", "ratio", "seed", "stage"]
METRICS = ("pruned_acc_raw", "pruned_acc", "final_acc", "fidelity")


def paired(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The cells both runs hold, one row each, with ``<metric>_old`` and ``<metric>_new`` in points."""
    columns = PAIRING + list(METRICS)
    both = old[columns].merge(new[columns], on=PAIRING, suffixes=("_old", "_new"))
    for metric in METRICS:
        both[f"{metric}_old"] *= 100
        both[f"{metric}_new"] *= 100
    return both


def cell_table(both: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and metric: cells compared, cells that differ, mean and largest |difference|, cells beyond 2."""
    rows = []
    for dataset, part in both.groupby("dataset"):
        for metric in METRICS:
            moved = (part[f"{metric}_new"] - part[f"{metric}_old"]).abs()
            rows.append({"dataset": dataset, "metric": metric, "cells": len(part), "differ": int((moved > 0).sum()),
                         "mean |d|": moved.mean(), "max |d|": moved.max(), "beyond 2": int((moved > 2 + 1e-9).sum())})
    return pd.DataFrame(rows)


def board_table(both: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, model and ratio: the mean change of the criteria's seed means, and the Spearman correlation of
    the two runs' ``pruned_acc`` seed means over criteria."""
    rows = []
    for (dataset, model, ratio), part in both.groupby(["dataset", "model", "ratio"]):
        means = part.groupby("criterion")[[f"{m}_{run}" for m in ("pruned_acc", "final_acc") for run in ("old", "new")]]
        means = means.mean()
        rows.append({"dataset": dataset, "model": model, "ratio": ratio,
                     "pruned mean change": (means["pruned_acc_new"] - means["pruned_acc_old"]).mean(),
                     "final mean change": (means["final_acc_new"] - means["final_acc_old"]).mean(),
                     "pruned order (Spearman)": spearmanr(means["pruned_acc_old"], means["pruned_acc_new"]).statistic})
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="results folder of the first run")
    parser.add_argument("new", help="results folder of the second run")
    args = parser.parse_args()
    both = paired(load_results(args.old), load_results(args.new))
    print(f"{len(both)} cells in both runs\n")
    print(cell_table(both).to_string(index=False, float_format="%.2f"))
    print()
    print(board_table(both).to_string(index=False, float_format="%.2f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
