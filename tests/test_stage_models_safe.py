"""Cache entries hold data, never code: a kept stage model is rebuilt on a fresh dense model, a planted or corrupt
entry is never run (a stage entry counts as not kept, a cached dense checkpoint is made again) and a user's
checkpoint that cannot be read is one error line naming it."""
from __future__ import annotations

import copy
import logging
import os
import re
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import oba
from oba.suite.cell import resume_point
from oba.suite.stage_models import StageModelUnusable, load_stage_model, save_stage_model
from oba.training.checkpoints import checkpoint_key, dense_checkpoint
from oba.training.tensor_files import CheckpointUnreadable
from oba.training.train import Recipe

FAST = Recipe(epochs=1, batch_size=32, lr=0.05)
CLASSES, CHANNELS, SIZE = 10, 1, 28


class Planted:
    """Unpickled by a loader that runs code, it creates ``marker`` (``__reduce__`` names ``open``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def plant(path: Path, marker: Path) -> None:
    """A file at ``path`` that would create ``marker`` if it were unpickled by a code-running loader."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "state_dict": Planted(marker)}, path)


def dense(name: str) -> nn.Module:
    return oba.models.create(name, CLASSES, CHANNELS, SIZE).eval()


def pruned(name: str) -> nn.Module:
    """``name`` pruned by a third of its MACs (channels, neurons or heads), its statistics moved off their start."""
    torch.manual_seed(1)
    model = dense(name)
    example = torch.randn(1, CHANNELS, SIZE, SIZE)
    batches = [(torch.randn(4, CHANNELS, SIZE, SIZE), torch.randint(0, CLASSES, (4,)))]
    model, _ = oba.prune(model, example, batches, nn.functional.cross_entropy, "magnitude-l1", ratio=0.3, steps=1)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, CHANNELS, SIZE, SIZE))
    return model.eval()


@pytest.fixture(scope="module")
def small_resnet() -> nn.Module:
    return pruned("resnet8")


