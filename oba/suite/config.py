"""Suite files: TOML → a validated :class:`Suite`.

A suite names its grids (models × datasets × criteria × ratios × seeds ×
structures × allocations: the main ``[grid]`` and any named sub-grids
``[grid.<name>]``, each with its pruning settings; see :mod:`oba.suite.grids`)
and everything held fixed across them: calibration data, dense and
fine-tuning recipes (``[dense]`` keys for every model of every grid, a
``[dense.<model>]`` table overriding them for one model; the same for
``[finetune]``), measurements and per-trial resources. Instead of a training
recipe, ``[dense]``/``[dense.<model>]`` may give pretrained ``weights`` (with
``weights_sha256`` and ``weights_download``; see :mod:`oba.models.weights`):
that model is then loaded and evaluated, never trained, and recipe keys in the
same table are an error. ``[dense] fixtures = "<folder>"`` names golden dense fixtures
(:mod:`oba.training.dense_fixtures`): a (model, dataset, seed) whose recipe a fixture was trained
with loads that pinned file instead of training (:meth:`Suite.dense_for`). Every error names the file, the line, the key and
what is allowed, and is raised before anything runs.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from oba import criteria, models
from oba.models.weights import SETTINGS as WEIGHTS_SETTINGS
from oba.models.weights import Weights, WeightsError
from oba.suite.grids import PRUNE_KEYS, Grid, check_keys, check_type, parse_grids
from oba.suite.locator import Locator, SuiteError
from oba.suite.tune_storage import location_problem
from oba.training.dense_fixtures import Fixture, FixturesError, pinned_weights, read_manifest
from oba.training.train import Recipe

__all__ = ["Grid", "Suite", "SuiteError", "load_suite", "parse_suite"]

SECTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "suite": {"name": str, "description": str},
    "grid": {},
    "prune": PRUNE_KEYS,
    "calibration": {"batches": int, "batch_size": int},
    "criterion_options": {},
    "dense": {},
    "finetune": {},
    "measure": {"latency_batch_size": int, "latency_repeats": int, "fidelity_sample": int},
    "data": {"root": str, "download": bool, "options": dict},
    "resources": {"cpu": (int, float), "gpu": (int, float), "workers": int},
    "run": {"max_concurrent": int, "max_failures": int, "cache_dir": str, "max_trials": int, "compact_parts": int,
            "tune_storage": str},
}
"""Each section's keys and their types (``{}``: checked by the section's own parser)."""

MINIMUM: dict[tuple[str, str], int] = {
    ("calibration", "batches"): 1, ("calibration", "batch_size"): 1,
    ("measure", "latency_batch_size"): 1, ("measure", "latency_repeats"): 1, ("measure", "fidelity_sample"): 2,
    ("resources", "workers"): 1,
    ("run", "max_concurrent"): 0, ("run", "max_failures"): 0, ("run", "max_trials"): 1, ("run", "compact_parts"): 0,
}
"""The smallest value of each integer setting (``max_concurrent`` 0: as many trials as the cluster holds;
``compact_parts`` 0: never compact; ``fidelity_sample``: a rank correlation needs two units)."""

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A name that becomes a file or folder name: no separator, no leading dot, at most 100 characters."""


def _first_seen(values: list[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for group in values for v in group))


@dataclass(frozen=True)
class Suite:
    """A validated suite: its grids (the main ``[grid]`` first, then each ``[grid.<name>]`` in file order) and the
    settings shared by every cell."""

    name: str
    path: str
    description: str
    grids: tuple[Grid, ...]
    calibration: dict[str, Any] = field(default_factory=dict)
    criterion_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    dense: dict[str, dict[str, Any]] = field(default_factory=dict)
    finetune: dict[str, dict[str, Any]] = field(default_factory=dict)
    measure: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    fixtures_folder: str = ""
    fixtures: dict[str, Fixture] = field(default_factory=dict)

    def dense_for(self, model: str, dataset: str, seed: int) -> dict[str, Any]:
        """The resolved ``[dense]`` settings of (model, dataset, seed): the pinned fixture's weights settings where
        the suite's fixtures hold one for the model's recipe, else the model's recipe or weights settings."""
        settings = self.dense[model]
        if self.fixtures and "weights" not in settings:
            pinned = pinned_weights(self.fixtures_folder, self.fixtures, model, dataset, settings, seed,
                                    self.data.get("options", {}))
            if pinned is not None:
                return pinned
        return settings

    @property
    def models(self) -> tuple[str, ...]:
        """Every model of every grid, in first-seen order (each has a ``dense`` and a ``finetune`` entry)."""
        return _first_seen([g.models for g in self.grids])

    @property
    def datasets(self) -> tuple[str, ...]:
        """Every dataset of every grid, in first-seen order."""
        return _first_seen([g.datasets for g in self.grids])


