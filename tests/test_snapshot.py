"""Score snapshots: what they hold (checked against autograd and by hand), what moves them, what breaks them."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from oba.cli import main
from oba.criteria.taylor import Taylor
from oba.pruning.allocation import normalise
from oba.report.snapshot import SCORES_FILE, SNAPSHOT_JSON, fixtures_of_suite, prepare
from oba.report.snapshot_check import check_snapshot
from oba.suite.config import load_suite
from suites import fixtured_suite

ROOT = Path(__file__).resolve().parents[1]
CRITERIA = ["taylor", "obd", "random", "kfac-obs", "oba"]
@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fixture (resnet8 trained one epoch on digits, seed 3), its suite, and a snapshot of five criteria."""
    tmp = tmp_path_factory.mktemp("snapshot")
    plain = fixtured_suite(tmp / "plain.toml", seeds=(3,))
    assert main(["fixtures", "write", str(plain), "-o", str(tmp / "dense"), "--cache", str(tmp / "c")]) == 0
    suite = fixtured_suite(tmp / "suite.toml", tmp / "dense", seeds=(3,))
    args = ["snapshot", "write", "--suite", str(suite), "-o", str(tmp / "snap")]
    assert main(args + [a for name in CRITERIA for a in ("--criterion", name)]) == 0
    return suite, tmp / "snap"


def test_per_parameter_scores_are_taylor_by_autograd(snapshot: tuple[Path, Path]) -> None:
    suite, folder = snapshot
    (fixture,) = fixtures_of_suite(load_suite(suite))
    prepared = prepare(fixture)
    model = prepared.model
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for x, y in prepared.batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        for (name, p), g in zip(model.named_parameters(), grads):
            expected[name] -= g * p.detach() / len(prepared.batches)
    stored = load_file(str(folder / SCORES_FILE))
    for name, value in expected.items():
        flat = value.flatten()
        index = torch.linspace(0, flat.numel() - 1, min(128, flat.numel()), dtype=torch.float64).round().long()
        torch.testing.assert_close(stored[f"resnet8-digits/taylor/param/{name}"], flat[index], rtol=1e-10, atol=1e-14)


def test_lowest_units_are_the_normalised_ranking_by_hand(snapshot: tuple[Path, Path]) -> None:
    suite, folder = snapshot
    (fixture,) = fixtures_of_suite(load_suite(suite))
    groups = prepare(fixture).groups
    stored = load_file(str(folder / SCORES_FILE))
    units = stored["resnet8-digits/obd/units"]
    normalised, start = [], 0
    for g in groups:  # obd's own normaliser: each layer's scores divided by their mean
        chunk = units[start:start + len(g)]
        normalised.append(chunk / chunk.abs().mean())
        start += len(g)
        torch.testing.assert_close(normalised[-1], normalise(chunk, "mean"))
    flat = torch.cat(normalised)
    k = math.ceil(0.1 * len(flat))
    assert set(stored["resnet8-digits/obd/lowest"].tolist()) == set(torch.argsort(flat)[:k].tolist())
    assert stored["resnet8-digits/kfac-obs/compensation/fc.weight"].abs().sum() > 0
    assert not any(key.startswith("resnet8-digits/obd/compensation") for key in stored)


def test_the_unchanged_code_matches_and_under_another_cpu_too(snapshot: tuple[Path, Path]) -> None:
    _, folder = snapshot
    outcome = check_snapshot(folder, CRITERIA)
    assert outcome.exit_code == 0, outcome.render()
    assert len(outcome.findings) == len(CRITERIA)
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
           "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    args = [a for name in CRITERIA for a in ("--criterion", name)]
    done = subprocess.run([sys.executable, "-m", "oba.cli", "snapshot", "check", "--baseline", str(folder), *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_sign_flip_in_a_criterion_is_named(snapshot: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, folder = snapshot
    original = Taylor.batch_sums

    def flipped(self, model, batches, loss_fn):  # noqa: ANN001, ANN202  the one-line mutant: −g·θ → g·θ
        sums = original(self, model, batches, loss_fn)
        return type(sums)({k: -v for k, v in sums.tensors.items()}, sums.count)

    monkeypatch.setattr(Taylor, "batch_sums", flipped)
    outcome = check_snapshot(folder, CRITERIA)
    assert outcome.exit_code == 1
    moved = [f for f in outcome.findings if not f.ok]
    assert [f.criterion for f in moved] == ["taylor"]
    # |Σ| hides the sign from the unit scores; the per-parameter scores show it.
    assert any(line.startswith("param (all parameters): Spearman -") for line in moved[0].moved)
    assert "1 criterion(s) moved: taylor" in outcome.render()


def test_a_changed_unit_score_names_the_unit(snapshot: tuple[Path, Path], tmp_path: Path) -> None:
    _, folder = snapshot
    copy = tmp_path / "snap"
    copy.mkdir()
    (copy / SNAPSHOT_JSON).write_text((folder / SNAPSHOT_JSON).read_text())
    tensors = load_file(str(folder / SCORES_FILE))
    units = tensors["resnet8-digits/obd/units"].clone()
    units[5] *= 1.5
    tensors["resnet8-digits/obd/units"] = units
    save_file(tensors, str(copy / SCORES_FILE))
    outcome = check_snapshot(copy, CRITERIA)
    assert outcome.exit_code == 1
    (finding,) = [f for f in outcome.findings if not f.ok]
    label = json.loads((folder / SNAPSHOT_JSON).read_text())["fixtures"][0]["units"][5]
    assert finding.criterion == "obd" and label in finding.moved[0]


@pytest.mark.parametrize("damage", ["no folder", "truncated scores", "garbage json", "criterion absent"])
def test_a_missing_or_corrupt_snapshot_exits_2(snapshot: tuple[Path, Path], tmp_path: Path, damage: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _, folder = snapshot
    copy = tmp_path / "snap"
    if damage != "no folder":
        copy.mkdir()
        (copy / SNAPSHOT_JSON).write_text((folder / SNAPSHOT_JSON).read_text())
        (copy / SCORES_FILE).write_bytes((folder / SCORES_FILE).read_bytes())
    if damage == "truncated scores":
        (copy / SCORES_FILE).write_bytes((folder / SCORES_FILE).read_bytes()[:300])
    elif damage == "garbage json":
        (copy / SNAPSHOT_JSON).write_text("[1, 2")
    wanted = CRITERIA + (["magnitude-l1"] if damage == "criterion absent" else [])
    code = main(["snapshot", "check", "--baseline", str(copy), *[a for n in wanted for a in ("--criterion", n)]])
    out = capsys.readouterr().out
    assert code == 2
    expected = {"no folder": str(copy / SNAPSHOT_JSON), "truncated scores": str(copy / SCORES_FILE),
                "garbage json": str(copy / SNAPSHOT_JSON), "criterion absent": "magnitude-l1"}[damage]
    assert expected in out


def test_skipping_batch_norm_recalibration_is_caught(snapshot: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A change after scoring: every criterion's pruned model keeps stale statistics, so its loss moves."""
    _, folder = snapshot
    monkeypatch.setattr("oba.report.snapshot.recalibrate_batchnorm", lambda model, batches: 0)
    outcome = check_snapshot(folder, CRITERIA)
    assert outcome.exit_code == 1
    for finding in outcome.findings:
        assert any(line.startswith("pruned model's loss") for line in finding.moved), finding
