"""Command line: a thin layer over the public API.

    oba --version
    oba list models|datasets|criteria
    oba run SUITE [--results DIR] [--cache DIR] [--address ADDR] [--max-concurrent N] [--shared-mount] [--fake-cell] [--dry-run]
    oba report RESULTS -o reports/NAME.html [--png DIR] [--plotly-js inline|shared] [--leaderboard DIR]
    oba leaderboard RESULTS -o reports/leaderboard/ [--band FILE] [--report FILE]
    oba check RESULTS --baseline FILE_OR_DIR [--band FILE] [--tolerance POINTS] [--suite SUITE]
    oba band REFERENCE [--machine NAME=RESULTS ...] [--z Z] [--floor POINTS] [-o FILE]
    oba status RESULTS [--suite SUITE]
    oba store compact RESULTS
    oba fixtures write SUITE -o FOLDER [--dataset NAME ...]
    oba snapshot write [--suite SUITE] [-o DIR] [--criterion NAME ... | --all]
    oba snapshot check [--baseline DIR] [--criterion NAME ... | --all]
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from .report.band import Band
    from .suite.config import Suite
    from .suite.runner import RunSummary

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register a sub-command handler."""

    def decorate(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return decorate


def _at_least_zero(kind: type[int] | type[float], note: str = "") -> Callable[[str], int | float]:
    """An argparse type: a ``kind`` ≥ 0 (``note`` says what 0 means), else one line saying what was expected."""
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"expected {noun} of at least 0{note}, got {text!r}")
        return value

    return parse


_trials = _at_least_zero(int, " (0: as many trials as the cluster holds)")
_non_negative = _at_least_zero(float)


@command("list")
def _list(args: argparse.Namespace) -> int:
    from . import criteria, data, models

    registries = {"models": models.names, "datasets": data.names, "criteria": criteria.names}
    for name in registries[args.what]():
        print(name)
    if args.what == "models":
        print("torchvision:NAME or timm:NAME: any torchvision or timm classifier (docs/models.md)", file=sys.stderr)
    return 0


@command("run")
def _run(args: argparse.Namespace) -> int:
    from .suite.config import load_suite

    suite = load_suite(args.suite)
    if args.fake_cell and not args.results:
        raise UserError("--fake-cell stores placeholder rows: give a --results location of their own")
    results = args.results or f"results/{suite.name}"
    if args.dry_run:
        return _dry_run(suite, results, args)
    from .suite.runner import RunInterrupted, run_suite

    try:
        summary = run_suite(suite, results, address=args.address, max_concurrent=args.max_concurrent, cache_dir=args.cache,
                            shared_mount=args.shared_mount, pipeline="noop" if args.fake_cell else "full")
    except RunInterrupted as stop:
        _print_failures(stop.summary)
        stored = stop.summary.ran - stop.summary.failed
        print(f"oba run: stopped by {stop.signal.name} after {stop.summary.seconds:.0f} s: {stored} of the "
              f"{stop.summary.ran} cells to run stored in {results}; run the same command again to resume",
              file=sys.stderr)
        return stop.exit_code
    print(f"suite {suite.name}: {summary.total} cells, {summary.skipped} already stored, {summary.ran} run, "
          f"{summary.failed} failed, {summary.seconds:.0f} s; results in {results}")
    _print_failures(summary)
    return 1 if summary.failed else 0


def _dry_run(suite: Suite, results: str, args: argparse.Namespace) -> int:
    """List every cell (stdout: id, todo/done, :func:`~oba.suite.plan.describe`) and, on stderr, each grid's size,
    the data and weights the pending cells need and whether they are in place; start nothing, compute nothing."""
    from .suite.plan import describe, grid_sizes, plan_run

    plan = plan_run(suite, results, args.cache, args.address, missing_ok=True)
    for part in plan.unreadable:
        print(f"oba run: warning: skipped {part}; a cell without a readable part runs again", file=sys.stderr)
    pending = {c.cell_id for c in plan.todo}
    for cell in plan.cells:
        print(f"{cell.cell_id}  {'todo' if cell.cell_id in pending else 'done'}  {describe(cell)}")
    for line in grid_sizes(suite):
        print(f"oba run: {line}", file=sys.stderr)
    for line in plan.datasets:
        print(f"oba run: data: {line}", file=sys.stderr)
    for line in plan.weights:
        print(f"oba run: dense weights: {line}", file=sys.stderr)
    for line in plan.missing:
        print(f"oba run: missing: {line}", file=sys.stderr)
    print(f"{len(plan.cells)} cells, {len(plan.cells) - len(plan.todo)} stored, {len(plan.todo)} to run", file=sys.stderr)
    if plan.missing:
        print(f"oba run: the run cannot start until the {len(plan.missing)} missing item(s) above are in place",
              file=sys.stderr)
    return 0


