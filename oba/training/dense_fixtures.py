"""Golden dense fixtures: dense models trained once by a suite's recipe and committed as pinned weights files.

A fixtures folder holds one state-dict file per (model, dataset, seed) and
``manifest.json``::

    {"format": 1, "fixtures": [{"file", "sha256", "key", "model", "dataset", "seed",
                                "dataset_options", "recipe", "val", "test", "trained_on"}]}

``key`` is the checkpoint key (:func:`oba.training.checkpoints.checkpoint_key`, CPU) of the
recipe that trained the file. A suite that names the folder (``[dense] fixtures``)
loads, for every cell whose model, dataset, recipe and seed match an entry, that
file through the weights path (SHA-256 checked on every read) instead of
training; a cell that matches no entry trains as before. A changed recipe
therefore never silently reuses a stale fixture: its key matches nothing.

The same commit then starts from the same dense weights on every CPU, which is
what lets a regression gate compare pruning outcomes tightly across machines.
The manifest is JSON and the weights files are read with ``weights_only``:
nothing in a fixtures folder runs code.
"""
from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from oba._errors import UserError
from oba.models.weights import sha256_of
from oba.training.checkpoints import checkpoint_key, dense_checkpoint
from oba.training.train import Recipe

MANIFEST = "manifest.json"
FORMAT = 1


class FixturesError(UserError, ValueError):
    """A fixtures folder that cannot be used: no manifest, an unreadable one, or an entry without its file."""


@dataclass(frozen=True)
class Fixture:
    """One pinned dense model: its file (relative to the folder), SHA-256 and the identity it stands for."""

    file: str
    sha256: str
    key: str
    model: str
    dataset: str
    seed: int


def read_manifest(folder: str | Path) -> dict[str, Fixture]:
    """The folder's fixtures by checkpoint key; :class:`FixturesError` naming the manifest when it is not one."""
    path = Path(folder) / MANIFEST
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, this version reads {FORMAT}")
        entries = [Fixture(str(e["file"]), str(e["sha256"]), str(e["key"]), str(e["model"]), str(e["dataset"]),
                           int(e["seed"])) for e in payload["fixtures"]]
    except FileNotFoundError as err:
        raise FixturesError(f"{path}: no fixtures manifest (write one with `oba fixtures write`)") from err
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise FixturesError(f"{path}: not a readable fixtures manifest ({err})") from err
    for entry in entries:
        if Path(entry.file).name != entry.file:
            raise FixturesError(f"{path}: fixture file {entry.file!r} must be a plain file name inside the folder")
        if not (Path(folder) / entry.file).is_file():
            raise FixturesError(f"{path}: fixture file {entry.file} is missing from {folder}")
    return {entry.key: entry for entry in entries}


def pinned_weights(folder: str, fixtures: dict[str, Fixture], model: str, dataset: str, recipe: dict[str, Any],
                   seed: int, dataset_options: dict[str, Any]) -> dict[str, str] | None:
    """The ``[dense]`` weights settings of the fixture trained by ``recipe`` for (model, dataset, seed), or None."""
    key = checkpoint_key(model, dataset, Recipe.from_dict(recipe), seed, dataset_options)
    fixture = fixtures.get(key)
    if fixture is None:
        return None
    return {"weights": f"{folder.rstrip('/')}/{fixture.file}", "weights_sha256": fixture.sha256}


def fixture_file(model: str, dataset: str, seed: int) -> str:
    """The file name of a fixture."""
    return f"{model}-{dataset}-seed{seed}.pt"


def write_fixtures(targets: list[tuple[str, str, int, dict[str, Any]]], folder: str | Path,
                   dataset_options: dict[str, Any], cache_dir: str | None = None) -> list[Fixture]:
    """Train (or take from the checkpoint cache) each (model, dataset, seed, recipe) on the CPU, save its state dict
    into ``folder`` and write the manifest; returns the fixtures written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    fixtures = []
    for model, dataset, seed, recipe in targets:
        trained = dense_checkpoint(model, dataset, Recipe.from_dict(recipe), seed, cache_dir,
                                   dataset_options=dataset_options, device="cpu")
        name = fixture_file(model, dataset, seed)
        state = {k: v.detach().cpu().contiguous() for k, v in trained.model.state_dict().items()}
        torch.save(state, folder / name)
        fixture = Fixture(name, sha256_of(folder / name), checkpoint_key(model, dataset, Recipe.from_dict(recipe), seed,
                                                                        dataset_options), model, dataset, seed)
        fixtures.append(fixture)
        entries.append({**asdict(fixture), "dataset_options": dataset_options, "recipe": recipe,
                        "val": trained.metadata.get("val"), "test": trained.metadata.get("test"),
                        "trained_on": f"{platform.machine()} {platform.processor()}".strip(),
                        "torch": torch.__version__})
    (folder / MANIFEST).write_text(json.dumps({"format": FORMAT, "fixtures": entries}, indent=1) + "\n",
                                   encoding="utf-8")
    return fixtures
