"""``[resources] workers``: several Ray Train workers per cell, the suite key, and trials that cannot deadlock.

Ground truth for the cells: the same taylor cell run in one process (scores of
sharded calibration batches agree to 1e-6, so the same units go); for the
scheduling, resource counts worked out by hand.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from oba.store.results import ResultStore
from oba.suite.cell import run_cell
from oba.suite.cells import expand
from oba.suite.config import SuiteError, load_suite
from oba.suite.plan import PreflightError
from oba.suite.runner import run_suite, trial_need, trial_slots, worker_problems
from suites import tiny_suite


def workers_suite(folder: Path, workers: int | None, name: str = "workers", criteria=("taylor",),
                  finetune_batch: int = 64) -> Path:
    """The tiny suite with two calibration batches (one per worker), taylor2-group probed, and ``[resources] workers``
    (left out when None)."""
    path = tiny_suite(folder, name=name, criteria=criteria)
    text = path.read_text().replace("[calibration]\nbatches = 1", "[calibration]\nbatches = 2")
    text = text.replace("[finetune]\nepochs = 1\nbatch_size = 64", f"[finetune]\nepochs = 1\nbatch_size = {finetune_batch}")
    text += '\n[criterion_options]\n"taylor2-group" = { probes = 4 }\n'
    if workers is not None:
        text = text.replace("[resources]\ncpu = 1", f"[resources]\ncpu = 1\nworkers = {workers}")
    path.write_text(text)
    return path


def test_one_worker_leaves_every_cell_id_as_it_was(tmp_path: Path) -> None:
    before = expand(load_suite(workers_suite(tmp_path, None, "a", criteria=("taylor", "taylor2-group"))))
    one = expand(load_suite(workers_suite(tmp_path, 1, "b", criteria=("taylor", "taylor2-group"))))
    assert [c.cell_id for c in one] == [c.cell_id for c in before]
    assert all("workers" not in c.config and c.workers == 1 for c in one)


def test_two_workers_are_part_of_each_cells_config_id_and_label(tmp_path: Path) -> None:
    (one,) = expand(load_suite(workers_suite(tmp_path, None, "a")))
    (two,) = expand(load_suite(workers_suite(tmp_path, 2, "b")))
    assert two.config == {**one.config, "workers": 2} and two.workers == 2
    assert two.cell_id != one.cell_id
    assert two.label() == one.label() + "/workers=2"


@pytest.mark.parametrize("value, message", [
    ("0", "must be an integer of at least 1"),
    ("-2", "must be an integer of at least 1"),
    ("1.5", "expected int, got float 1.5"),
    ("true", "expected int, got bool True"),
])
def test_workers_must_be_a_positive_integer(tmp_path: Path, value: str, message: str) -> None:
    path = workers_suite(tmp_path, None)
    path.write_text(path.read_text().replace("[resources]\ncpu = 1", f"[resources]\ncpu = 1\nworkers = {value}"))
    line = path.read_text().splitlines().index(f"workers = {value}") + 1
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    assert str(caught.value).startswith(f"{path}:{line}: [resources] workers: {message}")
    assert "\n" not in str(caught.value)


def test_workers_must_split_every_fine_tuning_batch_evenly(tmp_path: Path) -> None:
    path = workers_suite(tmp_path, 3, finetune_batch=64)
    line = path.read_text().splitlines().index("workers = 3") + 1
    with pytest.raises(SuiteError, match=re.escape(f"{path}:{line}: [resources] workers: 3 workers split each "
                                                   "fine-tuning batch evenly, but resnet8's [finetune] batch_size "
                                                   "64 is not a multiple of 3")):
        load_suite(path)
    assert load_suite(workers_suite(tmp_path, 4, "four", finetune_batch=64)).resources["workers"] == 4


def test_only_shardable_criteria_with_a_batch_per_worker_are_scored_by_workers() -> None:
    import torch

    import oba.criteria as criteria
    from oba.suite.cell_workers import CellWorkers, ShardedCriterion

    two = CellWorkers.of(2, torch.device("cpu"), None)
    taylor = criteria.get("taylor", mode="eval", signed=True)
    sharded, scored_by = two.scoring(taylor, calibration_batches=2)
    assert isinstance(sharded, ShardedCriterion) and scored_by == 2 and sharded.inner is taylor
    assert (sharded.name, sharded.signed, sharded.mode, sharded.config()) == ("taylor", True, "eval", taylor.config())
    sharded.reseed(3)
    assert taylor.step == 3
    assert two.scoring(taylor, calibration_batches=1) == (taylor, 1)  # fewer batches than workers
    group = criteria.get("taylor2-group", probes=4)
    assert two.scoring(group, calibration_batches=2) == (group, 1)
    assert CellWorkers.of(1, torch.device("cpu"), 4).scoring(taylor, 2) == (taylor, 1)


@pytest.mark.parametrize("name, options", [("oba", {}), ("fastoba", {}), ("taylor", {"normaliser": "max"})])
def test_a_sharded_criterion_reduces_and_normalises_as_its_inner_criterion(name: str, options: dict) -> None:
    import torch

    import oba.criteria as criteria
    from oba.suite.cell_workers import CellWorkers, ShardedCriterion

    inner = criteria.get(name, mode="eval", **options)
    sharded, scored_by = CellWorkers.of(2, torch.device("cpu"), None).scoring(inner, calibration_batches=2)
    assert isinstance(sharded, ShardedCriterion) and scored_by == 2
    assert (sharded.config()["reduction"], sharded.config()["normaliser"]) == (inner.reduction, inner.normaliser)
    assert (sharded.reduction, sharded.normaliser) == (inner.reduction, inner.normaliser)


def test_a_trial_counts_its_workers_so_that_running_trials_and_their_workers_fit_together() -> None:
    assert trial_need(1, 0, 1) == {"CPU": 1, "GPU": 0}  # one worker: the trial alone, as before
    assert trial_need(1, 0, 2) == {"CPU": 3, "GPU": 0}  # 1 + 2 workers × 1 CPU
    assert trial_need(2.5, 0, 3) == {"CPU": 8.5, "GPU": 0}  # workers take the trial's 2 threads each
    assert trial_need(0.5, 0, 2) == {"CPU": 2.5, "GPU": 0}  # a worker has at least 1 CPU
    assert trial_need(1, 0.5, 2) == {"CPU": 3, "GPU": 3}  # the trial's half GPU as one, + 1 GPU per worker
    need = trial_need(1, 0, 2)
    assert trial_slots({"CPU": 3}, need["CPU"], need["GPU"], None) == 1
    assert trial_slots({"CPU": 8}, need["CPU"], need["GPU"], None) == 2  # 2 × 3 ≤ 8 < 3 × 3
    assert trial_slots({"CPU": 64}, need["CPU"], need["GPU"], 5) == 5


def test_a_cluster_too_small_for_one_trial_and_its_workers_is_refused_before_anything_runs(tmp_path: Path) -> None:
    suite = load_suite(workers_suite(tmp_path, 2))
    assert worker_problems(suite, {"CPU": 3}) == []
    (problem,) = worker_problems(suite, {"CPU": 2})
    assert problem == (f"{suite.path}: [resources] workers = 2: a trial and its 2 Ray Train workers need 3 CPUs "
                       "(the cluster has 2); lower workers or cpu/gpu, or add nodes")
    assert worker_problems(load_suite(workers_suite(tmp_path, None, "one")), {"CPU": 1}) == []


@pytest.mark.ray
@pytest.mark.slow
def test_a_two_worker_suite_runs_end_to_end_and_prunes_as_one_process(tmp_path: Path) -> None:
    suite_path = workers_suite(tmp_path, 2, criteria=("taylor", "taylor2-group"))
    results = tmp_path / "results"
    with pytest.raises(PreflightError, match="need 3 CPUs \\(the cluster has 2\\)"):
        run_suite(load_suite(suite_path), str(results), num_cpus=2, stream=io.StringIO())
    summary = run_suite(load_suite(suite_path), str(results), num_cpus=3, stream=io.StringIO())
    assert (summary.total, summary.ran, summary.failed) == (2, 2, 0), summary.failures
    frame = ResultStore(str(results)).read()
    rows = {row["criterion"]: row for _, row in frame.iterrows()}
    assert {name: row["status"] for name, row in rows.items()} == {"taylor": "ok", "taylor2-group": "ok"}, \
        {name: row["error"] for name, row in rows.items()}
    taylor, group = (json.loads(rows[name]["criterion_config"]) for name in ("taylor", "taylor2-group"))
    assert taylor["scored_by_workers"] == 2 and taylor["name"] == "taylor"
    assert group["scored_by_workers"] == 1 and group["probes"] == 4 and group["step_seeds"]
    assert all(json.loads(row["config"])["workers"] == 2 for row in rows.values())

    (alone,) = expand(load_suite(workers_suite(tmp_path, None, "alone")))
    reference = run_cell(alone, cache_dir=str(tmp_path / "cache"))
    assert reference["status"] == "ok", reference.get("error")
    assert "scored_by_workers" not in reference["criterion_config"]
    assert json.loads(rows["taylor"]["layer_widths"]) == reference["layer_widths"]
    assert rows["taylor"]["pruned_acc_raw"] == reference["pruned_acc_raw"]
    assert rows["taylor"]["pruned_acc"] == reference["pruned_acc"]
