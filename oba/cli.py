"""Command line: a thin layer over the public API (the handlers live in :mod:`oba._commands`).

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
import importlib
import sys
from collections.abc import Callable, Sequence

from oba import __version__
from oba._errors import UserError

HANDLERS = {
    "list": "catalogue:list_names", "run": "run:run", "report": "results:report", "leaderboard": "results:leaderboard",
    "check": "results:check_results", "band": "results:band", "status": "store:status", "store": "store:compact_store",
    "fixtures": "pins:fixtures", "snapshot": "pins:snapshot",
}
"""Each sub-command's handler as ``module:function`` in :mod:`oba._commands`, imported when the command runs."""


def handler(command_name: str) -> Callable[[argparse.Namespace], int]:
    """The handler of ``command_name``, its module imported now."""
    module, _, function = HANDLERS[command_name].partition(":")
    return getattr(importlib.import_module(f"oba._commands.{module}"), function)


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


def parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    p = argparse.ArgumentParser(prog="oba", description="Optimal Brain Apoptosis pruning and the pruning-criteria benchmark suite")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    lst = sub.add_parser("list", help="print registered models, datasets or criteria")
    lst.add_argument("what", choices=["models", "datasets", "criteria"])
    _add_run(sub)
    _add_results_commands(sub)
    _add_store_commands(sub)
    _add_pin_commands(sub)
    return p


def _add_run(sub: argparse._SubParsersAction) -> None:
    """``oba run``."""
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


def _add_results_commands(sub: argparse._SubParsersAction) -> None:
    """``oba report``, ``leaderboard``, ``check`` and ``band``: what reads a results store."""
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


def _add_store_commands(sub: argparse._SubParsersAction) -> None:
    """``oba status`` and ``oba store compact``."""
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


def _add_pin_commands(sub: argparse._SubParsersAction) -> None:
    """``oba fixtures write`` and ``oba snapshot write|check``."""
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return handler(args.command)(args)
    except (UserError, ValueError, OSError) as err:
        for line in str(err).splitlines() or [type(err).__name__]:
            print(f"oba {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"oba {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