CALIBRATION_DEFAULTS = {"batches": 4, "batch_size": 64}
MEASURE_DEFAULTS = {"latency_batch_size": 64, "latency_repeats": 15, "fidelity_sample": 64}
RESOURCE_DEFAULTS = {"cpu": 1, "gpu": 0, "workers": 1}
RUN_DEFAULTS = {"max_concurrent": 0, "max_failures": 2, "max_trials": 1000, "compact_parts": 2000, "tune_storage": ""}


def _recipes(loc: Locator, section: str, values: dict[str, Any], models: tuple[str, ...], known: list[str]) -> dict[str, dict[str, Any]]:
    """One resolved recipe per grid model: the section's keys, overridden by a ``[section.<model>]`` table.

    Overrides may name any registered model (a subset suite can share its parent's file layout) or a grid model
    (``[dense."timm:convnext_tiny"]``: a key with ':' is quoted). In ``[dense]``, a model whose resolved keys
    name ``weights`` gets the weights settings instead of a recipe.
    """
    shared = {k: v for k, v in values.items() if not isinstance(v, dict)}
    overrides = {k: v for k, v in values.items() if isinstance(v, dict)}
    recipe_keys = sorted(f.name for f in fields(Recipe))
    valid = recipe_keys + list(WEIGHTS_SETTINGS) if section == "dense" else recipe_keys
    for name in overrides:
        if name not in known and name not in models:
            raise loc.error(f"{section}.{name}", None, f"override for an unknown model; valid models: {', '.join(known)}"
                                                       ", or a torchvision:NAME / timm:NAME model the grid lists")
    for table, body in [(section, shared), *((f"{section}.{name}", body) for name, body in overrides.items())]:
        for key in body:
            if key not in valid:
                raise loc.error(table, key, f"unknown key; valid keys: {', '.join(valid)}")
    out = {}
    for model in models:
        table = f"{section}.{model}" if model in overrides else section
        settings = {**shared, **overrides.get(model, {})}
        if any(key in settings for key in WEIGHTS_SETTINGS):
            out[model] = _weights(loc, section, model, shared, overrides.get(model, {}))
            continue
        try:
            out[model] = Recipe.from_dict(settings).to_dict()
        except (TypeError, ValueError) as err:
            raise loc.error(table, None, str(err)) from err
    return out