def _print_failures(summary: RunSummary) -> None:
    """The failed cells grouped by reason, most common first (cells a stopped run never reached are left out)."""
    from .suite.runner import NOT_RUN

    groups = {why: labels for why, labels in summary.by_reason().items() if why != NOT_RUN}
    if groups:
        print(f"failed cells by reason ({sum(map(len, groups.values()))}):", file=sys.stderr)
    for why, labels in groups.items():
        shown = ", ".join(labels[:4]) + (f" and {len(labels) - 4} more" if len(labels) > 4 else "")
        print(f"  {len(labels)} × {why}\n      {shown}", file=sys.stderr)


def _readable_results(command_name: str, location: str) -> pd.DataFrame:
    """The results at ``location``; each unreadable part is skipped with a one-line warning."""
    from .report import read_results

    loaded = read_results(location)
    for part in loaded.skipped:
        print(f"oba {command_name}: warning: skipped {part}", file=sys.stderr)
    return loaded.table


@command("report")
def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(_readable_results("report", args.results), args.output, png_dir=args.png,
                        plotly_js=args.plotly_js, leaderboard=args.leaderboard)
    print(f"report: {path}")
    return 0


@command("leaderboard")
def _leaderboard(args: argparse.Namespace) -> int:
    from .report import write_leaderboard

    band = _band_for(args.results, args.band)
    paths = write_leaderboard(_readable_results("leaderboard", args.results), args.output, band=band, report=args.report)
    for kind, path in paths.items():
        print(f"leaderboard ({kind}): {path}")
    return 0


@command("check")
def _check(args: argparse.Namespace) -> int:
    from .report import ResultsUnreadable, check, load_results
    from .report.check import CHECK_COLUMNS

    baseline = args.baseline
    if args.suite:
        from .report.stages import row_ids
        from .suite.config import load_suite
        from .suite.grid import expand

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
    band = _band_for(args.baseline, args.band)
    outcome = check(args.results, baseline, tolerance=args.tolerance, band=band)
    if outcome.unreadable:
        for problem in outcome.unreadable:
            print(f"oba check: error: {problem}", file=sys.stderr)
        return 2
    print(outcome.render())
    return outcome.exit_code


def _band_for(baseline: str, explicit: str | None) -> Band | None:
    """The band file given, else ``band.json`` inside a results folder when there is one, else None."""
    import os

    from .report.band import BAND_FILE, Band

    if explicit:
        return Band.read(explicit)
    beside = os.path.join(baseline, BAND_FILE)
    return Band.read(beside) if "://" not in baseline and os.path.isfile(beside) else None


@command("band")
def _band(args: argparse.Namespace) -> int:
    import os

    from .report import load_results
    from .report.band import BAND_FILE, measure_band

    names, runs = [args.name], []
    for item in args.machine:
        name, sep, location = item.partition("=")
        if not sep or not name or not location:
            raise ValueError(f"--machine takes NAME=RESULTS, got {item!r}")
        names.append(name)
        runs.append(load_results(location))
    band = measure_band(load_results(args.reference), runs, names, z=args.z, floor=args.floor)
    target = args.output or os.path.join(args.reference, BAND_FILE)
    band.write(target)
    widest = max((b.band for s in band.settings.values() for b in s.metrics.values()), default=float("nan"))
    print(f"band: {target} ({len(band.settings)} settings, machines {', '.join(names)}, widest band {widest:.2f})")
    return 0


@command("status")
def _status(args: argparse.Namespace) -> int:
    from .status import store_status

    expected, name = None, None
    if args.suite:
        from .suite.config import load_suite
        from .suite.grid import expand

        suite = load_suite(args.suite)
        name = suite.name
        expected = {c.cell_id: (c.config["model"], c.config["criterion"]) for c in expand(suite)}
    status = store_status(args.results, expected, name)
    print(status.render())
    for part in status.unreadable:
        print(f"oba status: warning: skipped {part}", file=sys.stderr)
    return 1 if status.unreadable else 0


@command("store")
def _store(args: argparse.Namespace) -> int:
    from .compaction import compact

    summary = compact(args.results)
    for part in summary.unreadable:
        print(f"oba store compact: warning: left {part}", file=sys.stderr)
    print(f"compacted {args.results}: {summary.folded} part(s) folded into {len(summary.written)} file(s), "
          f"{summary.removed} older compacted file(s) replaced; {summary.cells} cells stored")
    return 2 if summary.unreadable else 0


