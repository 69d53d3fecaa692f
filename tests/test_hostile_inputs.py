"""Bad suites, impossible requests, signals and a full disk, as a user meets them: one line, the right exit code,
nothing left behind and no wait without end. Each case failed before issue 25 (the test says how)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from test_run_command import error_lines, run_cmd, start_run

from oba.store.atomic_write import DiskFull
from oba.store.results import ResultStore
from oba.suite.cluster import resource_problems
from oba.suite.config import SuiteError, load_suite
from suites import tiny_suite

REPO = Path(__file__).resolve().parents[1]


def _replace(suite: Path, old: str, new: str) -> Path:
    text = suite.read_text()
    assert old in text
    suite.write_text(text.replace(old, new))
    return suite


@pytest.mark.parametrize("name", ["../../escaped", "../esc", "a/b", ".hidden", "", "x" * 101])
def test_a_suite_name_that_would_leave_its_folder_is_refused_at_load(tmp_path: Path, name: str) -> None:
    """Before: ``../../escaped`` made a results folder two levels up, ``../esc`` a Tune folder outside its own."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    suite = _replace(tiny_suite(work), 'name = "tiny"', f'name = "{name}"')
    with pytest.raises(SuiteError) as raised:
        load_suite(suite)
    message = str(raised.value)
    assert message.startswith(f"{suite}:2: [suite] name: ") and "\n" not in message


def test_oba_run_refuses_an_escaping_suite_name_in_one_line_exit_2(tmp_path: Path) -> None:
    suite = _replace(tiny_suite(tmp_path), 'name = "tiny"', 'name = "../../escaped"')
    [line] = error_lines(run_cmd(str(suite), "--dry-run"))
    assert line.startswith(f"oba run: error: {suite}:2: [suite] name: '../../escaped' cannot name a results folder")


def test_a_file_name_that_cannot_name_a_folder_is_refused_when_it_names_the_suite(tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path)
    text = suite.read_text().replace('[suite]\nname = "tiny"\n', "")
    spaced = tmp_path / "my suite.toml"
    spaced.write_text(text)
    with pytest.raises(SuiteError, match=r"the file name gives the suite its name, and 'my suite' cannot name"):
        load_suite(spaced)


def _set(suite: Path, section: str, key: str, value: int) -> Path:
    """``key = value`` in table ``[section]`` of ``suite``, replacing the key's line or adding one."""
    lines = suite.read_text().splitlines()
    header = lines.index(f"[{section}]")
    end = next((n for n in range(header + 1, len(lines)) if lines[n].startswith("[")), len(lines))
    own = [n for n in range(header + 1, end) if lines[n].startswith(f"{key} =")]
    if own:
        lines[own[0]] = f"{key} = {value}"
    else:
        lines.insert(header + 1, f"{key} = {value}")
    suite.write_text("\n".join(lines) + "\n")
    return suite


@pytest.mark.parametrize("section, key, value, least", [
    ("calibration", "batches", 0, 1), ("calibration", "batch_size", 0, 1), ("measure", "latency_repeats", 0, 1),
    ("measure", "fidelity_sample", 1, 2), ("run", "max_failures", -1, 0), ("run", "max_concurrent", -1, 0),
])
def test_settings_below_their_minimum_are_refused_at_load(tmp_path: Path, section: str, key: str, value: int,
                                                         least: int) -> None:
    """Before: ``[calibration] batches = 0`` was accepted and raised IndexError inside every cell."""
    suite = _set(tiny_suite(tmp_path), section, key, value)
    with pytest.raises(SuiteError) as raised:
        load_suite(suite)
    assert f"[{section}] {key}: must be an integer of at least {least}, got {value}" in str(raised.value)


def test_a_suite_file_that_is_not_utf8_is_named_in_one_line(tmp_path: Path) -> None:
    """Before: a ``UnicodeDecodeError`` line that did not name the file."""
    suite = tiny_suite(tmp_path)
    suite.write_bytes(suite.read_bytes().replace(b'description', b'd\xe9scription', 1) + b"# caf\xe9\n")
    [line] = error_lines(run_cmd(str(suite), "--dry-run"))
    assert line.startswith(f"oba run: error: {suite}: not UTF-8 text (byte ")


def test_a_negative_max_concurrent_is_refused_before_ray_starts(tmp_path: Path) -> None:
    """Before: refused after Ray had started (about 20 s), in words naming an internal "slots"."""
    suite = tiny_suite(tmp_path)
    started = time.monotonic()
    done = run_cmd(str(suite), "--results", str(tmp_path / "results"), "--max-concurrent", "-1", timeout=60)
    assert time.monotonic() - started < 15
    assert done.returncode == 2 and "--max-concurrent: expected a whole number of at least 0" in done.stderr
    assert "slots" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()


def test_resource_problems_name_what_was_asked_and_what_the_nodes_have() -> None:
    nodes = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 8.0, "GPU": 1.0}]
    assert resource_problems("s.toml", 2, 0, nodes) == []
    assert resource_problems("s.toml", 8, 1, nodes) == []
    assert resource_problems("s.toml", 2, 0.5, nodes) == []
    [problem] = resource_problems("s.toml", 4, 2, nodes)
    assert problem == ("s.toml: [resources] cpu = 4, gpu = 2: no node of the Ray cluster has that much for one trial "
                       "(its nodes have 8 CPUs and 1 GPUs; 2 CPUs and 0 GPUs); lower [resources] or add a node that "
                       "has it")
    assert resource_problems("s.toml", 3, 1, [{"CPU": 2.0, "GPU": 1.0}, {"CPU": 4.0}]), "one trial runs on one node"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("ask", ["cpu = 64", "gpu = 1"])
