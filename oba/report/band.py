"""Noise bands: how far a setting's seed mean may move without a change of code.

A *setting* is (model, dataset, criterion, structure, allocation, ratio,
schedule, stage_ratio): an iterative schedule's every stage is a setting of its
own (its ``stage_ratio``, the fraction removed after that stage; a one-shot
setting's ``stage_ratio`` is its ratio). Its outcome is the mean over seeds of a gated metric (:data:`GATED_METRICS`:
accuracies in percent, fidelity as 100·ρ). The same commit on another CPU changes every dense weight in its last
bits, and pruning plus fine-tuning turn that into a different seed mean. Two
spreads describe it:

* the **seed spread** s_seed: the standard deviation over the reference's seeds;
  s_seed/√n is what a machine change that re-randomised every seed would do to
  the seed mean (an upper bound);
* the **machine spread** s_machine: the standard deviation of the seed mean over
  runs of the same suite under different (emulated) CPUs, measured.

The band of a setting is the drop in its seed mean that the gate still accepts:

    σ     = max(s_machine(setting), s_machine pooled over its family)   when measured,
            s_seed / √n                                                 otherwise
    band  = max(floor, z · √2 · σ)

The family is the setting's board: (model, dataset, structure, allocation,
ratio, schedule, stage_ratio) and metric — how noisy an outcome is depends strongly on the ratio.
Pooling is the root mean square over the family's settings (the pooled
variance, 2 × settings degrees of freedom with three machines): a spread
estimated from three machines alone has two degrees of freedom and comes out
near zero by chance, which makes an over-tight band. A robust alternative, the
family's median, was tried and rejected on evidence: with bands measured on two
machines, it failed 7 of 176 leave-one-machine-out comparisons of an unchanged
commit, the pooled variance none (``benchmarks/README.md``). The price is that
one chaotic criterion widens the bands of the stable ones on its board. √2
because the gate compares two runs that each carry machine noise. With z = 3 a
single setting of an unchanged commit fails about once in 700 when σ is right.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import pandas as pd

from oba._errors import UserError
from oba._messages import one_line
from oba.report.stages import ONE_SHOT

STAGE_KEYS = ("schedule", "stage_ratio")
SETTING_KEYS = ("model", "dataset", "criterion", "structure", "allocation", "ratio", *STAGE_KEYS)
FAMILY_KEYS = tuple(k for k in SETTING_KEYS if k != "criterion")
RATIO_KEYS = ("ratio", "stage_ratio")
GATED_METRICS = ("pruned_acc", "final_acc", "fidelity")
"""Accuracies in percent; fidelity (Spearman ρ of unit score and loss change) as 100·ρ, so that one floor and one
table serve all three."""
METRIC_LABELS = {"pruned_acc": "accuracy after pruning (BN-recalibrated)", "final_acc": "accuracy after fine-tuning",
                 "fidelity": "fidelity, 100 × Spearman ρ(unit score, loss change)"}
BAND_FILE = "band.json"
FORMAT = 1
TOP_KEYS = ("format", "z", "floor", "machines", "settings")
DEFAULT_Z = 3.0


def _stage_field(row: pd.Series | dict, name: str, default: object) -> object:
    """``row[name]``, or ``default`` where the row lacks it (absent, None, NaN or "")."""
    value = row.get(name)
    missing = value is None or value == "" or (isinstance(value, float) and math.isnan(value))
    return default if missing else value


def setting_key(row: pd.Series | dict) -> tuple:
    """The setting of a row, ratios rounded so that float noise never splits a setting.

    A row (or band-file entry) without ``schedule`` and ``stage_ratio`` (written before
    the iterative protocol) is one-shot: schedule :data:`~.stages.ONE_SHOT`, stage ratio its ratio.
    """
    named = {k: row[k] for k in SETTING_KEYS if k not in STAGE_KEYS}
    named["schedule"] = _stage_field(row, "schedule", ONE_SHOT)
    named["stage_ratio"] = _stage_field(row, "stage_ratio", row["ratio"])
    return tuple(round(float(named[k]), 9) if k in RATIO_KEYS else str(named[k]) for k in SETTING_KEYS)


def seed_values(table: pd.DataFrame, metric: str) -> dict[tuple, pd.Series]:
    """Per setting, the ok cells' ``metric`` in percent, indexed by seed (NaN metrics dropped)."""
    ok = table[(table["status"] == "ok") & table[metric].notna()]
    out: dict[tuple, pd.Series] = {}
    for _, row in ok.iterrows():
        out.setdefault(setting_key(row), {})[int(row["seed"])] = float(row[metric]) * 100.0
    return {key: pd.Series(values).sort_index() for key, values in out.items()}


