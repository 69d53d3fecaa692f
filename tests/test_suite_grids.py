"""Named sub-grids and ``[prune] stages``: hand-counted cells, stable ids, errors at the right line, the paper suite."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import oba.criteria as criteria
from oba.suite.cells import expand, expand_grid
from oba.suite.config import SuiteError, load_suite
from oba.suite.plan import grid_sizes
from suites import tiny_suite

ROOT = Path(__file__).resolve().parents[1]


def _suite(folder: Path, extra: str, prune: str = "") -> Path:
    """The tiny suite (resnet8 × digits × taylor, magnitude-l1 × ratio 0.3 × seed 0: two cells), ``prune`` lines
    added to its ``[prune]``, ``extra`` appended."""
    path = tiny_suite(folder)
    text = path.read_text().replace("[prune]\nsteps = 1\n", f"[prune]\nsteps = 1\n{prune}", 1)
    path.write_text(text + "\n" + extra)
    return path


def _line(path: Path, needle: str, after: str | None = None) -> int:
    """The 1-based line of the first ``needle`` at or after the first line that is ``after``."""
    lines = path.read_text().splitlines()
    start = lines.index(after) if after is not None else 0
    return next(i for i, line in enumerate(lines[start:], start + 1) if line.startswith(needle))


def _error(path: Path) -> str:
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert "\n" not in str(err.value)
    return str(err.value)


def _axes(cell) -> tuple:
    c = cell.config
    return c["model"], c["dataset"], c["criterion"], c["ratio"], c["seed"]


# [prune] stages

def test_stages_make_every_cell_iterative_with_its_ratio_the_last_stage(tmp_path: Path) -> None:
    given = expand(load_suite(_suite(tmp_path, "", prune="stages = [0.1, 0.2, 0.3]\n")))
    assert [_axes(c) for c in given] == [("resnet8", "digits", "taylor", 0.3, 0),
                                         ("resnet8", "digits", "magnitude-l1", 0.3, 0)]
    for cell in given:
        assert cell.config["prune"]["stages"] == [0.1, 0.2, 0.3]
        assert cell.stage_ratios == (0.1, 0.2, 0.3) and cell.schedule() == "iterative 0.1/0.2/0.3"
    left_out = _suite(tmp_path, "", prune="stages = [0.1, 0.2, 0.3]\n")
    left_out.write_text(left_out.read_text().replace("ratios = [0.3]\n", ""))
    assert [c.cell_id for c in expand(load_suite(left_out))] == [c.cell_id for c in given]


def test_without_stages_the_prune_dict_has_no_stages_key_and_adding_stages_changes_the_id(tmp_path: Path) -> None:
    def by_hand(config: dict) -> str:
        return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]

    plain = expand(load_suite(tiny_suite(tmp_path)))[0]
    assert plain.config["prune"] == {"steps": 1, "layer_cap": 0.9, "normalisation": "criterion", "reduction": "criterion",
                                     "mode": "eval", "recalibration_batches": 16}
    assert plain.cell_id == by_hand(plain.config) and plain.schedule() == "one-shot"
    staged = expand(load_suite(_suite(tmp_path, "", prune="stages = [0.15, 0.3]\n")))[0]
    assert staged.config == {**plain.config, "prune": {**plain.config["prune"], "stages": [0.15, 0.3]}}
    assert staged.cell_id == by_hand({**plain.config, "prune": {**plain.config["prune"], "stages": [0.15, 0.3]}})
    assert staged.cell_id != plain.cell_id


def _reference_ids() -> set[str]:
    ids: list[str] = []
    for part in sorted((ROOT / "results" / "reference" / "smoke").glob("*.parquet")):
        ids += pq.read_table(part, columns=["cell_id"]).column("cell_id").to_pylist()
    return set(ids)


def test_existing_suites_keep_the_cell_ids_of_the_committed_reference() -> None:
    reference = _reference_ids()
    suite = load_suite(ROOT / "suites" / "smoke.toml")
    every = [c.cell_id for c in expand(suite)]
    main = [c.cell_id for c in expand_grid(suite, suite.grids[0])]
    ci = [c.cell_id for c in expand(load_suite(ROOT / "suites" / "ci.toml"))]
    assert len(main) == 12 * len(criteria.names()) and set(every) <= reference
    assert len(ci) == 24 and set(ci) <= set(main)
    twin = [c for c in expand(suite) if c.cell_id not in set(main)]  # the iterative twin: one trajectory per criterion
    assert len(twin) == len(criteria.names()) and all(c.config["prune"]["stages"] == [0.2, 0.4, 0.6] for c in twin)
    assert all(f"{c.cell_id}-stage{k}" in reference for c in twin for k in (1, 2))


@pytest.mark.parametrize("stages, message", [
    ("[0.3]", r"needs at least two stages \(one stage is a one-shot cell: give ratios\), got \[0.3\]"),
    ("[]", "needs at least two stages"),
    ("[0.3, 0.2]", r"stages must be strictly increasing, got \[0.3, 0.2\]"),
    ("[0.2, 0.2, 0.3]", "strictly increasing"),
    ("[0.2, 1.0]", r"each stage must be a number in \(0, 1\)"),
    ("[0, 0.3]", r"each stage must be a number in \(0, 1\)"),
    ('["0.1", 0.3]', r"each stage must be a number in \(0, 1\)"),
    ("[true, 0.3]", r"each stage must be a number in \(0, 1\)"),
    ("0.3", "expected list, got float 0.3"),
])
def test_bad_stages_are_one_line_at_their_line(tmp_path: Path, stages: str, message: str) -> None:
    path = _suite(tmp_path, "", prune=f"stages = {stages}\n")
    error = _error(path)
    assert error.startswith(f"{path}:{_line(path, 'stages =')}: [prune] stages: ")
    assert re.search(message, error), error


def test_ratios_beside_stages_must_be_the_last_stage(tmp_path: Path) -> None:
    for ratios in ("[0.2]", "[0.1, 0.3]"):
        path = _suite(tmp_path, "", prune="stages = [0.1, 0.3]\n")
        path.write_text(path.read_text().replace("ratios = [0.3]", f"ratios = {ratios}"))
        assert _error(path) == (f"{path}:{_line(path, 'ratios =')}: [grid] ratios: with stages [0.1, 0.3] the ratio "
                                f"is the last stage: give ratios = [0.3] or leave ratios out, got {ratios}")
    path = tiny_suite(tmp_path)
    path.write_text(path.read_text().replace("ratios = [0.3]\n", ""))
    assert "missing required key 'ratios'" in _error(path) and "left out when [prune] stages is set" in _error(path)


def test_stages_with_unstructured_pruning_are_refused_at_the_structures_line(tmp_path: Path) -> None:
    path = _suite(tmp_path, "", prune="stages = [0.1, 0.3]\n")
    path.write_text(path.read_text().replace("seeds = [0]", 'seeds = [0]\nstructures = ["channels", "unstructured"]'))
    assert _error(path) == (f"{path}:{_line(path, 'structures =')}: [grid] structures: iterative stages apply to "
                            'structured pruning only (structures = ["channels"]), not unstructured')


# Named sub-grids

SUBGRIDS = """\
[grid.bigger]
models = ["vgg-tiny"]
seeds = [0, 1]

