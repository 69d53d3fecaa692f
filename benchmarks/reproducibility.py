"""How much a suite's numbers move when only the CPU changes, next to seed noise and criterion gaps.

Runs one suite under several emulated machines on this one machine — the native
kernels, and PyTorch/oneDNN/MKL limited to AVX2 or to SSE4 code paths — each
with its own dense-checkpoint cache (a shared cache would hide the dense
model's share of the variation), then reports, per board and gated metric:

* machine spread: the standard deviation across machines of each criterion's
  seed mean (root mean square over the board's criteria);
* seed spread: the standard deviation across seeds (RMS over criteria) and the
  standard error of a seed mean it implies (÷ √seeds);
* criterion gaps: the median absolute difference between two criteria's seed
  means on the board, and the range (best − worst);
* whether the leaderboard's untied order is the same on every machine;
* per cell: how many cells moved by more than 2 points between machines;
* leave-one-machine-out gate verdicts: the band is measured on the reference
  and the other machines but one, and that one is checked against it; next to
  it, how many cells a cell-by-cell gate (final accuracy, 1 point) would fail.

Usage (from the repository root):

    .venv/bin/python benchmarks/reproducibility.py suites/smoke.toml --out /tmp/repro
    .venv/bin/python benchmarks/reproducibility.py --analyse /tmp/repro   # tables only, from stored runs

Each machine's results land in OUT/<machine>/ (Parquet parts), its cache in
OUT/cache-<machine>/; a re-run resumes. Tables go to stdout and OUT/report.md.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oba.report.band import SETTING_KEYS, Band, measure_band, sample_std, seed_values  # noqa: E402
from oba.report.check import check  # noqa: E402
from oba.report.load import load_results  # noqa: E402
from oba.report.ranking import BOARD_KEYS, boards  # noqa: E402

# Emulated CPUs: which kernels PyTorch (ATen), oneDNN and MKL may use. "native" is whatever this CPU offers.
MACHINES: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "sse41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
METRICS = ("pruned_acc_raw", "pruned_acc", "final_acc", "fidelity")
"""Accuracies in percent; fidelity as 100·ρ (as the gate reads it)."""


def run_machine(suite: str, out: Path, machine: str) -> float:
    """Run ``suite`` under ``machine``'s kernels into OUT/<machine>; return the wall seconds."""
    env = {**os.environ, **MACHINES[machine], "RAY_USAGE_STATS_ENABLED": "0"}
    oba = [sys.executable, "-m", "oba.cli", "run", suite, "--results", str(out / machine),
           "--cache", str(out / f"cache-{machine}")]
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *oba]
    else:
        command = oba
    start = time.monotonic()
    with open(out / f"log-{machine}.txt", "a") as log:
        subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    return time.monotonic() - start