@dataclass(frozen=True)
class MetricBand:
    """One gated metric of one setting in the reference (percent)."""

    mean: float
    seeds: int
    seed_std: float
    machine_std: float | None
    machines: int
    sigma: float
    band: float


@dataclass(frozen=True)
class SettingBand:
    """The bands of one setting, one per gated metric."""

    key: tuple
    metrics: dict[str, MetricBand]


@dataclass
class Band:
    """The bands of every setting of a reference, and how they were made."""

    z: float
    floor: float
    machines: list[str]
    settings: dict[tuple, SettingBand] = field(default_factory=dict)
    created: str = ""

    def allowed_drop(self, key: tuple, metric: str) -> float | None:
        """The band of ``key`` for ``metric``, or None when the reference has no band for it."""
        setting = self.settings.get(key)
        if setting is None or metric not in setting.metrics:
            return None
        return setting.metrics[metric].band

    def sigma(self, key: tuple, metric: str) -> float | None:
        """σ of ``key`` for ``metric`` (percent; the noise the band is built from), or None when absent."""
        setting = self.settings.get(key)
        if setting is None or metric not in setting.metrics:
            return None
        return setting.metrics[metric].sigma

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the band as JSON (a small file kept beside the reference)."""
        payload = {
            "format": FORMAT,
            "z": self.z,
            "floor": self.floor,
            "machines": self.machines,
            "created": self.created,
            "formula": "band = max(floor, z * sqrt(2) * sigma); sigma = max(machine std of the seed mean, the pooled "
                       "(root mean square) machine std of its board), or seed std / sqrt(seeds) where no machine spread "
                       "was measured",
            "settings": [
                {**dict(zip(SETTING_KEYS, s.key)), **{m: asdict(b) for m, b in s.metrics.items()}}
                for s in self.settings.values()
            ],
        }
        target = Path(path)
        target.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        return target

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Band:
        """Read a band file; :class:`BandFileError` naming the file (and what it expected) when it is not one."""
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls._parse(payload)
        except (OSError, ValueError, RecursionError) as err:
            raise BandFileError(f"{os.fspath(path)}: not a readable band file ({one_line(str(err))})") from err

    @classmethod
    def _parse(cls, payload: object) -> Band:
        """The band a parsed band file describes; ``ValueError`` saying what was expected where."""
        if not isinstance(payload, dict):
            raise ValueError(f"expected a JSON object with {', '.join(TOP_KEYS)}, got {_kind(payload)}")
        if isinstance(payload.get("format"), bool) or payload.get("format") != FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, this version reads {FORMAT}")
        missing = [k for k in TOP_KEYS if k not in payload]
        if missing:
            raise ValueError(f"expected a JSON object with {', '.join(TOP_KEYS)}; {', '.join(missing)} missing")
        machines = _expect(payload["machines"], isinstance(payload["machines"], list)
                           and all(isinstance(m, str) for m in payload["machines"]), "machines", "a list of names")
        created = payload.get("created", "")
        band = cls(z=_number(payload["z"], "z"), floor=_number(payload["floor"], "floor"), machines=list(machines),
                   created=_expect(created, isinstance(created, str), "created", "a text"))
        entries = _expect(payload["settings"], isinstance(payload["settings"], list), "settings", "a list of settings")
        for index, entry in enumerate(entries):
            setting = _setting(entry, f"settings[{index}]")
            band.settings[setting.key] = setting
        return band


class BandFileError(UserError, ValueError):
    """A band file that cannot be read or does not hold a band: the message names the file and what was expected."""


def _kind(value: object) -> str:
    """The JSON name of ``value``'s type, for messages."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a text", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _expect(value: object, ok: bool, where: str, wanted: str) -> Any:
    """``value`` when ``ok``; else ``ValueError`` naming ``where`` it is, what was wanted and what it holds."""
    if not ok:
        raise ValueError(f"{where}: expected {wanted}, got {_kind(value)}")
    return value


