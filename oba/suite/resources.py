"""What a trial asks of the cluster, and how many trials fit at once without a trial waiting for its own workers."""
from __future__ import annotations

import math

from oba.suite.config import Suite


def trial_slots(resources: dict[str, float], cpu: float, gpu: float, max_concurrent: int | None) -> int:
    """How many trials asking for ``cpu`` CPUs and ``gpu`` GPUs the cluster's ``resources`` run at once (at least 1,
    at most ``max_concurrent`` when that is set)."""
    fits = [int(resources.get(name, 0) // need) for name, need in (("CPU", cpu), ("GPU", gpu)) if need > 0]
    slots = max(1, min(fits)) if fits else 1
    return min(slots, max_concurrent) if max_concurrent else slots


def trial_need(cpu: float, gpu: float, workers: int) -> dict[str, float]:
    """The most a trial holds at once: its own ``cpu``/``gpu`` and, with ``workers`` > 1, its Ray Train workers'.

    Ray Train V2 (Ray's default; read in Ray 2.60) runs a ``TorchTrainer``
    started inside a Tune trial in a placement group of its own, one bundle per worker,
    created when ``fit`` is called and removed when it returns; it does not use
    bundles reserved in the trial's placement group (a
    ``PlacementGroupFactory`` with worker bundles would hold CPUs that the
    workers then wait for beside it). So a trial asks Tune only for its own
    resources (it evaluates, measures latency and recalibrates batch norm
    itself, and sits idle while its workers run), and the runner caps
    concurrent trials (:func:`trial_slots` of this need) so that every running
    trial's workers fit beside every running trial: no trial ever waits for
    workers that other trials' reservations block. Each worker asks for the
    trial's threads, ``max(1, int(cpu))`` CPUs, and on a GPU trial one whole
    GPU; the trial's own GPU share is counted as whole GPUs there, since a
    fraction left over on a GPU another trial shares cannot host a worker.
    With one worker this is just ``cpu`` and ``gpu``.
    """
    if workers == 1:
        return {"CPU": cpu, "GPU": gpu}
    return {"CPU": cpu + workers * max(1, int(cpu)), "GPU": math.ceil(gpu) + workers if gpu > 0 else 0.0}


def worker_problems(suite: Suite, resources: dict[str, float]) -> list[str]:
    """Why one trial of ``suite`` and its workers cannot run at once on a cluster with ``resources`` (empty if they can)."""
    workers = suite.resources["workers"]
    if workers == 1:
        return []
    need = trial_need(float(suite.resources["cpu"]), float(suite.resources["gpu"]), workers)
    short = [f"{need[name]:g} {name}s (the cluster has {resources.get(name, 0):g})" for name in need
             if need[name] > resources.get(name, 0)]
    if not short:
        return []
    return [f"{suite.path}: [resources] workers = {workers}: a trial and its {workers} Ray Train workers need "
            f"{' and '.join(short)}; lower workers or cpu/gpu, or add nodes"]