def _weights(loc: Locator, section: str, model: str, shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A model's validated weights settings (``weights``, ``weights_sha256``, ``weights_download``).

    Recipe keys that would train it — in its own table, or beside shared weights — are an error.
    """
    settings = {**shared, **own}

    def table(key: str) -> str:
        return f"{section}.{model}" if key in own else section

    if "weights" not in settings:
        key = next(k for k in WEIGHTS_SETTINGS if k in settings)
        raise loc.error(table(key), key, "applies only together with weights")
    for key, kind in zip(WEIGHTS_SETTINGS, (str, str, bool)):
        if key in settings:
            check_type(loc, table(key), key, settings[key], kind)
    stray = [k for k in own if k not in WEIGHTS_SETTINGS]
    stray += [k for k in shared if k not in WEIGHTS_SETTINGS] if "weights" in shared else []
    if stray:
        raise loc.error(table(stray[0]), stray[0], f"{model} is given weights, so it is loaded and evaluated, never "
                                                   f"trained: recipe key(s) {', '.join(stray)} do not apply")
    try:
        Weights(settings["weights"])
    except WeightsError as err:
        raise loc.error(table("weights"), "weights", str(err)) from err
    try:
        weights = Weights.from_settings(settings)
    except WeightsError as err:
        raise loc.error(table("weights_sha256"), "weights_sha256", str(err)) from err
    return {**weights.identity(), "weights_download": bool(settings.get("weights_download", False))}


def _check_split_batches(loc: Locator, finetune: dict[str, dict[str, Any]], workers: int) -> None:
    """``workers`` data-parallel replicas split every fine-tuning batch evenly: each model's batch size must divide."""
    for model, recipe in finetune.items():
        if recipe["batch_size"] % workers:
            raise loc.error("resources", "workers", f"{workers} workers split each fine-tuning batch evenly, but "
                                                    f"{model}'s [finetune] batch_size {recipe['batch_size']} is not a "
                                                    f"multiple of {workers}")


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raise :class:`SuiteError` pointing at the offending line."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: no such suite file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SuiteError(f"{path}: not UTF-8 text (byte {err.start}); a suite file is TOML, which is UTF-8") from None
    except OSError as err:
        raise SuiteError(f"{path}: cannot be read: {err.strerror or err}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from err
    return parse_suite(raw, str(path), text)


def parse_suite(raw: dict[str, Any], path: str = "<suite>", text: str = "") -> Suite:
    """Validate a parsed suite mapping (``text`` is used only to locate errors)."""
    loc = Locator(path, text)
    for section, body in raw.items():
        if section not in SECTIONS:
            raise loc.error(section, None, f"unknown section; valid sections: {', '.join(SECTIONS)}")
        if not isinstance(body, dict):
            raise loc.error(section, None, "must be a table")
        if SECTIONS[section]:
            check_keys(loc, section, body, SECTIONS[section])
    options = {k: dict(v) for k, v in raw.get("criterion_options", {}).items()}
    grids = parse_grids(loc, raw.get("grid", {}), raw.get("prune", {}), options)
    unknown_options = set(options) - {c for g in grids for c in g.criteria} - set(criteria.names())
    if unknown_options:
        raise loc.error("criterion_options", None, f"options for unknown criteria {sorted(unknown_options)}; "
                                                   f"valid: {', '.join(criteria.names())}")
    for (section, key), least in MINIMUM.items():
        value = raw.get(section, {}).get(key)
        if value is not None and value < least:
            raise loc.error(section, key, f"must be an integer of at least {least}, got {value}")
    resources = {**RESOURCE_DEFAULTS, **raw.get("resources", {})}
    for key in ("cpu", "gpu"):
        if resources[key] < 0:
            raise loc.error("resources", key, f"must be non-negative, got {resources[key]}")
    run = {**RUN_DEFAULTS, **raw.get("run", {})}
    problem = location_problem(run["tune_storage"])
    if problem:
        raise loc.error("run", "tune_storage", problem)
    model_names = _first_seen([g.models for g in grids])
    dense = dict(raw.get("dense", {}))
    fixtures_folder = dense.pop("fixtures", "")
    check_type(loc, "dense", "fixtures", fixtures_folder, str)
    try:
        fixtures = read_manifest(fixtures_folder) if fixtures_folder else {}
    except FixturesError as err:
        raise loc.error("dense", "fixtures", str(err)) from err
    finetune = _recipes(loc, "finetune", raw.get("finetune", {"epochs": 1}), model_names, models.names())
    _check_split_batches(loc, finetune, resources["workers"])
    name = raw.get("suite", {}).get("name", Path(path).stem)
    if not SAFE_NAME.fullmatch(name):
        given = "name" in raw.get("suite", {})
        raise loc.error("suite", "name" if given else None,
                        f"{'' if given else 'the file name gives the suite its name, and '}{name!r} cannot name a "
                        "results folder: use letters, digits, '.', '_' and '-', starting with a letter or digit, at "
                        "most 100 characters")
    return Suite(
        name=name,
        path=path,
        description=raw.get("suite", {}).get("description", ""),
        grids=grids,
        calibration={**CALIBRATION_DEFAULTS, **raw.get("calibration", {})},
        criterion_options=options,
        dense=_recipes(loc, "dense", dense, model_names, models.names()),
        finetune=finetune,
        measure={**MEASURE_DEFAULTS, **raw.get("measure", {})},
        data={"root": None, "download": False, "options": {}, **raw.get("data", {})},
        resources=resources,
        run=run,
        fixtures_folder=fixtures_folder,
        fixtures=fixtures,
    )
