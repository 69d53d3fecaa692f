"""The run lease on a local folder and on a real S3-compatible server: refusal, renewal, take-over, races."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from results_fixtures import row

from oba.cli import main
from oba.store.lease import Lease, LeaseHeld, LeaseRecord, read_lease
from oba.store.results import ResultStore, filesystem
from suites import tiny_suite


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "results")
    return request.getfixturevalue("s3_location")


def test_a_second_owner_is_refused_at_once_with_the_owner_and_since_when(location: str) -> None:
    with Lease(location, "oba run first", ttl=30, settle=0.05) as held:
        began = time.monotonic()
        with pytest.raises(LeaseHeld) as refused:
            Lease(location, "oba run second", ttl=30, settle=0.05).acquire()
        assert time.monotonic() - began < 1.0
        message = str(refused.value)
        since = held.record.started.strftime("%Y-%m-%d %H:%M:%S UTC")
        assert f"oba run first on {socket.gethostname()} (pid {os.getpid()}) since {since}" in message
        assert "\n" not in message
    assert read_lease(location) is None
    with Lease(location, "oba run second", ttl=30, settle=0.05):
        assert read_lease(location).purpose == "oba run second"


def test_a_live_lease_is_renewed_beyond_its_ttl(location: str) -> None:
    with Lease(location, "long run", ttl=1.0, settle=0.05) as held:
        time.sleep(2.5)
        assert read_lease(location).renewed > held.record.started
        with pytest.raises(LeaseHeld):
            Lease(location, "intruder", ttl=1.0, settle=0.05).acquire()


def _hold_forever(location: str, ttl: float, ready: mp.Event) -> None:
    Lease(location, "doomed run", ttl=ttl, settle=0.05).acquire()
    ready.set()
    time.sleep(600)


def test_a_killed_drivers_lease_on_this_machine_is_taken_over_at_once(location: str) -> None:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    driver = ctx.Process(target=_hold_forever, args=(location, 60.0, ready))
    driver.start()
    assert ready.wait(60)
    with pytest.raises(LeaseHeld, match=f"doomed run on .* \\(pid {driver.pid}\\) since .*, renewed"):
        Lease(location, "successor", ttl=60.0, settle=0.05).acquire()
    os.kill(driver.pid, signal.SIGKILL)
    driver.join()
    assert "its process is gone" in read_lease(location).describe()
    with Lease(location, "successor", ttl=60.0, settle=0.05):
        assert read_lease(location).pid == os.getpid()


def test_a_lease_from_another_machine_is_taken_over_only_after_it_expires(location: str) -> None:
    now = datetime.now(timezone.utc)
    elsewhere = LeaseRecord("other-host", 4242, "oba run remote", "token", now, now, 2.0, "remote", "")
    fs, root = filesystem(location)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/_lease.json") as sink:
        sink.write(elsewhere.to_json().encode())
    with pytest.raises(LeaseHeld, match="oba run remote on other-host \\(pid 4242\\) since"):
        Lease(location, "successor", ttl=2.0, settle=0.05).acquire()
    time.sleep(2.5)
    with Lease(location, "successor", ttl=2.0, settle=0.05):
        assert read_lease(location).pid == os.getpid()


def _contend(location: str, start_at: float, results: mp.Queue) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    try:
        lease = Lease(location, f"contender {os.getpid()}", ttl=30, settle=0.5)
        lease.acquire()
        results.put("won")
        time.sleep(1.0)
    except LeaseHeld:
        results.put("refused")


def test_of_drivers_starting_together_exactly_one_holds_the_lease(location: str) -> None:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + 8.0
    procs = [ctx.Process(target=_contend, args=(location, start_at, results)) for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(60)
    assert outcomes == ["refused", "refused", "refused", "won"]


def test_oba_run_refuses_a_held_store_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tiny_suite(tmp_path)
    results = str(tmp_path / "results")
    with Lease(results, "oba run other", ttl=30, settle=0.05, suite="tiny"):
        code = main(["run", str(suite), "--results", results])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(f"oba run: error: results {results} are in use by oba run other on ")
    assert not list(Path(results).glob("*.parquet"))


def test_status_counts_unstored_cells_of_a_live_run_as_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tiny_suite(tmp_path, criteria=("taylor", "magnitude-l1"), seeds=(0, 1))
    results = str(tmp_path / "results")
    from oba.suite.cells import expand
    from oba.suite.config import load_suite

    cells = expand(load_suite(str(suite)))
    ResultStore(results).write(row(cell_id=cells[0].cell_id, model="resnet8", criterion=cells[0].config["criterion"]))
    ResultStore(results).write(row(cell_id=cells[1].cell_id, model="resnet8", criterion=cells[1].config["criterion"],
                                   status="error", error="x"))
    with Lease(results, "oba run tiny", ttl=30, settle=0.05, suite="tiny"):
        assert main(["status", results, "--suite", str(suite)]) == 0
        live = capsys.readouterr().out.splitlines()
    assert main(["status", results, "--suite", str(suite)]) == 0
    idle = capsys.readouterr().out.splitlines()
    assert live[1].startswith(f"lease: oba run tiny on {socket.gethostname()} (pid {os.getpid()}) since ")
    assert live[-1].split() == ["total", "1", "1", "2", "0"]
    assert idle[1] == "lease: none (no run holds this store)" and idle[-1].split() == ["total", "1", "1", "0", "2"]
