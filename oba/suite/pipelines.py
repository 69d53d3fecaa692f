"""Cell pipelines by name: what a trial runs for each of its cells.

A pipeline is a class with ``needs_dense`` (whether the run prepares dense
checkpoints before its trials start) and a static ``run(cell, *, data_root,
download, cache_dir, git_sha, device, num_workers, write, stored) -> row`` that
never raises for a failure inside the cell (it returns a row with status
"error"). It returns the cell's last row; rows of an iterative cell's earlier
stages go to ``write(row)`` as they end, and ``stored(row_id)`` (the stored
row or None) lets a cell resume after its stages already stored.
``full`` is the benchmark (:mod:`oba.suite.cell`); ``noop`` stores each cell's
identity without computing anything (:mod:`oba.suite.noop`), to measure what
the runner itself costs per cell.
"""
from __future__ import annotations

from typing import Any, Protocol

from oba._registry import Registry
from oba.suite.cells import Cell


class Pipeline(Protocol):
    """What a registered pipeline provides (see the module docstring)."""

    needs_dense: bool

    @staticmethod
    def run(cell: Cell, **settings: Any) -> dict[str, Any]: ...


PIPELINES: Registry[type[Pipeline]] = Registry("pipeline", "pipelines", "oba.suite", decorator="PIPELINES.register")