def _object(value: object, where: str, keys: Sequence[str]) -> dict:
    """``value`` as a JSON object holding every one of ``keys``."""
    _expect(value, isinstance(value, dict), where, f"an object with {', '.join(keys)}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ValueError(f"{where}: expected an object with {', '.join(keys)}; {', '.join(missing)} missing")
    return value


def _number(value: object, where: str, optional: bool = False) -> Any:
    """``value`` when it is a number (NaN included), or null when ``optional``."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return _expect(value, number or (optional and value is None), where, "a number or null" if optional else "a number")


def _setting(entry: object, where: str) -> SettingBand:
    """One ``settings`` entry: the setting's keys (``schedule`` and ``stage_ratio`` may be absent or null, as in
    files written before the iterative protocol) and its metrics' bands."""
    named = _object(entry, where, [k for k in SETTING_KEYS if k not in STAGE_KEYS])
    for key in (k for k in SETTING_KEYS if k not in RATIO_KEYS and k not in STAGE_KEYS):
        _expect(named[key], isinstance(named[key], str), f"{where}.{key}", "a text")
    _number(named["ratio"], f"{where}.ratio")
    schedule = named.get("schedule")
    _expect(schedule, schedule is None or isinstance(schedule, str), f"{where}.schedule", "a text or null")
    _number(named.get("stage_ratio"), f"{where}.stage_ratio", optional=True)
    metrics = {m: _metric_band(named[m], f"{where}.{m}") for m in GATED_METRICS if m in named}
    return SettingBand(setting_key(named), metrics)


def _metric_band(value: object, where: str) -> MetricBand:
    """One metric's band: every field of :class:`MetricBand`, numbers (``machine_std`` may be null)."""
    fields = [f.name for f in dataclass_fields(MetricBand)]
    record = _object(value, where, fields)
    for name in fields:
        if name in ("seeds", "machines"):
            _expect(record[name], isinstance(record[name], int) and not isinstance(record[name], bool),
                    f"{where}.{name}", "a whole number")
        else:
            _number(record[name], f"{where}.{name}", optional=name == "machine_std")
    return MetricBand(**{name: record[name] for name in fields})


def sample_std(values: Iterable[float]) -> float:
    """Sample standard deviation (n − 1); NaN for fewer than two values."""
    values = list(values)
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def machine_spreads(runs: list[pd.DataFrame], metric: str) -> dict[tuple, tuple[float, int]]:
    """Per setting: the std over runs of the seed mean (over the seeds every run has), and the number of runs."""
    per_run = [seed_values(run, metric) for run in runs]
    out = {}
    for key in set().union(*per_run):
        present = [values[key] for values in per_run if key in values]
        if len(present) < 2:
            continue
        shared = set(present[0].index).intersection(*(set(v.index) for v in present[1:]))
        if not shared:
            continue
        means = [float(v.loc[sorted(shared)].mean()) for v in present]
        out[key] = (sample_std(means), len(present))
    return out


def _family(key: tuple) -> tuple:
    named = dict(zip(SETTING_KEYS, key))
    return tuple(named[k] for k in FAMILY_KEYS)


def measure_band(
    reference: pd.DataFrame,
    machine_runs: list[pd.DataFrame] | None = None,
    machine_names: list[str] | None = None,
    z: float = DEFAULT_Z,
    floor: float = 0.5,
) -> Band:
    """The band of every setting of ``reference`` (normalised results tables).

    ``machine_runs`` are runs of the same suite under other CPUs; the reference
    is one of the machines. Without them every band falls back to the seed spread.
    """
    runs = [reference, *(machine_runs or [])]
    band = Band(z=z, floor=floor, machines=list(machine_names or [f"run {i}" for i in range(len(runs))]),
                created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    metrics: dict[tuple, dict[str, MetricBand]] = {}
    for metric in GATED_METRICS:
        seeds = seed_values(reference, metric)
        spreads = machine_spreads(runs, metric) if len(runs) > 1 else {}
        pooled: dict[tuple, list[float]] = {}
        for key, (std, _) in spreads.items():
            if not math.isnan(std):
                pooled.setdefault(_family(key), []).append(std ** 2)
        for key, values in seeds.items():
            seed_std = sample_std(values)
            own = spreads.get(key)
            family = pooled.get(_family(key))
            if own is not None and not math.isnan(own[0]):
                sigma = max(own[0], math.sqrt(sum(family) / len(family))) if family else own[0]
            else:
                sigma = seed_std / math.sqrt(len(values)) if not math.isnan(seed_std) else math.nan
            allowed = floor if math.isnan(sigma) else max(floor, z * math.sqrt(2.0) * sigma)
            metrics.setdefault(key, {})[metric] = MetricBand(
                mean=float(values.mean()), seeds=len(values), seed_std=seed_std,
                machine_std=None if own is None else own[0], machines=1 if own is None else own[1],
                sigma=sigma, band=allowed,
            )
    band.settings = {key: SettingBand(key, m) for key, m in sorted(metrics.items())}
    return band
