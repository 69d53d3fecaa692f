"""``oba status`` and ``oba store compact``: a results store's state and its upkeep."""
from __future__ import annotations

import argparse
import sys

from oba.store.compaction import compact
from oba.store.status import store_status
from oba.suite.cells import expand
from oba.suite.config import load_suite


def status(args: argparse.Namespace) -> int:
    """Cells per model and criterion; exit 1 when a part cannot be read."""
    expected, name = None, None
    if args.suite:
        suite = load_suite(args.suite)
        name = suite.name
        expected = {c.cell_id: (c.model, c.criterion) for c in expand(suite)}
    shown = store_status(args.results, expected, name)
    print(shown.render())
    for part in shown.unreadable:
        print(f"oba status: warning: skipped {part}", file=sys.stderr)
    return 1 if shown.unreadable else 0


def compact_store(args: argparse.Namespace) -> int:
    """Fold the loose parts into compacted files; exit 2 when a part was left unread."""
    summary = compact(args.results)
    for part in summary.unreadable:
        print(f"oba store compact: warning: left {part}", file=sys.stderr)
    print(f"compacted {args.results}: {summary.folded} part(s) folded into {len(summary.written)} file(s), "
          f"{summary.removed} older compacted file(s) replaced; {summary.cells} cells stored")
    return 2 if summary.unreadable else 0
