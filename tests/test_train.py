"""Training, evaluation, model selection and the dense checkpoint cache (two processes racing included)."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from oba import data, models
from oba.core.memory_format import preferred_memory_format
from oba.training.checkpoints import checkpoint_key, default_cache_dir, dense_checkpoint
from oba.training.train import Recipe, evaluate, fine_tune, lr_factor, train

FAST = Recipe(epochs=3, batch_size=32, lr=0.05, weight_decay=1e-4)


def _state_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fresh(name: str, splits: data.Splits, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.create(name, splits.info.num_classes, splits.info.in_chans, splits.info.image_size)


def test_recipe_validates_and_round_trips_through_a_dict() -> None:
    recipe = Recipe(optimizer="adamw", lr=1e-3, schedule="step", milestones=(0.3, 0.6), label_smoothing=0.1, seed=4)
    assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; valid optimizers: sgd, adamw"):
        Recipe(optimizer="lion")
    with pytest.raises(ValueError, match="unknown schedule"):
        Recipe(schedule="linear")
    with pytest.raises(ValueError, match=r"unknown recipe fields \['lr_max'\]"):
        Recipe.from_dict({"lr_max": 1.0})


def test_learning_rate_schedules() -> None:
    cosine = Recipe(epochs=4, warmup_epochs=1)
    assert [lr_factor(cosine, s, 10) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(cosine, 10, 10) == pytest.approx(1.0)
    assert lr_factor(cosine, 25, 10) == pytest.approx(0.5)
    assert lr_factor(cosine, 39, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 29 / 30)))
    step = Recipe(epochs=10, schedule="step", milestones=(0.5, 0.8), gamma=0.1)
    assert [lr_factor(step, s, 3) for s in (0, 14, 15, 23, 24)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert lr_factor(Recipe(schedule="none"), 1000, 3) == 1.0


def test_evaluate_counts_top1_top5_and_loss_exactly() -> None:
    logits = torch.tensor([[9.0, 8, 7, 6, 5, 0], [0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [1, 2, 3, 4, 5, 6]])
    targets = torch.tensor([0, 0, 5, 1])  # top-1 hit, top-5 miss, top-5 miss, top-5 hit
    model = nn.Sequential(nn.Identity()).train()
    metrics = evaluate(model, TensorDataset(logits, targets))
    assert metrics["top1"] == 0.25 and metrics["top5"] == 0.5
    assert metrics["loss"] == pytest.approx(nn.functional.cross_entropy(logits, targets).item())
    assert model.training, "evaluate must restore the model's mode"
    assert set(evaluate(model, TensorDataset(logits[:, :3], targets.clamp(max=2)))) == {"top1", "loss"}


def test_train_learns_keeps_the_best_validation_state_and_reports_test() -> None:
    splits = data.load("synthetic", n=400, noise=1.5)
    model = _fresh("vgg-tiny", splits)
    before = evaluate(model, splits.val)
    result = train(model, splits, Recipe(epochs=4, batch_size=32, lr=0.05, seed=1), device="cpu")
    assert result.val["top1"] > max(before["top1"], 0.8)
    history = [before["top1"]] + [h["val_top1"] for h in result.history]
    assert result.val["top1"] == max(history)
    assert history[result.best_epoch] == result.val["top1"]
    assert not model.training
    assert evaluate(model, splits.val) == result.val
    assert evaluate(model, splits.test) == result.test
    assert len(result.history) == 4 and result.seconds > 0


def test_model_selection_returns_the_input_when_training_only_hurts() -> None:
    splits = data.load("synthetic")
    model = _fresh("vgg-tiny", splits)
    train(model, splits, FAST, device="cpu")
    trained = _state_digest(model)
    images, labels = splits.train.tensors
    wrong_labels = data.Splits(TensorDataset(images, (labels + 1) % 4), splits.val, splits.test, splits.info)
    result = fine_tune(model, wrong_labels, Recipe(epochs=2, batch_size=32, lr=0.05), device="cpu")
    assert max(h["val_top1"] for h in result.history) < result.val["top1"]
    assert result.best_epoch == 0
    assert _state_digest(model) == trained


def test_zero_epoch_fine_tune_only_evaluates() -> None:
    splits = data.load("synthetic")
    model = _fresh("vgg-tiny", splits)
    digest = _state_digest(model)
    result = fine_tune(model, splits, Recipe(epochs=0), device="cpu")
    assert _state_digest(model) == digest
    assert result.best_epoch == 0 and result.history == []
    assert result.val == evaluate(model, splits.val)


def test_training_is_deterministic_given_the_seed() -> None:
    splits = data.load("synthetic", n=96)
    digests = []
    for seed in (3, 3, 4):
        model = _fresh("vit-tiny", splits)
        train(model, splits, Recipe(epochs=1, batch_size=32, optimizer="adamw", lr=1e-3, seed=seed), device="cpu")
        digests.append(_state_digest(model))
    assert digests[0] == digests[1] != digests[2]


def test_conv_nets_train_channels_last_and_come_back_contiguous() -> None:
    """Training runs in channels-last (the conv weights' strides during the epoch say so) and returns the default format."""
    splits = data.load("synthetic", n=64)
    model = _fresh("vgg-tiny", splits)
    assert preferred_memory_format(model) == torch.channels_last
    assert preferred_memory_format(nn.Sequential(nn.Flatten(), nn.Linear(64, 4))) == torch.contiguous_format
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen: list[bool] = []
    conv.register_forward_hook(
        lambda module, args, out: seen.append(module.weight.is_contiguous(memory_format=torch.channels_last))
        if module.training else None
    )
    train(model, splits, Recipe(epochs=1, batch_size=32, lr=0.01), device="cpu")
    assert seen and all(seen)
    assert all(p.is_contiguous() for p in model.parameters())
    assert evaluate(model, splits.test) == evaluate(model.to(memory_format=torch.channels_last), splits.test)


def test_divergence_is_an_error() -> None:
    splits = data.load("synthetic")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    with pytest.raises(RuntimeError, match="training diverged"):
        train(model, splits, Recipe(epochs=2, lr=1e30, momentum=0.0, schedule="none"), device="cpu")


def test_checkpoint_key_depends_on_every_part_of_the_identity() -> None:
    base = checkpoint_key("resnet8", "synthetic", FAST, 0, {"n": 256})
    variants = [
        checkpoint_key("vgg-tiny", "synthetic", FAST, 0, {"n": 256}),
        checkpoint_key("resnet8", "digits", FAST, 0),
        checkpoint_key(
            "resnet8", "synthetic", Recipe(epochs=4, batch_size=32, lr=0.05, weight_decay=1e-4), 0, {"n": 256}
        ),
        checkpoint_key("resnet8", "synthetic", FAST, 1, {"n": 256}),
        checkpoint_key("resnet8", "synthetic", FAST, 0, {"n": 128}),
    ]
    assert len({base, *variants}) == 6
    assert checkpoint_key("resnet8", "synthetic", FAST, 0, {"n": 256, "num_classes": 4}) == base
    assert checkpoint_key("resnet8", "synthetic", FAST, 0) == base
    assert (
        checkpoint_key(
            "resnet8", "synthetic", Recipe(**{**FAST.to_dict(), "seed": 9, "milestones": (0.5, 0.75)}), 0, {"n": 256}
        )
        == base
    )


def test_dense_checkpoint_trains_once_then_loads(tmp_path: Path) -> None:
    first = dense_checkpoint("vgg-tiny", "synthetic", FAST, 2, tmp_path, device="cpu")
    second = dense_checkpoint("vgg-tiny", "synthetic", FAST, 2, tmp_path, device="cpu")
    assert first.trained and not second.trained
    assert first.path == second.path == tmp_path / f"{checkpoint_key('vgg-tiny', 'synthetic', FAST, 2)}.pt"
    assert _state_digest(first.model) == _state_digest(second.model)
    assert not second.model.training
    metadata = json.loads(first.path.with_suffix(".json").read_text())
    assert metadata == second.metadata == first.metadata
    assert metadata["seed"] == 2 and metadata["recipe"]["seed"] == 2
    assert metadata["train_seconds"] > 0 and metadata["trained_by"]["pid"] == os.getpid()
    splits = data.load("synthetic")
    assert evaluate(second.model, splits.test) == metadata["test"]
    assert evaluate(second.model, splits.val) == metadata["val"]
    other_seed = dense_checkpoint("vgg-tiny", "synthetic", FAST, 3, tmp_path, device="cpu")
    assert other_seed.trained and _state_digest(other_seed.model) != _state_digest(first.model)


def test_dense_checkpoint_from_a_user_file(tmp_path: Path) -> None:
    splits = data.load("synthetic")
    model = _fresh("resnet8", splits)
    train(model, splits, FAST, device="cpu")
    path = tmp_path / "mine.pt"
    torch.save(model.state_dict(), path)
    given = dense_checkpoint("resnet8", "synthetic", FAST, 0, tmp_path / "cache", checkpoint=path, device="cpu")
    assert not given.trained and given.path == path
    assert _state_digest(given.model) == _state_digest(model)
    assert given.metadata["source"] == str(path) and given.metadata["test"] == evaluate(model, splits.test)
    assert not (tmp_path / "cache").exists()
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        dense_checkpoint("resnet8", "synthetic", FAST, 0, checkpoint=tmp_path / "missing.pt")


def test_default_cache_dir_honours_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OBA_CACHE", raising=False)
    assert default_cache_dir() == tmp_path / ".cache" / "checkpoints"
    monkeypatch.setenv("OBA_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"


def _race(cache_dir: str, barrier: Any, results: Any) -> None:
    torch.set_num_threads(1)
    barrier.wait()
    checkpoint = dense_checkpoint(
        "resnet8", "synthetic", Recipe(epochs=2, batch_size=16, lr=0.05), 5, cache_dir, device="cpu"
    )
    results.put((os.getpid(), checkpoint.trained, _state_digest(checkpoint.model)))


def test_two_processes_asking_at_once_train_exactly_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_race, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    trainers = [pid for pid, trained, _ in outcomes if trained]
    assert len(trainers) == 1
    assert outcomes[0][2] == outcomes[1][2]
    (metadata_path,) = tmp_path.glob("*.json")
    assert json.loads(metadata_path.read_text())["trained_by"]["pid"] == trainers[0]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".lock", ".pt"]
