"""Mixed precision and memory format of training and evaluation; stable keys; loader workers from the trial's CPUs."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from oba import criteria, data, models
from oba.suite.cells import expand
from oba.suite.config import load_suite
from oba.training.checkpoints import checkpoint_key
from oba.training.train import Recipe, evaluate, fine_tune, train

SMOKE = Path(__file__).resolve().parents[1] / "suites" / "smoke.toml"

# Cell ids as of the golden dense fixtures (each mnist5k cell's dense settings are its pinned weights file; one
# fine-tuning epoch; 8 recalibration batches; the dense keys, which find the fixtures, date from before Recipe had
# precision and channels_last, commit da6824a): defaults must keep every cell id and dense key.
SMOKE_CELL_IDS = {
    "resnet8/mnist5k/kfac-obd/channels/global/r=0.1/s=0": "02eb9778a9a94bf263a8",
    "resnet8/mnist5k/kfac-obd/channels/global/r=0.1/s=1": "6350bac6caa444f34ddb",
    "vgg-tiny/mnist5k/kfac-obd/channels/global/r=0.1/s=0": "0d7c49decc1c50824637",
    "vgg-tiny/mnist5k/taylor/channels/global/r=0.2/s=2": "7cbf032b3cba1c1b7802",
}
SMOKE_DENSE_KEYS = {"resnet8": "06fe31df1664c912d4df", "vgg-tiny": "a4c15bd1472d0879a273"}


def _digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _vgg(splits: data.Splits, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.create("vgg-tiny", splits.info.num_classes, splits.info.in_chans, splits.info.image_size)


def _ids(path: Path) -> dict[str, str]:
    return {cell.label(): cell.cell_id for cell in expand(load_suite(path))}


def test_recipe_validates_precision_and_channels_last_and_omits_their_defaults() -> None:
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid precisions: fp32, bf16, fp16"):
        Recipe(precision="fp8")
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="channels_last must be"):
            Recipe(channels_last=bad)  # type: ignore[arg-type]
    assert Recipe(precision="fp32", channels_last="auto") == Recipe()
    assert {"precision", "channels_last"}.isdisjoint(Recipe().to_dict())
    custom = Recipe(precision="bf16", channels_last=False)
    assert custom.to_dict()["precision"] == "bf16" and custom.to_dict()["channels_last"] is False
    assert Recipe.from_dict(custom.to_dict()) == custom
    assert Recipe.from_dict(Recipe().to_dict()) == Recipe()


def test_defaults_keep_the_smoke_cell_ids_and_dense_keys(tmp_path: Path) -> None:
    ids = _ids(SMOKE)
    assert {label: ids[label] for label in SMOKE_CELL_IDS} == SMOKE_CELL_IDS
    suite = load_suite(SMOKE)
    options = suite.data.get("options", {})
    keys = {m: checkpoint_key(m, "mnist5k", Recipe.from_dict(suite.dense[m]), 0, options) for m in suite.models}
    assert keys == SMOKE_DENSE_KEYS

    text = SMOKE.read_text()
    explicit = tmp_path / "explicit.toml"
    explicit.write_text(text.replace("[finetune]\n", '[finetune]\nprecision = "fp32"\nchannels_last = "auto"\n', 1))
    assert _ids(explicit) == ids, "giving the defaults explicitly changes no cell id"
    mixed = tmp_path / "mixed.toml"
    mixed.write_text(text.replace("[finetune]\n", '[finetune]\nprecision = "bf16"\n', 1))
    assert set(_ids(mixed).values()).isdisjoint(ids.values()), "a non-default precision is part of every cell id"
    bf16 = Recipe.from_dict({**suite.dense["resnet8"], "precision": "bf16"})
    assert checkpoint_key("resnet8", "mnist5k", bf16, 0, options) != SMOKE_DENSE_KEYS["resnet8"]


def test_a_suite_names_a_bad_precision(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SMOKE.read_text().replace("[finetune]\n", '[finetune]\nprecision = "half"\n', 1))
    with pytest.raises(ValueError, match="finetune.*unknown precision 'half'"):
        load_suite(bad)


def test_the_default_recipe_trains_without_autocast_exactly_as_an_explicit_fp32_one() -> None:
    splits = data.load("synthetic", n=128)
    digests, autocast_seen = [], []
    for recipe in (Recipe(epochs=1, batch_size=32, lr=0.05), Recipe(epochs=1, batch_size=32, lr=0.05, precision="fp32")):
        model = _vgg(splits)
        model.register_forward_hook(lambda *_: autocast_seen.append(torch.is_autocast_enabled("cpu")))
        train(model, splits, recipe, device="cpu")
        digests.append(_digest(model))
    assert digests[0] == digests[1]
    assert autocast_seen and not any(autocast_seen)


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_fine_tune_on_cpu_learns_with_fp32_master_weights(
    precision: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forward in the low dtype, weights and their gradients in fp32; fp16 (only) scales the loss."""
    splits = data.load("synthetic", n=200, noise=1.5)
    model = _vgg(splits)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    conv.register_forward_hook(lambda m, args, out: seen.append((out.dtype, m.weight.dtype)) if m.training else None)
    scaled: list[bool] = []
    scale = torch.amp.GradScaler.scale

    def spy(self: torch.amp.GradScaler, outputs: Any) -> Any:
        scaled.append(self.is_enabled())
        return scale(self, outputs)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", spy)
    before = evaluate(model, splits.val)
    result = fine_tune(model, splits, Recipe(epochs=3, batch_size=32, lr=0.05, precision=precision), device="cpu")
    assert seen and set(seen) == {(dtype, torch.float32)}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] and result.val["top1"] > before["top1"]
    assert set(scaled) == {precision == "fp16"}
    assert not torch.is_autocast_enabled("cpu")


