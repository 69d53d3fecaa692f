"""The command line as a user meets it: each test runs the real command in a subprocess and checks its exit code and message."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import oba

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"
HEAVY = ("torch", "torchvision", "timm", "torch_pruning", "ray", "plotly", "pandas", "pyarrow")


def oba_cli(*args: str, python_flags: tuple[str, ...] = (), path: tuple[Path, ...] = (), timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m oba.cli ARGS`` on this checkout's code."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (REPO, *path))), **(env or {})}
    return subprocess.run([sys.executable, *python_flags, "-m", "oba.cli", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def _imported(importtime_log: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", importtime_log, re.M)}


def test_version() -> None:
    done = oba_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"oba {oba.__version__}"


@pytest.mark.parametrize("args", [("--help",), ("run", "--help"), ("list", "models"), ("list", "datasets"),
                                  ("list", "criteria")])
def test_help_and_list_import_no_heavy_package(args: tuple[str, ...]) -> None:
    done = oba_cli(*args, python_flags=("-X", "importtime"))
    assert done.returncode == 0, done.stderr[-2000:]
    heavy = {m for m in _imported(done.stderr) if m.split(".")[0] in HEAVY}
    assert not heavy, f"oba {' '.join(args)} imported {sorted(heavy)[:5]}"


def test_list_names_every_registered_entry() -> None:
    listed = {what: oba_cli("list", what).stdout.split() for what in ("models", "datasets", "criteria")}
    assert listed == {"models": oba.models.names(), "datasets": oba.data.names(), "criteria": oba.criteria.names()}
    assert "resnet8" in listed["models"] and "digits" in listed["datasets"] and "oba" in listed["criteria"]


def test_list_criteria_names_entry_point_plugins_without_importing_them() -> None:
    done = oba_cli("list", "criteria", python_flags=("-X", "importtime"), path=(PLUGINS,))
    assert done.returncode == 0 and "test-half-magnitude" in done.stdout.split()
    assert "oba_test_plugin" not in _imported(done.stderr)


def _one_error_line(done: subprocess.CompletedProcess[str], prefix: str) -> str:
    """The single stderr line of a user error (exit 2, no traceback, nothing on stdout)."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and not done.stdout, (done.returncode, done.stdout, done.stderr)
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def _reader_args(command: str, results: Path, out: Path, baseline: Path | None = None) -> list[str]:
    if command == "check":
        return [command, str(results), "--baseline", str(baseline or results)]
    return [command, str(results), "-o", str(out / ("report.html" if command == "report" else "board"))]


@pytest.mark.parametrize("command", ["report", "leaderboard", "check"])
def test_readers_refuse_a_missing_or_empty_results_folder_in_one_line(tmp_path: Path, command: str) -> None:
    from results_fixtures import report_rows, write_store

    baseline = Path(write_store(tmp_path / "baseline", report_rows()[:4]))
    missing = oba_cli(*_reader_args(command, tmp_path / "nowhere", tmp_path / "out", baseline))
    line = _one_error_line(missing, f"oba {command}: error: ")
    assert str(tmp_path / "nowhere") in line and "no such file or folder" in line
    (tmp_path / "empty").mkdir()
    empty = oba_cli(*_reader_args(command, tmp_path / "empty", tmp_path / "out", baseline))
    line = _one_error_line(empty, f"oba {command}: error: ")
    assert str(tmp_path / "empty") in line and "no results here" in line
    assert not (tmp_path / "out").exists()


def test_a_corrupt_part_is_skipped_with_a_warning_by_report_and_leaderboard_and_fails_check(tmp_path: Path) -> None:
    from results_fixtures import report_rows, write_store

    rows = report_rows()
    results = Path(write_store(tmp_path / "results", rows))
    baseline = Path(write_store(tmp_path / "baseline", rows))
    broken = sorted(results.glob("*.parquet"))[5]
    broken.write_bytes(broken.read_bytes()[:40])
    for command in ("report", "leaderboard"):
        done = oba_cli(*_reader_args(command, results, tmp_path / "out"))
        warnings = done.stderr.strip().splitlines()
        assert done.returncode == 0 and len(warnings) == 1, done.stderr
        assert warnings[0].startswith(f"oba {command}: warning: skipped unreadable result part {broken}: ")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert f"{len(rows) - 1} (" in page, "the report holds every other cell"
    assert (tmp_path / "out" / "board" / "leaderboard.md").is_file()
    line = _one_error_line(oba_cli(*_reader_args("check", results, tmp_path, baseline)), "oba check: error: results: ")
    assert f"unreadable result part {broken}" in line


