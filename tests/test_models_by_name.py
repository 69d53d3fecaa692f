"""Any torchvision or timm classifier by name (``torchvision:NAME``, ``timm:NAME``), published weights from local
files, and the ImageNet architecture that published weights imply.

Weights files are written by the test where the library caches would hold them (a temporary ``$TORCH_HOME`` and
Hugging Face cache), from a model's own state dict; nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import torchvision
from huggingface_hub import constants as hf_constants
from torch import nn

import oba
from oba import models
from oba.core.measure import count_macs
from oba.models.weights import WeightsError
from oba.suite.cells import expand
from oba.suite.config import SuiteError, load_suite
from suites import tiny_suite

RESNET50_FILE = "resnet50-11ad3fa6.pth"
"""The file name of torchvision's ResNet50_Weights.IMAGENET1K_V2 URL, as torch.hub caches it."""


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``$TORCH_HOME``; torch.hub's checkpoints folder is ``<it>/hub/checkpoints``."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _in_hub_cache(torch_home: Path, url: str, state: dict[str, torch.Tensor]) -> Path:
    path = torch_home / "hub" / "checkpoints" / Path(url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _assert_same_tensors(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert got.keys() == state.keys()
    assert all(torch.equal(got[name], tensor) for name, tensor in state.items())


@pytest.mark.parametrize("name, in_chans", [
    ("torchvision:mobilenet_v3_small", 1),
    ("torchvision:resnet18", 3),
    ("torchvision:squeezenet1_1", 2),
    ("timm:resnet10t", 1),
    ("timm:test_vit", 3),
])
def test_models_by_name_take_any_classes_channels_and_small_inputs(name: str, in_chans: int) -> None:
    model = models.create(name, 7, in_chans=in_chans, image_size=32).eval()
    with torch.no_grad():
        assert model(torch.randn(2, in_chans, 32, 32)).shape == (2, 7)
    assert not any(getattr(m, "inplace", False) is True for m in model.modules())


@pytest.mark.parametrize("name", ["torchvision:mobilenet_v3_small", "timm:resnet10t"])
def test_models_by_name_prune_to_target(name: str) -> None:
    model = models.create(name, 10, image_size=32).eval()
    example = torch.randn(1, 3, 32, 32)
    dense = count_macs(model, example)
    batches = [(torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)))]
    model, _ = oba.prune(model, example, batches, nn.functional.cross_entropy, "magnitude-l1", ratio=0.3, steps=1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert abs((1 - count_macs(model, example) / dense) - 0.3) <= 0.05


def test_torchvision_input_channels_replace_the_stem_convolution() -> None:
    model = models.create("torchvision:resnet18", 10, in_chans=1, image_size=32)
    assert (model.conv1.in_channels, model.conv1.out_channels, model.conv1.kernel_size) == (1, 64, (7, 7))


@pytest.mark.parametrize("name, message", [
    ("torchvision:resnet9", r"^unknown torchvision model 'resnet9'; torchvision\.models\.list_models\("
                            r"module=torchvision\.models\) lists them$"),
    ("timm:nonet", r"^unknown timm model 'nonet'; timm\.list_models\(\) lists them"),
    ("timm:resnet10t.a1_in1k", r"^unknown timm model 'resnet10t\.a1_in1k' \(name the architecture; give a "
                               r"pretrained tag as weights, e.g\. timm:a1_in1k\)"),
    ("keras:resnet50", r"^unknown model library 'keras' in 'keras:resnet50'; valid: torchvision, timm$"),
    ("resnet9", r"^unknown model 'resnet9'; valid models: .*vit_b_16; or torchvision:NAME / timm:NAME"),
])
def test_unknown_names_are_one_line_saying_where_valid_names_are(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        models.create(name, 10)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_imagenet_weights_give_resnet50_its_imagenet_stem(torch_home: Path) -> None:
    reference = models.create("resnet50", 1000, image_size=224).state_dict()
    _in_hub_cache(torch_home, RESNET50_FILE, reference)
    model = models.create("resnet50", 1000, weights="torchvision:IMAGENET1K_V2")
    assert model.conv1.kernel_size == (7, 7)
    _assert_same_tensors(model, reference)
    _assert_same_tensors(models.create("resnet50", 1000, image_size=256, weights="torchvision:IMAGENET1K_V2"),
                         reference)
    assert models.create("resnet50", 1000).conv1.kernel_size == (3, 3), "without weights: the CIFAR stem at 32²"


@pytest.mark.parametrize("in_chans, image_size, differs", [(3, 32, "conv1.weight"), (1, None, "conv1.weight")])
def test_an_explicit_size_or_channels_that_change_the_architecture_is_one_line(
        torch_home: Path, in_chans: int, image_size: int | None, differs: str) -> None:
    _in_hub_cache(torch_home, RESNET50_FILE, models.create("resnet50", 1000, image_size=224).state_dict())
    size = 224 if image_size is None else image_size
    with pytest.raises(WeightsError) as err:
        models.create("resnet50", 1000, in_chans=in_chans, image_size=image_size, weights="torchvision:IMAGENET1K_V2")
    assert str(err.value) == (f"weights torchvision:IMAGENET1K_V2 were made for 3×224² inputs; resnet50 for "
                              f"{in_chans}×{size}² inputs is another architecture ({differs} differs): leave "
                              "in_chans and image_size out (they default to the weights' 3×224²)")


def test_torchvision_models_by_name_read_their_published_weights(torch_home: Path) -> None:
    reference = torchvision.models.mobilenet_v3_small().state_dict()
    url = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1.url
    _in_hub_cache(torch_home, url, reference)
    model = models.create("torchvision:mobilenet_v3_small", 1000, weights="torchvision:IMAGENET1K_V1")
    _assert_same_tensors(model, reference)
    with pytest.raises(WeightsError, match=r"^torchvision:IMAGENET1K_V2 is not a weight of "
                                           r"torchvision:mobilenet_v3_small \(MobileNet_V3_Small_Weights\)"):
        models.create("torchvision:mobilenet_v3_small", 1000, weights="torchvision:IMAGENET1K_V2")


def test_timm_models_by_name_read_their_published_weights_at_their_size(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    reference = timm.create_model("test_vit").state_dict()  # 160² inputs, timm's test_vit.r160_in1k
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = tmp_path / "hf-hub" / "models--timm--test_vit.r160_in1k"
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    safetensors.torch.save_file(reference, str(folder / "snapshots" / commit / "model.safetensors"))
    _assert_same_tensors(models.create("timm:test_vit", 1000, weights="timm:r160_in1k"), reference)
    with pytest.raises(WeightsError, match=r"were made for 3×160² inputs; timm:test_vit for 3×32² inputs is "
                                           r"another architecture \(pos_embed differs\)"):
        models.create("timm:test_vit", 1000, image_size=32, weights="timm:r160_in1k")


def test_suites_name_models_by_name_and_override_their_recipes(tmp_path: Path) -> None:
    path = tiny_suite(tmp_path, models=("torchvision:mobilenet_v3_small", "timm:resnet10t"))
    path.write_text(path.read_text() + '\n[dense."timm:resnet10t"]\nepochs = 3\n\n'
                    '[finetune."torchvision:mobilenet_v3_small"]\nlr = 0.002\n')
    cells = expand(load_suite(path))
    assert {c.config["model"] for c in cells} == {"torchvision:mobilenet_v3_small", "timm:resnet10t"}
    dense = {c.config["model"]: c.config["dense"] for c in cells}
    finetune = {c.config["model"]: c.config["finetune"] for c in cells}
    assert dense["timm:resnet10t"]["epochs"] == 3 and dense["torchvision:mobilenet_v3_small"]["epochs"] == 1
    assert finetune["torchvision:mobilenet_v3_small"]["lr"] == 0.002 and finetune["timm:resnet10t"]["lr"] == 0.01


def test_a_suite_gives_weights_to_a_model_by_name(tmp_path: Path) -> None:
    path = tiny_suite(tmp_path, models=("torchvision:mobilenet_v3_small",))
    path.write_text(path.read_text() + '\n[dense."torchvision:mobilenet_v3_small"]\n'
                                       'weights = "torchvision:IMAGENET1K_V1"\n')
    suite = load_suite(path)
    assert suite.dense["torchvision:mobilenet_v3_small"]["weights"] == "torchvision:IMAGENET1K_V1"


@pytest.mark.parametrize("models_line, extra, message", [
    ('"torchvision:resnet9"', "", r"tiny.toml:5: \[grid\] models: unknown torchvision model 'resnet9'; torchvision"),
    ('"resnet9"', "", r"unknown model 'resnet9'; valid: .*\(or torchvision:NAME / timm:NAME\)$"),
    ('"resnet8"', '\n[dense."timm:resnet10t"]\nepochs = 3\n',
     r"\[dense\.timm:resnet10t\]: override for an unknown model; .* a torchvision:NAME / timm:NAME model the "
     "grid lists"),
])
def test_suites_naming_unknown_models_point_at_the_line(tmp_path: Path, models_line: str, extra: str,
                                                        message: str) -> None:
    path = tiny_suite(tmp_path)
    path.write_text(path.read_text().replace('models = ["resnet8"]', f"models = [{models_line}]") + extra)
    with pytest.raises(SuiteError, match=message):
        load_suite(path)