def test_bf16_evaluation_agrees_with_fp32() -> None:
    splits = data.load("synthetic", n=300, noise=1.5)
    model = _vgg(splits)
    train(model, splits, Recipe(epochs=3, batch_size=32, lr=0.05), device="cpu")
    full, half = evaluate(model, splits.test), evaluate(model, splits.test, precision="bf16")
    assert full["top1"] > 0.5
    assert abs(half["top1"] - full["top1"]) <= 0.05
    assert half["loss"] == pytest.approx(full["loss"], rel=0.05, abs=0.02)
    assert half["loss"] != full["loss"], "bf16 evaluation must actually run in bf16"


def _channels_last_seen(model: nn.Module) -> list[bool]:
    """Filled during every forward with whether the last convolution's weight was channels-last."""
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]  # several input channels: the formats differ
    seen: list[bool] = []
    conv.register_forward_hook(lambda m, args, out: seen.append(m.weight.is_contiguous(memory_format=torch.channels_last)))
    return seen


def test_channels_last_can_be_forced_off_and_on() -> None:
    splits = data.load("synthetic", n=64)
    for setting, expected in ((False, False), (True, True), ("auto", True)):
        model = _vgg(splits)
        seen = _channels_last_seen(model)
        train(model, splits, Recipe(epochs=1, batch_size=32, lr=0.01, channels_last=setting), device="cpu")
        assert seen and all(s == expected for s in seen), setting
        assert all(p.is_contiguous() for p in model.parameters())


def test_scoring_after_mixed_precision_training_runs_in_fp32() -> None:
    """Autocast ends with training: a criterion scoring the fine-tuned model computes fp32 scores, equal to those of a fresh copy."""
    splits = data.load("synthetic", n=96)
    model = _vgg(splits)
    train(model, splits, Recipe(epochs=1, batch_size=32, lr=0.05, precision="bf16"), device="cpu")
    batches = [(splits.train[i : i + 16][0], splits.train[i : i + 16][1]) for i in (0, 16)]
    loss = nn.CrossEntropyLoss()
    scores = criteria.get("fastoba", mode="eval").parameter_scores(model, batches, loss)
    copy = _vgg(splits)
    copy.load_state_dict(model.state_dict())
    again = criteria.get("fastoba", mode="eval").parameter_scores(copy, batches, loss)
    assert all(s.dtype == torch.float32 for s in scores.values())
    assert all(torch.equal(scores[name], again[name]) for name in scores)


class _Files(Dataset):
    """A stand-in for file-backed data (not a tensor dataset)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.full((2,), float(index)), index % 2


def test_loader_workers_come_from_the_caller_for_file_backed_data_only() -> None:
    files, memory = _Files(), data.load("synthetic").train
    loader = data.make_loader(files, 4, num_workers=2)
    assert loader.num_workers == 2 and loader.persistent_workers
    assert data.make_loader(files, 4, num_workers=0).num_workers == 0
    assert data.make_loader(files, 4).num_workers == min(8, os.cpu_count() or 1)
    assert data.make_loader(memory, 4, num_workers=3).num_workers == 0, "in-memory data never spawns workers"
    assert not data.make_loader(files, 4, device="cpu").pin_memory


def test_a_cell_passes_the_trial_cpus_to_every_loader_and_evaluates_in_its_recipe_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oba.suite.cell import run_cell
    from oba.training import train as train_module
    from suites import tiny_suite

    path = tiny_suite(tmp_path, criteria=("taylor",))
    path.write_text(path.read_text().replace("[finetune]\n", '[finetune]\nprecision = "bf16"\n', 1))
    (cell,) = expand(load_suite(path))
    workers: list[int | None] = []
    make_loader = train_module.make_loader

    def spy(*args: Any, **kwargs: Any) -> Any:
        workers.append(kwargs.get("num_workers"))
        return make_loader(*args, **kwargs)

    precisions: list[str] = []
    evaluate_ = train_module.evaluate

    def evaluate_spy(*args: Any, **kwargs: Any) -> Any:
        precisions.append(kwargs.get("precision", "fp32"))
        return evaluate_(*args, **kwargs)

    monkeypatch.setattr(train_module, "make_loader", spy)
    monkeypatch.setattr(train_module, "evaluate", evaluate_spy)
    monkeypatch.setattr("oba.suite.cell.evaluate", evaluate_spy)
    row = run_cell(cell, cache_dir=str(tmp_path / "cache"), device="cpu", num_workers=3)
    assert row["status"] == "ok", row.get("error")
    assert workers and set(workers) == {3}
    # dense training (fp32: 3 evaluations), then the pruned model and fine-tuning (bf16: 2 + 3)
    assert precisions == ["fp32"] * 3 + ["bf16"] * 5
