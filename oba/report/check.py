"""Regression gate: compare each setting's seed mean with the reference's, within its noise band.

A setting is (model, dataset, criterion, structure, allocation, ratio, schedule,
stage_ratio) (:data:`~oba.report.band.SETTING_KEYS`): an iterative setting is
never compared with the one-shot setting of its final ratio, and each of its
stages is compared on its own (a regression can show at any stage: the rows
right after a stage's pruning and after its fine-tuning carry both gated
metrics; a one-shot setting is its single stage). For every
setting of the baseline and every gated metric (:data:`~oba.report.band.GATED_METRICS`:
the BN-recalibrated accuracy after pruning, the accuracy after fine-tuning, and
fidelity, the rank agreement of the dense model's unit scores with the loss change of removing each unit, as 100·ρ),
the mean over the baseline's seeds is compared with the mean over the same seeds
in the results. The allowed drop is the setting's band from the reference's band
file (:mod:`oba.report.band`: measured seed and machine spread), never less than
``tolerance``; without a band file (or for a setting the file lacks) it falls back to
the band :func:`~oba.report.band.measure_band` makes from the baseline's own
seeds, ``z·√2·s_seed/√n``. Single cells are never compared to a fixed tolerance: one
cell can move by many points on another CPU while the seed mean stays put.

Exit codes (:attr:`CheckResult.exit_code`):

* 0 — every setting's seed mean is present and within its band (improvements never fail);
* 1 — some seed mean dropped by more than its band (the regressions);
* 2 — the check could not be completed: a source or one of its parts is
  unreadable, the baseline has no ok cell, a baseline seed is missing or failed
  in the results, or a (setting, seed) matches several cells. This outranks 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from oba.report.band import (
    DEFAULT_Z,
    GATED_METRICS,
    RATIO_KEYS,
    SETTING_KEYS,
    STAGE_KEYS,
    Band,
    measure_band,
    setting_key,
)
from oba.report.load import ResultsUnreadable, load_results
from oba.report.stages import ONE_SHOT

KEYS = (*SETTING_KEYS, "seed")
CHECK_COLUMNS = ("error", *GATED_METRICS)
"""What the gate reads besides the identity columns (:data:`~oba.report.load.IDENTITY_COLUMNS`)."""
# Float slack so that a drop of exactly the band passes despite rounding.
_SLACK = 1e-9


@dataclass(frozen=True)
class Comparison:
    """One setting and metric: seed means in percent, the allowed drop and where it came from."""

    key: tuple
    metric: str
    seeds: int
    baseline: float
    current: float
    allowed: float
    source: str

    @property
    def drop(self) -> float:
        """Baseline mean − current mean (positive: worse now)."""
        return self.baseline - self.current

    @property
    def regressed(self) -> bool:
        """Whether the drop exceeds the allowed band."""
        return self.drop > self.allowed + _SLACK

    @property
    def earlier_stage(self) -> bool:
        """Whether this is an iterative setting's stage before its last (its stage ratio below its ratio)."""
        named = dict(zip(SETTING_KEYS, self.key))
        return named["stage_ratio"] != named["ratio"]


@dataclass
class CheckResult:
    """Outcome of :func:`check`. Keys follow :data:`KEYS` (seed last) or :data:`SETTING_KEYS`."""

    tolerance: float
    band_source: str = ""
    comparisons: list[Comparison] = field(default_factory=list)
    missing: list[tuple] = field(default_factory=list)
    errored: list[tuple[tuple, str]] = field(default_factory=list)
    ambiguous: list[tuple] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    extra: list[tuple] = field(default_factory=list)
    baseline_failed: list[tuple] = field(default_factory=list)

    @property
    def regressions(self) -> list[Comparison]:
        """The comparisons whose drop exceeds their band."""
        return [c for c in self.comparisons if c.regressed]

    @property
    def exit_code(self) -> int:
        """2 when incomplete (unreadable, missing, errored, ambiguous), else 1 on regressions, else 0."""
        if self.unreadable or self.missing or self.errored or self.ambiguous:
            return 2
        return 1 if self.regressions else 0

    def render(self) -> str:
        """Plain-text report: a verdict line, the comparison table, then other findings."""
        verdict = {0: "PASS", 1: "FAIL: regressions", 2: "ERROR: check incomplete"}[self.exit_code]
        settings = len({c.key for c in self.comparisons if not c.earlier_stage})
        earlier = len({c.key for c in self.comparisons if c.earlier_stage})
        stages = f" (and {earlier} earlier stage(s) of iterative settings)" if earlier else ""
        lines = [
            f"{verdict} — {settings} setting(s){stages} compared by seed mean, {len(self.regressions)} regression(s); "
            f"bands: {self.band_source}; floor {self.tolerance:g} (accuracies in %, fidelity as 100·ρ)",
        ]
        keys = [c.key for c in self.comparisons] + [k[:-1] for k in self.missing + self.ambiguous + self.baseline_failed]
        keys += [k[:-1] for k, _ in self.errored] + self.extra
        names = _shown(keys)
        for problem in self.unreadable:
            lines += ["", f"unreadable: {problem}"]
        if self.comparisons:
            rows = [
                [*_key_cells(c.key, names), c.metric, str(c.seeds), f"{c.baseline:.2f}", f"{c.current:.2f}",
                 f"{-c.drop:+.2f}", f"{c.allowed:.2f}", "REGRESSION" if c.regressed else "ok"]
                for c in self.comparisons
            ]
            headers = [*names, "metric", "seeds", "baseline", "current", "change", "allowed drop", "verdict"]
            lines += ["", _table(headers, rows)]
        seeded = (*names, "seed")
        if self.missing:
            lines += ["", f"Missing from the results ({len(self.missing)}):",
                      _table(list(seeded), [_key_cells(k, seeded) for k in self.missing])]
        if self.errored:
            rows = [[*_key_cells(key, seeded), message] for key, message in self.errored]
            lines += ["", f"Failed or without accuracy in the results ({len(rows)}):", _table([*seeded, "error"], rows)]
        if self.ambiguous:
            rows = [_key_cells(k, seeded) for k in self.ambiguous]
            lines += ["", f"Ambiguous: several cells share the key ({len(rows)}):", _table(list(seeded), rows)]
        if self.baseline_failed:
            lines += ["", f"Note: {len(self.baseline_failed)} baseline cell(s) failed in the baseline itself and were "
                          "not compared:", _table(list(seeded), [_key_cells(k, seeded) for k in self.baseline_failed])]
        if self.extra:
            lines += ["", f"Note: {len(self.extra)} result setting(s) have no baseline and were not compared:",
                      _table(list(names), [_key_cells(k, names) for k in self.extra])]
        return "\n".join(lines)


