"""``oba report``, ``oba leaderboard``, ``oba check`` and ``oba band``: what is read from a results store."""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

from oba.report import ResultsUnreadable, check, load_results, read_results, write_leaderboard, write_report
from oba.report.band import BAND_FILE, Band, measure_band
from oba.report.check import CHECK_COLUMNS
from oba.report.stages import row_ids
from oba.suite.cells import expand
from oba.suite.config import load_suite


def readable_results(command_name: str, location: str) -> pd.DataFrame:
    """The results at ``location``; each unreadable part is skipped with a one-line warning."""
    loaded = read_results(location)
    for part in loaded.skipped:
        print(f"oba {command_name}: warning: skipped {part}", file=sys.stderr)
    return loaded.table


def report(args: argparse.Namespace) -> int:
    """Write the HTML report of a results store."""
    path = write_report(readable_results("report", args.results), args.output, png_dir=args.png,
                        plotly_js=args.plotly_js, leaderboard=args.leaderboard)
    print(f"report: {path}")
    return 0


def leaderboard(args: argparse.Namespace) -> int:
    """Write the leaderboard folder of a results store."""
    band = band_for(args.results, args.band)
    paths = write_leaderboard(readable_results("leaderboard", args.results), args.output, band=band, report=args.report)
    for kind, path in paths.items():
        print(f"leaderboard ({kind}): {path}")
    return 0


def check_results(args: argparse.Namespace) -> int:
    """The regression gate: exit 1 on a regression beyond the band, 2 on missing or unreadable cells."""
    baseline = args.baseline
    if args.suite:
        wanted = row_ids(expand(load_suite(args.suite)))
        try:
            frame = load_results(args.baseline, CHECK_COLUMNS)
        except ResultsUnreadable as err:
            print(f"oba check: baseline unreadable: {err}", file=sys.stderr)
            return 2
        baseline = frame[frame["cell_id"].isin(wanted)]
        if baseline.empty:
            print(f"oba check: no baseline cell belongs to suite {args.suite}", file=sys.stderr)
            return 2
    band = band_for(args.baseline, args.band)
    outcome = check(args.results, baseline, tolerance=args.tolerance, band=band)
    if outcome.unreadable:
        for problem in outcome.unreadable:
            print(f"oba check: error: {problem}", file=sys.stderr)
        return 2
    print(outcome.render())
    return outcome.exit_code


def band_for(baseline: str, explicit: str | None) -> Band | None:
    """The band file given, else ``band.json`` inside a results folder when there is one, else None."""
    if explicit:
        return Band.read(explicit)
    beside = os.path.join(baseline, BAND_FILE)
    return Band.read(beside) if "://" not in baseline and os.path.isfile(beside) else None


def band(args: argparse.Namespace) -> int:
    """Measure and write a reference's noise band."""
    names, runs = [args.name], []
    for item in args.machine:
        name, sep, location = item.partition("=")
        if not sep or not name or not location:
            raise ValueError(f"--machine takes NAME=RESULTS, got {item!r}")
        names.append(name)
        runs.append(load_results(location))
    measured = measure_band(load_results(args.reference), runs, names, z=args.z, floor=args.floor)
    target = args.output or os.path.join(args.reference, BAND_FILE)
    measured.write(target)
    widest = max((b.band for s in measured.settings.values() for b in s.metrics.values()), default=float("nan"))
    print(f"band: {target} ({len(measured.settings)} settings, machines {', '.join(names)}, widest band {widest:.2f})")
    return 0
