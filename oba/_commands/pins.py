"""``oba fixtures write`` and ``oba snapshot write|check``: what a regression test pins (dense weights, scores)."""
from __future__ import annotations

import argparse

from oba import criteria
from oba._errors import UserError
from oba.report.snapshot import write_snapshot
from oba.report.snapshot_check import check_snapshot
from oba.suite.cells import dense_keys, expand
from oba.suite.config import load_suite
from oba.training.dense_fixtures import write_fixtures


def fixtures(args: argparse.Namespace) -> int:
    """Write the suite's recipe-trained dense models as pinned fixtures."""
    suite = load_suite(args.suite)
    keys = [k for k in dense_keys(expand(suite)) if not args.dataset or k[1] in args.dataset]
    trained = [(m, d, s, suite.dense[m]) for m, d, s in keys if "weights" not in suite.dense[m]]
    if not trained:
        raise UserError(f"{args.suite}: no dense model trained by a recipe"
                        + (f" on {', '.join(args.dataset)}" if args.dataset else ""))
    for fixture in write_fixtures(trained, args.output, suite.data.get("options", {}), args.cache):
        print(f"{args.output.rstrip('/')}/{fixture.file}  sha256 {fixture.sha256}  key {fixture.key}")
    return 0


def chosen_criteria(args: argparse.Namespace) -> list[str] | None:
    """The criteria named on the command line; with --all, every registered one (plugins included)."""
    return criteria.names() if args.all else args.criterion or None


def snapshot(args: argparse.Namespace) -> int:
    """Write a score snapshot, or check the scores against one (exit 1 when some moved, 2 when unreadable)."""
    if args.action == "write":
        folder = write_snapshot(load_suite(args.suite), args.output, chosen_criteria(args))
        print(f"snapshot: {folder}")
        return 0
    outcome = check_snapshot(args.baseline, chosen_criteria(args))
    print(outcome.render())
    return outcome.exit_code