@pytest.mark.parametrize("name", ["resnet8", "vgg-tiny", "vit-tiny"])
def test_a_kept_stage_model_is_rebuilt_on_a_fresh_dense_model_exactly(name: str, tmp_path: Path) -> None:
    model = pruned(name)
    save_stage_model(tmp_path, "cell-stage1", model)
    loaded = load_stage_model(tmp_path, "cell-stage1", dense(name).train(), "cpu")
    assert loaded is not None and type(loaded) is type(model) and not loaded.training
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert any(v.shape != d.shape for v, d in zip(loaded.state_dict().values(), dense(name).state_dict().values()))
    x = torch.randn(5, CHANNELS, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_the_entry_holds_tensors_and_plain_values_only(small_resnet: nn.Module, tmp_path: Path) -> None:
    save_stage_model(tmp_path, "cell-stage1", small_resnet)
    payload = torch.load(tmp_path / "stages" / "cell-stage1.pt", weights_only=True)
    assert payload.keys() == {"format", "state_dict", "modules"}
    assert payload["modules"]["conv1"]["out_channels"] == small_resnet.conv1.out_channels


def test_there_is_no_kept_model_without_an_entry(tmp_path: Path) -> None:
    assert load_stage_model(tmp_path, "cell-stage1", dense("resnet8"), "cpu") is None


def test_a_planted_stage_entry_never_runs_and_is_unusable(tmp_path: Path) -> None:
    entry, marker = tmp_path / "stages" / "cell-stage1.pt", tmp_path / "marker"
    plant(entry, marker)
    with pytest.raises(StageModelUnusable, match=re.escape(str(entry))) as raised:
        load_stage_model(tmp_path, "cell-stage1", dense("resnet8"), "cpu")
    assert len(str(raised.value).splitlines()) == 1
    assert not marker.exists()


def _tamper(payload: dict[str, Any], how: str) -> None:
    modules, state = payload["modules"], payload["state_dict"]
    if how == "format":
        payload["format"] = 2
    elif how == "unknown module":
        modules["layer9"] = {"out_channels": 3}
    elif how == "unknown attribute":
        modules["conv1"]["kernel_size"] = (1, 1)
    elif how == "attribute not on the module":
        modules["conv1"]["num_features"] = 3
    elif how == "wrong type":
        modules["conv1"]["out_channels"] = "8"
    elif how == "missing tensor":
        del state["conv1.weight"]
    elif how == "extra tensor":
        state["conv1.extra"] = torch.zeros(1)
    elif how == "not a tensor":
        state["conv1.weight"] = [1.0, 2.0]


@pytest.mark.parametrize("how", ["format", "unknown module", "unknown attribute", "attribute not on the module",
                                 "wrong type", "missing tensor", "extra tensor", "not a tensor"])
def test_an_entry_that_does_not_fit_is_one_line_naming_it(small_resnet: nn.Module, tmp_path: Path, how: str) -> None:
    save_stage_model(tmp_path, "cell-stage1", small_resnet)
    entry = tmp_path / "stages" / "cell-stage1.pt"
    payload = torch.load(entry, weights_only=True)
    _tamper(payload, how)
    torch.save(payload, entry)
    with pytest.raises(StageModelUnusable, match=re.escape(str(entry))) as raised:
        load_stage_model(tmp_path, "cell-stage1", dense("resnet8"), "cpu")
    assert len(str(raised.value).splitlines()) == 1


def test_a_stage_model_does_not_fit_another_architecture(small_resnet: nn.Module, tmp_path: Path) -> None:
    save_stage_model(tmp_path, "cell-stage1", small_resnet)
    with pytest.raises(StageModelUnusable, match="cell-stage1.pt"):
        load_stage_model(tmp_path, "cell-stage1", dense("vgg-tiny"), "cpu")


def _cell_and_context(name: str) -> tuple[Any, Any]:
    """Just what :func:`resume_point` reads of a three-stage cell and its dense context."""
    cell = types.SimpleNamespace(stage_ratios=[0.2, 0.4, 0.6], row_id=lambda stage: f"cell-stage{stage}")
    model = dense(name)
    return cell, types.SimpleNamespace(fresh_model=lambda: copy.deepcopy(model))


def _all_ok(row_id: str) -> dict[str, Any]:
    return {"status": "ok", "fidelity": 0.5, "fidelity_abs": 0.5, "fidelity_precision": 0.5, "fidelity_k": 1}


def test_resuming_takes_the_last_kept_stage(small_resnet: nn.Module, tmp_path: Path) -> None:
    cell, context = _cell_and_context("resnet8")
    save_stage_model(tmp_path, "cell-stage2", small_resnet)
    start = resume_point(cell, context, str(tmp_path), torch.device("cpu"), _all_ok)
    assert start.stage == 3 and start.fidelity["fidelity"] == 0.5
    assert start.model.conv1.out_channels == small_resnet.conv1.out_channels


def test_a_planted_stage_entry_counts_as_not_kept_with_a_warning_naming_it(
        small_resnet: nn.Module, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cell, context = _cell_and_context("resnet8")
    entry, marker = tmp_path / "stages" / "cell-stage2.pt", tmp_path / "marker"
    plant(entry, marker)
    with caplog.at_level(logging.WARNING):
        start = resume_point(cell, context, str(tmp_path), torch.device("cpu"), _all_ok)
    assert start.stage == 1 and start.fidelity is None
    assert not marker.exists()
    assert any(str(entry) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    save_stage_model(tmp_path, "cell-stage1", small_resnet)
    assert resume_point(cell, context, str(tmp_path), torch.device("cpu"), _all_ok).stage == 2
    assert not marker.exists()


def _cache_entry(cache: Path) -> Path:
    return cache / f"{checkpoint_key('vgg-tiny', 'synthetic', FAST, 0)}.pt"


def _random_bytes(path: Path, marker: Path) -> None:
    path.write_bytes(os.urandom(4096))


@pytest.mark.parametrize("spoil", [_random_bytes, plant], ids=["random bytes", "planted pickle"])
def test_an_unreadable_cached_dense_checkpoint_is_made_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, spoil: Any) -> None:
    cache, marker = tmp_path / "cache", tmp_path / "marker"
    entry = _cache_entry(cache)
    cache.mkdir()
    spoil(entry, marker)
    with caplog.at_level(logging.WARNING):
        made = dense_checkpoint("vgg-tiny", "synthetic", FAST, 0, cache, device="cpu")
    assert made.trained and made.path == entry
    assert any(str(entry) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert not marker.exists()
    again = dense_checkpoint("vgg-tiny", "synthetic", FAST, 0, cache, device="cpu")
    assert not again.trained and again.weights_sha256 == made.weights_sha256


def test_a_cached_dense_checkpoint_that_does_not_fit_is_made_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    made = dense_checkpoint("vgg-tiny", "synthetic", FAST, 0, cache, device="cpu")
    payload = torch.load(made.path, weights_only=True)
    payload["state_dict"].popitem()
    torch.save(payload, made.path)
    with caplog.at_level(logging.WARNING):
        again = dense_checkpoint("vgg-tiny", "synthetic", FAST, 0, cache, device="cpu")
    assert again.trained
    assert any(str(made.path) in r.getMessage() and "missing" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("spoil", [_random_bytes, plant], ids=["random bytes", "planted pickle"])
def test_an_unreadable_user_checkpoint_is_one_error_line_naming_it_and_kept(tmp_path: Path, spoil: Any) -> None:
    path, marker = tmp_path / "mine.pt", tmp_path / "marker"
    spoil(path, marker)
    before = path.read_bytes()
    with pytest.raises(CheckpointUnreadable, match=re.escape(str(path))) as raised:
        dense_checkpoint("vgg-tiny", "synthetic", FAST, 0, tmp_path / "cache", checkpoint=path, device="cpu")
    assert len(str(raised.value).splitlines()) == 1
    assert path.read_bytes() == before and not marker.exists()


def test_a_user_state_dict_that_does_not_fit_is_one_error_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "mine.pt"
    torch.save(dense("resnet8").state_dict(), path)
    with pytest.raises(CheckpointUnreadable, match=re.escape(str(path))) as raised:
        dense_checkpoint("vgg-tiny", "synthetic", FAST, 0, tmp_path / "cache", checkpoint=path, device="cpu")
    assert len(str(raised.value).splitlines()) == 1
