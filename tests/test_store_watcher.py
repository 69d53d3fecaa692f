"""The run's store watcher: polls spaced by their cost, and cells a compaction moved before a poll saw them."""
from __future__ import annotations

import io
import time
from pathlib import Path

from results_fixtures import row

from oba.store.compaction import compact
from oba.store.results import ResultStore
from oba.suite.cells import Cell
from oba.suite.progress import Progress, StoreWatcher


def _cell(seed: int, **fields) -> tuple[Cell, dict]:
    stored = row(seed=seed, **fields)
    config = {k: stored[k] for k in ("model", "dataset", "criterion", "structure", "allocation", "ratio", "seed")}
    return Cell("fixture", stored["cell_id"], config), stored


class TimedWatcher(StoreWatcher):
    """Records when each poll started, how long its listing and the whole poll took."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.polls: list[tuple[float, float, float]] = []

    def poll(self) -> None:
        began = time.monotonic()
        super().poll()
        self.polls.append((began, self.last_listing_seconds, time.monotonic() - began))


def test_polls_are_spaced_by_twenty_times_their_listings_cost(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    for seed in range(1000):
        store.write(row(seed=seed))
    cell, _ = _cell(10**6)
    watcher = TimedWatcher(store, [cell], Progress(1, 0, io.StringIO()), None, interval=0.001, cost_factor=20.0)
    watcher.start()
    time.sleep(3.0)
    watcher.stopping.set()
    watcher.join()
    assert len(watcher.polls) >= 2
    for (start, listing, _), (next_start, _, _) in zip(watcher.polls, watcher.polls[1:]):
        assert listing > 0 and next_start - start >= 20.0 * listing, "a fixed 1 ms interval would poll right after"


def test_reading_many_ended_cells_does_not_space_the_next_poll(tmp_path: Path) -> None:
    """400 cells end at once: the poll that reports them reads 400 parts, yet the next poll comes after 20 times
    the listing alone (spacing by the whole poll would wait 20 times the reads too, and fall further behind)."""
    store = ResultStore(str(tmp_path))
    cells = [_cell(seed) for seed in range(400)]
    log = io.StringIO()
    watcher = TimedWatcher(store, [c for c, _ in cells], Progress(400, 0, log), None, interval=0.001, cost_factor=20.0)
    for _, stored in cells:
        store.write(stored)
    watcher.poll()
    (_, listing, whole), = watcher.polls
    assert not watcher.pending and len(log.getvalue().splitlines()) == 400
    assert whole > 5 * listing, "reading 400 parts costs more than listing them"
    watcher.start()
    time.sleep(0.5)
    watcher.stopping.set()
    watcher.join()
    assert len(watcher.polls) >= 2 and watcher.polls[1][0] - watcher.polls[0][0] < 20.0 * whole


def test_cells_compacted_before_a_poll_saw_them_are_reported_at_stop(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    (good, good_row), (bad, bad_row) = _cell(1), _cell(2, status="error", error="RuntimeError: boom")
    log = io.StringIO()
    done: list[tuple[str, bool]] = []
    watcher = StoreWatcher(store, [good, bad], Progress(2, 0, log), lambda cid, ok: done.append((cid, ok)),
                           interval=3600)
    store.write(good_row)
    store.write(bad_row)
    compact(str(tmp_path), settle=0.0)
    watcher.start()
    watcher.stop()
    assert sorted(done) == sorted([(good.cell_id, True), (bad.cell_id, False)])
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and any("ERR" in line and "RuntimeError: boom" in line for line in lines)