def _rms(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else math.nan


def noise_table(runs: dict[str, pd.DataFrame], reference: str) -> pd.DataFrame:
    """One row per board and metric: machine spread, seed spread, criterion gaps (percentage points)."""
    records = []
    for metric in METRICS:
        per_machine = {name: seed_values(table, metric) for name, table in runs.items()}
        reference_values = per_machine[reference]
        if not reference_values:
            continue
        by_board: dict[tuple, list[tuple]] = {}
        for key in reference_values:
            by_board.setdefault(key[:2] + key[3:], []).append(key)
        for board, keys in sorted(by_board.items()):
            machine_stds, seed_stds, seeds, means = [], [], [], []
            for key in keys:
                present = [values[key] for values in per_machine.values() if key in values]
                shared = sorted(set.intersection(*(set(v.index) for v in present)))
                machine_stds.append(sample_std([float(v.loc[shared].mean()) for v in present]) if len(present) > 1 else math.nan)
                seed_stds.append(sample_std(list(reference_values[key])))
                seeds.append(len(reference_values[key]))
                means.append(float(reference_values[key].mean()))
            gaps = [abs(a - b) for a, b in itertools.combinations(means, 2)]
            seed_rms = _rms(seed_stds)
            records.append({
                "metric": metric, **dict(zip(("model", "dataset", "structure", "allocation", "ratio"), board)),
                "criteria": len(keys), "seeds": min(seeds), "machines": len(runs),
                "machine_spread": _rms(machine_stds), "seed_spread": seed_rms,
                "seed_mean_se": seed_rms / math.sqrt(min(seeds)) if seeds else math.nan,
                "median_gap": float(pd.Series(gaps).median()) if gaps else math.nan,
                "range": max(means) - min(means) if means else math.nan,
            })
    return pd.DataFrame(records)


def moved_cells(runs: dict[str, pd.DataFrame], metric: str, threshold: float = 2.0) -> tuple[int, int, float]:
    """(cells that moved by more than ``threshold`` points across machines, cells compared, largest move)."""
    values: dict[tuple, list[float]] = {}
    for table in runs.values():
        ok = table[(table["status"] == "ok") & table[metric].notna()]
        for _, row in ok.iterrows():
            key = tuple(row[k] for k in (*SETTING_KEYS, "seed"))
            values.setdefault(key, []).append(float(row[metric]) * 100)
    spans = [max(v) - min(v) for v in values.values() if len(v) == len(runs)]
    return sum(s > threshold for s in spans), len(spans), max(spans, default=math.nan)


def order_agreement(runs: dict[str, pd.DataFrame], metric: str, band: Band | None = None) -> tuple[int, int, int]:
    """(untied ordered pairs on the reference's boards, pairs whose untied order flipped on some machine,
    pairs that are tied on some machines and untied on others); ties as the leaderboard makes them with ``band``."""
    ranked = [{tuple(getattr(b, k) for k in BOARD_KEYS): b for b in boards(table, metric, band)}
              for table in runs.values()]
    untied = flipped = changed = 0
    for key in set(ranked[0]).intersection(*ranked[1:]):
        ranks = [{e.criterion: e.rank for e in machine[key].entries if e.rank is not None} for machine in ranked]
        for a, b in itertools.combinations(sorted(set(ranks[0]).intersection(*ranks[1:])), 2):
            signs = [(r[b] > r[a]) - (r[b] < r[a]) for r in ranks]
            untied += signs[0] != 0
            if 1 in signs and -1 in signs:
                flipped += 1
            elif len(set(signs)) > 1:
                changed += 1
    return untied, flipped, changed


def cell_gate_failures(runs: dict[str, pd.DataFrame], reference: str, tolerance: float = 1.0) -> dict[str, tuple[int, int]]:
    """Per other machine: (cells whose final accuracy is more than ``tolerance`` points below the reference's, cells)."""
    base = {tuple(r[k] for k in (*SETTING_KEYS, "seed")): float(r["final_acc"]) * 100
            for _, r in runs[reference].iterrows() if r["status"] == "ok"}
    out = {}
    for name, table in runs.items():
        if name == reference:
            continue
        current = {tuple(r[k] for k in (*SETTING_KEYS, "seed")): float(r["final_acc"]) * 100
                   for _, r in table.iterrows() if r["status"] == "ok"}
        shared = base.keys() & current.keys()
        out[name] = (sum(base[k] - current[k] > tolerance for k in shared), len(shared))
    return out


def leave_one_out(runs: dict[str, pd.DataFrame], reference: str) -> list[tuple[str, int, str]]:
    """For each other machine m: band from the reference and the remaining machines, then check m against the reference."""
    out = []
    others = [name for name in runs if name != reference]
    for held_out in others:
        rest = [name for name in others if name != held_out]
        band = measure_band(runs[reference], [runs[n] for n in rest], [reference, *rest])
        outcome = check(runs[held_out], runs[reference], tolerance=0.5, band=band)
        summary = f"{len(outcome.regressions)} regression(s) in {len(outcome.comparisons)} comparisons"
        out.append((held_out, outcome.exit_code, summary))
    return out


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = []
    for row in frame.itertuples(index=False):
        rows.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join([header, rule, *rows])


def analyse(out: Path, machines: list[str]) -> str:
    """The report (Markdown) over the runs stored under ``out``."""
    runs = {m: load_results(str(out / m)) for m in machines if (out / m).is_dir()}
    reference = next(iter(runs))
    lines = [f"# Reproducibility of {out}", "", f"Machines: {', '.join(runs)} (reference: {reference}).", ""]
    table = noise_table(runs, reference)
    lines += ["## Noise per board (percentage points)", "", _markdown(table), ""]
    summary = table.groupby("metric")[["machine_spread", "seed_spread", "seed_mean_se", "median_gap"]].median()
    lines += ["## Medians over boards", "", _markdown(summary.reset_index()), ""]
    lines += ["## Cells that moved by more than 2 points across machines", ""]
    for metric in METRICS:
        moved, total, largest = moved_cells(runs, metric)
        if total:
            lines.append(f"- {metric}: {moved} of {total} cells (largest move {largest:.1f} points)")
    lines += ["", "## Untied leaderboard order across machines", ""]
    for metric in ("pruned_acc", "final_acc"):
        untied, flipped, changed = order_agreement(runs, metric)
        lines.append(f"- {metric}, ties from seed noise only: {untied} untied ordered pairs on the reference; "
                     f"{flipped} flipped on another machine, {changed} became tied or untied")
        for held_out in [name for name in runs if name != reference]:
            rest = [name for name in runs if name not in (reference, held_out)]
            band = measure_band(runs[reference], [runs[n] for n in rest], [reference, *rest])
            untied, flipped, changed = order_agreement({reference: runs[reference], held_out: runs[held_out]}, metric, band)
            lines.append(f"- {metric}, ties absorbing the noise band measured without {held_out}: {untied} untied "
                         f"ordered pairs on the reference; {flipped} flipped on {held_out}, {changed} became tied "
                         "or untied")
    lines += ["", "## Gate verdicts, leave one machine out", ""]
    for held_out, code, summary_text in leave_one_out(runs, reference):
        lines.append(f"- seed-mean gate, {held_out} against {reference} (band without {held_out}): exit {code} ({summary_text})")
    for name, (failed, total) in cell_gate_failures(runs, reference).items():
        lines.append(f"- cell-by-cell gate (final accuracy, 1 point), {name} against {reference}: {failed} of {total} cells fail")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", help="suite TOML to run under every machine")
    parser.add_argument("--out", type=Path, help="output folder (results, caches, logs, report.md)")
    parser.add_argument("--analyse", type=Path, help="only analyse the runs stored in this folder")
    parser.add_argument("--machines", default=",".join(MACHINES), help=f"comma-separated, from {', '.join(MACHINES)}")
    args = parser.parse_args()
    machines = args.machines.split(",")
    unknown = sorted(set(machines) - set(MACHINES))
    if unknown:
        parser.error(f"unknown machines {unknown}; valid: {', '.join(MACHINES)}")
    out = args.analyse or args.out
    if out is None or (args.analyse is None and args.suite is None):
        parser.error("give SUITE --out DIR, or --analyse DIR")
    out.mkdir(parents=True, exist_ok=True)
    if args.analyse is None:
        for machine in machines:
            seconds = run_machine(args.suite, out, machine)
            print(f"{machine}: {seconds:.0f} s", flush=True)
            with open(out / "timings.txt", "a") as handle:
                handle.write(f"{machine} {seconds:.0f}\n")
    report = analyse(out, machines)
    (out / "report.md").write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
