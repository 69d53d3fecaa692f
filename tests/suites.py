"""Tiny suite files for runner tests: real data (scikit-learn digits), real training, seconds per cell."""
from __future__ import annotations

from pathlib import Path

TINY = """\
[suite]
name = "{name}"

[grid]
models = {models}
datasets = {datasets}
criteria = {criteria}
ratios = {ratios}
seeds = {seeds}

[prune]
steps = 1

[calibration]
batches = 1
batch_size = 32

[dense]
epochs = 1
batch_size = 64
lr = 0.05

[finetune]
epochs = 1
batch_size = 64
lr = 0.01

[measure]
latency_batch_size = 4
latency_repeats = 3
fidelity_sample = 6

[resources]
cpu = 1

[run]
max_failures = 3
cache_dir = "{cache}"
"""


def tiny_suite(folder: Path, name: str = "tiny", models=("resnet8",), criteria=("taylor", "magnitude-l1"),
               ratios=(0.3,), seeds=(0,), datasets=("digits",), data_root: Path | None = None) -> Path:
    """Write a tiny suite TOML under ``folder`` and return its path (``data_root`` adds a ``[data] root``)."""
    def toml_list(values) -> str:
        return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in values) + "]"

    path = folder / f"{name}.toml"
    text = TINY.format(name=name, models=toml_list(models), criteria=toml_list(criteria), ratios=toml_list(ratios),
                       seeds=toml_list(seeds), datasets=toml_list(datasets), cache=folder / "cache")
    path.write_text(text + (f'\n[data]\nroot = "{data_root}"\n' if data_root is not None else ""))
    return path


FIXTURED = """\
[grid]
models = ["resnet8"]
datasets = ["digits"]
criteria = ["taylor"]
ratios = [0.1]
seeds = {seeds}

[calibration]
batches = 2

[dense]
{fixtures}
epochs = {epochs}
batch_size = 64

[finetune]
epochs = 1
"""


def fixtured_suite(path: Path, fixtures: str | Path = "", epochs: int = 1, seeds: tuple[int, ...] = (0, 1)) -> Path:
    """Write a one-model suite (resnet8 on digits) whose ``[dense]`` names ``fixtures`` when given; return its path."""
    line = f'fixtures = "{fixtures}"' if fixtures else ""
    path.write_text(FIXTURED.format(fixtures=line, epochs=epochs, seeds=list(seeds)))
    return path
