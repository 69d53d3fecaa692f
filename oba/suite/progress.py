"""What a run shows while cells finish: one progress line per cell, fed by a watcher of the results store.

:class:`Progress` writes done/total, failures, elapsed time, the ETA and a
failed cell's one-line reason; :class:`StoreWatcher` reports each pending cell
once a new part for it appears in the store (whoever wrote it), polling at a
bounded share of the driver's time.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

from oba._messages import reason
from oba.store.results import ResultStore
from oba.suite.cells import Cell


class Progress:
    """One line per finished cell: done/total, failures, elapsed, ETA, and a failed cell's reason."""

    def __init__(self, total: int, already: int, stream: TextIO = sys.stderr) -> None:
        self.total, self.already, self.stream = total, already, stream
        self.done = self.failed = 0
        self.start = time.monotonic()

    def update(self, label: str, ok: bool, why: str = "") -> None:
        """Report one finished cell; ``why`` is a failed cell's one-line reason."""
        self.done += 1
        self.failed += 0 if ok else 1
        elapsed = time.monotonic() - self.start
        remaining = self.total - self.already - self.done
        eta = elapsed / self.done * remaining
        self.stream.write(
            f"[{self.already + self.done}/{self.total}] {'ok ' if ok else 'ERR'} {label} | failures {self.failed} | "
            f"elapsed {_clock(elapsed)} | eta {_clock(eta)}" + ("" if ok else f" | {why}") + "\n"
        )
        self.stream.flush()


class StoreWatcher(threading.Thread):
    """Reports each pending cell once a new part for it appears in the store (whoever wrote it).

    A poll lists the store's top folder once, then reads the status and error of
    each pending cell's new part (work proportional to the cells that ended,
    whatever the store's size). Polls are ``interval`` seconds apart, or
    ``cost_factor`` times the last listing's duration when that is longer, so
    listing a large store or a slow object store costs the driver a bounded
    share of its time. (Spacing polls by the whole poll instead would let the
    reads feed back: a poll that reads many parts waits longer, so the next
    finds more to read, and progress falls ever further behind a fast run.)
    Cells whose part a compaction moved before a poll saw it are reported when
    the watcher stops, from the store's columns.
    """

    def __init__(self, store: ResultStore, cells: list[Cell], progress: Progress,
                 on_cell_done: Callable[[str, bool], None] | None, interval: float = 0.5,
                 cost_factor: float = 20.0) -> None:
        super().__init__(name="oba-store-watcher", daemon=True)
        self.store, self.progress, self.on_cell_done = store, progress, on_cell_done
        self.interval, self.cost_factor = interval, cost_factor
        self.pending = {c.cell_id: c.label() for c in cells}
        self.before = store.versions()
        self.stopping = threading.Event()
        self.last_listing_seconds = 0.0

    def _report(self, cell_id: str, status: str, error: str | None) -> None:
        ok = status == "ok"
        self.progress.update(self.pending.pop(cell_id), ok, "" if ok else reason(error or status))
        if self.on_cell_done is not None:
            self.on_cell_done(cell_id, ok)

    def poll(self) -> None:
        began = time.monotonic()
        versions = self.store.versions()
        self.last_listing_seconds = time.monotonic() - began
        fresh = {cid for cid, mtime in versions.items() if self.before.get(cid) != mtime}
        for cell_id in sorted(fresh & self.pending.keys()):
            try:
                row = self.store.read_cell(cell_id, ["status", "error"])
            except FileNotFoundError:  # taken by a compaction meanwhile: reported at stop
                continue
            self._report(cell_id, row["status"], row["error"])

    def run(self) -> None:
        while not self.stopping.wait(max(self.interval, self.cost_factor * self.last_listing_seconds)):
            self.poll()

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.poll()
        if self.pending:
            stored, _ = self.store.read_readable(["cell_id", "status", "error"])
            for cell_id, status, error in zip(stored["cell_id"], stored["status"], stored["error"]):
                if cell_id in self.pending:
                    self._report(cell_id, status, error)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
