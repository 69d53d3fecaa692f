"""Folding a run's finished parts while it runs, and compacting its store at its end, so that the store never
holds many more loose parts than ``[run] compact_parts``, however the run ends.

Every read that cannot use a manifest or compacted files opens each loose part
(about 1 ms a part for ``finished``, 3.5 ms for a whole row). A run of 10^5
cells that folded only at its end would leave 10^5 loose parts behind if it was
killed; folding as it goes bounds what any later reader must open.

Which rows may move: a trial's cells only once every one of them has reported
(stored "ok" or an error). A trial still running, or retried by Tune, looks up
its own cells' rows (its retry skips the cells stored "ok"; an iterative cell
resumes from its earlier stages' rows) and reads each partition's compacted
cell ids once per attempt (:class:`oba.store.results.StoredRows`), so none of its rows
moves before the trial ends. Of an ended trial, the rows of its cells stored "ok" are
folded, with their earlier stages' rows; a cell's error row stays loose, as the
next run rewrites it.

Whenever at least ``threshold`` rows are foldable, one background thread folds
them with a partial compaction (:func:`oba.store.compaction.compact` with ``rows``
and ``merge=False``, a cost proportional to the rows taken); at most one fold
runs at a time, and rows that come meanwhile wait for the next. A fold that
finds ``oba store compact`` running is skipped (its rows wait for the next
fold); one that fails otherwise prints a warning and leaves its rows loose:
nothing is lost, readers just open more files. The run ends with
:func:`compact_if_many`, which merges each partition's files into one.
"""
from __future__ import annotations

import threading
from typing import TextIO

from oba._messages import one_line
from oba.store.compaction import compact
from oba.store.lease import LeaseHeld
from oba.store.results import ResultStore
from oba.store.scan import COMPACTED, LOOSE


class RollingCompaction:
    """Folds the "ok" rows of ended trials in the background, ``threshold`` rows or more at a time (0: never).

    ``trials`` maps, for each trial, its cells' ids to the row ids each stores (one per stage, the last being the
    cell's id: :meth:`oba.suite.cells.Cell.row_ids`).
    """

    def __init__(self, results: str, trials: list[dict[str, list[str]]], threshold: int, stream: TextIO) -> None:
        self.results, self.threshold, self.stream = results, threshold, stream
        self.trial_of = {cell_id: index for index, trial in enumerate(trials) for cell_id in trial}
        self.rows_of = {cell_id: rows for trial in trials for cell_id, rows in trial.items()}
        self.waiting = [len(trial) for trial in trials]
        self.ok: list[list[str]] = [[] for _ in trials]
        self.foldable: list[str] = []
        self.folded = 0
        self.lock = threading.Lock()
        self.worker: threading.Thread | None = None

    def cell_done(self, cell_id: str, ok: bool) -> None:
        """Note that ``cell_id`` reported (``ok`` or not); fold when enough rows of ended trials have gathered."""
        with self.lock:
            trial = self.trial_of.pop(cell_id, None)
            if trial is None:
                return
            if ok:
                self.ok[trial].append(cell_id)
            self.waiting[trial] -= 1
            if self.waiting[trial] == 0:
                self.foldable += [row for done in self.ok[trial] for row in self.rows_of[done]]
                self.ok[trial] = []
            self._start_fold_if_due()

    def _start_fold_if_due(self) -> None:
        if self.threshold <= 0 or len(self.foldable) < self.threshold:
            return
        if self.worker is not None and self.worker.is_alive():
            return
        rows, self.foldable = self.foldable, []
        self.worker = threading.Thread(target=self._fold, args=(rows,), name="oba-rolling-compaction", daemon=True)
        self.worker.start()

    def _fold(self, rows: list[str]) -> None:
        try:
            summary = compact(self.results, rows=set(rows), merge=False)
        except LeaseHeld:
            with self.lock:
                self.foldable = rows + self.foldable
            return
        except Exception as err:  # a failed fold loses nothing: its rows stay loose parts
            self.stream.write(f"warning: folding {len(rows)} result parts failed, they stay loose: "
                              f"{one_line(f'{type(err).__name__}: {err}')}\n")
            return
        with self.lock:
            self.folded += summary.folded

    def close(self) -> int:
        """Wait for the fold in flight (rows still waiting stay loose); return the parts folded in all."""
        with self.lock:
            worker = self.worker
        if worker is not None:
            worker.join()
        return self.folded


def compact_if_many(results: str, threshold: int, stream: TextIO) -> None:
    """Compact the store (:func:`oba.store.compaction.compact`) when it holds at least ``threshold`` loose parts (0:
    never) or a partition holds several compacted files (the run's folds wrote them), so that reports, the
    leaderboard and ``oba check`` read one file per suite × model × dataset instead of one per cell (at 10^5
    cells: about 1 s instead of minutes). A compaction someone else runs meanwhile is left to finish it."""
    if threshold <= 0:
        return
    files = ResultStore(results).files()
    loose = sum(f.kind == LOOSE for f in files)
    compacted = [f.path.rsplit("/", 1)[0] for f in files if f.kind == COMPACTED]
    if loose < threshold and len(compacted) == len(set(compacted)):
        return
    stream.write(f"compacting {results}: {loose} loose result parts, {len(compacted)} compacted files "
                 f"([run] compact_parts = {threshold})\n")
    try:
        summary = compact(results)
    except LeaseHeld as held:
        stream.write(f"not compacted: {held}\n")
        return
    stream.write(f"compacted: {summary.folded} parts folded into {len(summary.written)} file(s)\n")
