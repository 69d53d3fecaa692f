"""Check a score snapshot (:mod:`oba.report.snapshot`): recompute every quantity and compare it with the stored one.

Per criterion and fixture: Spearman ρ ≥ 1 − ε and relative L2 ‖now − then‖/‖then‖ ≤ τ for the per-parameter
scores, the unit scores, the OBS update and the pruned model's loss; the same k lowest units, the same widths after
one pruning step and the same config. ε and τ are the snapshot's own (:data:`~oba.report.snapshot.TOLERANCES`).
Exit codes: 0 all match, 1 some criterion moved (each named, with the units that moved most), 2 the snapshot is
missing or corrupt, a fixture cannot be loaded, or a criterion asked for has no entry.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr
from torch import Tensor

from oba.models.weights import WeightsError
from oba.report.snapshot import (
    DEFAULT_FOLDER,
    FORMAT,
    REQUIRED,
    RESOLUTION,
    SCORES_FILE,
    SNAPSHOT_JSON,
    TOLERANCES,
    Prepared,
    SnapshotFixture,
    build_criterion,
    default_criteria,
    plain,
    prepare,
    score_fixture,
)


class SnapshotUnreadable(ValueError):
    """A snapshot that is missing, corrupt, or lacks an entry the check needs (exit 2)."""


@dataclass
class Finding:
    """One criterion on one fixture: each quantity's agreement with the snapshot, and what moved."""

    fixture: str
    criterion: str
    spearman: float = 1.0
    rel_l2: float = 0.0
    moved: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.moved


@dataclass
class SnapshotCheck:
    """Outcome of :func:`check_snapshot`: findings per (fixture, criterion), and problems that stop the check."""

    folder: str
    tolerances: dict[str, float]
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every criterion matches, 1 when some moved, 2 when the snapshot is missing or corrupt."""
        if self.problems:
            return 2
        return 1 if any(not f.ok for f in self.findings) else 0

    def render(self) -> str:
        lines = [f"score snapshot {self.folder}: ε = {self.tolerances['spearman']:g} (1 − Spearman), "
                 f"τ = {self.tolerances['rel_l2']:g} (relative L2)"]
        lines += [f"error: {p}" for p in self.problems]
        for f in self.findings:
            status = "ok" if f.ok else "MOVED"
            lines.append(f"{status:5} {f.criterion:15} on {f.fixture:18} 1−ρ {1 - f.spearman:.1e}  "
                         f"rel L2 {f.rel_l2:.1e}")
            lines += [f"        {m}" for m in f.moved]
        if self.findings:
            lines.append(f"largest 1−ρ {max(1 - f.spearman for f in self.findings):.1e}, largest relative L2 "
                         f"{max(f.rel_l2 for f in self.findings):.1e}")
        moved = sorted({f.criterion for f in self.findings if not f.ok})
        lines.append(f"{len(moved)} criterion(s) moved: {', '.join(moved)}" if moved else
                     f"{len({f.criterion for f in self.findings})} criteria match the snapshot")
        return "\n".join(lines)


def _spearman(a: Tensor, b: Tensor) -> float:
    """Spearman ρ of ``a`` and ``b`` at the resolution RESOLUTION × max|b|: values closer than that (float noise
    around zero, mostly) tie, so that their noise-level order does not count as a change of ranking."""
    step = RESOLUTION * float(b.abs().max()) if b.numel() else 0.0
    if step > 0:
        a, b = torch.round(a / step), torch.round(b / step)
    if a.numel() < 2 or torch.equal(a, b):
        return 1.0
    rho = spearmanr(a.numpy(), b.numpy()).statistic
    return 0.0 if math.isnan(rho) else float(rho)


def _rel_l2(a: Tensor, b: Tensor) -> float:
    denominator = float(b.norm())
    return float((a - b).norm()) / denominator if denominator > 0 else float(a.norm())


def _compare(finding: Finding, quantity: str, now: Tensor, then: Tensor, tolerances: dict[str, float],
             labels: list[str] | None) -> None:
    """Compare one quantity; record its agreement and, when it moved, name it (and its units that moved most)."""
    now, then = now.double().flatten(), then.double().flatten()
    if now.shape != then.shape:
        finding.moved.append(f"{quantity}: {now.numel()} values now, {then.numel()} in the snapshot")
        return
    rho, rel = _spearman(now, then), _rel_l2(now, then)
    finding.spearman, finding.rel_l2 = min(finding.spearman, rho), max(finding.rel_l2, rel)
    if rho >= 1.0 - tolerances["spearman"] and rel <= tolerances["rel_l2"]:
        return
    where = ""
    if labels is not None:
        scale = float(then.abs().max()) or 1.0
        change = (now - then).abs() / scale
        worst = torch.argsort(change, descending=True)[:3].tolist()
        where = "; units moved most: " + ", ".join(f"{labels[i]} ({float(then[i]):.4g} → {float(now[i]):.4g})"
                                                   for i in worst)
    finding.moved.append(f"{quantity}: Spearman {rho:.6f}, relative L2 {rel:.2e}{where}")


def _read(folder: Path) -> tuple[dict[str, Any], list[SnapshotFixture], dict[str, Tensor]]:
    """The snapshot's JSON payload, its fixtures and its tensors; :class:`SnapshotUnreadable` naming the file."""
    meta_path, scores_path = folder / SNAPSHOT_JSON, folder / SCORES_FILE
    for path in (meta_path, scores_path):
        if not path.is_file():
            raise SnapshotUnreadable(f"{path}: missing (write the snapshot with `oba snapshot write`)")
    try:
        payload = json.loads(meta_path.read_text(encoding="utf-8"))
        if payload.get("format") != FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, this version reads {FORMAT}")
        fixtures = [SnapshotFixture(**{k: f[k] for k in SnapshotFixture.__dataclass_fields__})
                    for f in payload["fixtures"]]
        for fixture in payload["fixtures"]:
            if not isinstance(fixture["units"], list) or not isinstance(fixture["batches_sha256"], str):
                raise ValueError("a fixture lacks its unit labels or batches' SHA-256")
        for name, entry in payload["criteria"].items():
            if not isinstance(entry.get("options"), dict) or not isinstance(entry.get("config"), dict):
                raise ValueError(f"criterion {name!r} lacks its options or config")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise SnapshotUnreadable(f"{meta_path}: not a readable snapshot ({err})") from err
    try:
        tensors = load_file(str(scores_path))
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise SnapshotUnreadable(f"{scores_path}: not a readable safetensors file ({err})") from err
    return payload, fixtures, tensors


