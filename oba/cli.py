"""Command line: a thin layer over the public API.

    oba list models|datasets|criteria
    oba run SUITE [--results DIR] [--address ADDR] [--max-concurrent N] [--dry-run]
    oba demo
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register a sub-command handler."""

    def decorate(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return decorate


@command("list")
def _list(args: argparse.Namespace) -> int:
    from . import criteria, data, models

    registries = {"models": models.names, "datasets": data.names, "criteria": criteria.names}
    for name in registries[args.what]():
        print(name)
    return 0


@command("run")
def _run(args: argparse.Namespace) -> int:
    from .suite.config import load_suite
    from .suite.runner import pending_cells, run_suite

    suite = load_suite(args.suite)
    results = args.results or f"results/{suite.name}"
    if args.dry_run:
        cells, todo = pending_cells(suite, results)
        pending = {c.cell_id for c in todo}
        for cell in cells:
            print(f"{cell.cell_id}  {'todo' if cell.cell_id in pending else 'done'}  {cell.label()}")
        print(f"{len(cells)} cells, {len(cells) - len(todo)} stored, {len(todo)} to run", file=sys.stderr)
        return 0
    summary = run_suite(suite, results, address=args.address, max_concurrent=args.max_concurrent)
    print(f"suite {suite.name}: {summary.total} cells, {summary.skipped} already stored, {summary.ran} run, "
          f"{summary.failed} failed, {summary.seconds:.0f} s; results in {results}")
    for label in summary.failures:
        print(f"  failed: {label}", file=sys.stderr)
    return 1 if summary.failed else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oba", description="Optimal Brain Apoptosis pruning and the pruning-criteria benchmark suite")
    sub = p.add_subparsers(dest="command", required=True)
    lst = sub.add_parser("list", help="print registered models, datasets or criteria")
    lst.add_argument("what", choices=["models", "datasets", "criteria"])
    run = sub.add_parser("run", help="run every cell of a suite as Ray Tune trials")
    run.add_argument("suite", help="suite TOML file, e.g. suites/smoke.toml")
    run.add_argument("--results", help="results folder or pyarrow filesystem URI (default results/<suite name>)")
    run.add_argument("--address", help="address of an existing Ray cluster to join")
    run.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    run.add_argument("--dry-run", action="store_true", help="list the cells and whether each is stored, run nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"oba {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