[grid.staged]
criteria = ["taylor"]
prune = { steps = 2, stages = [0.1, 0.2] }
"""


def test_sub_grids_override_axes_and_prune_and_follow_the_main_grid(tmp_path: Path) -> None:
    suite = load_suite(_suite(tmp_path, SUBGRIDS))
    assert [g.table for g in suite.grids] == ["grid", "grid.bigger", "grid.staged"]
    main, bigger, staged = (expand_grid(suite, g) for g in suite.grids)
    # main: resnet8 × digits × 2 criteria × 0.3 × seed 0; bigger: vgg-tiny × 2 criteria × 0.3 × seeds 0, 1;
    # staged: resnet8 × taylor × ratio 0.2 (the last stage) × seed 0.
    assert [_axes(c) for c in main] == [("resnet8", "digits", "taylor", 0.3, 0),
                                        ("resnet8", "digits", "magnitude-l1", 0.3, 0)]
    assert [_axes(c) for c in bigger] == [("vgg-tiny", "digits", k, 0.3, s) for k in ("taylor", "magnitude-l1")
                                          for s in (0, 1)]
    assert [_axes(c) for c in staged] == [("resnet8", "digits", "taylor", 0.2, 0)]
    assert [c.cell_id for c in expand(suite)] == [c.cell_id for c in main + bigger + staged]
    assert {c.config["prune"]["steps"] for c in main + bigger} == {1} and staged[0].config["prune"]["steps"] == 2
    assert "stages" not in bigger[0].config["prune"] and staged[0].stage_ratios == (0.1, 0.2)
    assert suite.models == ("resnet8", "vgg-tiny") and suite.dense["vgg-tiny"]["epochs"] == 1
    assert bigger[0].config["finetune"] == main[0].config["finetune"]


def test_a_cell_two_grids_hold_is_kept_once_where_it_first_appears(tmp_path: Path) -> None:
    suite = load_suite(_suite(tmp_path, '[grid.overlap]\nseeds = [1, 0]\n\n[grid.same]\nprune = { steps = 1 }\n'))
    main, overlap, same = (expand_grid(suite, g) for g in suite.grids)
    assert len(main) == 2 and len(overlap) == 4 and [c.cell_id for c in same] == [c.cell_id for c in main]
    cells = expand(suite)
    # 2 main cells, then overlap's 2 seed-1 cells (its seed-0 cells are main's); same adds nothing.
    assert [_axes(c) for c in cells] == [("resnet8", "digits", "taylor", 0.3, 0),
                                         ("resnet8", "digits", "magnitude-l1", 0.3, 0),
                                         ("resnet8", "digits", "taylor", 0.3, 1),
                                         ("resnet8", "digits", "magnitude-l1", 0.3, 1)]
    assert grid_sizes(suite) == ["[grid]: 2 cells", "[grid.overlap]: 4 cells (2 already in an earlier grid)",
                                 "[grid.same]: 2 cells (2 already in an earlier grid)"]


@pytest.mark.parametrize("extra, after, needle, where, message", [
    ('[grid.x]\nmodels = ["resnet9"]\n', "[grid.x]", "models =", "[grid.x] models",
     "unknown model 'resnet9'; valid: "),
    ("[grid.x]\nratio = [0.2]\n", "[grid.x]", "ratio =", "[grid.x] ratio",
     "unknown key; valid keys: models, datasets, criteria, ratios, seeds, structures, allocations, prune"),
    ("[grid.x]\nseeds = [-1]\n", "[grid.x]", "seeds =", "[grid.x] seeds", "seeds must be non-negative integers"),
    ("[grid.x]\nratios = [0.2]\n\n[grid.x.prune]\nsteps = 0\n", "[grid.x.prune]", "steps =", "[grid.x.prune] steps",
     "must be at least 1, got 0"),
    ("[grid.x]\nprune = { layer_cap = 1.5 }\n", "[grid.x]", "prune =", "[grid.x.prune] layer_cap",
     "must be in (0, 1), got 1.5"),
    ("[grid.x.prune]\nstages = [0.2, 0.1]\n", "[grid.x.prune]", "stages =", "[grid.x.prune] stages",
     "stages must be strictly increasing"),
    ("[grid.x.prune]\nstpes = 2\n", "[grid.x.prune]", "stpes =", "[grid.x.prune] stpes", "unknown key; valid keys: steps"),
    ('[grid.x.prune]\nreduction = "sum"\n', "[grid.x.prune]", "reduction =", "[grid.x.prune] reduction",
     "valid: criterion, abs-sum, released, released-weights"),
    ('[grid.x]\nratios = [0.5]\n\n[grid."x".prune]\nstages = [0.2, 0.4]\n', "[grid.x]", "ratios =", "[grid.x] ratios",
     "the ratio is the last stage: give ratios = [0.4] or leave ratios out, got [0.5]"),
    ('[grid.structures]\nmodels = ["resnet8"]\n', None, "[grid.structures]", "[grid.structures]",
     "structures is a grid key (a list), not a sub-grid name"),
    ('[grid.x]\nmodels = ["vgg-tiny"]\n\n[dense.vgg-tiny]\nepochs = -1\n', None, "[dense.vgg-tiny]", "[dense.vgg-tiny]",
     "invalid recipe"),
])
def test_sub_grid_errors_name_the_table_key_and_line(tmp_path: Path, extra: str, after: str | None, needle: str,
                                                     where: str, message: str) -> None:
    path = _suite(tmp_path, extra)
    error = _error(path)
    assert error.startswith(f"{path}:{_line(path, needle, after)}: {where}: "), error
    assert message in error, error


def test_a_recipe_override_applies_to_a_model_that_only_a_sub_grid_names(tmp_path: Path) -> None:
    """The [dense.<model>] override of a model that only a sub-grid names is resolved (above: its bad epochs fail)."""
    suite = load_suite(_suite(tmp_path, '[grid.x]\nmodels = ["vgg-tiny"]\n\n[dense.vgg-tiny]\nepochs = 3\n'))
    assert suite.dense["vgg-tiny"]["epochs"] == 3 and suite.dense["resnet8"]["epochs"] == 1


# The paper suite

def test_the_paper_suite_has_its_five_grids_and_resnet32_carries_seven_stages() -> None:
    suite = load_suite(ROOT / "suites" / "paper.toml")
    every = criteria.names()  # "all": every registered criterion
    assert {"oba", "oba-released", "fastoba", "taylor2", "taylor2-group"} <= set(every)
    assert not {"oba-hvp", "oba-functional", "oba-group"} & set(every)
    released = ["fastoba", "oba", "oba-released"]
    grids = {g.table: expand_grid(suite, g) for g in suite.grids}
    # criteria (every one, or the 3 OBA variants) × seeds (3) × models × datasets × ratios
    n = len(every)
    assert {k: len(v) for k, v in grids.items()} == {"grid": n * 3 * 2, "grid.resnet32-iterative": n * 3 * 2,
                                                      "grid.imagenet-resnet50": n * 3, "grid.imagenet-vit": (n - 1) * 3,
                                                      "grid.oba-as-released": 3 * 3 * 2}
    assert len(expand(suite)) == 18 * n - 3 + 18
    for table, cells in grids.items():
        expected = {"grid.oba-as-released": released, "grid.imagenet-vit": [c for c in every if c != "oba-released"]}
        assert sorted({c.config["criterion"] for c in cells}) == expected.get(table, every)
        assert {c.config["seed"] for c in cells} == {0, 1, 2}
        assert {c.config["structure"] for c in cells} == {"channels"}
        assert {(c.config["prune"]["normalisation"], c.config["prune"]["reduction"]) for c in cells} == {
            ("criterion", "criterion")}
    assert {(c.config["model"], c.config["ratio"], c.schedule()) for c in grids["grid"]} == {("vgg19", 0.86, "one-shot")}
    assert {c.config["dataset"] for c in grids["grid"] + grids["grid.resnet32-iterative"]} == {"cifar10", "cifar100"}
    assert {(c.config["model"], c.config["dataset"], c.config["ratio"], c.schedule(), c.config["prune"]["mode"],
             c.config["prune"]["steps"]) for c in grids["grid.oba-as-released"]} == {
        ("vgg19", "cifar10", 0.86, "one-shot", "train", 50), ("vgg19", "cifar100", 0.86, "one-shot", "train", 50)}
    for cell in grids["grid.resnet32-iterative"]:
        assert cell.config["model"] == "resnet32-wide" and cell.config["ratio"] == 0.95
        assert cell.stage_ratios == (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    assert {(c.config["model"], c.config["dataset"], c.config["ratio"], c.config["dense"]["weights"])
            for c in grids["grid.imagenet-resnet50"] + grids["grid.imagenet-vit"]} == {
        ("resnet50", "imagenet", 0.5, "torchvision:IMAGENET1K_V2"),
        ("vit_b_16", "imagenet", 0.3, "torchvision:IMAGENET1K_V1")}
    assert suite.dense["vgg19"]["epochs"] == 200 and suite.finetune["resnet50"]["epochs"] == 10
