"""A suite's grids: the main ``[grid]`` and named sub-grids ``[grid.<name>]``, each with its pruning settings.

The main ``[grid]`` lists the axes (models, datasets, criteria, ratios, seeds;
structures and allocations default to channels / global). Every other table
under it, ``[grid.<name>]``, is one more grid: the axis keys it gives replace
the main grid's, and its ``prune`` table (``[grid.<name>.prune]`` or inline
``prune = {...}``) overrides ``[prune]`` keys for that grid only.

``[prune] stages = [s1, ..., sK]`` makes a grid's cells iterative: K ≥ 2
fractions of the dense MACs removed after each stage, strictly increasing, each
in (0, 1); the last is the cell's ratio. A grid whose resolved prune settings
have stages may leave ``ratios`` out (it becomes ``[sK]``); given, it must be
exactly ``[sK]``. The resolved prune dict holds ``stages`` only when it is set,
so cells without stages keep the ids they had before stages existed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from oba import criteria, data, models
from oba.criteria.reduction import REDUCTIONS
from oba.pruning.allocation import NORMALISERS
from oba.pruning.settings import ALLOCATIONS, DEFAULTS, STRUCTURES
from oba.suite.locator import Locator

AXES: dict[str, type] = {
    "models": list, "datasets": list, "criteria": list, "ratios": list, "seeds": list, "structures": list,
    "allocations": list,
}
REQUIRED = ("models", "datasets", "criteria", "ratios", "seeds")
AXIS_DEFAULTS = {"structures": [DEFAULTS.structure], "allocations": [DEFAULTS.allocation]}
PRUNE_KEYS: dict[str, type | tuple[type, ...]] = {
    "steps": int, "layer_cap": (int, float), "normalisation": str, "reduction": str, "mode": str, "recalibration_batches": int,
    "stages": list,
}
PRUNE_DEFAULTS = {**{key: getattr(DEFAULTS, key) for key in ("steps", "layer_cap", "normalisation", "mode")},
                  "reduction": "criterion", "recalibration_batches": 16}
"""The pruning settings' defaults (:data:`oba.pruning.settings.DEFAULTS`) and the suite's own keys. ``criterion``
(normalisation, reduction): each criterion as its authors run it; a name imposes one on all."""


def imposed_options(prune: dict[str, Any]) -> dict[str, str]:
    """The criterion options that resolved prune settings impose on every criterion: ``reduction`` and
    ``normaliser`` where the suite names one instead of ``criterion``."""
    return {option: prune[key] for option, key in (("reduction", "reduction"), ("normaliser", "normalisation"))
            if prune.get(key, "criterion") != "criterion"}


@dataclass(frozen=True)
class Grid:
    """One grid of a suite: its axes and its resolved pruning settings (``name`` None for the main ``[grid]``)."""

    name: str | None
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    criteria: tuple[str, ...]
    ratios: tuple[float, ...]
    seeds: tuple[int, ...]
    structures: tuple[str, ...]
    allocations: tuple[str, ...]
    prune: dict[str, Any]

    @property
    def table(self) -> str:
        """The suite table this grid comes from: ``grid`` or ``grid.<name>``."""
        return "grid" if self.name is None else f"grid.{self.name}"


def check_type(loc: Locator, section: str, key: str, value: Any, kind: type | tuple[type, ...]) -> None:
    """Raise unless ``value`` is of ``kind`` (a bool is not a number)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise loc.error(section, key, f"expected {names}, got {type(value).__name__} {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _names(loc: Locator, table: str, key: str, values: list[Any], valid: list[str], allow_dotted: bool = False,
           by_name: Callable[[str], None] | None = None) -> tuple[str, ...]:
    """``values`` checked: each in ``valid``, or (``allow_dotted``) any 'module:object', or one with ':' that
    ``by_name`` accepts (it raises ``ValueError`` otherwise: the model names ``torchvision:NAME``/``timm:NAME``)."""
    if not values:
        raise loc.error(table, key, "must list at least one entry")
    for value in values:
        if not isinstance(value, str):
            raise loc.error(table, key, f"entries must be strings, got {value!r}")
        if by_name is not None and ":" in value and value not in valid:
            try:
                by_name(value)
            except ValueError as err:
                raise loc.error(table, key, str(err)) from err
        elif value not in valid and not (allow_dotted and ":" in value):
            extra = " (or 'module:object')" if allow_dotted else " (or torchvision:NAME / timm:NAME)" if by_name else ""
            noun = "criterion" if key == "criteria" else key[:-1]
            raise loc.error(table, key, f"unknown {noun} {value!r}; valid: {', '.join(valid)}{extra}")
    if len(set(values)) != len(values):
        raise loc.error(table, key, f"lists an entry twice: {values}")
    return tuple(values)


