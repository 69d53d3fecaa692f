"""`oba run --address` on a cluster started as users start one: `ray start` for a head and a worker, token auth on.

The head and the worker are separate `ray start --block` processes with their
own temporary folder, and the driver is the `oba run` command. As on a machine
where any local Ray ran before, a token sits in ``~/.ray/auth_token`` (here a
home folder of the test's own), so `ray start --head` turns token
authentication on; every process is given ``RAY_AUTH_MODE=token``, as
docs/cluster.md says. Once a first cell is stored, the worker node is killed
(every process of it, by id) while it runs a trial; every cell must still end
exactly once, ok. Both nodes share this
machine's disk, so the run passes ``--shared-mount``. Run in a loopback-only
network namespace.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from oba.store.results import ResultStore
from oba.suite.cells import expand
from oba.suite.config import load_suite
from suites import tiny_suite

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _runs_a_trial(node: subprocess.Popen) -> bool:
    """Whether a Ray Tune trial's process (``ray::ImplicitFunc``) runs under the node's `ray start` process."""
    for pid in _descendants(node.pid):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                return True
        except OSError:
            continue
    return False


def _kill_node(process: subprocess.Popen) -> None:
    """SIGKILL a `ray start --block` process and every process it started, by id: the node is gone at once."""
    for pid in [process.pid, *_descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


@pytest.fixture
def token_home(tmp_path: Path) -> dict[str, str]:
    """The environment of every process: a home holding a Ray token, token authentication on, no stray address."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    return {**env, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": str(REPO)}


def _start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([RAY, "start", "--block", "--num-cpus", "1", "--disable-usage-stats", *args], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_nodes(address: str, count: int, env: dict[str, str], deadline: float) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False); "
             "print(sum(n['Alive'] for n in ray.nodes()))")
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", probe, address], env=env, capture_output=True, text=True,
                             timeout=120, check=False)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    raise AssertionError(f"the cluster at {address} did not reach {count} nodes")


def test_a_ray_start_cluster_with_token_auth_loses_its_worker_mid_run_and_every_cell_ends_once(
        tmp_path: Path, token_home: dict[str, str]) -> None:
    suite_path = tiny_suite(tmp_path, criteria=("taylor", "magnitude-l1", "magnitude-l2"), seeds=(0, 1))
    suite_path.write_text(suite_path.read_text() + "max_trials = 2\n")
    cells = expand(load_suite(suite_path))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="oray-", dir="/tmp")
    head = _start_node(["--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--temp-dir", temp,
                        "--include-dashboard", "false"], token_home, tmp_path / "head.log")
    worker = None
    try:
        deadline = time.monotonic() + 180
        _wait_for_nodes(address, 1, token_home, deadline)
        worker = _start_node(["--address", address, "--node-ip-address", "127.0.0.1"], token_home, tmp_path / "worker.log")
        _wait_for_nodes(address, 2, token_home, deadline)
        results = tmp_path / "results"
        driver = subprocess.Popen(
            [sys.executable, "-m", "oba.cli", "run", str(suite_path), "--results", str(results), "--address", address,
             "--shared-mount"], cwd=REPO, env=token_home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stored_at_kill = None
        while driver.poll() is None and time.monotonic() < deadline + 600:
            parts = list(results.glob("*.parquet"))
            if parts and stored_at_kill is None and _runs_a_trial(worker):
                stored_at_kill = len(parts)
                _kill_node(worker)
            time.sleep(0.1)
        _, err = driver.communicate(timeout=60)
    finally:
        if worker is not None and worker.poll() is None:
            _kill_node(worker)
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _kill_node(head)
        shutil.rmtree(temp, ignore_errors=True)
    assert stored_at_kill is not None and stored_at_kill < len(cells), "the worker was removed mid-trial, cells remaining"
    assert driver.returncode == 0, err[-4000:]
    assert "6 cells, 0 already stored, 6 to run" in err and "[6/6]" in err
    frame = ResultStore(str(results)).read()
    assert sorted(frame["cell_id"]) == sorted(c.cell_id for c in cells), "each cell exactly once"
    assert set(frame["status"]) == {"ok"}, frame[["criterion", "error"]].to_string()
