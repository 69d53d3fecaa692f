"""What a run will do, checked before any compute.

:func:`plan_run` resolves a run's locations and checks everything that can be
checked before a model is trained. Every local path (results, checkpoint cache,
data root) is resolved here, on the driver, to an absolute path with ``~``
expanded: Tune runs each trial in a working folder of its own, where a relative
path would point nowhere. Then: the results location is a folder a file can
be written to (a probe file is written and removed; missing folders are
created), stored cells are read (an unreadable part is reported and its cell
runs again), the files of every dataset a pending cell needs are where the
loaders will look, the pretrained weights a dense model is given are in place
with the pinned SHA-256 (unless the checkpoint cache already holds them
evaluated, or they may be downloaded), the dense-checkpoint cache and Tune's
storage (``[run] tune_storage``, when set) are writable, every ``torchvision:``/``timm:`` model a
channels cell prunes has pruning groups that can be built in time (:mod:`oba.pruning.probe`),
and a named Ray cluster answers (:func:`oba.suite.cluster.probe`). Every problem is reported at
once, one line each, as a :class:`PreflightError`. A dry run
(``missing_ok=True``) instead returns missing data and weights, when they are
the only problems, in :attr:`Plan.missing`: what must be put in place before
the run can start.
:func:`describe` is one cell's line in a dry run's listing.
"""
from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from oba import data
from oba._errors import UserError
from oba._messages import one_line
from oba.models.weights import Weights, WeightsError, check
from oba.pruning.probe import groups_problem
from oba.store.paths import resolve_path, resolve_results
from oba.store.results import ResultStore, UnreadablePart, filesystem
from oba.suite.cells import Cell, expand, expand_grid
from oba.suite.cluster import ClusterUnreachable, probe
from oba.suite.config import Suite
from oba.training.checkpoints import weights_key


