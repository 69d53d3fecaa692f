"""Suite files: TOML → a validated :class:`Suite`.

A suite names the grid (models × datasets × criteria × ratios × seeds ×
structures × allocations) and everything held fixed across it: the pruning
protocol, calibration data, dense and fine-tuning recipes (``[dense]`` keys for
every model, a ``[dense.<model>]`` table overriding them for one model; the
same for ``[finetune]``), measurements and per-trial resources. Instead of a
training recipe, ``[dense]``/``[dense.<model>]`` may give pretrained
``weights`` (with ``weights_sha256`` and ``weights_download``; see
:mod:`oba.models.weights`): that model is then loaded and evaluated, never
trained, and recipe keys in the same table are an error. Every error names the file, the line, the key and what is
allowed, and is raised before anything runs.
"""
from __future__ import annotations


import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..models.weights import SETTINGS as WEIGHTS_SETTINGS
from ..models.weights import Weights, WeightsError
from ..pruning import STRUCTURES
from ..pruning.allocation import NORMALISERS
from ..pruning.structured import ALLOCATIONS
from ..train import Recipe


class SuiteError(ValueError):
    """A suite file that cannot run, with the place and the reason."""


SECTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "suite": {"name": str, "description": str},
    "grid": {
        "models": list, "datasets": list, "criteria": list, "ratios": list, "seeds": list,
        "structures": list, "allocations": list,
    },
    "prune": {"steps": int, "layer_cap": (int, float), "normalisation": str, "mode": str, "recalibration_batches": int},
    "calibration": {"batches": int, "batch_size": int},
    "criterion_options": {},
    "dense": {},
    "finetune": {},
    "measure": {"latency_batch_size": int, "latency_repeats": int, "fidelity_sample": int},
    "data": {"root": str, "download": bool, "options": dict},
    "resources": {"cpu": (int, float), "gpu": (int, float)},
    "run": {"max_concurrent": int, "max_failures": int, "cache_dir": str, "max_trials": int},
}
REQUIRED_GRID = ("models", "datasets", "criteria", "ratios", "seeds")


@dataclass(frozen=True)
class Suite:
    """A validated suite: the grid axes and the settings shared by every cell."""

    name: str
    path: str
    description: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    criteria: tuple[str, ...]
    ratios: tuple[float, ...]
    seeds: tuple[int, ...]
    structures: tuple[str, ...] = ("channels",)
    allocations: tuple[str, ...] = ("global",)
    prune: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    criterion_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    dense: dict[str, dict[str, Any]] = field(default_factory=dict)
    finetune: dict[str, dict[str, Any]] = field(default_factory=dict)
    measure: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)


PRUNE_DEFAULTS = {"steps": 5, "layer_cap": 0.9, "normalisation": "mean", "mode": "eval", "recalibration_batches": 16}
CALIBRATION_DEFAULTS = {"batches": 4, "batch_size": 64}
MEASURE_DEFAULTS = {"latency_batch_size": 64, "latency_repeats": 15, "fidelity_sample": 64}
RESOURCE_DEFAULTS = {"cpu": 1, "gpu": 0}
RUN_DEFAULTS = {"max_concurrent": 0, "max_failures": 2, "max_trials": 1000}


