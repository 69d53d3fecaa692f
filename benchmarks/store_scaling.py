"""Cost of reading a results store as it grows: 10^3, 10^4, 10^5 cells, as loose parts and compacted.

For each size a synthetic store is written through :class:`oba.store.results.ResultStore`
(realistic rows: 3 models × 2 datasets × 10 criteria × ratios × seeds, JSON
columns of realistic length), copied, and the copy compacted (``oba store
compact``, timed). Each measurement then runs in a fresh Python process, which
reports the wall time of the call (imports excluded) and its peak resident
memory (the imports of ``oba``, torch included, are ~300 MB of it):

* ``finished`` cold (no manifest), warm (the manifest the cold call wrote), and on the compacted copy;
* ``watcher poll`` — one listing of the top folder, what the run's store watcher does per poll;
* ``load`` — :func:`oba.report.read_results`, every column (what report and leaderboard read);
* ``check`` — :func:`oba.report.check.check` of the store against itself (loads both, compares every setting);
  on loose parts only up to ``--check-parts-up-to`` cells (it reads every part twice).

    PYTHONPATH=. .venv/bin/python benchmarks/store_scaling.py [--sizes 1000 10000 100000] [--root DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from itertools import pairwise

MEASURES = ("finished", "poll", "load", "check")


def synthetic_row(i: int) -> dict:
    """Cell ``i`` of a grid of 3 models × 2 datasets × 10 criteria × 6 ratios × seeds, with realistic text columns."""
    model, dataset = ("resnet8", "vgg-tiny", "vit-tiny")[i % 3], ("digits", "mnist")[i // 3 % 2]
    criterion = f"criterion-{i // 6 % 10}"
    ratio, seed = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)[i // 60 % 6], i // 360
    start = datetime(2026, 11, 30, tzinfo=timezone.utc) + timedelta(seconds=i)
    layers = {f"layer{k}.conv": {"kind": "channels", "dense": 64, "remaining": 64 - (i + k) % 32} for k in range(12)}
    return {
        "suite": "scaling", "cell_id": f"{i:016x}", "model": model, "dataset": dataset, "criterion": criterion,
        "structure": "channels", "allocation": "global", "ratio": ratio, "seed": seed,
        "config": {"model": model, "dataset": dataset, "criterion": criterion, "ratio": ratio, "seed": seed,
                   "prune": {"steps": 5, "layer_cap": 0.9, "normalisation": "mean"}, "finetune": {"epochs": 1}},
        "criterion_config": {"name": criterion, "mode": "eval"},
        "status": "error" if i % 97 == 0 else "ok", "error": "RuntimeError: synthetic" if i % 97 == 0 else None,
        "dense_acc": 0.95, "pruned_acc_raw": 0.5 + (i % 7) / 100, "pruned_acc": 0.9 - (i % 5) / 100,
        "final_acc": 0.93 - (i % 3) / 100, "macs_dense": 10**8, "macs_pruned": 7 * 10**7, "params_dense": 10**6,
        "params_pruned": 7 * 10**5, "macs_speedup": 1.43, "latency_dense_ms": 2.0, "latency_pruned_ms": 1.5,
        "latency_speedup": 1.33, "scoring_seconds": 0.4, "gradient_seconds": 0.1, "scoring_seconds_per_grad": 4.0,
        "fidelity": 0.7, "fidelity_abs": 0.6, "fidelity_precision": 0.5, "fidelity_k": 8, "layer_widths": layers,
        "compute_seconds": 12.0, "git_sha": "0" * 40, "device": "cpu", "ray_node": "node-1",
        "package_versions": {name: "1.0.0" for name in ("oba-bench", "torch", "torchvision", "timm", "torch-pruning",
                                                        "ray", "pyarrow", "pandas", "numpy", "scipy", "plotly")},
        "started_at": start, "finished_at": start + timedelta(seconds=12),
    }


def build(root: str, size: int) -> tuple[str, str, float]:
    """The parts store and its compacted copy of ``size`` cells (reused when complete); the compaction's seconds."""
    from oba.store.compaction import compact
    from oba.store.results import ResultStore

    parts, compacted = os.path.join(root, f"parts-{size}"), os.path.join(root, f"compacted-{size}")
    store = ResultStore(parts)
    have = len([n for n in os.listdir(parts) if n.endswith(".parquet")]) if os.path.isdir(parts) else 0
    for i in range(have, size):
        store.write(synthetic_row(i))
    shutil.rmtree(compacted, ignore_errors=True)
    shutil.copytree(parts, compacted, ignore=shutil.ignore_patterns("_manifest"))
    began = time.perf_counter()
    compact(compacted)
    return parts, compacted, time.perf_counter() - began


def measure(kind: str, location: str) -> dict:
    """Run one measurement here; return its seconds, peak resident memory (MB, imports included) and rows seen."""
    from oba.report import read_results
    from oba.report.check import check
    from oba.store.results import ResultStore

    began = time.perf_counter()
    if kind == "finished":
        rows = len(ResultStore(location).finished())
    elif kind == "poll":
        rows = len(ResultStore(location).versions())
    elif kind == "load":
        rows = len(read_results(location).table)
    else:
        outcome = check(location, location)
        assert outcome.exit_code == 0, outcome.render()[:500]
        rows = len(outcome.comparisons)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "peak_mb": _peak_rss_mb(), "rows": rows}


def _peak_rss_mb() -> float:
    """This process's peak resident memory: ``VmHWM`` (``ru_maxrss`` would carry the parent's peak across exec)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _child(kind: str, location: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", kind, location], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--root", default="/tmp/oba-store-scaling")
    parser.add_argument("--check-parts-up-to", type=int, default=10000,
                        help="measure check on loose parts only up to this size (it reads every part twice)")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "LOCATION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    results: dict[int, dict[str, dict]] = {}
    for size in args.sizes:
        parts, compacted, compaction = build(args.root, size)
        shutil.rmtree(os.path.join(parts, "_manifest"), ignore_errors=True)
        runs = {
            "finished, parts, cold": ("finished", parts),
            "finished, parts, warm": ("finished", parts),
            "finished, compacted": ("finished", compacted),
            "watcher poll, parts": ("poll", parts),
            "load, parts": ("load", parts),
            "load, compacted": ("load", compacted),
            "check, parts": ("check", parts),
            "check, compacted": ("check", compacted),
        }
        results[size] = {"compaction": {"seconds": compaction, "peak_mb": float("nan"), "rows": size}}
        if size > args.check_parts_up_to:
            del runs["check, parts"]
        for name, (kind, location) in runs.items():
            results[size][name] = _child(kind, location)
            print(json.dumps({"cells": size, "measurement": name, **results[size][name]}), file=sys.stderr, flush=True)
    sizes = args.sizes
    header = " | ".join(f"{s:,} cells: s, MB" for s in sizes)
    growth = " | ".join(f"×{b // a} cells: time ×" for a, b in pairwise(sizes))
    print(f"| measurement | {header} | {growth} |")
    print("|---|" + "---|" * (len(sizes) + len(sizes) - 1))
    for name in results[sizes[0]]:
        cells = [f"{results[s][name]['seconds']:.2f} s, {results[s][name]['peak_mb']:.0f} MB" if name in results[s]
                 else "not measured" for s in sizes]
        ratios = [f"{results[b][name]['seconds'] / max(results[a][name]['seconds'], 1e-9):.1f}"
                  if name in results[a] and name in results[b] else "" for a, b in pairwise(sizes)]
        print(f"| {name} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    main()
