"""Run a suite: one Ray Tune trial per unfinished cell, each result stored as a Parquet part.

On a laptop Ray starts locally; ``address`` joins an existing cluster. Dense
checkpoints are prepared first (one Ray task per distinct model × dataset ×
seed, trained once, cached under a folder every node can read), then the cells
run as trials asking for the suite's per-trial resources. Cells already stored
with status "ok" are skipped, so an interrupted run resumes where it stopped;
failed cells are stored with their error and run again next time. A trial lost
with its node is retried elsewhere (``run.max_failures``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from ..store import ResultStore
from .config import Suite
from .grid import Cell, dense_keys, expand


@dataclass
class RunSummary:
    """What a run did: cells in the grid, skipped as already done, run now, and failed."""

    total: int
    skipped: int
    ran: int
    failed: int
    seconds: float
    failures: list[str] = field(default_factory=list)


def git_sha() -> str:
    """The commit of the checkout this package runs from ("unknown" outside git)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def pending_cells(suite: Suite, results: str) -> tuple[list[Cell], list[Cell]]:
    """(all cells, cells not yet stored with status "ok")."""
    cells = expand(suite)
    done = ResultStore(results).finished(c.cell_id for c in cells)
    return cells, [c for c in cells if c.cell_id not in done]


class Progress:
    """One line per finished cell: done/total, failures, elapsed, ETA."""

    def __init__(self, total: int, already: int, stream: TextIO = sys.stderr) -> None:
        self.total, self.already, self.stream = total, already, stream
        self.done = self.failed = 0
        self.start = time.monotonic()

    def update(self, label: str, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        elapsed = time.monotonic() - self.start
        remaining = self.total - self.already - self.done
        eta = elapsed / self.done * remaining
        self.stream.write(
            f"[{self.already + self.done}/{self.total}] {'ok ' if ok else 'ERR'} {label} | failures {self.failed} | "
            f"elapsed {_clock(elapsed)} | eta {_clock(eta)}\n"
        )
        self.stream.flush()


class StoreWatcher(threading.Thread):
    """Reports each pending cell once a new part for it appears in the store (whoever wrote it)."""

    def __init__(self, store: ResultStore, cells: list[Cell], progress: Progress,
                 on_cell_done: Callable[[str, bool], None] | None, interval: float = 0.5) -> None:
        super().__init__(name="oba-store-watcher", daemon=True)
        self.store, self.progress, self.on_cell_done, self.interval = store, progress, on_cell_done, interval
        self.pending = {c.cell_id: c.label() for c in cells}
        self.before = store.versions()
        self.stopping = threading.Event()

    def poll(self) -> None:
        fresh = {cid for cid, mtime in self.store.versions().items() if self.before.get(cid) != mtime}
        for cell_id in sorted(fresh & set(self.pending)):
            ok = self.store.read_cell(cell_id)["status"] == "ok"
            self.progress.update(self.pending.pop(cell_id), ok)
            if self.on_cell_done is not None:
                self.on_cell_done(cell_id, ok)

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.poll()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _trial(config: dict[str, Any]) -> None:
    """Ray Tune trainable: run one cell, store its row, report its status."""
    import torch
    from ray import tune

    from .cell import run_cell

    torch.set_num_threads(max(1, int(config["threads"])))
    cell = Cell(**config["cell"])
    row = run_cell(cell, data_root=config["data_root"], download=config["download"], cache_dir=config["cache_dir"],
                   git_sha=config["git_sha"])
    ResultStore(config["results"]).write(row)
    tune.report({"cell_ok": row["status"] == "ok", "compute_seconds": row["compute_seconds"]})


def _prepare_dense(model: str, dataset: str, seed: int, suite: Suite, cache_dir: str, threads: int) -> str:
    import torch

    from ..checkpoints import dense_checkpoint
    from ..train import Recipe

    torch.set_num_threads(max(1, threads))
    ckpt = dense_checkpoint(
        model, dataset, Recipe.from_dict(suite.dense[model]), seed, cache_dir, dataset_options=suite.data.get("options", {}),
        data_root=suite.data.get("root"), download=suite.data.get("download", False),
    )
    return str(ckpt.path)


def run_suite(
    suite: Suite,
    results: str,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    cache_dir: str | None = None,
    num_cpus: int | None = None,
    stream: TextIO = sys.stderr,
    on_cell_done: Callable[[str, bool], None] | None = None,
) -> RunSummary:
    """Run every unfinished cell of ``suite``, storing rows under ``results``."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    start = time.monotonic()
    cells, todo = pending_cells(suite, results)
    stream.write(f"suite {suite.name}: {len(cells)} cells, {len(cells) - len(todo)} already stored, {len(todo)} to run\n")
    if not todo:
        return RunSummary(len(cells), len(cells), 0, 0, time.monotonic() - start)
    cache_dir = os.path.abspath(cache_dir or suite.run.get("cache_dir") or os.path.join(".cache", "checkpoints"))
    results = results if "://" in results else os.path.abspath(results)
    store = ResultStore(results)
    sha = git_sha()
    cpu, gpu = float(suite.resources["cpu"]), float(suite.resources["gpu"])
    threads = max(1, int(cpu))

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        prepare = ray.remote(num_cpus=cpu, num_gpus=gpu, max_retries=suite.run["max_failures"])(_prepare_dense)
        keys = dense_keys(todo)
        stream.write(f"preparing {len(keys)} dense checkpoint(s) in {cache_dir}\n")
        futures = {key: prepare.remote(*key, suite, cache_dir, threads) for key in keys}
        broken: dict[tuple[str, str, int], str] = {}
        for key, future in futures.items():
            try:
                ray.get(future)
            except Exception as err:  # the cells of a dense model that cannot be trained are stored as errors
                broken[key] = f"dense checkpoint {key} failed: {type(err).__name__}: {err}"
        progress = Progress(len(cells), len(cells) - len(todo), stream)
        runnable = []
        for cell in todo:
            key = (cell.config["model"], cell.config["dataset"], cell.config["seed"])
            if key in broken:
                store.write({"suite": cell.suite, "cell_id": cell.cell_id, "config": cell.config, "status": "error",
                             "error": broken[key], "git_sha": sha,
                             **{k: cell.config[k] for k in ("model", "dataset", "criterion", "structure", "allocation", "ratio", "seed")}})
                progress.update(cell.label(), False)
            else:
                runnable.append(cell)
        if runnable:
            watcher = StoreWatcher(store, runnable, progress, on_cell_done)
            watcher.start()
            try:
                _fit(runnable, suite, results, cache_dir, sha, cpu, gpu, threads, max_concurrent)
            finally:
                watcher.stop()
    finally:
        if started_ray:
            ray.shutdown()
    stored = store.statuses()
    failures = [c.label() for c in todo if stored.get(c.cell_id) != "ok"]
    return RunSummary(len(cells), len(cells) - len(todo), len(todo), len(failures), time.monotonic() - start, failures)


def _fit(cells: list[Cell], suite: Suite, results: str, cache_dir: str, sha: str, cpu: float, gpu: float, threads: int,
         max_concurrent: int | None) -> None:
    """One Tune trial per cell; Ray's own progress tables are silenced (the store watcher reports)."""
    from ray import tune

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    concurrent = max_concurrent if max_concurrent is not None else suite.run["max_concurrent"]
    param_space = {
        "cell": tune.grid_search([{"suite": c.suite, "cell_id": c.cell_id, "config": c.config} for c in cells]),
        "results": results, "cache_dir": cache_dir, "git_sha": sha, "threads": threads,
        "data_root": suite.data.get("root"), "download": suite.data.get("download", False),
    }
    tuner = tune.Tuner(
        tune.with_resources(_trial, {"cpu": cpu, "gpu": gpu}),
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent or None, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{suite.name}-{int(time.time())}",
            storage_path=tempfile.mkdtemp(prefix="oba-tune-"),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=suite.run["max_failures"]),
        ),
    )
    tuner.fit()
