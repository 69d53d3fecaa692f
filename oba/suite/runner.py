"""Run a suite: the unfinished cells packed into Ray Tune trials, each cell's result stored as a Parquet part.

Everything checkable is checked before any compute (:mod:`oba.suite.plan`).
Without ``address`` a fresh local Ray starts; ``address`` joins an existing
cluster, probed first (:mod:`oba.suite.cluster`). Dense
checkpoints are prepared first (one Ray task per distinct model × dataset ×
seed, trained once, cached under a folder every node can read), then the cells
run, packed into at most ``[run] max_trials`` trials (:mod:`oba.suite.packing`;
a trial runs its cells one after another and stores each row as soon as the
cell ends, so a trial that dies keeps every cell it finished, and its retry
runs only the others), asking for the suite's per-trial resources, both on the device
:func:`trial_device` names (CUDA when ``[resources] gpu`` is above 0, else the
CPU); each task and trial uses its CPUs (``resources.cpu``) as torch threads and
as data-loader workers for file-backed data. On a cluster of several nodes the
results location and the checkpoint cache must be reachable from every node
(a URI, or a mount every node shares, declared with ``shared_mount``); a path on
the driver's disk is refused before anything runs. Cells already stored
with status "ok" are skipped, so an interrupted run resumes where it stopped;
failed cells are stored with their error and run again next time. A trial lost
with its node is retried elsewhere (``run.max_failures``); a cell whose trial
failed for good, or ended without its row reaching the store, is stored as an
error with that reason. A failed cell's one-line reason is printed as it fails;
the summary groups failures by reason (progress lines: :mod:`oba.suite.progress`). The ``pipeline`` decides what a cell
computes (:mod:`oba.suite.pipelines`; ``noop`` measures the runner alone).
On a GPU, a trial given a fraction of one is capped at that share of its memory,
and a trial whose failed cell left CUDA unusable (a sticky error) ends its
actor, so the retry (which skips the cells already stored "ok") and later
trials start in a fresh process (:mod:`oba.training.device_health`).
A suite with ``[resources] workers`` N > 1 runs each cell's scoring and
fine-tuning on N Ray Train workers started from inside its trial; how trials
and workers share the cluster without deadlock is :func:`~oba.suite.resources.trial_need`.
While cells run, the rows of ended trials are folded into compacted files
whenever ``[run] compact_parts`` of them have gathered
(:mod:`oba.store.rolling_compaction`), so the store never holds many more loose
parts than that; the run ends with
:func:`~oba.store.rolling_compaction.compact_if_many`.
Tune keeps its experiment folder where ``[run] tune_storage`` says (a temporary
folder by default; :mod:`oba.suite.tune_storage`).
SIGINT and SIGTERM stop the run within seconds (:mod:`oba.suite.interrupt`):
stored cells are kept and the next run resumes. While cells run, the run holds
the results location's lease (:mod:`oba.store.lease`): a second driver on the same
store refuses at once, naming this one.
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from oba._errors import UserError
from oba._lazy import lazy_module
from oba._messages import one_line, reason, silenced
from oba._versions import package_versions
from oba.store.lease import Lease
from oba.store.results import ResultStore
from oba.store.rolling_compaction import RollingCompaction, compact_if_many
from oba.suite.cells import Cell, dense_keys
from oba.suite.cluster import alive_nodes, node_resources, resource_problems, start_ray_or_stop, storage_problems
from oba.suite.config import Suite
from oba.suite.interrupt import stop_on_signals
from oba.suite.packing import pack
from oba.suite.pipelines import PIPELINES
from oba.suite.plan import Plan, PreflightError, plan_run
from oba.suite.progress import Progress, StoreWatcher
from oba.suite.resources import trial_need, trial_slots, worker_problems
from oba.suite.trial import _prepare_dense, _trial, trial_device
from oba.suite.tune_storage import tune_storage

ray = lazy_module("ray")
tune = lazy_module("ray.tune")

NOT_RUN = "not run (the run stopped first)"
UNATTRIBUTED = "<unattributed>"
"""Key of the trial errors whose cell Tune no longer knows; a cell left without a row is reported with them."""
NO_ROW = ("its trial ended but its row never reached the results location {results} (was it written to a disk "
          "that this machine does not share?)")
"""Reason stored for a cell whose trial ended without error yet left no row where the driver reads."""


@dataclass(frozen=True)
class Failure:
    """A cell that did not end "ok", and the one-line reason."""

    label: str
    reason: str


@dataclass
class RunSummary:
    """What a run did: cells in the grid, skipped as already done, run now, and those that failed."""

    total: int
    skipped: int
    ran: int
    failed: int
    seconds: float
    failures: list[Failure] = field(default_factory=list)

    def by_reason(self) -> dict[str, list[str]]:
        """Labels of the failed cells grouped by reason, the most common reason first."""
        groups: dict[str, list[str]] = {}
        for failure in self.failures:
            groups.setdefault(failure.reason, []).append(failure.label)
        return dict(sorted(groups.items(), key=lambda item: -len(item[1])))


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run after Ray was shut down; ``summary`` says what is stored."""

    def __init__(self, stopped_by: signal.Signals, summary: RunSummary) -> None:
        super().__init__(stopped_by.name)
        self.signal, self.summary = stopped_by, summary

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by this signal: 128 + its number."""
        return 128 + int(self.signal)


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
    shared_mount: bool = False,
    pipeline: str = "full",
) -> RunSummary:
    """Run every unfinished cell of ``suite`` with ``pipeline``, storing rows under ``results``.

    Raises :class:`~oba.suite.plan.PreflightError` before any compute when the
    run cannot work (among others: a node-local results location or cache on
    a cluster of several nodes, unless ``shared_mount`` says the path is
    shared by every node), :class:`~oba.suite.cluster.ClusterUnreachable` when
    ``address`` does not answer, and :class:`RunInterrupted`
    (carrying the summary of what is stored) on SIGINT or SIGTERM.
    """
    if max_concurrent is not None and max_concurrent < 0:
        raise UserError(f"max_concurrent must be a whole number of at least 0 (0: as many trials as the cluster "
                        f"holds), got {max_concurrent}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    start = time.monotonic()
    cell_pipeline = PIPELINES.get(pipeline)
    plan = plan_run(suite, results, cache_dir, address if not ray.is_initialized() else None)
    stream.writelines(f"warning: skipped {part}; a cell without a readable part runs again\n" for part in plan.unreadable)
    stream.write(f"suite {suite.name}: {len(plan.cells)} cells, {len(plan.cells) - len(plan.todo)} already stored, "
                 f"{len(plan.todo)} to run\n")
    if not plan.todo:
        return RunSummary(len(plan.cells), len(plan.cells), 0, 0, time.monotonic() - start)
    if 0 < float(suite.resources["gpu"]) < 1:
        stream.write(f"note: trials share GPUs ([resources] gpu = {suite.resources['gpu']}): each is capped at that "
                     "share of GPU memory, and latency is measured under its neighbours' load (use gpu = 1 for "
                     "latency you will compare)\n")
    trial_errors: dict[str, str] = {}
    with Lease(plan.results, f"oba run {suite.name}", suite=suite.name), stop_on_signals() as watch:
        try:
            started_ray = not ray.is_initialized()
            if started_ray:
                start_ray_or_stop(address, num_cpus, watch)
            try:
                locations = {"results location": plan.results}
                if cell_pipeline.needs_dense:
                    locations["checkpoint cache"] = plan.cache_dir
                problems = storage_problems(locations, alive_nodes(), shared_mount)
                problems += resource_problems(suite.path, float(suite.resources["cpu"]),
                                              float(suite.resources["gpu"]), node_resources())
                problems += worker_problems(suite, ray.cluster_resources())
                if problems:
                    raise PreflightError(problems)
                trial_errors = _execute(plan, suite, max_concurrent, stream, on_cell_done, pipeline)
            finally:
                if started_ray:
                    ray.shutdown()
            compact_if_many(plan.results, suite.run["compact_parts"], stream)
        except KeyboardInterrupt:
            if watch.received is None:
                raise
            raise RunInterrupted(watch.received, _summary(plan, trial_errors, start)) from None
    return _summary(plan, trial_errors, start)


def _execute(plan: Plan, suite: Suite, max_concurrent: int | None, stream: TextIO,
             on_cell_done: Callable[[str, bool], None] | None, pipeline: str) -> dict[str, str]:
    """Prepare the dense checkpoints (when the pipeline needs them), then run the cells; return the reasons of
    trials that stored nothing. Every cell left without a row by a finished run is stored as an error with its reason."""
    store = ResultStore(plan.results)
    sha = git_sha()
    cpu, gpu = float(suite.resources["cpu"]), float(suite.resources["gpu"])
    threads = max(1, int(cpu))
    device = trial_device(gpu)
    keys = dense_keys(plan.todo) if PIPELINES.get(pipeline).needs_dense else []
    broken: dict[tuple[str, str, int], str] = {}
    if keys:
        prepare = ray.remote(num_cpus=cpu, num_gpus=gpu, max_retries=suite.run["max_failures"])(_prepare_dense)
        stream.write(f"preparing {len(keys)} dense checkpoint(s) in {plan.cache_dir}\n")
        futures = {key: prepare.remote(*key, suite, plan.cache_dir, plan.data_root, threads, device) for key in keys}
        for key, future in futures.items():
            try:
                ray.get(future)
            except ray.exceptions.RayError as err:  # the cells of a dense model that cannot be trained are stored as errors
                broken[key] = f"dense checkpoint {'/'.join(map(str, key))} failed: {_cause(err)}"
    progress = Progress(len(plan.cells), len(plan.cells) - len(plan.todo), stream)
    runnable = []
    for cell in plan.todo:
        key = (cell.model, cell.dataset, cell.seed)
        if key in broken:
            store.write(_error_row(cell, broken[key], sha, "none (the dense checkpoint failed before the cell ran)"))
            progress.update(cell.label(), False, reason(broken[key]))
        else:
            runnable.append(cell)
    if not runnable:
        return {}
    trials, running = pack_trials(runnable, suite, max_concurrent)
    rolling = RollingCompaction(plan.results, [{cell.cell_id: cell.row_ids() for cell in trial} for trial in trials],
                                suite.run["compact_parts"], stream)

    def cell_done(cell_id: str, ok: bool) -> None:
        rolling.cell_done(cell_id, ok)
        if on_cell_done is not None:
            on_cell_done(cell_id, ok)

    watcher = StoreWatcher(store, runnable, progress, cell_done)
    watcher.start()
    try:
        errors = _fit(trials, running, suite, plan, sha, cpu, gpu, threads, pipeline)
    finally:
        watcher.stop()
        folded = rolling.close()
        if folded:
            stream.write(f"folded {folded} result parts into compacted files while the run went on\n")
    for cell in runnable:
        if cell.cell_id in watcher.pending:  # no new row of this cell reached the store
            why = errors.get(cell.cell_id) or errors.get(UNATTRIBUTED) or NO_ROW.format(results=plan.results)
            store.write(_error_row(cell, why, sha, "none (no row came back from the cell's trial)"))
            progress.update(cell.label(), False, reason(why))
            if on_cell_done is not None:
                on_cell_done(cell.cell_id, False)
    return errors


def _error_row(cell: Cell, why: str, sha: str, device: str) -> dict[str, Any]:
    """The row the driver stores for a cell that could not store its own: status "error" and ``why``."""
    now = dt.datetime.now(dt.timezone.utc)
    return {**cell.identity(), "status": "error", "error": why, "git_sha": sha, "package_versions": package_versions(),
            "device": device, "ray_node": socket.gethostname(), "started_at": now, "finished_at": now}


def _cause(err: BaseException) -> str:
    """``Type: message`` of what failed inside a Ray task or trial (the task's own exception, not Ray's wrapper)."""
    cause = getattr(err, "cause", None)
    inner = cause if isinstance(cause, BaseException) else err
    return one_line(f"{type(inner).__name__}: {inner}")


def _summary(plan: Plan, trial_errors: dict[str, str], start: float) -> RunSummary:
    """What is stored now for the cells this run had to do."""
    stored, _ = ResultStore(plan.results).read_readable(["cell_id", "status", "error"])
    rows = {row["cell_id"]: row for row in stored.to_dict("records")}
    failures = []
    for cell in plan.todo:
        row = rows.get(cell.cell_id)
        if row is None:
            failures.append(Failure(cell.label(), trial_errors.get(cell.cell_id, trial_errors.get(UNATTRIBUTED, NOT_RUN))))
        elif row["status"] != "ok":
            failures.append(Failure(cell.label(), reason(row["error"] or f"status {row['status']}")))
    return RunSummary(len(plan.cells), len(plan.cells) - len(plan.todo), len(plan.todo), len(failures),
                      time.monotonic() - start, failures)


def pack_trials(cells: list[Cell], suite: Suite, max_concurrent: int | None
                ) -> tuple[list[list[Cell]], int | None]:
    """The trials ``cells`` are packed into (:func:`~oba.suite.packing.pack`, for the :func:`~oba.suite.resources.trial_slots` of
    :func:`~oba.suite.resources.trial_need` on the running Ray cluster), and the cap on trials running at once that Tune is given:
    those slots when cells have workers (so that every running trial's workers fit), else ``max_concurrent``
    (``[run] max_concurrent`` when None; None when 0: Tune runs what the resources allow)."""
    concurrent = max_concurrent if max_concurrent is not None else suite.run["max_concurrent"]
    need = trial_need(float(suite.resources["cpu"]), float(suite.resources["gpu"]), suite.resources["workers"])
    slots = trial_slots(ray.cluster_resources(), need["CPU"], need["GPU"], concurrent)
    return pack(cells, suite.run["max_trials"], slots), slots if suite.resources["workers"] > 1 else concurrent or None


def _fit(trials: list[list[Cell]], running: int | None, suite: Suite, plan: Plan, sha: str, cpu: float, gpu: float,
         threads: int, pipeline: str) -> dict[str, str]:
    """Run the ``trials`` (:func:`pack_trials`); return ``cell_id → reason`` for the cells of trials that failed
    outside the cells' own code.

    Each trial's cells travel through Ray's object store (one reference per
    trial), so Tune's own state holds only the trial's index. The experiment's
    name is unique (suite, UTC time to the microsecond, random suffix). Ray's
    own progress tables are silenced (the store watcher reports) and its SIGINT
    handler is left out (:mod:`oba.suite.interrupt` handles signals).
    """
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    references = [ray.put(trial) for trial in trials]
    param_space = {
        "trial": tune.grid_search(list(range(len(trials)))),
        "results": plan.results, "cache_dir": plan.cache_dir, "git_sha": sha, "threads": threads,
        "data_root": plan.data_root, "download": suite.data.get("download", False), "device": trial_device(gpu),
        "gpu": gpu,
        "pipeline": pipeline,
    }
    with tune_storage(suite.run["tune_storage"]) as storage:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_trial, trials=references), {"cpu": cpu, "gpu": gpu}),
            param_space=param_space,
            tune_config=tune.TuneConfig(max_concurrent_trials=running, reuse_actors=True),
            run_config=tune.RunConfig(
                name=experiment_name(suite.name),
                storage_path=storage.path,
                storage_filesystem=storage.filesystem,
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=suite.run["max_failures"]),
            ),
        )
        with silenced("ray.tune.execution.tune_controller"):  # each failed trial's cells report its cause
            outcome = tuner.fit()
        errors: dict[str, str] = {}
        unattributed = []
        for result in outcome:
            if result.error is None:
                continue
            if result.config is None:  # Tune lost the trial's state (e.g. with its node): its cells are unknown
                unattributed.append(_cause(result.error))
            else:
                for cell in trials[result.config["trial"]]:
                    errors[cell.cell_id] = f"trial failed: {_cause(result.error)}"
        if unattributed:
            errors[UNATTRIBUTED] = "a trial failed and Tune lost which cells it ran: " + "; ".join(unattributed)
        return errors


def experiment_name(suite: str) -> str:
    """A Tune experiment name no other run shares: the suite, the UTC time to the microsecond and a random suffix."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{suite}-{stamp}-{uuid.uuid4().hex[:8]}"
