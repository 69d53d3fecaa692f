"""Where a results table came from: suites, dates, code version, hardware, packages.

Every row carries its own provenance; a table may mix runs, so each field
lists all distinct values found rather than picking one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from oba.report.stages import final_rows


@dataclass(frozen=True)
class Provenance:
    """Distinct provenance values of a results table (each list sorted)."""

    suites: list[str]
    first_started: str
    last_finished: str
    git_shas: list[str]
    devices: list[str]
    ray_nodes: int
    package_versions: dict[str, list[str]]
    cells: int
    cells_ok: int
    cells_error: int

    def items(self) -> list[tuple[str, str]]:
        """Human-readable ``(label, value)`` pairs, in display order."""
        packages = ", ".join(f"{name} {' / '.join(vs)}" for name, vs in self.package_versions.items())
        return [
            ("Suite", ", ".join(self.suites) or "unknown"),
            ("Run between", f"{self.first_started} and {self.last_finished}"),
            ("Git commit", ", ".join(self.git_shas) or "unknown"),
            ("Device", ", ".join(self.devices) or "unknown"),
            ("Ray nodes", str(self.ray_nodes)),
            ("Packages", packages or "unknown"),
            ("Cells", f"{self.cells} ({self.cells_ok} ok, {self.cells_error} error)"),
        ]


def _distinct(values: pd.Series) -> list[str]:
    return sorted({str(v) for v in values.dropna() if str(v)})


def _timestamp(value: object) -> str:
    if value is None or pd.isna(value):
        return "unknown"
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M UTC")


def provenance(results: pd.DataFrame) -> Provenance:
    """Summarise the provenance columns of a normalised results table; cells are counted by their final rows."""
    cells = final_rows(results)
    versions: dict[str, set[str]] = {}
    for value in results["package_versions"].dropna():
        try:
            parsed = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            continue
        if isinstance(parsed, dict):
            for name, version in parsed.items():
                versions.setdefault(str(name), set()).add(str(version))
    started = pd.to_datetime(results["started_at"], utc=True)
    finished = pd.to_datetime(results["finished_at"], utc=True)
    return Provenance(
        suites=_distinct(results["suite"]),
        first_started=_timestamp(started.min()),
        last_finished=_timestamp(finished.max()),
        git_shas=_distinct(results["git_sha"]),
        devices=_distinct(results["device"]),
        ray_nodes=len(_distinct(results["ray_node"])),
        package_versions={name: sorted(vs) for name, vs in sorted(versions.items())},
        cells=len(cells),
        cells_ok=int((cells["status"] == "ok").sum()),
        cells_error=int((cells["status"] != "ok").sum()),
    )
