"""Pretrained dense weights read offline from where torchvision, timm and users keep them, and verified.

Every weights file here is written by the test, at the exact place the library's
cache would hold it (a temporary ``$TORCH_HOME`` and Hugging Face cache), from a
model's own state dict: loading must give back exactly those tensors.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import torchvision
from huggingface_hub import constants as hf_constants
from torch import nn

from oba import models
from oba.models.vit_weight_names import timm_layout
from oba.models.weights import TIMM_ARCHITECTURES, TORCHVISION_ARCHITECTURES, Weights, WeightsError, check, resolve
from oba.suite.cell import run_cell
from oba.suite.cells import expand
from oba.suite.config import SuiteError, load_suite
from oba.suite.plan import PreflightError, plan_run
from oba.training.checkpoints import dense_checkpoint
from oba.training.train import Recipe
from suites import tiny_suite

REPO = Path(__file__).resolve().parents[1]
RESNET50_FILE = "resnet50-11ad3fa6.pth"
"""The file name of torchvision's ResNet50_Weights.IMAGENET1K_V2 URL, as torch.hub caches it."""
TEST_VIT = "test_vit.r160_in1k"
"""A tiny timm ViT with pretrained weights on the Hugging Face hub (timm/test_vit.r160_in1k)."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_same_tensors(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert got.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(got[name], tensor), name


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``$TORCH_HOME``; torch.hub's checkpoints folder is ``<it>/hub/checkpoints``."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache (``HF_HUB_CACHE``)."""
    cache = tmp_path / "hf-hub"
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def test_vit(monkeypatch: pytest.MonkeyPatch) -> str:
    """Registry model ``test-vit``: timm's ``test_vit`` architecture, registered for this test only."""
    def factory(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
        return timm.create_model("test_vit", num_classes=num_classes, in_chans=in_chans, img_size=image_size)

    monkeypatch.setitem(models.MODELS._entries, "test-vit", factory)
    return "test-vit"


def _place_in_hf_cache(cache: Path, repo: str, filename: str, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` where huggingface_hub keeps ``filename`` of ``repo`` at revision main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    path = folder / "snapshots" / commit / filename
    path.parent.mkdir(parents=True)
    if filename.endswith(".safetensors"):
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def test_torchvision_weights_are_read_from_the_torch_hub_cache(torch_home: Path) -> None:
    reference = models.create("resnet50", 1000, image_size=224).state_dict()
    path = torch_home / "hub" / "checkpoints" / RESNET50_FILE
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    torch.manual_seed(1)
    model = models.create("resnet50", 1000, image_size=224, weights="torchvision:IMAGENET1K_V2")
    _assert_same_tensors(model, reference)
    for spec in ("torchvision:IMAGENET1K_V2", "torchvision:DEFAULT", "torchvision:ResNet50_Weights.IMAGENET1K_V2"):
        found = resolve(Weights(spec, sha256=_sha256(path).upper()), "resnet50")
        assert (found.source, found.location) == ("torchvision:ResNet50_Weights.IMAGENET1K_V2", str(path))
        assert found.sha256 == _sha256(path)


def test_torchvision_vit_weights_load_renamed_and_give_torchvisions_logits(torch_home: Path) -> None:
    torch.manual_seed(0)
    upstream = torchvision.models.vit_b_16().eval()
    with torch.no_grad():  # non-trivial values everywhere (torchvision initialises some entries to zero)
        for tensor in upstream.state_dict().values():
            tensor.add_(0.02 * torch.randn_like(tensor))
    path = torch_home / "hub" / "checkpoints" / Path(torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1.url).name
    path.parent.mkdir(parents=True)
    torch.save(upstream.state_dict(), path)
    ours = models.create("vit_b_16", 1000, image_size=224, weights="torchvision:IMAGENET1K_V1").eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = upstream(images), ours(images)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), float((got - expected).abs().max())
    old_names = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
                 for k, v in upstream.state_dict().items()}  # the names of torchvision's older files
    assert timm_layout(old_names).keys() == ours.state_dict().keys()


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_timm_weights_are_read_from_the_hugging_face_cache(hf_cache: Path, test_vit: str, filename: str) -> None:
    reference = timm.create_model("test_vit", num_classes=10, img_size=32).state_dict()
    path = _place_in_hf_cache(hf_cache, f"timm/{TEST_VIT}", filename, reference)
    model = models.create(test_vit, 10, image_size=32, weights=f"timm:{TEST_VIT}")
    _assert_same_tensors(model, reference)
    found = resolve(Weights(f"timm:{TEST_VIT}"), test_vit)
    assert (found.source, found.location, found.sha256) == (f"timm:{TEST_VIT}", str(path), _sha256(path))


def test_a_bare_timm_tag_completes_the_models_timm_architecture(hf_cache: Path) -> None:
    with pytest.raises(WeightsError) as err:
        resolve(Weights("timm:augreg2_in21k_ft_in1k"), "vit_b_16")
    folder = hf_cache / "models--timm--vit_base_patch16_224.augreg2_in21k_ft_in1k"
    assert str(err.value).startswith("weights timm:vit_base_patch16_224.augreg2_in21k_ft_in1k for vit_b_16 are "
                                     f"missing: place the file at {folder}/snapshots/<commit>/model.safetensors")
    assert f"{folder}/refs/main" in str(err.value) and "\n" not in str(err.value)


def test_a_path_and_a_uri_load_the_same_tensors(tmp_path: Path) -> None:
    reference = models.create("resnet8", 10, in_chans=1, image_size=8).state_dict()
    path = tmp_path / "resnet8.pt"
    torch.save({"state_dict": reference, "epoch": 3}, path)
    for source in (str(path), f"file://{path}"):
        torch.manual_seed(5)
        _assert_same_tensors(models.create("resnet8", 10, in_chans=1, image_size=8, weights=source), reference)
        assert resolve(Weights(source), "resnet8").sha256 == _sha256(path)


def test_an_unreachable_uri_is_one_line() -> None:
    with pytest.raises(WeightsError, match=r"^weights nosuchscheme://bucket/w.pt cannot be reached: [^\n]+$"):
        resolve(Weights("nosuchscheme://bucket/w.pt"), "resnet8")


def test_a_wrong_sha256_is_one_line_naming_the_file_and_both_digests(tmp_path: Path) -> None:
    path = tmp_path / "resnet8.pt"
    torch.save(models.create("resnet8", 10).state_dict(), path)
    with pytest.raises(WeightsError) as err:
        models.create("resnet8", 10, weights=Weights(str(path), sha256="0" * 64))
    assert str(err.value) == (f"weights {path}: file {path} has SHA-256 {_sha256(path)}, not the pinned {'0' * 64}; "
                              "replace the file or correct weights_sha256")


def test_missing_files_are_one_line_naming_the_file_to_place(torch_home: Path, tmp_path: Path) -> None:
    expected = torch_home / "hub" / "checkpoints" / RESNET50_FILE
    with pytest.raises(WeightsError) as err:
        models.create("resnet50", 1000, image_size=224, weights="torchvision:IMAGENET1K_V2")
    assert str(err.value) == (f"weights torchvision:ResNet50_Weights.IMAGENET1K_V2 for resnet50 are missing: place "
                              f"the file at {expected}, or set weights_download = true to download it")
    assert check(Weights("torchvision:IMAGENET1K_V2", download=True), "resnet50") == str(expected)
    assert not expected.exists(), "checking downloads nothing"
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(WeightsError, match=rf"^weights {missing} for resnet8 are missing: place the file at {missing}$"):
        models.create("resnet8", 10, weights=str(missing))


def test_weights_that_do_not_fit_the_model_name_the_differing_tensors(tmp_path: Path) -> None:
    path = tmp_path / "resnet8-100.pt"
    torch.save(models.create("resnet8", 100).state_dict(), path)
    with pytest.raises(WeightsError) as err:
        models.create("resnet8", 10, weights=str(path))
    assert str(err.value) == (f"weights {path} do not fit resnet8 (10 classes, 3×32² inputs): fc.weight is (100, 64) "
                              "in the file, (10, 64) in the model; fc.bias is (100,) in the file, (10,) in the model "
                              "(weights must match the model's classes, channels and input size; the head is never "
                              "re-initialised)")


@pytest.mark.parametrize("source, message", [
    ("torchvision:IMAGENET1K_V9", r"torchvision:IMAGENET1K_V9 is not a weight of resnet50 \(ResNet50_Weights\); "
                                  "valid: torchvision:IMAGENET1K_V1, torchvision:IMAGENET1K_V2, torchvision:DEFAULT"),
    ("timm:vit_base_patch16_224.nope", r"timm:vit_base_patch16_224.nope: Invalid pretrained tag \(nope\)"),
])
def test_unknown_pretrained_names_list_what_is_valid(source: str, message: str) -> None:
    with pytest.raises(WeightsError, match=message):
        resolve(Weights(source), "resnet50")


@pytest.mark.parametrize("name, upstream", [
    *((name, lambda arch=arch: torchvision.models.get_model(arch)) for name, arch in TORCHVISION_ARCHITECTURES.items()),
    *((name, lambda arch=arch: timm.create_model(arch)) for name, arch in TIMM_ARCHITECTURES.items()),
    ("vit_b_16", lambda: timm.create_model("deit_base_patch16_224")),
])
def test_models_with_a_counterpart_have_its_exact_state_dict_layout(name: str, upstream: Callable[[], nn.Module]) -> None:
    """What suites/imagenet.toml relies on: ImageNet-sized registry models take the upstream files as they are."""
    with torch.device("meta"):
        ours, theirs = models.create(name, 1000, image_size=224).state_dict(), upstream().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_a_model_without_a_torchvision_counterpart_says_so() -> None:
    with pytest.raises(WeightsError, match="model 'resnet8' has no torchvision counterpart.*give a file path or URI"):
        resolve(Weights("torchvision:IMAGENET1K_V1"), "resnet8")


def test_dense_checkpoint_from_weights_is_evaluated_never_trained_and_cached_for_every_seed(tmp_path: Path) -> None:
    reference = models.create("resnet8", 10, in_chans=1, image_size=8).state_dict()
    path = tmp_path / "mine.pt"
    torch.save(reference, path)
    weights = Weights(str(path), sha256=_sha256(path))
    first = dense_checkpoint("resnet8", "digits", weights, 0, tmp_path / "cache", device="cpu")
    assert not first.trained and (first.weights, first.weights_sha256) == (str(path), _sha256(path))
    _assert_same_tensors(first.model, reference)
    assert first.metadata["weights"] == {"source": str(path), "sha256": _sha256(path), "file": str(path)}
    assert 0 <= first.metadata["test"]["top1"] <= 1 and "train_seconds" not in first.metadata
    path.unlink()  # the evaluated weights now live in the checkpoint cache, for any seed
    again = dense_checkpoint("resnet8", "digits", weights, 7, tmp_path / "cache", device="cpu")
    assert again.path == first.path and (again.weights, again.weights_sha256) == (first.weights, first.weights_sha256)
    assert again.metadata == json.loads(first.path.with_suffix(".json").read_text())
    _assert_same_tensors(again.model, reference)


def test_trained_dense_checkpoints_record_the_sha256_of_their_cached_file(tmp_path: Path) -> None:
    recipe = Recipe(epochs=1, batch_size=64, lr=0.05)
    trained = dense_checkpoint("resnet8", "digits", recipe, 0, tmp_path, device="cpu")
    cached = dense_checkpoint("resnet8", "digits", recipe, 0, tmp_path, device="cpu")
    assert trained.trained and not cached.trained
    assert trained.weights == cached.weights == "trained"
    assert trained.weights_sha256 == cached.weights_sha256 == _sha256(trained.path)


def _weights_suite(tmp_path: Path, source: str, extra: str = "", model: str = "resnet8") -> Path:
    """The tiny suite over ``model`` and vgg-tiny, ``model`` given ``weights = source`` (and ``extra`` keys)."""
    path = tiny_suite(tmp_path, models=(model, "vgg-tiny"), criteria=("magnitude-l1",))
    path.write_text(path.read_text() + f'\n[dense.{model}]\nweights = "{source}"\n{extra}')
    return path


def test_suite_weights_replace_the_recipe_in_the_cell_and_leave_other_models_alone(tmp_path: Path) -> None:
    plain = {c.config["model"]: c for c in expand(load_suite(tiny_suite(tmp_path, models=("resnet8", "vgg-tiny"),
                                                                        criteria=("magnitude-l1",))))}
    digest = "ab" * 32
    cells = {c.config["model"]: c for c in expand(load_suite(_weights_suite(
        tmp_path, "torchvision:IMAGENET1K_V2", f'weights_sha256 = "{digest.upper()}"\nweights_download = true\n')))}
    assert cells["resnet8"].config["dense"] == {"weights": "torchvision:IMAGENET1K_V2", "weights_sha256": digest}
    assert cells["vgg-tiny"].cell_id == plain["vgg-tiny"].cell_id
    assert cells["resnet8"].cell_id != plain["resnet8"].cell_id
    undownloadable = {c.config["model"]: c for c in expand(load_suite(_weights_suite(
        tmp_path, "torchvision:IMAGENET1K_V2", f'weights_sha256 = "{digest}"\n')))}
    assert undownloadable["resnet8"].cell_id == cells["resnet8"].cell_id, "download permission is not a result"


@pytest.mark.parametrize("extra, key, message", [
    ("epochs = 3\n", "epochs =", "resnet8 is given weights, so it is loaded and evaluated, never trained: "
                                 r"recipe key\(s\) epochs do not apply"),
    ('weights_sha256 = "abc"\n', "weights_sha256 =", "weights_sha256 must be 64 hexadecimal digits, got 'abc'"),
    ("weights_download = 1\n", "weights_download =", "expected bool, got int 1"),
    ("weigths_sha256 = 1\n", "weigths_sha256 =", "unknown key; valid keys: batch_size, .*, weights, weights_sha256, "
                                                 "weights_download$"),
])
def test_bad_weights_settings_are_one_line_at_their_line(tmp_path: Path, extra: str, key: str, message: str) -> None:
    path = _weights_suite(tmp_path, "torchvision:IMAGENET1K_V2", extra)
    line = max(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith(key))
    with pytest.raises(SuiteError, match=message) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}:{line}: [dense.resnet8] ") and "\n" not in str(err.value)


def test_the_preflight_lists_the_weights_file_and_fails_on_a_missing_one(tmp_path: Path, torch_home: Path) -> None:
    weights = tmp_path / "resnet8-digits.pt"
    torch.save(models.create("resnet8", 10, in_chans=1, image_size=8).state_dict(), weights)
    plan = plan_run(load_suite(_weights_suite(tmp_path, str(weights))), str(tmp_path / "results"))
    assert plan.weights == [f"resnet8 on digits: {weights} from {weights} (sha256 {_sha256(weights)})"]
    missing = _weights_suite(tmp_path, "torchvision:IMAGENET1K_V2", model="resnet50")
    with pytest.raises(PreflightError) as err:
        plan_run(load_suite(missing), str(tmp_path / "results"))
    assert err.value.problems == [
        "dense model resnet50: weights torchvision:ResNet50_Weights.IMAGENET1K_V2 for resnet50 are missing: place "
        f"the file at {torch_home / 'hub' / 'checkpoints' / RESNET50_FILE}, or set weights_download = true to download it"
    ]


def test_dry_run_names_the_weights_file_to_place(tmp_path: Path) -> None:
    suite = _weights_suite(tmp_path, str(tmp_path / "resnet8-digits.pt"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "oba.cli", "run", str(suite), "--results", str(tmp_path / "results"),
                           "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    missing = [line for line in done.stderr.splitlines() if line.startswith("oba run: missing: ")]
    assert missing == [f"oba run: missing: dense model resnet8: weights {tmp_path / 'resnet8-digits.pt'} "
                       f"for resnet8 are missing: place the file at {tmp_path / 'resnet8-digits.pt'}"]
    assert "oba run: the run cannot start until the 1 missing item(s) above are in place" in done.stderr
    torch.save(models.create("resnet8", 10, in_chans=1, image_size=8).state_dict(), tmp_path / "resnet8-digits.pt")
    done = subprocess.run([sys.executable, "-m", "oba.cli", "run", str(suite), "--results", str(tmp_path / "results"),
                           "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"oba run: dense weights: resnet8 on digits: {tmp_path / 'resnet8-digits.pt'} from " in done.stderr
    assert "missing" not in done.stderr


def test_a_cell_records_where_its_dense_weights_came_from(tmp_path: Path) -> None:
    weights = tmp_path / "resnet8-digits.pt"
    torch.save(models.create("resnet8", 10, in_chans=1, image_size=8).state_dict(), weights)
    cells = {c.config["model"]: c for c in expand(load_suite(_weights_suite(tmp_path, str(weights))))}
    given = run_cell(cells["resnet8"], cache_dir=str(tmp_path / "cache"), device="cpu")
    assert given["status"] == "ok", given.get("error")
    assert (given["dense_weights"], given["dense_weights_sha256"]) == (str(weights), _sha256(weights))
    trained = run_cell(cells["vgg-tiny"], cache_dir=str(tmp_path / "cache"), device="cpu")
    assert trained["status"] == "ok", trained.get("error")
    [checkpoint] = [p for p in (tmp_path / "cache").glob("*.pt") if json.loads(p.with_suffix(".json").read_text())
                    .get("model") == "vgg-tiny"]
    assert (trained["dense_weights"], trained["dense_weights_sha256"]) == ("trained", _sha256(checkpoint))


def test_the_imagenet_suite_reads_published_weights_and_trains_nothing(torch_home: Path, hf_cache: Path) -> None:
    suite = load_suite(REPO / "suites" / "imagenet.toml")
    sources = {model: suite.dense[model]["weights"] for model in suite.models}
    assert sources == {"resnet50": "torchvision:IMAGENET1K_V2", "vit_b_16": "timm:deit_base_patch16_224.fb_in1k"}
    for model, source in sources.items():  # valid names: only the (absent) file is missing
        with pytest.raises(WeightsError, match=f"for {model} are missing: place the file at "):
            check(Weights(source), model)
