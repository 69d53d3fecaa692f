"""Golden dense fixtures: written from a recipe, pinned by SHA-256, loaded by the cells whose recipe they match."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from oba.cli import main
from oba.models.weights import WeightsError, sha256_of
from oba.suite.cells import expand
from oba.suite.config import SuiteError, load_suite
from oba.training.checkpoints import dense_checkpoint, dense_source
from oba.training.dense_fixtures import MANIFEST, read_manifest
from suites import fixtured_suite


def _suite(tmp_path: Path, fixtures: str = "", epochs: int = 1, name: str = "s.toml") -> Path:
    return fixtured_suite(tmp_path / name, fixtures, epochs)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fixtures folder written by the CLI for both seeds of the suite, and the cache it trained into."""
    tmp = tmp_path_factory.mktemp("fixtures")
    folder, cache = tmp / "dense", tmp / "cache"
    assert main(["fixtures", "write", str(_suite(tmp)), "-o", str(folder), "--cache", str(cache)]) == 0
    return folder, cache


def test_written_fixtures_are_the_trained_models_bit_for_bit(written: tuple[Path, Path]) -> None:
    folder, cache = written
    manifest = json.loads((folder / MANIFEST).read_text())
    assert [(e["model"], e["dataset"], e["seed"]) for e in manifest["fixtures"]] == [("resnet8", "digits", 0),
                                                                                      ("resnet8", "digits", 1)]
    suite = load_suite(_suite(folder.parent, name="plain.toml"))
    for entry in manifest["fixtures"]:
        trained = dense_checkpoint("resnet8", "digits", dense_source(suite.dense["resnet8"]), entry["seed"], str(cache))
        stored = torch.load(folder / entry["file"], weights_only=True)
        assert stored.keys() == trained.model.state_dict().keys()
        assert all(torch.equal(stored[k], v) for k, v in trained.model.state_dict().items())


def test_cells_whose_recipe_matches_load_the_pinned_file(written: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = written
    fixtures = read_manifest(folder)
    cells = expand(load_suite(_suite(tmp_path, str(folder))))
    by_seed = {c.config["seed"]: c.config["dense"] for c in cells}
    for seed in (0, 1):
        entry = next(f for f in fixtures.values() if f.seed == seed)
        assert by_seed[seed] == {"weights": f"{folder}/{entry.file}", "weights_sha256": entry.sha256}
    # Loaded through the weights path: the same tensors, with the file's provenance.
    loaded = dense_checkpoint("resnet8", "digits", dense_source(by_seed[0]), 0, str(tmp_path / "cache"))
    stored = torch.load(Path(by_seed[0]["weights"]), weights_only=True)
    assert all(torch.equal(stored[k], v) for k, v in loaded.model.state_dict().items())
    assert loaded.weights_sha256 == by_seed[0]["weights_sha256"] and not loaded.trained


def test_a_changed_recipe_matches_no_fixture_and_trains(written: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = written
    cells = expand(load_suite(_suite(tmp_path, str(folder), epochs=2)))
    assert all("weights" not in c.config["dense"] and c.config["dense"]["epochs"] == 2 for c in cells)


def test_a_tampered_fixture_is_refused_by_its_pin(written: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = written
    copy = tmp_path / "dense"
    copy.mkdir()
    for item in folder.iterdir():
        copy.joinpath(item.name).write_bytes(item.read_bytes())
    victim = next(copy.glob("*seed0.pt"))
    state = torch.load(victim, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1e-3
    torch.save(state, victim)
    (cell,) = [c for c in expand(load_suite(_suite(tmp_path, str(copy)))) if c.config["seed"] == 0]
    with pytest.raises(WeightsError, match="sha256|SHA-256"):
        dense_checkpoint("resnet8", "digits", dense_source(cell.config["dense"]), 0, str(tmp_path / "cache"))


@pytest.mark.parametrize("damage", ["absent", "garbage", "missing file", "path escape"])
def test_a_broken_fixtures_folder_is_one_line_naming_the_manifest(written: tuple[Path, Path], tmp_path: Path,
                                                                   damage: str) -> None:
    folder, _ = written
    target = tmp_path / "broken"
    target.mkdir()
    manifest = json.loads((folder / MANIFEST).read_text())
    if damage == "garbage":
        (target / MANIFEST).write_text("{not json")
    elif damage == "missing file":
        (target / MANIFEST).write_text(json.dumps(manifest))
    elif damage == "path escape":
        manifest["fixtures"][0]["file"] = "../../etc/passwd"
        (target / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SuiteError) as caught:
        load_suite(_suite(tmp_path, str(target)))
    message = str(caught.value)
    assert "\n" not in message and str(target / MANIFEST) in message and "fixtures" in message


def test_the_smoke_suite_prunes_committed_fixtures_and_trains_its_iterative_twin() -> None:
    root = Path(__file__).resolve().parents[1]
    fixtures = read_manifest(root / "fixtures" / "dense")
    cells = expand(load_suite(root / "suites" / "smoke.toml"))
    pinned = {(c.config["model"], c.config["seed"]): c.config["dense"] for c in cells if c.config["dataset"] == "mnist5k"}
    assert len(pinned) == 6 and len(fixtures) == 6
    for fixture in fixtures.values():
        settings = pinned[(fixture.model, fixture.seed)]
        assert settings == {"weights": f"fixtures/dense/{fixture.file}", "weights_sha256": fixture.sha256}
        assert sha256_of(root / settings["weights"]) == fixture.sha256
    assert all("weights" not in c.config["dense"] for c in cells if c.config["dataset"] == "digits")
