"""What a results location holds, per model and criterion, and who is running on it.

From the store's key columns and the run lease (:mod:`oba.store.lease`):

* done — stored with status "ok";
* failed — stored with another status (a later run tries it again);
* running — expected, not stored, while a live run of that suite holds the lease
  (it is running or queued in that run);
* pending — expected, not stored, and no live run of that suite.

Expected cells come from a suite's grid (the CLI's ``--suite``); without them only
stored cells are counted and running/pending are unknown. Files of the store that
cannot be read are left out of the counts and listed (:attr:`StoreStatus.unreadable`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from oba._errors import UserError
from oba.store.lease import LeaseRecord, read_lease
from oba.store.results import ResultStore, is_earlier_stage
from oba.store.scan import UnreadablePart

STATES = ("done", "failed", "running", "pending")


@dataclass
class StatusRow:
    """Cell counts of one (model, criterion)."""

    model: str
    criterion: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))


@dataclass
class StoreStatus:
    """Counts per (model, criterion), the lease, whether expected cells were known, and the files that cannot be read
    (their cells are not counted)."""

    location: str
    lease: LeaseRecord | None
    rows: list[StatusRow]
    expected_known: bool
    unreadable: list[UnreadablePart] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        """Counts summed over every row."""
        return {state: sum(r.counts[state] for r in self.rows) for state in STATES}

    def render(self) -> str:
        """A lease line, then a table of counts (running/pending only when expected cells are known)."""
        if self.lease is None:
            lease = "lease: none (no run holds this store)"
        else:
            lease = f"lease: {'EXPIRED ' if self.lease.expired() else ''}{self.lease.describe()}"
        states = STATES if self.expected_known else STATES[:2]
        headers = ["model", "criterion", *states]
        body = [[r.model, r.criterion, *(str(r.counts[s]) for s in states)] for r in self.rows]
        totals = self.totals()
        body.append(["total", "", *(str(totals[s]) for s in states)])
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [headers, *body]]
        return "\n".join([f"{self.location}", lease, *lines])


def store_status(location: str, expected: Mapping[str, tuple[str, str]] | None = None,
                 suite: str | None = None) -> StoreStatus:
    """Counts of ``location``'s cells per (model, criterion) (an iterative cell counts once, by its last stage), and
    the store's unreadable files.

    ``expected`` maps the cell ids of ``suite``'s grid to (model, criterion); when
    given, only those cells count. Without it, stored cells of ``suite`` (or of
    every suite when None) count.
    """
    store = ResultStore(location)
    if not store.exists():
        raise UserError(f"results {location}: no such folder")
    stored, unreadable = store.read_readable(["cell_id", "status", "suite", "model", "criterion"])
    lease = read_lease(location)
    live_run = lease is not None and not lease.expired() and suite is not None and lease.suite == suite
    rows: dict[tuple[str, str], StatusRow] = {}

    def count(model: str, criterion: str, state: str) -> None:
        rows.setdefault((model, criterion), StatusRow(model, criterion)).counts[state] += 1

    statuses = dict(zip(stored["cell_id"], stored["status"]))
    if expected is not None:
        for cell_id, (model, criterion) in expected.items():
            status = statuses.get(cell_id)
            if status is None:
                count(model, criterion, "running" if live_run else "pending")
            else:
                count(model, criterion, "done" if status == "ok" else "failed")
    else:
        for record in stored.itertuples(index=False):
            if (suite is None or record.suite == suite) and not is_earlier_stage(record.cell_id):
                count(str(record.model), str(record.criterion), "done" if record.status == "ok" else "failed")
    return StoreStatus(location, lease, [rows[k] for k in sorted(rows)], expected is not None, unreadable)
