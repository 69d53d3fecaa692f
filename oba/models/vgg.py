"""VGG with batch norm in its CIFAR form: 3×3 convs, BN, ReLU, max-pooling, a small classifier.

A max-pool is skipped once the feature map is down to 1×1 (so 28×28 MNIST and
8×8 digits work), and an adaptive average pool before the classifier makes the
head independent of the input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from oba.models import register

Layout = Sequence[int | str]

VGG19_LAYOUT: Layout = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)
VGG_TINY_LAYOUT: Layout = (16, 16, "M", 32, 32, "M", 64, "M")


class VGG(nn.Module):
    """Conv-BN-ReLU stacks (ints: output channels, "M": 2×2 max-pool), average pool, MLP head."""

    def __init__(self, layout: Layout, num_classes: int, in_chans: int, image_size: int, hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_chans, image_size
        for item in layout:
            if item == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    size //= 2
                continue
            width = int(item)
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register("vgg19")
def vgg19(num_classes: int, in_chans: int = 3, image_size: int = 32) -> VGG:
    """VGG19-BN, CIFAR form (16 convs up to 512 channels, 512-512-classes head)."""
    return VGG(VGG19_LAYOUT, num_classes, in_chans, image_size, hidden=512)


@register("vgg-tiny")
def vgg_tiny(num_classes: int, in_chans: int = 3, image_size: int = 32) -> VGG:
    """Five-conv VGG (16-16-32-32-64 channels) for laptop-sized runs."""
    return VGG(VGG_TINY_LAYOUT, num_classes, in_chans, image_size, hidden=64)