def test_an_impossible_resource_request_is_one_line_within_seconds(tmp_path: Path, ask: str) -> None:
    """Before: the run waited for ever at "preparing 1 dense checkpoint(s)"."""
    if ask == "gpu = 1" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    suite = _replace(tiny_suite(tmp_path, criteria=("magnitude-l1",)), "cpu = 1", ask)
    started = time.monotonic()
    done = run_cmd(str(suite), "--results", str(tmp_path / "results"), timeout=120)
    assert time.monotonic() - started < 90
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"oba run: error: {suite}: [resources] cpu = ") and "no node of the Ray cluster" in line
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.pt")), "nothing was prepared"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.2, 0.5])
def test_sigterm_while_ray_starts_stops_the_run_with_143_and_says_so(tmp_path: Path, delay: float) -> None:
    """Before: exit 15 with no message (Ray's own handler, installed by ``ray.init``, called ``sys.exit(15)``);
    then, with a handler of its own during ``ray.init``, a signal landing inside Ray's startup was once swallowed (the
    run went on to exit 0) and once left the driver to the default action (killed, -15). The signal is sent
    ``delay`` seconds after the run started Ray's first process, while ``ray.init`` waits for the rest."""
    suite = tiny_suite(tmp_path, criteria=("magnitude-l1",))
    run = start_run(str(suite), "--results", str(tmp_path / "results"))
    deadline = time.monotonic() + 120
    while not any("site-packages/ray/" in command for command in _children(run.pid)):  # Ray's GCS, its first
        assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()[-3000:]
        time.sleep(0.02)
    time.sleep(delay)
    os.kill(run.pid, 15)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 143, err[-3000:]
    assert "oba run: stopped by SIGTERM" in err and "Traceback" not in err


def _children(pid: int) -> list[str]:
    """The command lines of ``pid``'s child processes. Not every child is Ray's: importing the libraries runs
    ``ldconfig -p`` (ctypes looking a library up), which a loaded machine was seen to catch first."""
    listed = subprocess.run(["ps", "-o", "args=", "--ppid", str(pid)], capture_output=True, text=True)
    return listed.stdout.splitlines()


def _in_small_tmpfs(folder: Path, script: str, size: str = "256k") -> subprocess.CompletedProcess[str]:
    """Run ``script`` with Python in a private mount namespace where ``folder`` is a tmpfs of ``size``."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("no private mount namespace here (needs root or user namespaces)")
    folder.mkdir(parents=True, exist_ok=True)
    command = f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$1" -c "$2"'
    return subprocess.run(["unshare", "-m", "sh", "-c", command, str(folder), sys.executable, script],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_full_disk_names_the_folder_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    """Before: ``[Errno 28]`` naming no location, and a ``.tmp`` file left for every failed write."""
    results = tmp_path / "full"
    done = _in_small_tmpfs(results, textwrap.dedent(f"""
        import os, sys
        from oba.store.atomic_write import DiskFull
        from oba.store.results import ResultStore
        store = ResultStore({str(results)!r})
        padding = "x" * 20000
        for n in range(10000):
            try:
                store.write({{"cell_id": f"cell{{n:05d}}", "suite": "s", "status": "error", "error": padding + str(n)}})
            except DiskFull as err:
                print("FULL", err)
                break
        print("LEFT", sorted(name for name in os.listdir({str(results)!r}) if not name.endswith(".parquet")))
        print("READABLE", len(store.read()), len([n for n in os.listdir({str(results)!r}) if n.endswith(".parquet")]))
    """))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["FULL"].startswith(f"[Errno 28] no space left in {results}: could not write cell")
    assert lines["LEFT"] == "[]", "no temporary file is left"
    readable, parts = lines["READABLE"].split()
    assert readable == parts and int(parts) > 0, "every part that was written is whole"


def test_disk_full_is_an_oserror_the_command_line_prints_in_one_line() -> None:
    err = DiskFull(28, "no space left in /r: could not write c.parquet (No space left on device); free space there")
    assert isinstance(err, OSError) and str(err).count("\n") == 0


def test_a_full_results_folder_stops_oba_run_with_one_line_naming_it(tmp_path: Path) -> None:
    """The whole command on a results folder too small for one part: every cell fails naming the folder, the run
    ends with one error line naming it, and no ``.tmp`` file stays."""
    suite = _set(tiny_suite(tmp_path, criteria=("magnitude-l1",)), "run", "max_failures", 0)
    results = tmp_path / "full"
    script = textwrap.dedent(f"""
        import os, sys
        from oba.cli import main
        code = main(["run", {str(suite)!r}, "--results", {str(results)!r}, "--fake-cell"])
        print("LEFT", sorted(os.path.join(d, n) for d, _, names in os.walk({str(results)!r}) for n in names
                             if n.endswith(".tmp")))
        sys.exit(code)
    """)
    done = _in_small_tmpfs(results, script, size="8k")
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"oba run: error: [Errno 28] no space left in {results}"), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "LEFT []" in done.stdout, "no temporary file is left"


def test_write_atomic_leaves_the_old_file_when_a_write_fails(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    store.write({"cell_id": "c", "suite": "s", "status": "ok"})
    before = (tmp_path / "c.parquet").read_bytes()
    with pytest.raises(ValueError):
        store.write({"cell_id": "c", "suite": "s", "status": "ok", "not_a_column": 1})
    assert (tmp_path / "c.parquet").read_bytes() == before
    assert pq.read_table(tmp_path / "c.parquet").num_rows == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.parquet"]
