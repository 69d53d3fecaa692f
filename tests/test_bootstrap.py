"""scripts/bootstrap.sh refuses a Python older than pyproject.toml's requires-python, before creating anything."""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_bootstrap_check_and_requires_python_name_the_same_version() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    checked = re.search(r"sys.version_info < \((\d+), (\d+)\)", (REPO / "scripts" / "bootstrap.sh").read_text())
    assert checked is not None and declared == f">={checked.group(1)}.{checked.group(2)}"


def _python_310() -> str | None:
    """A working Python 3.10: on PATH, or installed by pyenv."""
    found = [shutil.which("python3.10"), *map(str, sorted(Path.home().glob(".pyenv/versions/3.10*/bin/python3.10")))]
    return next((p for p in found if p and subprocess.run([p, "-V"], capture_output=True).returncode == 0), None)


def test_an_older_python_is_refused_in_one_line_and_no_venv_is_made(tmp_path: Path) -> None:
    older = _python_310()
    if older is None:
        pytest.skip("no Python 3.10 on this machine")
    version = subprocess.run([older, "-V"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "bootstrap.sh", tmp_path / "scripts")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "bootstrap.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": older}, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"[setup] error: Python 3.11 or newer is needed; {older} is {version}. Set PYTHON to a newer interpreter."]
    assert not (tmp_path / ".venv").exists()