def _shown(keys: list[tuple]) -> tuple[str, ...]:
    """The key columns to print: :data:`SETTING_KEYS`, less the stage columns when every key is one-shot."""
    one_shot = all(dict(zip(SETTING_KEYS, key))["schedule"] == ONE_SHOT for key in keys)
    return tuple(k for k in SETTING_KEYS if not (one_shot and k in STAGE_KEYS))


def _key_cells(key: tuple, names: tuple[str, ...]) -> list[str]:
    """The printed cells of ``key`` (a :data:`KEYS` or :data:`SETTING_KEYS` tuple) under the columns ``names``."""
    named = dict(zip(KEYS, key))
    cells = []
    for name in names:
        value = named[name]
        if name in RATIO_KEYS:
            cells.append(f"{value:g}")
        elif name == "seed":
            cells.append(str(int(value)))
        else:
            cells.append(str(value))
    return cells


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _cells(table: pd.DataFrame) -> dict[tuple, list[dict]]:
    cells: dict[tuple, list[dict]] = {}
    for row in table.to_dict("records"):
        cells.setdefault((*setting_key(row), int(row["seed"])), []).append(row)
    return cells


def _ok(row: dict) -> bool:
    return row["status"] == "ok" and all(pd.notna(row[m]) for m in GATED_METRICS)


def check(
    results: str | os.PathLike[str] | pd.DataFrame,
    baseline: str | os.PathLike[str] | pd.DataFrame,
    tolerance: float = 0.5,
    band: Band | None = None,
) -> CheckResult:
    """Compare ``results`` with ``baseline`` by seed mean per setting and gated metric.

    ``band`` holds the reference's measured bands; ``tolerance`` (percentage
    points) is the smallest allowed drop. Never raises for unreadable sources:
    they are reported in the result (exit code 2).
    """
    outcome = CheckResult(tolerance=tolerance,
                          band_source=f"band file (z={band.z:g}, machines: {', '.join(band.machines)})" if band
                          else f"baseline seed spread only (z={DEFAULT_Z:g}, no band file)")
    tables = {}
    for role, source in (("baseline", baseline), ("results", results)):
        try:
            tables[role] = load_results(source, CHECK_COLUMNS)
        except ResultsUnreadable as exc:
            outcome.unreadable.append(f"{role}: {exc}")
    if outcome.unreadable:
        return outcome
    base_cells, current_cells = _cells(tables["baseline"]), _cells(tables["results"])
    outcome.ambiguous = sorted(k for k in set(base_cells) | set(current_cells)
                               if len(base_cells.get(k, [])) > 1 or len(current_cells.get(k, [])) > 1)
    settings: dict[tuple, list[int]] = {}
    for key, rows in sorted(base_cells.items()):
        if key in outcome.ambiguous:
            continue
        if not _ok(rows[0]):
            outcome.baseline_failed.append(key)
            continue
        settings.setdefault(key[:-1], []).append(key[-1])
        current = current_cells.get(key)
        if current is None:
            outcome.missing.append(key)
        elif not _ok(current[0]):
            error = current[0]["error"]
            outcome.errored.append((key, error if isinstance(error, str) and error else f"status {current[0]['status']}"))
    if not settings:
        outcome.unreadable.append("baseline: holds no ok cell to compare against")
        return outcome
    incomplete = {k[:-1] for k in outcome.missing} | {k[:-1] for k, _ in outcome.errored}
    from_seeds: Band | None = None
    for setting, seeds in settings.items():
        if setting in incomplete:
            continue
        for metric in GATED_METRICS:
            before = [float(base_cells[(*setting, s)][0][metric]) * 100 for s in seeds]
            after = [float(current_cells[(*setting, s)][0][metric]) * 100 for s in seeds]
            measured = band.allowed_drop(setting, metric) if band is not None else None
            if measured is None:
                from_seeds = from_seeds or measure_band(tables["baseline"], z=DEFAULT_Z, floor=tolerance)
            allowed = max(tolerance, measured if measured is not None else from_seeds.allowed_drop(setting, metric))
            outcome.comparisons.append(Comparison(
                key=setting, metric=metric, seeds=len(seeds), baseline=sum(before) / len(before),
                current=sum(after) / len(after), allowed=allowed, source="band" if measured is not None else "seeds",
            ))
    outcome.extra = sorted({k[:-1] for k in current_cells} - {k[:-1] for k in base_cells})
    return outcome
