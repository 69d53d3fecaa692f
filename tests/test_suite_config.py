"""Suite files: validation errors point at the file and line; the grid expands exactly."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from oba.suite.cells import Cell, expand
from oba.suite.config import SuiteError, load_suite
from suites import tiny_suite


def _edit(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_tiny_suite_loads_and_expands_to_the_full_grid(tmp_path: Path) -> None:
    suite = load_suite(tiny_suite(tmp_path, models=("resnet8", "vgg-tiny"), ratios=(0.2, 0.5), seeds=(0, 1)))
    cells = expand(suite)
    want = set(itertools.product(("resnet8", "vgg-tiny"), ("taylor", "magnitude-l1"), (0.2, 0.5), (0, 1)))
    got = {(c.config["model"], c.config["criterion"], c.config["ratio"], c.config["seed"]) for c in cells}
    assert got == want and len(cells) == len(want)
    assert len({c.cell_id for c in cells}) == len(cells)
    again = expand(load_suite(tiny_suite(tmp_path, models=("resnet8", "vgg-tiny"), ratios=(0.2, 0.5), seeds=(0, 1))))
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]


def test_cell_id_changes_with_any_setting_that_changes_results(tmp_path: Path) -> None:
    base = {c.config["criterion"]: c.cell_id for c in expand(load_suite(tiny_suite(tmp_path)))}
    changed = _edit(tiny_suite(tmp_path, name="other"), "epochs = 1\nbatch_size = 64\nlr = 0.01", "epochs = 2\nbatch_size = 64\nlr = 0.01")
    other = {c.config["criterion"]: c.cell_id for c in expand(load_suite(changed))}
    assert base.keys() == other.keys() and all(base[k] != other[k] for k in base)


def test_invalid_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = _edit(tiny_suite(tmp_path), 'seeds = [0]', 'seeds = [0')
    with pytest.raises(SuiteError, match=rf"{path.name}.*line \d+"):
        load_suite(path)


@pytest.mark.parametrize(
    "old, new, key, message",
    [
        ('models = ["resnet8"]', 'models = ["resnet9"]', "models =", "unknown model 'resnet9'; valid: .*resnet8"),
        ('criteria = ["taylor", "magnitude-l1"]', 'criteria = ["taylro"]', "criteria =", "unknown criterion 'taylro'; valid: .*taylor"),
        ('datasets = ["digits"]', 'datasets = ["mnist"]', "datasets =", "unknown dataset 'mnist'; valid: .*mnist5k"),
        ("ratios = [0.3]", "ratios = [1.5]", "ratios =", r"ratio must be a number in \(0, 1\)"),
        ("ratios = [0.3]", "ratios = [0.0]", "ratios =", r"\(0, 1\)"),
        ("steps = 1", "steps = 0", "steps =", "at least 1"),
        ("steps = 1", 'steps = "five"', "steps =", "expected int"),
        ("steps = 1", "stpes = 1", "stpes =", "unknown key; valid keys: steps"),
        ("steps = 1", "steps = 1\nrecalibration_batches = -1", "recalibration_batches =", "must be 0 \\(off\\) or more"),
        ("lr = 0.05", 'optimizer = "lion"\nlr = 0.05', "[dense]", "unknown optimizer 'lion'"),
    ],
)
def test_bad_suites_point_at_the_offending_line(tmp_path: Path, old: str, new: str, key: str, message: str) -> None:
    path = _edit(tiny_suite(tmp_path), old, new)
    line = _line_of(path, key)
    with pytest.raises(SuiteError, match=message) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}:{line}:")


def test_missing_grid_axis_is_named(tmp_path: Path) -> None:
    path = _edit(tiny_suite(tmp_path), "seeds = [0]\n", "")
    with pytest.raises(SuiteError, match="missing required key 'seeds'"):
        load_suite(path)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    path = tiny_suite(tmp_path)
    path.write_text(path.read_text() + "\n[trainig]\nepochs = 3\n")
    with pytest.raises(SuiteError, match=r"\[trainig\]: unknown section"):
        load_suite(path)


def test_missing_suite_file() -> None:
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite("suites/does-not-exist.toml")


def test_per_model_recipe_overrides(tmp_path: Path) -> None:
    path = tiny_suite(tmp_path, models=("resnet8", "vgg-tiny"))
    path.write_text(path.read_text() + "\n[dense.vgg-tiny]\nepochs = 3\nlr = 0.02\n")
    cells = expand(load_suite(path))
    dense = {c.config["model"]: c.config["dense"] for c in cells}
    assert dense["resnet8"]["epochs"] == 1 and dense["resnet8"]["lr"] == 0.05
    assert dense["vgg-tiny"]["epochs"] == 3 and dense["vgg-tiny"]["lr"] == 0.02
    assert dense["vgg-tiny"]["batch_size"] == 64


def test_override_for_unknown_model_is_named(tmp_path: Path) -> None:
    path = tiny_suite(tmp_path)
    path.write_text(path.read_text() + "\n[dense.resnet9]\nepochs = 3\n")
    with pytest.raises(SuiteError, match=r"\[dense.resnet9\]: override for an unknown model"):
        load_suite(path)


def test_shipped_suites_load_and_ci_is_a_subset_of_smoke() -> None:
    root = Path(__file__).resolve().parents[1] / "suites"
    suites = {p.stem: load_suite(p) for p in root.glob("*.toml")}
    assert {"smoke", "ci", "cifar10", "cifar100", "imagenet", "paper"} <= suites.keys()
    smoke = {c.cell_id for c in expand(suites["smoke"])}
    ci = {c.cell_id for c in expand(suites["ci"])}
    assert ci and ci <= smoke
    assert set(expand(suites["smoke"])[0].config) == set(expand(suites["ci"])[0].config)
    assert {c.config["criterion"] for c in expand(suites["smoke"])} == set(__import__("oba").criteria.names())
    for name in ("cifar10", "cifar100", "imagenet", "paper"):
        assert suites[name].resources["gpu"] == 1


def test_a_suite_imposes_its_reduction_and_normaliser_on_every_criterion_or_leaves_each_its_own() -> None:
    from oba.suite.cell import cell_criterion

    def built(criterion: str, **prune: str) -> tuple[str, str]:
        config = {"criterion": criterion, "criterion_options": {}, "seed": 0,
                  "prune": {"mode": "eval", "reduction": "criterion", "normalisation": "criterion", **prune}}
        made = cell_criterion(Cell("imposed", "x", config)).config()
        return made["reduction"], made["normaliser"]

    assert built("oba") == ("released", "max") and built("taylor") == ("abs-sum", "mean")
    assert built("oba", reduction="abs-sum", normalisation="mean") == ("abs-sum", "mean")
    assert built("taylor", reduction="released") == ("released", "mean")