class _Locator:
    """Finds the line of ``[section]`` / ``key =`` in the suite text for error messages."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line(self, section: str, key: str | None = None) -> int | None:
        current = None
        for number, raw in enumerate(self.lines, 1):
            stripped = raw.strip()
            header = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
            if header:
                current = header.group(1).strip().strip('"')
                if key is None and current == section:
                    return number
                continue
            if key is not None and current == section and re.match(rf'^"?{re.escape(key)}"?\s*=', stripped):
                return number
        return None

    def error(self, section: str, key: str | None, message: str) -> SuiteError:
        number = self.line(section, key)
        where = f"{self.path}:{number}" if number else self.path
        name = f"[{section}]" + (f" {key}" if key else "")
        return SuiteError(f"{where}: {name}: {message}")


def _check_type(loc: _Locator, section: str, key: str, value: Any, kind: type | tuple[type, ...]) -> None:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise loc.error(section, key, f"expected {names}, got {type(value).__name__} {value!r}")


def _names(loc: _Locator, key: str, values: list[Any], valid: list[str], allow_dotted: bool = False) -> tuple[str, ...]:
    if not values:
        raise loc.error("grid", key, "must list at least one entry")
    for value in values:
        if not isinstance(value, str):
            raise loc.error("grid", key, f"entries must be strings, got {value!r}")
        if value not in valid and not (allow_dotted and ":" in value):
            extra = " (or 'module:object')" if allow_dotted else ""
            raise loc.error("grid", key, f"unknown {key[:-1] if key != 'criteria' else 'criterion'} {value!r}; valid: {', '.join(valid)}{extra}")
    if len(set(values)) != len(values):
        raise loc.error("grid", key, f"lists an entry twice: {values}")
    return tuple(values)


def _recipes(loc: _Locator, section: str, values: dict[str, Any], models: tuple[str, ...], known: list[str]) -> dict[str, dict[str, Any]]:
    """One resolved recipe per grid model: the section's keys, overridden by a ``[section.<model>]`` table.

    Overrides may name any registered model (a subset suite can share its parent's file layout). In
    ``[dense]``, a model whose resolved keys name ``weights`` gets the weights settings instead of a recipe.
    """
    shared = {k: v for k, v in values.items() if not isinstance(v, dict)}
    overrides = {k: v for k, v in values.items() if isinstance(v, dict)}
    recipe_keys = sorted(f.name for f in fields(Recipe))
    valid = recipe_keys + list(WEIGHTS_SETTINGS) if section == "dense" else recipe_keys
    for name in overrides:
        if name not in known:
            raise loc.error(f"{section}.{name}", None, f"override for an unknown model; valid models: {', '.join(known)}")
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


def _weights(loc: _Locator, section: str, model: str, shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
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
            _check_type(loc, table(key), key, settings[key], kind)
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


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raise :class:`SuiteError` pointing at the offending line."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: no such suite file")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from err
    return parse_suite(raw, str(path), text)


def parse_suite(raw: dict[str, Any], path: str = "<suite>", text: str = "") -> Suite:
    """Validate a parsed suite mapping (``text`` is used only to locate errors)."""
    from .. import criteria, data, models

    loc = _Locator(path, text)
    for section, body in raw.items():
        if section not in SECTIONS:
            raise loc.error(section, None, f"unknown section; valid sections: {', '.join(SECTIONS)}")
        if not isinstance(body, dict):
            raise loc.error(section, None, "must be a table")
        allowed = SECTIONS[section]
        if allowed:
            for key, value in body.items():
                if key not in allowed:
                    raise loc.error(section, key, f"unknown key; valid keys: {', '.join(allowed)}")
                _check_type(loc, section, key, value, allowed[key])
    grid = raw.get("grid", {})
    for key in REQUIRED_GRID:
        if key not in grid:
            raise loc.error("grid", None, f"missing required key {key!r} (required: {', '.join(REQUIRED_GRID)})")
    criteria_names = criteria.names()
    crit = list(grid["criteria"])
    if crit == ["all"]:
        crit = criteria_names
    suite_criteria = _names(loc, "criteria", crit, criteria_names, allow_dotted=True)
    for name in suite_criteria:
        options = raw.get("criterion_options", {}).get(name, {})
        try:
            criterion = criteria.get(name, **options)
        except (TypeError, ValueError) as err:
            raise loc.error("grid", "criteria", f"criterion {name!r} cannot be built: {err}") from err
        if isinstance(criterion, criteria.SeededCriterion) and "seed" in options:
            raise loc.error("criterion_options", name, "a randomised criterion's base seed is the cell's seed (grid seeds)")
    unknown_options = set(raw.get("criterion_options", {})) - set(suite_criteria) - set(criteria_names)
    if unknown_options:
        raise loc.error("criterion_options", None, f"options for unknown criteria {sorted(unknown_options)}; valid: {', '.join(criteria_names)}")
    ratios = grid["ratios"]
    if not ratios or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < r < 1.0 for r in ratios):
        raise loc.error("grid", "ratios", f"each ratio must be a number in (0, 1), got {ratios}")
    seeds = grid["seeds"]
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise loc.error("grid", "seeds", f"seeds must be non-negative integers, got {seeds}")
    prune = {**PRUNE_DEFAULTS, **raw.get("prune", {})}
    if prune["normalisation"] not in NORMALISERS:
        raise loc.error("prune", "normalisation", f"valid: {', '.join(NORMALISERS)}")
    if prune["mode"] not in ("eval", "train"):
        raise loc.error("prune", "mode", "valid: eval, train")
    if not 0.0 < prune["layer_cap"] < 1.0:
        raise loc.error("prune", "layer_cap", f"must be in (0, 1), got {prune['layer_cap']}")
    if prune["steps"] < 1:
        raise loc.error("prune", "steps", f"must be at least 1, got {prune['steps']}")
    if prune["recalibration_batches"] < 0:
        raise loc.error("prune", "recalibration_batches", f"must be 0 (off) or more batches, got {prune['recalibration_batches']}")
    resources = {**RESOURCE_DEFAULTS, **raw.get("resources", {})}
    if resources["cpu"] < 0 or resources["gpu"] < 0:
        raise loc.error("resources", None, f"resources must be non-negative, got {resources}")
    run = {**RUN_DEFAULTS, **raw.get("run", {})}
    if run["max_trials"] < 1:
        raise loc.error("run", "max_trials", f"must be at least 1, got {run['max_trials']}")
    model_names = _names(loc, "models", list(grid["models"]), models.names())
    return Suite(
        name=raw.get("suite", {}).get("name", Path(path).stem),
        path=path,
        description=raw.get("suite", {}).get("description", ""),
        models=model_names,
        datasets=_names(loc, "datasets", list(grid["datasets"]), data.names()),
        criteria=suite_criteria,
        ratios=tuple(float(r) for r in ratios),
        seeds=tuple(int(s) for s in seeds),
        structures=_names(loc, "structures", list(grid.get("structures", ["channels"])), list(STRUCTURES)),
        allocations=_names(loc, "allocations", list(grid.get("allocations", ["global"])), list(ALLOCATIONS)),
        prune=prune,
        calibration={**CALIBRATION_DEFAULTS, **raw.get("calibration", {})},
        criterion_options={k: dict(v) for k, v in raw.get("criterion_options", {}).items()},
        dense=_recipes(loc, "dense", raw.get("dense", {}), model_names, models.names()),
        finetune=_recipes(loc, "finetune", raw.get("finetune", {"epochs": 1}), model_names, models.names()),
        measure={**MEASURE_DEFAULTS, **raw.get("measure", {})},
        data={"root": None, "download": False, "options": {}, **raw.get("data", {})},
        resources=resources,
        run=run,
    )
