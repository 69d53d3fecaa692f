"""``oba run``: run a suite's cells (or, with ``--dry-run``, list them and what they need)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from oba._errors import UserError
from oba.suite.config import Suite, load_suite
from oba.suite.plan import describe, grid_sizes, plan_run
from oba.suite.runner import NOT_RUN, RunInterrupted, RunSummary, run_suite


def run(args: argparse.Namespace) -> int:
    """Run the suite; exit 1 when a cell failed; a run stopped by a signal leaves with its code (:func:`leave_now`)."""
    suite = load_suite(args.suite)
    if args.fake_cell and not args.results:
        raise UserError("--fake-cell stores placeholder rows: give a --results location of their own")
    results = args.results or f"results/{suite.name}"
    if args.dry_run:
        return dry_run(suite, results, args)
    try:
        summary = run_suite(suite, results, address=args.address, max_concurrent=args.max_concurrent, cache_dir=args.cache,
                            shared_mount=args.shared_mount, pipeline="noop" if args.fake_cell else "full")
    except RunInterrupted as stop:
        print_failures(stop.summary)
        stored = stop.summary.ran - stop.summary.failed
        print(f"oba run: stopped by {stop.signal.name} after {stop.summary.seconds:.0f} s: {stored} of the "
              f"{stop.summary.ran} cells to run stored in {results}; run the same command again to resume",
              file=sys.stderr)
        leave_now(stop.exit_code)
    print(f"suite {suite.name}: {summary.total} cells, {summary.skipped} already stored, {summary.ran} run, "
          f"{summary.failed} failed, {summary.seconds:.0f} s; results in {results}")
    print_failures(summary)
    return 1 if summary.failed else 0


def leave_now(code: int) -> NoReturn:
    """End the process with ``code`` at once, output flushed, skipping the interpreter's teardown.

    A stopped run has shut Ray down, released its lease and stored every finished cell; the teardown that remains
    (Ray's and gRPC's exit handlers) was seen to keep a stopped run alive for more than a minute on a loaded machine
    after it had printed that it stopped (CI, 2026-12-08), which a user waiting on SIGTERM cannot tell from a hang.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def dry_run(suite: Suite, results: str, args: argparse.Namespace) -> int:
    """List every cell (stdout: id, todo/done, :func:`~oba.suite.plan.describe`) and, on stderr, each grid's size,
    the data and weights the pending cells need and whether they are in place; start nothing, compute nothing."""
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


def print_failures(summary: RunSummary) -> None:
    """The failed cells grouped by reason, most common first (cells a stopped run never reached are left out)."""
    groups = {why: labels for why, labels in summary.by_reason().items() if why != NOT_RUN}
    if groups:
        print(f"failed cells by reason ({sum(map(len, groups.values()))}):", file=sys.stderr)
    for why, labels in groups.items():
        shown = ", ".join(labels[:4]) + (f" and {len(labels) - 4} more" if len(labels) > 4 else "")
        print(f"  {len(labels)} × {why}\n      {shown}", file=sys.stderr)
