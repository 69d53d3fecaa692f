"""The CUDA path, checked on the CPU: the device a trial runs on, paths resolved on the driver, warm-up
and synchronisation around timed sections, true fp32 while scoring, reproducible training on CUDA,
and a dense-checkpoint cache that tells devices apart.

Where the code would reach for a GPU, the test pretends one is there (``torch.cuda.is_available``
patched to True): code that still picks CUDA then fails, because this machine has none.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from oba.store import ResultStore
from oba.suite import runner
from oba.suite.config import load_suite
from oba.suite.grid import expand
from oba.suite.plan import plan_run, resolve_path
from suites import tiny_suite


# -- 1. the device a trial runs on -------------------------------------------------------------------------------


def test_a_trial_without_gpus_runs_on_the_cpu_and_one_with_gpus_on_cuda() -> None:
    assert [runner.trial_device(gpu) for gpu in (0, 0.0, 0.25, 1, 2)] == ["cpu", "cpu", "cuda", "cuda", "cuda"]


def test_a_gpu_0_trial_records_a_cpu_device_even_where_cuda_is_visible(tmp_path: Path, monkeypatch) -> None:
    """What a worker given no GPU sees under Ray ≥ 2.49: CUDA_VISIBLE_DEVICES set, CUDA "available"."""
    suite = load_suite(tiny_suite(tmp_path, criteria=("taylor",)))
    (cell,) = expand(suite)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    reports: list[dict[str, Any]] = []
    monkeypatch.setattr("ray.tune.report", reports.append)
    device = runner.trial_device(suite.resources["gpu"])
    threads = torch.get_num_threads()
    runner._prepare_dense(*runner.dense_keys([cell])[0], suite, str(tmp_path / "cache"), None, threads, device)
    runner._trial({"cell": {"suite": cell.suite, "cell_id": cell.cell_id, "config": cell.config},
                   "results": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache"), "git_sha": "test",
                   "threads": threads, "data_root": None, "download": False, "device": device})
    row = ResultStore(str(tmp_path / "results")).read_cell(cell.cell_id)
    assert row["status"] == "ok", row["error"]
    assert row["device"].startswith("cpu:") and reports == [{"cell_ok": True, "compute_seconds": row["compute_seconds"]}]


# -- 2. paths resolved on the driver -----------------------------------------------------------------------------


def test_every_local_path_of_a_run_is_resolved_on_the_driver(tmp_path: Path, monkeypatch) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    (home / "data").mkdir(parents=True)
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert resolve_path("~/data") == str(home / "data") and resolve_path("data") == str(work / "data")
    suite_path = tiny_suite(tmp_path, data_root=Path("~/data"))
    suite_path.write_text(suite_path.read_text().replace(f'cache_dir = "{tmp_path / "cache"}"', 'cache_dir = "~/cache"'))
    plan = plan_run(load_suite(suite_path), "~/results")
    assert (plan.data_root, plan.cache_dir, plan.results) == (str(home / "data"), str(home / "cache"), str(home / "results"))
