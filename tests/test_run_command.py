"""`oba run` under bad input and interruption, as a user meets it: the real command in a subprocess.

Checks before compute (results, data, cache, cluster address) start no Ray. The
tests that start Ray run in a loopback-only network namespace (see scripts/test.sh).
Every run here has ``RAY_ADDRESS`` naming a cluster that does not exist: a run
without ``--address`` must start its own local Ray regardless (joining that
address would hang), so each Ray-starting test below also proves that.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from oba.store.results import ResultStore
from oba.suite.cells import expand
from oba.suite.cluster import probe
from oba.suite.config import load_suite
from oba.suite.plan import plan_run, writable_folder_problem
from suites import tiny_suite

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"
ENV = {"PYTHONPATH": os.pathsep.join([str(REPO), str(PLUGINS)]), "RAY_USAGE_STATS_ENABLED": "0",
       "RAY_ADDRESS": "127.0.0.1:1"}
ANSI = re.compile(r"\x1b\[")


def run_cmd(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``oba run ARGS`` on this checkout's code."""
    return subprocess.run([sys.executable, "-m", "oba.cli", "run", *args], cwd=REPO, env={**os.environ, **ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def start_run(*args: str) -> subprocess.Popen[str]:
    """``oba run ARGS`` in the background, in its own process group (as a shell job is)."""
    return subprocess.Popen([sys.executable, "-m", "oba.cli", "run", *args], cwd=REPO, env={**os.environ, **ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The stderr lines of a user error: exit 2, each line ``oba run: error: ...``, no traceback, nothing on stdout."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and not done.stdout, (done.returncode, done.stdout, done.stderr[-3000:])
    assert lines and all(line.startswith("oba run: error: ") for line in lines), done.stderr[-3000:]
    return lines


# Checks before any compute (no Ray).

def test_an_unwritable_results_location_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path)
    for flags in (["--dry-run"], []):
        [line] = error_lines(run_cmd(str(suite), "--results", "/proc/oba-results", *flags))
        assert line.startswith("oba run: error: results location /proc/oba-results is not writable: ")
    assert not (tmp_path / "cache").exists(), "nothing was prepared"
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    [line] = error_lines(run_cmd(str(suite), "--results", str(a_file), "--dry-run"))
    assert line == f"oba run: error: results location {a_file} is a file, not a folder"
    assert a_file.read_text() == "not a folder"


def test_the_write_probe_names_a_file_in_the_way_and_leaves_nothing_behind(tmp_path: Path) -> None:
    local = pafs.LocalFileSystem()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    inside = f"{a_file}/results/x"
    assert writable_folder_problem(local, inside, "results location") == (
        f"results location {inside} is under {a_file}, which is a file, not a folder")
    assert writable_folder_problem(local, f"{tmp_path}/new/results", "results location") is None
    assert [p.name for p in (tmp_path / "new" / "results").iterdir()] == [], "the probe file is removed"


def test_missing_data_and_an_unwritable_cache_are_named_before_anything_runs(tmp_path: Path) -> None:
    empty_root = tmp_path / "data"
    empty_root.mkdir()
    suite = tiny_suite(tmp_path, datasets=("digits", "cifar10"), data_root=empty_root)
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    for flags in (["--dry-run"], []):
        lines = error_lines(run_cmd(str(suite), "--results", str(tmp_path / "results"), *flags))
        assert len(lines) == 2, lines
        assert lines[0].startswith("oba run: error: dataset cifar10: CIFAR-10 not found: expected data_batch_1, ")
        assert f"batches.meta in {empty_root / 'cifar-10-batches-py'}" in lines[0] and "[data] download = true" in lines[0]
        assert lines[1] == f"oba run: error: checkpoint cache {tmp_path / 'cache'} is a file, not a folder"
    assert not list((tmp_path / "results").glob("*.parquet"))


def test_a_corrupt_stored_part_is_named_and_its_cell_runs_again(tmp_path: Path) -> None:
    suite = load_suite(tiny_suite(tmp_path))
    cells = expand(suite)
    store = ResultStore(str(tmp_path / "results"))
    parts = [Path(store.write({"cell_id": c.cell_id, "status": "ok", "criterion": c.config["criterion"]})) for c in cells]
    parts[1].write_bytes(parts[1].read_bytes()[:30])
    plan = plan_run(suite, str(tmp_path / "results"))
    assert [c.cell_id for c in plan.todo] == [cells[1].cell_id]
    assert [u.path for u in plan.unreadable] == [str(parts[1])]


@pytest.mark.parametrize("address,flags,expected", [
    ("auto", ["--dry-run"], "--address 'auto': expected HOST:PORT of the Ray head"),
    ("127.0.0.1:1", [], "cannot reach the Ray cluster at 127.0.0.1:1: Connection refused. Is its head running"),
])
def test_a_cluster_address_that_cannot_work_is_one_line_and_exit_2(tmp_path: Path, address: str, flags: list[str],
                                                                   expected: str) -> None:
    [line] = error_lines(run_cmd(str(tiny_suite(tmp_path)), "--results", str(tmp_path / "r"), "--address", address,
                                 *flags, timeout=120))


def test_a_port_where_no_ray_head_answers_is_an_error_within_seconds(tmp_path: Path) -> None:
    silent = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        [line] = error_lines(run_cmd(str(tiny_suite(tmp_path)), "--results", str(tmp_path / "r"), "--address", address,
                                     timeout=120))
    finally:
        silent.close()
    assert line.startswith(f"oba run: error: {address} accepts connections but no Ray head answers there "
                           "(no gRPC reply within 5 s)")


# Runs on Ray.

@pytest.mark.ray
def test_the_probe_accepts_a_live_ray_head() -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        probe(cluster.address)
    finally:
        cluster.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_failed_cells_print_their_reason_as_they_fail_and_are_grouped_at_the_end(tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path, criteria=("taylor", "oba_test_plugin:Exploding", "oba_test_plugin:Garish"),
                       ratios=(0.3, 0.5))
    done = run_cmd(str(suite), "--results", str(tmp_path / "results"))
    assert done.returncode == 1, done.stderr[-3000:]
    assert "6 cells, 0 already stored, 6 run, 4 failed" in done.stdout
    progress = [line for line in done.stderr.splitlines() if line.startswith("[") and " ERR " in line]
    assert len(progress) == 4
    for line in progress:
        assert line.endswith("| RuntimeError: this criterion always fails") or line.endswith("| RuntimeError: coloured failure")
    tail = done.stderr[done.stderr.index("failed cells by reason (4):"):].splitlines()
    assert re.fullmatch(r"  2 × RuntimeError: (this criterion always fails|coloured failure)", tail[1])
    assert tail[2].count("resnet8/digits/oba_test_plugin:") == 2
    assert re.fullmatch(r"  2 × RuntimeError: (this criterion always fails|coloured failure)", tail[3])
    assert not ANSI.search(done.stderr)
    stored = ResultStore(str(tmp_path / "results")).read().set_index("criterion")
    assert stored.loc["oba_test_plugin:Garish", "error"].str.startswith("RuntimeError: coloured failure").all()
    assert not stored["error"].dropna().str.contains("\x1b").any()


def _wait_for_parts(run: subprocess.Popen[str], results: Path, count: int) -> int:
    deadline = time.monotonic() + 300
    while len(list(results.glob("*.parquet"))) < count:
        assert run.poll() is None, run.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no cell was stored in 5 minutes"
        time.sleep(0.2)
    return len(list(results.glob("*.parquet")))


def _stop(run: subprocess.Popen[str], signum: signal.Signals, whole_group: bool) -> tuple[float, str]:
    started = time.monotonic()
    (os.killpg if whole_group else os.kill)(run.pid, signum)
    _, err = run.communicate(timeout=60)
    return time.monotonic() - started, err


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_and_sigint_stop_a_run_within_seconds_keeping_every_stored_cell_and_the_next_run_resumes(
        tmp_path: Path) -> None:
    """SIGTERM stops the first run; the second resumes from what it stored and is stopped by SIGINT (to the
    process group, as Ctrl+C); the cells stored by both are what the next run would skip. Six cells of about a
    second each: a run takes seconds to stop, and two stopped runs must leave some undone."""
    suite = tiny_suite(tmp_path, criteria=("taylor", "magnitude-l1"), ratios=(0.3, 0.5, 0.7))
    total = 6
    results = tmp_path / "results"
    args = (str(suite), "--results", str(results), "--max-concurrent", "1")
    stored = 0
    for signum, whole_group in ((signal.SIGTERM, False), (signal.SIGINT, True)):  # SIGINT to the group, as Ctrl+C
        run = start_run(*args)
        at_signal = _wait_for_parts(run, results, stored + 1)
        seconds, err = _stop(run, signum, whole_group)
        assert run.returncode == 128 + signum, err[-3000:]
        assert seconds < 20, f"{signum.name} took {seconds:.0f} s to stop the run"
        assert f"suite tiny: {total} cells, {stored} already stored, {total - stored} to run" in err
        parts = sorted(results.glob("*.parquet"))
        assert len(parts) >= at_signal and all(pq.read_table(p).num_rows == 1 for p in parts), "every stored cell kept"
        assert re.search(rf"oba run: stopped by {signum.name} after \d+ s: {len(parts) - stored} of the {total - stored} "
                         rf"cells to run stored in {re.escape(str(results))}; run the same command again to resume", err)
        assert "Traceback" not in err
        assert not (results / "_lease.json").exists(), "a stopped run releases its lease"
        stored = len(parts)
    assert stored < total, "the run was stopped before it finished"
    frame = ResultStore(str(results)).read()
    assert len(set(frame["cell_id"])) == len(frame) == stored and set(frame["status"]) == {"ok"}
    listed = run_cmd(*args, "--dry-run")
    assert listed.returncode == 0 and f"{total} cells, {stored} stored, {total - stored} to run" in listed.stderr
    assert {line.split()[0] for line in listed.stdout.splitlines() if "  done  " in line} == set(frame["cell_id"])
