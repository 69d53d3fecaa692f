"""Model registry: names, construction for every input form, structure the pruning code relies on.

Structure-only tests build on the meta device (no memory, no initialisation cost)."""

from __future__ import annotations

import pytest
import torch
from timm.layers import Attention
from torch import nn

from oba import models

SMALL = ["vgg-tiny", "resnet8", "vit-tiny"]
LARGE = ["vgg19", "resnet32", "resnet32-wide", "resnet50", "vit_b_16"]


def test_names_lists_every_model() -> None:
    assert models.names() == sorted(SMALL + LARGE)


def test_unknown_model_error_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'.*resnet8.*vit-tiny"):
        models.create("nope", num_classes=10)


def test_register_rejects_a_second_factory_under_a_taken_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        models.register("resnet8")(lambda num_classes, in_chans, image_size: nn.Identity())


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("in_chans,image_size", [(1, 28), (1, 8), (3, 32)])
def test_small_models_forward_and_backward_on_every_input_form(name: str, in_chans: int, image_size: int) -> None:
    torch.manual_seed(0)
    model = models.create(name, num_classes=7, in_chans=in_chans, image_size=image_size)
    logits = model(torch.randn(3, in_chans, image_size, image_size))
    assert logits.shape == (3, 7)
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", LARGE)
def test_large_models_build_and_run_at_cifar_size(name: str) -> None:
    torch.manual_seed(0)
    model = models.create(name, num_classes=100, in_chans=3, image_size=32).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)


@pytest.mark.parametrize("name", SMALL + LARGE)
def test_no_in_place_activations(name: str) -> None:
    with torch.device("meta"):
        model = models.create(name, num_classes=10, in_chans=3, image_size=32)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert all(not m.inplace for m in relus)


def test_same_seed_gives_the_same_initial_weights() -> None:
    torch.manual_seed(3)
    first = models.create("resnet8", num_classes=10).state_dict()
    torch.manual_seed(3)
    second = models.create("resnet8", num_classes=10).state_dict()
    torch.manual_seed(4)
    third = models.create("resnet8", num_classes=10).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], third["conv1.weight"])


@pytest.mark.parametrize(
    "name,widths,blocks",
    [("resnet32", (16, 32, 64), 5), ("resnet32-wide", (64, 128, 256), 5), ("resnet8", (16, 32, 64), 1)],
)
def test_cifar_resnet_depth_widths_and_projection_shortcuts(name: str, widths: tuple[int, ...], blocks: int) -> None:
    with torch.device("meta"):
        model = models.create(name, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    three_by_three = [c for c in convs if c.kernel_size == (3, 3)]
    projections = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(three_by_three) + 1 == 6 * blocks + 2  # convs + the linear head
    assert [p.out_channels for p in projections] == list(widths[1:])
    assert [p.stride for p in projections] == [(2, 2), (2, 2)]
    assert {c.out_channels for c in three_by_three} == set(widths)
    assert model.fc.in_features == widths[-1]


def test_resnet50_uses_the_cifar_stem_for_small_inputs_only() -> None:
    with torch.device("meta"):
        small = models.create("resnet50", num_classes=10, in_chans=1, image_size=32)
        large = models.create("resnet50", num_classes=1000, in_chans=3, image_size=224)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and small.conv1.in_channels == 1
    assert isinstance(small.maxpool, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d)
    assert sum(p.numel() for p in large.parameters()) == 25_557_032  # torchvision's ResNet-50


def test_vgg19_has_sixteen_bn_convs() -> None:
    with torch.device("meta"):
        model = models.create("vgg19", num_classes=10)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 16
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 16


@pytest.mark.parametrize("image_size,patch,tokens", [(224, 16, 196), (32, 4, 64), (28, 4, 49)])
def test_vit_b_16_patch_size_follows_input_size(image_size: int, patch: int, tokens: int) -> None:
    with torch.device("meta"):
        model = models.create("vit_b_16", num_classes=10, image_size=image_size)
    assert model.patch_embed.patch_size == (patch, patch)
    assert model.patch_embed.num_patches == tokens
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attentions) == 12
    assert all(a.num_heads == 12 and a.qkv.out_features == 3 * 768 for a in attentions)


def test_vit_tiny_keeps_timm_attention_and_rejects_indivisible_sizes() -> None:
    model = models.create("vit-tiny", num_classes=10, in_chans=1, image_size=28)
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert [(a.num_heads, a.qkv.in_features) for a in attentions] == [(4, 64)] * 4
    with pytest.raises(ValueError, match="multiple of the ViT patch size 4"):
        models.create("vit-tiny", num_classes=10, image_size=30)