def _stages(loc: Locator, table: str, stages: list[Any]) -> list[float]:
    """Validated ``stages``: at least two numbers in (0, 1), strictly increasing."""
    if len(stages) < 2:
        raise loc.error(table, "stages", f"needs at least two stages (one stage is a one-shot cell: give ratios), got {stages}")
    if not all(_number(s) and 0.0 < s < 1.0 for s in stages):
        raise loc.error(table, "stages", f"each stage must be a number in (0, 1) (the fraction of dense MACs removed "
                                         f"after it), got {stages}")
    if any(b <= a for a, b in zip(stages, stages[1:])):
        raise loc.error(table, "stages", f"stages must be strictly increasing, got {stages}")
    return [float(s) for s in stages]


def _prune(loc: Locator, settings: dict[str, Any], table_of: Callable[[str], str]) -> dict[str, Any]:
    """Validated resolved prune settings; ``table_of(key)`` is the table a key's value was given in."""
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "normalisation": (lambda v: v == "criterion" or v in NORMALISERS, f"valid: criterion, {', '.join(NORMALISERS)}"),
        "reduction": (lambda v: v == "criterion" or v in REDUCTIONS.names(), f"valid: criterion, {', '.join(REDUCTIONS.names())}"),
        "mode": (lambda v: v in ("eval", "train"), "valid: eval, train"),
        "layer_cap": (lambda v: 0.0 < v < 1.0, f"must be in (0, 1), got {settings['layer_cap']}"),
        "steps": (lambda v: v >= 1, f"must be at least 1, got {settings['steps']}"),
        "recalibration_batches": (lambda v: v >= 0,
                                  f"must be 0 (off) or more batches, got {settings['recalibration_batches']}"),
    }
    for key, (ok, message) in checks.items():
        if not ok(settings[key]):
            raise loc.error(table_of(key), key, message)
    if "stages" in settings:
        return {**settings, "stages": _stages(loc, table_of("stages"), settings["stages"])}
    return settings


def check_keys(loc: Locator, table: str, body: dict[str, Any], allowed: dict[str, Any], what: str = "") -> None:
    """Raise unless every key of ``body`` is ``allowed`` (``what`` added to the list of valid keys) with a value of
    its type (:func:`check_type`)."""
    for key, value in body.items():
        if key not in allowed:
            raise loc.error(table, key, f"unknown key; valid keys: {', '.join(allowed)}{what}")
        check_type(loc, table, key, value, allowed[key])


