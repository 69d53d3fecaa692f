"""Cells packed into trials on real Ray: same rows as alone, a dying trial keeps its finished cells, reasons are stored.

These tests start Ray; run them in a loopback-only network namespace.
"""
from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from oba.store.results import ResultStore
from oba.suite import context
from oba.suite.cell import run_cell
from oba.suite.cells import expand
from oba.suite.config import load_suite
from oba.suite.noop import NOOP_DEVICE
from oba.suite.runner import git_sha, run_suite
from suites import tiny_suite

pytestmark = [pytest.mark.ray, pytest.mark.slow]
PLUGINS = str(Path(__file__).parent / "plugins")
REPO = Path(__file__).resolve().parents[1]
MEASURED_NOW = {"started_at", "finished_at", "compute_seconds", "scoring_seconds", "gradient_seconds",
                "scoring_seconds_per_grad", "latency_dense_ms", "latency_pruned_ms", "latency_speedup", "ray_node"}
"""Columns that time the run or name its node: they differ between any two runs of one cell."""


def _packed_suite(folder: Path, criteria: tuple[str, ...], max_trials: int, max_failures: int = 2, **grid) -> Path:
    path = tiny_suite(folder, criteria=criteria, **grid)
    text = path.read_text().replace("max_failures = 3", f"max_failures = {max_failures}")
    path.write_text(text + f"max_trials = {max_trials}\n")
    return path


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_a_packed_cell_stores_the_row_it_stores_alone(tmp_path: Path) -> None:
    """8 cells (2 dense models) in 2 trials, against each cell run alone in a fresh context: equal but for timings."""
    suite_path = _packed_suite(tmp_path, ("taylor", "random"), max_trials=2, seeds=(0, 1))
    suite_path.write_text(suite_path.read_text().replace("[grid]\n", '[grid]\nstructures = ["channels", "unstructured"]\n'))
    suite = load_suite(suite_path)
    summary = run_suite(suite, str(tmp_path / "packed"), num_cpus=2, stream=io.StringIO())
    assert (summary.ran, summary.failed) == (8, 0), summary.failures
    alone = ResultStore(str(tmp_path / "alone"))
    for cell in expand(suite):
        context._contexts.clear()
        alone.write(run_cell(cell, cache_dir=str(tmp_path / "cache"), git_sha=git_sha(), device="cpu", num_workers=1))
    packed = ResultStore(str(tmp_path / "packed")).read().set_index("cell_id").sort_index()
    single = alone.read().set_index("cell_id").sort_index()
    assert list(packed.index) == list(single.index) and set(packed["status"]) == {"ok"}
    compared = [c for c in packed.columns if c not in MEASURED_NOW]
    assert {"pruned_acc", "final_acc", "fidelity", "fidelity_precision", "layer_widths", "macs_pruned"} <= set(compared)
    differences = [(cid, column, packed.at[cid, column], single.at[cid, column])
                   for cid in packed.index for column in compared if not _same(packed.at[cid, column], single.at[cid, column])]
    assert not differences


def test_a_packed_trial_that_dies_keeps_the_cells_it_finished_and_its_retry_runs_only_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(PLUGINS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([PLUGINS, os.environ.get("PYTHONPATH", "")]))
    died = tmp_path / "died"
    monkeypatch.setenv("OBA_TEST_DIED", str(died))
    suite_path = _packed_suite(tmp_path, ("taylor", "oba_test_plugin:DiesOnce", "magnitude-l1"), max_trials=1)
    summary = run_suite(load_suite(suite_path), str(tmp_path / "results"), num_cpus=2, stream=io.StringIO())
    assert died.exists(), "the trial's process died in its second cell"
    assert (summary.ran, summary.failed) == (3, 0), summary.failures
    frame = ResultStore(str(tmp_path / "results")).read().set_index("criterion")
    assert len(frame) == 3 and set(frame["status"]) == {"ok"}
    death = died.stat().st_mtime
    assert frame.loc["taylor", "finished_at"].timestamp() < death, "the first cell was stored before the death, and not run again"
    assert frame.loc["magnitude-l1", "started_at"].timestamp() > death


def test_cells_of_a_trial_that_keeps_dying_are_stored_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(PLUGINS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([PLUGINS, os.environ.get("PYTHONPATH", "")]))
    suite_path = _packed_suite(tmp_path, ("taylor", "oba_test_plugin:AlwaysDies", "magnitude-l1"), max_trials=1,
                               max_failures=1)
    log = io.StringIO()
    summary = run_suite(load_suite(suite_path), str(tmp_path / "results"), num_cpus=2, stream=log)
    frame = ResultStore(str(tmp_path / "results")).read().set_index("criterion")
    assert frame.loc["taylor", "status"] == "ok", "finished before the trial died: kept"
    for name in ("oba_test_plugin:AlwaysDies", "magnitude-l1"):
        assert frame.loc[name, "status"] == "error" and frame.loc[name, "error"].startswith("trial failed: ")
    assert summary.failed == 2 and all(f.reason.startswith("trial failed: ") for f in summary.failures)
    failed_lines = [line for line in log.getvalue().splitlines() if "] ERR " in line]
    assert len(failed_lines) == 2 and all("| trial failed: ActorDiedError: " in line for line in failed_lines), failed_lines


def test_fake_cells_store_identity_rows_fold_as_trials_end_and_prepare_no_dense_model(tmp_path: Path) -> None:
    """24 no-op cells in 6 trials of 4, folded 4 rows or more at a time as trials end, merged at the run's end."""
    suite_path = _packed_suite(tmp_path, ("taylor", "magnitude-l1", "random"), max_trials=6, seeds=tuple(range(8)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    command = [sys.executable, "-m", "oba.cli", "run", str(suite_path), "--fake-cell"]
    refused = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "oba run: error: --fake-cell stores placeholder rows: give a --results location of their own")
    suite_path.write_text(suite_path.read_text() + "compact_parts = 4\n")
    done = subprocess.run([*command, "--results", str(tmp_path / "fake")], check=False, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    folded = re.search(r"folded (\d+) result parts into compacted files while the run went on", done.stderr)
    assert folded and 4 <= int(folded.group(1)) <= 24 and int(folded.group(1)) % 4 == 0, done.stderr[-3000:]
    # rows left loose after the last fold are 0 (it took them) or 4 or more (a fold was running): never 1-3, so the
    # run's end merges whatever is left and the store holds one file
    assert not list((tmp_path / "fake").glob("*.parquet")), "no loose part is left"
    assert len(list((tmp_path / "fake").glob("suite=*/model=*/dataset=*/*.parquet"))) == 1
    frame = ResultStore(str(tmp_path / "fake")).read()
    assert sorted(frame["cell_id"]) == sorted(c.cell_id for c in expand(load_suite(suite_path)))
    assert set(frame["status"]) == {"ok"} and set(frame["device"]) == {NOOP_DEVICE} and frame["final_acc"].isna().all()
    assert not list((tmp_path / "cache").glob("*.pt")), "no dense checkpoint was prepared"