def check_snapshot(folder: str | Path = DEFAULT_FOLDER, names: Sequence[str] | None = None) -> SnapshotCheck:
    """Recompute the snapshot's quantities and compare them (see the module docstring).

    ``names`` (default: every criterion in the snapshot, and every built-in) are checked; one without an entry
    in the snapshot is a problem (exit 2), as is a missing or corrupt snapshot or fixture.
    """
    folder = Path(folder)
    result = SnapshotCheck(str(folder), dict(TOLERANCES))
    try:
        payload, fixtures, tensors = _read(folder)
    except SnapshotUnreadable as err:
        result.problems.append(str(err))
        return result
    result.tolerances = {k: float(payload["tolerances"].get(k, v)) for k, v in TOLERANCES.items()}
    wanted = list(names) if names else sorted(set(payload["criteria"]) | set(default_criteria()))
    missing = [n for n in wanted if n not in payload["criteria"]]
    if missing:
        result.problems.append(f"{folder / SNAPSHOT_JSON}: no snapshot of criterion(s) {', '.join(missing)} "
                               "(write it with `oba snapshot write`, in the commit that adds them)")
        return result
    for fixture, raw in zip(fixtures, payload["fixtures"]):
        try:
            prepared = prepare(fixture)
        except (WeightsError, OSError, ValueError) as err:
            result.problems.append(f"fixture {fixture.name}: {err}")
            continue
        if prepared.batches_sha256 != raw["batches_sha256"]:
            for name in wanted:
                result.findings.append(Finding(fixture.name, name, moved=[
                    "calibration batches: drawn differently from the snapshot's (SHA-256 "
                    f"{prepared.batches_sha256[:12]}… ≠ {raw['batches_sha256'][:12]}…)"]))
            continue
        for name in wanted:
            result.findings.append(_check_one(fixture, prepared, name, payload, tensors, result.tolerances,
                                              raw["units"]))
    return result


def _check_one(fixture: SnapshotFixture, prepared: Prepared, name: str, payload: dict[str, Any],
               tensors: dict[str, Tensor], tolerances: dict[str, float], labels: list[str]) -> Finding:
    finding = Finding(fixture.name, name)
    entry = payload["criteria"][name]
    try:
        criterion = build_criterion(name, entry["options"], fixture)
        if plain(criterion.config()) != entry["config"]:
            finding.moved.append(f"config: {plain(criterion.config())} now, {entry['config']} in the snapshot")
        now = score_fixture(criterion, prepared)
    except Exception as err:  # a criterion that no longer scores has moved; the check goes on with the others
        finding.moved.append(f"scoring failed: {type(err).__name__}: {err}")
        return finding
    prefix = f"{fixture.name}/{name}/"
    then = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not then:
        finding.moved.append("no tensors for it in the snapshot")
        return finding
    for kind in ("param", "compensation"):
        keys_now = sorted(k for k in now if k.startswith(kind + "/"))
        keys_then = sorted(k for k in then if k.startswith(kind + "/"))
        if keys_now != keys_then:
            finding.moved.append(f"{kind}: parameters {[k.split('/', 1)[1] for k in keys_now]} now, "
                                 f"{[k.split('/', 1)[1] for k in keys_then]} in the snapshot")
        elif keys_now:
            _compare(finding, f"{kind} (all parameters)", torch.cat([now[k].flatten() for k in keys_now]),
                     torch.cat([then[k].flatten() for k in keys_then]), tolerances, None)
    absent = [key for key in REQUIRED if key not in then]
    if absent:
        finding.moved.append(f"the snapshot lacks {', '.join(absent)}")
        return finding
    _compare(finding, "unit scores", now["units"], then["units"], tolerances,
             labels if len(labels) == now["units"].numel() else None)
    _compare(finding, "normalised unit scores", now["normalised"], then["normalised"], tolerances,
             labels if len(labels) == now["normalised"].numel() else None)
    if not torch.equal(now["pruned/widths"], then["pruned/widths"]):
        changed = (now["pruned/widths"] != then["pruned/widths"]).sum() if now["pruned/widths"].shape == \
            then["pruned/widths"].shape else "all"
        finding.moved.append(f"pruned widths: {changed} layer(s) keep another number of units after one pruning step")
    _compare(finding, "pruned model's loss", now["pruned/loss"], then["pruned/loss"], tolerances, None)
    lowest_now, lowest_then = set(now["lowest"].tolist()), set(then["lowest"].tolist())
    if lowest_now != lowest_then:
        gone = ", ".join(labels[i] for i in sorted(lowest_then - lowest_now)[:5] if i < len(labels))
        new = ", ".join(labels[i] for i in sorted(lowest_now - lowest_then)[:5] if i < len(labels))
        finding.moved.append(f"k lowest units (k = {len(lowest_then)}): {len(lowest_now ^ lowest_then) // 2} "
                             f"differ; left: {gone or '-'}; entered: {new or '-'}")
    return finding