def _grid(loc: Locator, name: str | None, values: dict[str, Any], own: set[str], prune: dict[str, Any],
          criterion_options: dict[str, dict[str, Any]]) -> Grid:
    """One grid from its resolved axis ``values``; ``own`` are the keys its table gives (errors point there)."""
    table = "grid" if name is None else f"grid.{name}"

    def where(key: str) -> str:
        return table if key in own else "grid"

    if "stages" in prune:
        last = prune["stages"][-1]
        if "ratios" in own and list(values["ratios"]) != [last]:
            raise loc.error(table, "ratios", f"with stages {prune['stages']} the ratio is the last stage: give "
                                             f"ratios = [{last:g}] or leave ratios out, got {values['ratios']}")
        values = {**values, "ratios": [last]}
    elif "ratios" not in values:
        raise loc.error(table, None, f"missing required key 'ratios' (required: {', '.join(REQUIRED)}; ratios may be "
                                     "left out when [prune] stages is set)")
    ratios, seeds = values["ratios"], values["seeds"]
    if not ratios or not all(_number(r) and 0.0 < r < 1.0 for r in ratios):
        raise loc.error(where("ratios"), "ratios", f"each ratio must be a number in (0, 1), got {ratios}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise loc.error(where("seeds"), "seeds", f"seeds must be non-negative integers, got {seeds}")
    names = criteria.names()
    listed = names if list(values["criteria"]) == ["all"] else list(values["criteria"])
    grid_criteria = _names(loc, where("criteria"), "criteria", listed, names, allow_dotted=True)
    imposed = imposed_options(prune)
    for criterion in grid_criteria:
        options = criterion_options.get(criterion, {})
        try:
            built = criteria.get(criterion, **{**options, **imposed})
        except (TypeError, ValueError) as err:
            raise loc.error(where("criteria"), "criteria", f"criterion {criterion!r} cannot be built: {err}") from err
        if isinstance(built, criteria.SeededCriterion) and "seed" in options:
            raise loc.error("criterion_options", criterion, "a randomised criterion's base seed is the cell's seed (grid seeds)")
    structures = _names(loc, where("structures"), "structures", list(values["structures"]), list(STRUCTURES))
    if "stages" in prune and "unstructured" in structures:
        raise loc.error(where("structures"), "structures", "iterative stages apply to structured pruning only "
                                                           "(structures = [\"channels\"]), not unstructured")
    return Grid(
        name=name,
        models=_names(loc, where("models"), "models", list(values["models"]), models.names(),
                      by_name=models.check_name),
        datasets=_names(loc, where("datasets"), "datasets", list(values["datasets"]), data.names()),
        criteria=grid_criteria,
        ratios=tuple(float(r) for r in ratios),
        seeds=tuple(int(s) for s in seeds),
        structures=structures,
        allocations=_names(loc, where("allocations"), "allocations", list(values["allocations"]), list(ALLOCATIONS)),
        prune=prune,
    )


def parse_grids(loc: Locator, grid: dict[str, Any], prune: dict[str, Any],
                criterion_options: dict[str, dict[str, Any]]) -> tuple[Grid, ...]:
    """The main grid, then every ``[grid.<name>]`` sub-grid in file order, validated.

    ``grid`` is the parsed ``[grid]`` table (sub-grids are its table-valued keys), ``prune`` the ``[prune]`` table
    (its key types already checked).
    """
    main = {k: v for k, v in grid.items() if not isinstance(v, dict)}
    subs = {k: v for k, v in grid.items() if isinstance(v, dict)}
    for name in subs:
        if name in AXES:
            raise loc.error(f"grid.{name}", None, f"{name} is a grid key (a list), not a sub-grid name")
    check_keys(loc, "grid", main, AXES, "; a table [grid.<name>] is a sub-grid")
    main_prune = _prune(loc, {**PRUNE_DEFAULTS, **prune}, lambda key: "prune")
    for key in REQUIRED:
        if key not in main and key != "ratios":  # ratios: checked by _grid, which knows about stages
            raise loc.error("grid", None, f"missing required key {key!r} (required: {', '.join(REQUIRED)})")
    main_values = {**AXIS_DEFAULTS, **main}
    grids = [_grid(loc, None, main_values, set(main), main_prune, criterion_options)]
    for name, body in subs.items():
        table = f"grid.{name}"
        check_keys(loc, table, body, {**AXES, "prune": dict})
        own_prune = body.get("prune", {})
        check_keys(loc, f"{table}.prune", own_prune, PRUNE_KEYS)
        resolved = _prune(loc, {**main_prune, **own_prune},
                          lambda key: f"{table}.prune" if key in own_prune else "prune")
        axes = {k: v for k, v in body.items() if k != "prune"}
        inherited = {k: v for k, v in main_values.items() if not (k == "ratios" and "stages" in resolved)}
        grids.append(_grid(loc, name, {**inherited, **axes}, set(axes), resolved, criterion_options))
    return tuple(grids)
