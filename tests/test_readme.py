"""The README tells the truth: its Python example runs as printed, it names every registered entry, its links resolve."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from oba import criteria, data, models

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_the_python_example_runs_exactly_as_printed() -> None:
    [example] = re.findall(r"^```python\n(.*?)^```$", README, re.M | re.S)
    done = subprocess.run([sys.executable, "-c", example], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    speedup, seconds, widths = done.stdout.strip().split(" ", 2)
    assert float(speedup) > 1.5 and float(seconds) > 0 and "conv" in widths


@pytest.mark.parametrize("kind,names", [("model", models.names()), ("dataset", data.names()),
                                        ("criterion", criteria.names())])
def test_every_registered_entry_is_in_a_readme_table(kind: str, names: list[str]) -> None:
    table_cells = {cell for row in re.findall(r"^\|([^|\n]+)\|", README, re.M) for cell in re.findall(r"`([^`]+)`", row)}
    missing = sorted(set(names) - table_cells)
    assert not missing, f"README tables do not list the {kind}(s) {missing}"


def test_links_stay_inside_the_repository_and_resolve() -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        assert "://" not in target and not target.startswith("/"), f"link out of the repository: {target}"
        assert (REPO / target.split("#")[0]).exists(), f"broken link: {target}"
