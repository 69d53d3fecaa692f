"""The ``noop`` pipeline: a cell's row with its identity and provenance, nothing computed.

It measures what the runner itself costs per cell (``oba run --fake-cell``,
``benchmarks/driver_overhead.py``). Its rows say so in ``device``; every
measurement column is null.
"""
from __future__ import annotations

import datetime as dt
import socket
from typing import Any

from oba.suite.cells import Cell
from oba.suite.pipelines import PIPELINES

NOOP_DEVICE = "none (noop pipeline: nothing computed)"


@PIPELINES.register("noop")
class NoopPipeline:
    """Stores each cell's identity with status "ok" and no measurement; prepares no dense checkpoint."""

    needs_dense = False

    @staticmethod
    def run(cell: Cell, *, git_sha: str = "unknown", **_settings: Any) -> dict[str, Any]:
        """The cell's identity row, status "ok", started and finished now."""
        now = dt.datetime.now(dt.timezone.utc)
        return {**cell.identity(), "status": "ok", "git_sha": git_sha, "device": NOOP_DEVICE,
                "ray_node": socket.gethostname(), "started_at": now, "finished_at": now, "compute_seconds": 0.0}