class PreflightError(UserError):
    """A run cannot start: ``problems`` lists every reason, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Plan:
    """A checked run: every cell, those still to run, and the resolved locations the trials use."""

    cells: list[Cell]
    todo: list[Cell]
    results: str
    cache_dir: str
    data_root: str | None
    unreadable: list[UnreadablePart]
    weights: list[str]
    """One line per pretrained-weights dense model still needed: the file it is read from, or where it comes from."""
    datasets: list[str] = field(default_factory=list)
    """One line per dataset still needed that is in place: ``<name>: <where its files are>``."""
    missing: list[str] = field(default_factory=list)
    """With ``missing_ok``: one line per dataset or weights file still needed that is not in place, saying what to
    place where (otherwise these are :class:`PreflightError` problems)."""


def resolve_cache(suite: Suite, cache_dir: str | None) -> str:
    """The dense-checkpoint cache: ``cache_dir``, else the suite's ``[run] cache_dir``, else ``.cache/checkpoints``;
    resolved like a results location (:func:`resolve_results`)."""
    return resolve_results(cache_dir or suite.run.get("cache_dir") or os.path.join(".cache", "checkpoints"))


def writable_folder_problem(fs: pafs.FileSystem, path: str, what: str) -> str | None:
    """None when a file can be written in folder ``path`` (created if missing), else the problem in one line."""
    ancestor = path
    while fs.get_file_info(ancestor).type == pafs.FileType.NotFound and posixpath.dirname(ancestor) != ancestor:
        ancestor = posixpath.dirname(ancestor)
    if fs.get_file_info(ancestor).type == pafs.FileType.File:
        where = "is a file" if ancestor == path else f"is under {ancestor}, which is a file"
        return f"{what} {path} {where}, not a folder"
    probe = f"{path}/.oba-write-probe-{uuid.uuid4().hex}"
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as sink:
            sink.write(b"probe")
        fs.delete_file(probe)
    except (OSError, pa.ArrowException) as err:
        return f"{what} {path} is not writable: {one_line(str(err))}"
    return None


def plan_run(suite: Suite, results: str, cache_dir: str | None = None, address: str | None = None,
             missing_ok: bool = False) -> Plan:
    """The checked plan of running ``suite`` into ``results`` (on the Ray cluster at ``address``, if given).

    Raises :class:`PreflightError` listing every problem found. With ``missing_ok``, missing data and weights
    files alone raise nothing: they are listed in :attr:`Plan.missing` (with any other problem, all raise).
    """
    results = resolve_results(results)
    try:
        store = ResultStore(results)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise PreflightError([f"results location {results}: {one_line(str(err))}"]) from err
    problem = writable_folder_problem(store.fs, store.root, "results location")
    if problem:
        raise PreflightError([problem])
    cells = expand(suite)
    stored, unreadable = store.read_readable(["cell_id", "status"])
    done = set(stored.loc[stored["status"] == "ok", "cell_id"])
    todo = [c for c in cells if c.cell_id not in done]
    cache = resolve_cache(suite, cache_dir)
    root = data.data_root(suite.data.get("root"))
    root = resolve_path(root) if root is not None else None
    missing: list[str] = []
    problems: list[str] = []
    datasets: list[str] = []
    weights: list[str] = []
    if todo:
        for name in dict.fromkeys(c.dataset for c in todo):
            try:
                datasets.append(f"{name}: {data.check_files(name, root, download=suite.data.get('download', False))}")
            except (FileNotFoundError, ValueError) as err:
                missing.append(f"dataset {name}: {one_line(str(err))}")
        for model, dataset, seed in dict.fromkeys((c.model, c.dataset, c.seed) for c in todo):
            settings = suite.dense_for(model, dataset, seed)
            if "weights" in settings:
                try:
                    line = _weights_line(suite, model, dataset, settings, cache)
                    weights += [line] if line not in weights else []  # pretrained weights serve every seed
                except WeightsError as err:
                    reason = f"dense model {model}: {one_line(str(err))}"
                    missing += [reason] if reason not in missing else []
        for model in dict.fromkeys(c.model for c in todo if c.structure == "channels"):
            problem = groups_problem(model)
            if problem:
                problems.append(problem)
        problem = writable_folder_problem(*filesystem(cache), "checkpoint cache")
        if problem:
            problems.append(problem)
        if suite.run["tune_storage"]:
            problem = writable_folder_problem(*filesystem(resolve_results(suite.run["tune_storage"])),
                                              "Tune storage ([run] tune_storage)")
            if problem:
                problems.append(problem)
        if address is not None:
            try:
                probe(address)
            except ClusterUnreachable as err:
                problems.append(str(err))
    if problems or (missing and not missing_ok):
        raise PreflightError(missing + problems)
    return Plan(cells, todo, results, cache, root, unreadable, weights, datasets, missing)


def describe(cell: Cell) -> str:
    """A cell's place, schedule and dense model in one line, e.g.
    ``resnet32-wide/cifar10/oba/channels/global/s=0  r=0.95 iterative 0.4/…/0.95  dense trained (200 epochs)``."""
    c = cell.config
    dense = c["dense"]
    if "weights" in dense:
        source = f"weights {dense['weights']}" + (f" (sha256 {dense['weights_sha256']})" if dense["weights_sha256"] else "")
    else:
        source = f"trained ({dense['epochs']} epoch{'' if dense['epochs'] == 1 else 's'})"
    return (f"{c['model']}/{c['dataset']}/{c['criterion']}/{c['structure']}/{c['allocation']}/s={c['seed']}  "
            f"r={c['ratio']:g} {cell.schedule()}  dense {source}")


def grid_sizes(suite: Suite) -> list[str]:
    """One line per grid of ``suite``: its table, its cells, and how many of them an earlier grid already holds."""
    seen: set[str] = set()
    lines = []
    for grid in suite.grids:
        ids = [c.cell_id for c in expand_grid(suite, grid)]
        shared = sum(i in seen for i in ids)
        seen.update(ids)
        count = f"{len(ids)} cell{'' if len(ids) == 1 else 's'}"
        lines.append(f"[{grid.table}]: {count}" + (f" ({shared} already in an earlier grid)" if shared else ""))
    return lines


def _weights_line(suite: Suite, model: str, dataset: str, settings: dict[str, Any], cache: str) -> str:
    """Where dense ``model``'s weights (its resolved ``[dense]`` ``settings``) for ``dataset`` come from; raises
    :class:`WeightsError` when they cannot."""
    spec = Weights.from_settings(settings)
    key = weights_key(model, dataset, spec, suite.data.get("options", {}))
    fs, root = filesystem(cache)
    cached = f"{root}/{key}.pt"
    if fs.get_file_info(cached).type == pafs.FileType.File:
        return f"{model} on {dataset}: {spec.source}, evaluated in the checkpoint cache ({cached})"
    found = check(spec, model)
    if isinstance(found, str):
        return f"{model} on {dataset}: {spec.source}, to be downloaded to {found}"
    return f"{model} on {dataset}: {found.source} from {found.location} (sha256 {found.sha256})"