@command("fixtures")
def _fixtures(args: argparse.Namespace) -> int:
    from .dense_fixtures import write_fixtures
    from .suite.config import load_suite
    from .suite.grid import dense_keys, expand

    suite = load_suite(args.suite)
    keys = [k for k in dense_keys(expand(suite)) if not args.dataset or k[1] in args.dataset]
    trained = [(m, d, s, suite.dense[m]) for m, d, s in keys if "weights" not in suite.dense[m]]
    if not trained:
        raise UserError(f"{args.suite}: no dense model trained by a recipe"
                        + (f" on {', '.join(args.dataset)}" if args.dataset else ""))
    for fixture in write_fixtures(trained, args.output, suite.data.get("options", {}), args.cache):
        print(f"{args.output.rstrip('/')}/{fixture.file}  sha256 {fixture.sha256}  key {fixture.key}")
    return 0


def _snapshot_criteria(args: argparse.Namespace) -> list[str] | None:
    """The criteria named on the command line; with --all, every registered one (plugins included)."""
    if args.all:
        from . import criteria

        return criteria.names()
    return args.criterion or None


@command("snapshot")
def _snapshot(args: argparse.Namespace) -> int:
    from .report.snapshot import write_snapshot
    from .report.snapshot_check import check_snapshot

    if args.action == "write":
        from .suite.config import load_suite

        folder = write_snapshot(load_suite(args.suite), args.output, _snapshot_criteria(args))
        print(f"snapshot: {folder}")
        return 0
    outcome = check_snapshot(args.baseline, _snapshot_criteria(args))
    print(outcome.render())
    return outcome.exit_code


def parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="oba", description="Optimal Brain Apoptosis pruning and the pruning-criteria benchmark suite")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    lst = sub.add_parser("list", help="print registered models, datasets or criteria")
    lst.add_argument("what", choices=["models", "datasets", "criteria"])
    run = sub.add_parser("run", help="run every cell of a suite as Ray Tune trials")
    run.add_argument("suite", help="suite TOML file, e.g. suites/smoke.toml")
    run.add_argument("--results", help="results folder or pyarrow filesystem URI (default results/<suite name>)")
    run.add_argument("--address", help="HOST:PORT (or ray://HOST:PORT) of a running Ray cluster to join; without it "
                                       "the run starts its own local Ray")
    run.add_argument("--max-concurrent", type=_trials, help="at most this many trials at once (0: as many as the "
                                                            "cluster holds)")
    run.add_argument("--cache", help="dense-checkpoint cache folder (default: the suite's [run] cache_dir, "
                                     "else .cache/checkpoints)")
    run.add_argument("--shared-mount", action="store_true",
                     help="the results and cache paths are a mount that every node of the cluster shares at the same "
                          "path (otherwise a cluster of several nodes needs URIs such as s3://...)")
    run.add_argument("--fake-cell", action="store_true",
                     help="compute nothing: store each cell's identity as an ok row (the noop pipeline), to measure "
                          "the runner's own cost; needs --results")
    run.add_argument("--dry-run", action="store_true",
                     help="check the results and cache folders (creating them) and the cluster address; list every "
                          "cell (stored or not, its stages and dense model), each grid's size, and the data and dense "
                          "weights files the run needs, in place or missing; start and compute nothing (exit 0 when "
                          "only data or weights are missing)")
    rep = sub.add_parser("report", help="write a self-contained HTML report of a results folder")
    rep.add_argument("results", help="results folder, Parquet file or URI")
    rep.add_argument("-o", "--output", required=True, help="HTML file to write, e.g. reports/smoke.html")
    rep.add_argument("--png", help="also write static PNG figures here (needs kaleido and Chromium)")
    rep.add_argument("--plotly-js", choices=["inline", "shared"], default="inline",
                     help="inline (default): one self-contained file; shared: load plotly.min.js, written once beside "
                          "the report, so that pages in one folder share one copy")
    rep.add_argument("--leaderboard", help="the leaderboard folder of the same results: the report links to it and to "
                                           "its raw rows (cells.csv, cells.parquet)")
    board = sub.add_parser("leaderboard", help="write index.html, leaderboard.md and board.json ranking criteria per "
                                               "setting and across settings, and the raw rows (cells.csv, cells.parquet)")
    board.add_argument("results", help="results folder, Parquet file or URI")
    board.add_argument("-o", "--output", required=True, help="output folder, e.g. reports/leaderboard/")
    board.add_argument("--band", help="noise band of the suite's reference (its band.json; default: band.json inside "
                                      "RESULTS, when present): ties then also absorb the measured machine noise")
    board.add_argument("--report", help="the HTML report of the same results: each board links to its cells there")
    chk = sub.add_parser("check", help="fail (exit 1) when a setting's seed mean dropped beyond its noise band; "
                                          "exit 2 on missing cells")
    chk.add_argument("results", help="results folder, Parquet file or URI")
    chk.add_argument("--baseline", required=True, help="reference results (folder of parts or a Parquet file)")
    chk.add_argument("--band", help="band file (default: band.json inside the baseline folder, when present)")
    chk.add_argument("--tolerance", type=_non_negative, default=0.5,
                     help="smallest allowed drop of a seed mean (accuracy: percentage points; fidelity: 100·ρ), a "
                          "floor under the measured band")
    chk.add_argument("--suite", help="compare only the baseline cells of this suite (a subset of the baseline's grid)")
    bnd = sub.add_parser("band", help="write a reference's noise band (seed spread and machine spread) for check")
    bnd.add_argument("reference", help="reference results folder (the band is written inside it by default)")
    bnd.add_argument("--name", default="reference", help="name of the reference's machine (default: reference)")
    bnd.add_argument("--machine", action="append", default=[], metavar="NAME=RESULTS",
                     help="the same suite run under another (emulated) CPU; repeat for each machine")
    bnd.add_argument("--z", type=_non_negative, default=3.0, help="band width in standard deviations (default 3)")
    bnd.add_argument("--floor", type=_non_negative, default=0.5, help="smallest band (accuracy: percentage points; fidelity: 100·ρ; default 0.5)")
    bnd.add_argument("-o", "--output", help="band file to write (default REFERENCE/band.json)")
    status_help = ("done / failed / running / pending cells per model and criterion, and the run holding the results' "
                   "lease; exit 1 when some result part cannot be read (each named on stderr, its cell left out of the "
                   "counts), 2 when the results folder is missing")
    stat = sub.add_parser("status", help=status_help, description=status_help)
    stat.add_argument("results", help="results folder or URI")
    stat.add_argument("--suite", help="suite TOML file: count its grid's cells (running and pending included)")
    store = sub.add_parser("store", help="maintain a results location")
    store_sub = store.add_subparsers(dest="action", required=True)
    compact = store_sub.add_parser("compact", help="fold the loose parts into one Parquet file per suite/model/dataset "
                                                   "(hive-partitioned); safe while a run writes to a local folder")
    compact.add_argument("results", help="results folder or URI")
    fix = sub.add_parser("fixtures", help="golden dense fixtures: pinned dense weights a suite loads instead of training")
    fix_sub = fix.add_subparsers(dest="action", required=True)
    fix_write = fix_sub.add_parser("write", help="train (or take from the checkpoint cache) the suite's dense models on "
                                                 "the CPU and write them with manifest.json into FOLDER")
    fix_write.add_argument("suite", help="suite TOML file")
    fix_write.add_argument("-o", "--output", required=True, help="fixtures folder, e.g. fixtures/dense")
    fix_write.add_argument("--dataset", action="append", default=[], help="only this dataset's models (repeatable)")
    fix_write.add_argument("--cache", help="dense-checkpoint cache to train into or read from (default .cache/checkpoints)")
    snap = sub.add_parser("snapshot", help="score snapshots: every criterion's scores on the pinned fixtures, written "
                                           "or compared with a committed snapshot")
    snap_sub = snap.add_subparsers(dest="action", required=True)
    snap_write = snap_sub.add_parser("write", help="score the criteria on the suite's pinned dense fixtures and write the "
                                                   "snapshot")
    snap_write.add_argument("--suite", default="suites/smoke.toml", help="suite whose fixtures, calibration and "
                                                                         "criterion options to use (default suites/smoke.toml)")
    snap_write.add_argument("-o", "--output", default="results/reference/snapshot",
                            help="snapshot folder (default results/reference/snapshot)")
    snap_check = snap_sub.add_parser("check", help="recompute and compare with a snapshot: exit 0 when every criterion "
                                                   "matches, 1 when some moved, 2 when the snapshot is missing or corrupt")
    snap_check.add_argument("--baseline", default="results/reference/snapshot",
                            help="snapshot folder (default results/reference/snapshot)")
    for sp in (snap_write, snap_check):
        which = sp.add_mutually_exclusive_group()
        which.add_argument("--criterion", action="append", default=[],
                           help="only this criterion (repeatable; a plugin's name or module:object); default: every "
                                "built-in (check: and every criterion in the snapshot)")
        which.add_argument("--all", action="store_true", help="every registered criterion, plugins included")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UserError, ValueError, OSError) as err:
        for line in str(err).splitlines() or [type(err).__name__]:
            print(f"oba {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"oba {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
