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