def test_leaderboard_reads_a_band_beside_the_results_or_given_and_names_a_bad_one(tmp_path: Path) -> None:
    from results_fixtures import report_rows, write_store

    from oba.report.band import measure_band
    from oba.report.load import load_results

    results = Path(write_store(tmp_path / "results", report_rows()))
    done = oba_cli("leaderboard", str(results), "-o", str(tmp_path / "plain"))
    assert done.returncode == 0 and "**Noise band**: none" in (tmp_path / "plain" / "leaderboard.md").read_text()
    measure_band(load_results(str(results)), [load_results(str(results))], ["native", "avx2"]).write(results / "band.json")
    done = oba_cli("leaderboard", str(results), "-o", str(tmp_path / "beside"))
    assert done.returncode == 0, done.stderr
    assert "**Noise band**: measured on 2 machines (native, avx2)" in (tmp_path / "beside" / "leaderboard.md").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    line = _one_error_line(oba_cli("leaderboard", str(results), "-o", str(tmp_path / "x"), "--band", str(bad)), "oba leaderboard: ")
    assert str(bad) in line and "not a readable band file" in line


def test_dry_run_lists_every_cell_with_its_stages_and_dense_model_and_what_is_missing(tmp_path: Path) -> None:
    """Exit 0 with missing CIFAR files and a missing weights file, each named; no Ray imported; then, with the
    files in place, each is listed where it is."""
    from oba.suite.cells import expand
    from oba.suite.config import load_suite
    from suites import tiny_suite

    root = tmp_path / "data"
    root.mkdir()
    suite = tiny_suite(tmp_path, data_root=root)
    weights = tmp_path / "vgg-tiny-cifar.pt"
    suite.write_text(suite.read_text() + '\n[grid.cifar]\nmodels = ["vgg-tiny"]\ndatasets = ["cifar10"]\n'
                     'criteria = ["taylor"]\nprune = { stages = [0.1, 0.2, 0.3] }\n\n'
                     f'[dense.vgg-tiny]\nweights = "{weights}"\n')
    ids = [c.cell_id for c in expand(load_suite(suite))]
    args = ("run", str(suite), "--results", str(tmp_path / "results"), "--dry-run")
    done = oba_cli(*args, python_flags=("-X", "importtime"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        f"{ids[0]}  todo  resnet8/digits/taylor/channels/global/s=0  r=0.3 one-shot  dense trained (1 epoch)",
        f"{ids[1]}  todo  resnet8/digits/magnitude-l1/channels/global/s=0  r=0.3 one-shot  dense trained (1 epoch)",
        f"{ids[2]}  todo  vgg-tiny/cifar10/taylor/channels/global/s=0  r=0.3 iterative 0.1/0.2/0.3  dense weights {weights}",
    ]
    lines = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert lines == [
        "oba run: [grid]: 2 cells",
        "oba run: [grid.cifar]: 1 cell",
        "oba run: data: digits: no files needed (embedded in an installed package, or generated)",
        f"oba run: missing: dataset cifar10: CIFAR-10 not found: expected data_batch_1, data_batch_2, data_batch_3, "
        f"data_batch_4, data_batch_5, test_batch, batches.meta in {root / 'cifar-10-batches-py'}. Pass download=True "
        "(in a suite: [data] download = true) to fetch cifar-10-python.tar.gz from "
        f"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, or extract that archive into {root}",
        f"oba run: missing: dense model vgg-tiny: weights {weights} for vgg-tiny are missing: place the file at {weights}",
        "3 cells, 0 stored, 3 to run",
        "oba run: the run cannot start until the 2 missing item(s) above are in place",
    ]
    assert not {m for m in _imported(done.stderr) if m.split(".")[0] == "ray"}, "a dry run imports no Ray"
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"")
    weights.write_bytes(b"not read by a dry run unless hashed")
    done = oba_cli(*args, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"oba run: data: cifar10: CIFAR-10: all 7 files in {folder}" in done.stderr.splitlines()
    assert f"oba run: dense weights: vgg-tiny on cifar10: {weights} from {weights} (sha256 " in done.stderr
    assert "missing" not in done.stderr


def test_dry_run_of_the_paper_suite_lists_its_267_cells(tmp_path: Path) -> None:
    from oba.suite.cells import expand
    from oba.suite.config import load_suite

    done = oba_cli("run", "suites/paper.toml", "--results", str(tmp_path / "x"), "--cache", str(tmp_path / "cache"),
                   "--dry-run", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split()[0] for line in done.stdout.splitlines()] == [c.cell_id for c in expand(load_suite(REPO / "suites" / "paper.toml"))]
    assert sum("iterative 0.4/0.5/0.6/0.7/0.8/0.9/0.95" in line for line in done.stdout.splitlines()) == 84
    assert "267 cells, 0 stored, 267 to run" in done.stderr.splitlines()
