"""The suite runner on real Ray: end to end, resume after a killed driver, a lost node, failures, plug-ins.

These tests start Ray; the test command runs them in a loopback-only network namespace.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_data import _write_cifar10

from oba.store.results import SCHEMA_VERSION, ResultStore
from oba.suite.cells import expand
from oba.suite.config import load_suite
from oba.suite.plan import PreflightError
from oba.suite.runner import run_suite
from suites import tiny_suite

pytestmark = [pytest.mark.ray, pytest.mark.slow]
PLUGINS = str(Path(__file__).parent / "plugins")
REPO = Path(__file__).resolve().parents[1]


def _assert_complete(results: Path, suite_path: Path) -> None:
    cells = expand(load_suite(suite_path))
    frame = ResultStore(str(results)).read()
    assert sorted(frame["cell_id"]) == sorted(c.cell_id for c in cells), "each cell exactly once"
    assert set(frame["status"]) == {"ok"}, frame[["criterion", "error"]].to_string()


def test_tiny_suite_end_to_end_fills_every_column(tmp_path: Path) -> None:
    suite_path = tiny_suite(tmp_path, ratios=(0.3, 0.6))
    log = io.StringIO()
    summary = run_suite(load_suite(suite_path), str(tmp_path / "results"), num_cpus=2, stream=log)
    assert (summary.total, summary.ran, summary.failed) == (4, 4, 0)
    assert "[4/4]" in log.getvalue() and "eta" in log.getvalue()
    _assert_complete(tmp_path / "results", suite_path)
    frame = ResultStore(str(tmp_path / "results")).read()
    for _, row in frame.iterrows():
        for acc in ("dense_acc", "pruned_acc_raw", "pruned_acc", "final_acc", "dense_top5", "final_top5"):
            assert 0.0 <= row[acc] <= 1.0, acc
        assert row["schema_version"] == SCHEMA_VERSION and json.loads(row["config"])["prune"]["recalibration_batches"] == 16
        assert row["dense_acc"] > 0.3, "one epoch on digits beats chance (0.1) by far"
        assert row["macs_pruned"] < row["macs_dense"] and row["params_pruned"] < row["params_dense"]
        assert math.isclose(row["macs_speedup"], row["macs_dense"] / row["macs_pruned"])
        assert abs((1 - row["macs_pruned"] / row["macs_dense"]) - row["ratio"]) <= 0.05
        assert row["latency_dense_ms"] > 0 and row["latency_pruned_ms"] > 0
        assert math.isclose(row["latency_speedup"], row["latency_dense_ms"] / row["latency_pruned_ms"])
        assert row["scoring_seconds"] > 0 and row["gradient_seconds"] > 0 and row["scoring_seconds_per_grad"] > 0
        assert -1.0 <= row["fidelity"] <= 1.0
        widths = json.loads(row["layer_widths"])
        assert widths and all(1 <= w["remaining"] <= w["dense"] for w in widths.values())
        assert json.loads(row["config"])["criterion"] == row["criterion"]
        assert json.loads(row["criterion_config"])["name"] == row["criterion"]
        assert row["git_sha"] and row["ray_node"] and row["device"].startswith("cpu")
        assert json.loads(row["package_versions"])["torch"]
        assert row["started_at"] <= row["finished_at"] and row["compute_seconds"] > 0
    dense_files = list((tmp_path / "cache").glob("*.pt"))
    assert len(dense_files) == 1, "one dense checkpoint per (model, dataset, seed), trained once"
    again = run_suite(load_suite(suite_path), str(tmp_path / "results"), num_cpus=2, stream=io.StringIO())
    assert (again.skipped, again.ran) == (4, 0)


def test_killed_driver_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    suite_path = tiny_suite(tmp_path, criteria=("taylor", "magnitude-l1", "magnitude-l2", "random"), ratios=(0.3, 0.5))
    results = tmp_path / "results"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "oba.cli", "run", str(suite_path), "--results", str(results), "--max-concurrent", "1"]
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(results.glob("*.parquet"))) < 2:
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    skipped = int(re.search(r"8 cells, (\d+) already stored", resumed.stderr).group(1))
    assert 2 <= skipped < 8, "the driver died mid-suite and the resumed run skipped what was stored"
    _assert_complete(results, suite_path)


def test_losing_a_node_mid_suite_loses_no_cell(tmp_path: Path) -> None:
    """Simulated nodes on one machine share its disk: node-local paths are refused until ``shared_mount`` says so."""
    import ray
    from ray.cluster_utils import Cluster

    suite_path = tiny_suite(tmp_path, criteria=("taylor", "magnitude-l1", "magnitude-l2"), ratios=(0.3, 0.5))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    removed = []

    def remove_worker(cell_id: str, ok: bool) -> None:
        if not removed:
            cluster.remove_node(worker)
            removed.append(cell_id)

    try:
        assert len(ray.nodes()) == 2
        with pytest.raises(PreflightError) as refused:
            run_suite(load_suite(suite_path), str(tmp_path / "results"), stream=io.StringIO())
        assert refused.value.problems == [
            f"{what} {where} is a folder on this machine's disk, but the Ray cluster has 2 nodes: use a URI that every "
            f"node reaches (e.g. s3://bucket/path) or, if it is a mount that every node shares at the same path, pass "
            f"--shared-mount" for what, where in (("results location", tmp_path / "results"), ("checkpoint cache", tmp_path / "cache"))
        ]
        assert not list((tmp_path / "cache").glob("*.pt")), "refused before anything ran"
        summary = run_suite(load_suite(suite_path), str(tmp_path / "results"), stream=io.StringIO(), on_cell_done=remove_worker,
                            shared_mount=True)
        alive = [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert removed, "a node was removed after the first cell finished"
    assert len(alive) == 1
    assert summary.failed == 0
    _assert_complete(tmp_path / "results", suite_path)


def test_failed_cell_keeps_a_row_with_its_error_and_plugins_run_beside_builtins(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(PLUGINS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([PLUGINS, os.environ.get("PYTHONPATH", "")]))
    suite_path = tiny_suite(tmp_path, criteria=("taylor", "test-half-magnitude", "oba_test_plugin:HalfMagnitude", "oba_test_plugin:Exploding"))
    summary = run_suite(load_suite(suite_path), str(tmp_path / "results"), num_cpus=2, stream=io.StringIO())
    assert summary.failed == 1
    frame = ResultStore(str(tmp_path / "results")).read().set_index("criterion")
    assert len(frame) == 4
    assert frame.loc["oba_test_plugin:Exploding", "status"] == "error"
    assert "this criterion always fails" in frame.loc["oba_test_plugin:Exploding", "error"]
    for name in ("taylor", "test-half-magnitude", "oba_test_plugin:HalfMagnitude"):
        assert frame.loc[name, "status"] == "ok"
    for column in ("final_acc", "macs_speedup", "fidelity"):
        assert frame.loc["test-half-magnitude", column] == pytest.approx(frame.loc["oba_test_plugin:HalfMagnitude", column])
    retried = run_suite(load_suite(suite_path), str(tmp_path / "results"), num_cpus=2, stream=io.StringIO())
    assert (retried.skipped, retried.ran, retried.failed) == (3, 1, 1), "a failed cell is retried on the next run"


def test_cells_of_a_dense_model_that_cannot_be_trained_keep_their_provenance(tmp_path: Path) -> None:
    """Dense training diverges (a learning rate of 1e12): every cell is stored as an error that says when and where."""
    from oba.report import write_report

    suite_path = tiny_suite(tmp_path)
    suite_path.write_text(suite_path.read_text().replace("lr = 0.05", "lr = 1e12", 1))
    summary = run_suite(load_suite(suite_path), str(tmp_path / "results"), num_cpus=2, stream=io.StringIO())
    assert summary.failed == 2
    frame = ResultStore(str(tmp_path / "results")).read()
    assert set(frame["status"]) == {"error"} and frame["error"].str.contains("training diverged").all()
    assert frame["started_at"].notna().all() and frame["ray_node"].notna().all()
    assert json.loads(frame["package_versions"].iloc[0])["torch"]
    page = write_report(str(tmp_path / "results"), tmp_path / "report.html").read_text(encoding="utf-8")
    assert "unknown and unknown" not in page and "the dense checkpoint failed before the cell ran" in page


def test_a_relative_data_root_reaches_every_trial_and_a_gpu_0_trial_stays_on_the_cpu(tmp_path: Path, monkeypatch) -> None:
    """Tune runs each trial in a working folder of its own: the driver resolves ``root = "data"`` for it.

    ``CUDA_VISIBLE_DEVICES`` is set, as Ray ≥ 2.49 leaves it for a worker given no GPU.
    """
    work = tmp_path / "work"
    _write_cifar10(work / "data")
    monkeypatch.chdir(work)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    suite_path = tiny_suite(tmp_path, criteria=("taylor",), datasets=("cifar10",), data_root=Path("data"))
    suite_path.write_text(suite_path.read_text() + "options = { verify_checksums = false }\n")
    summary = run_suite(load_suite(suite_path), "results", num_cpus=2, stream=io.StringIO())
    assert (summary.ran, summary.failed) == (1, 0), summary.failures
    frame = ResultStore(str(work / "results")).read()
    assert list(frame["status"]) == ["ok"] and frame["device"].iloc[0].startswith("cpu:")
