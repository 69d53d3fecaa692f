"""CIFAR ResNets (He et al. 2016, section 4.2): a 3×3 stem, three stages of basic blocks.

Depth 6n+2 with n blocks per stage. Where a block changes the shape (stride 2
or a new width) the shortcut is a 1×1 conv + BN projection ("option B") rather
than the zero-padding shortcut of the paper's CIFAR nets: a projection is a
real layer, so Torch-Pruning can couple the channels of the residual sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from oba.models import register


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity or projection shortcut, added with ``+``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv, three stages (stride 1, 2, 2) of ``blocks_per_stage`` basic blocks, average pool, linear head."""

    def __init__(self, blocks_per_stage: int, widths: Sequence[int], num_classes: int, in_chans: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages: list[nn.Module] = []
        channels = widths[0]
        for index, width in enumerate(widths):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register("resnet8")
def resnet8(num_classes: int, in_chans: int = 3, image_size: int = 32) -> CifarResNet:
    """ResNet-8 (one block per stage, 16/32/64 channels) for laptop-sized runs."""
    return CifarResNet(1, (16, 32, 64), num_classes, in_chans)


@register("resnet32")
def resnet32(num_classes: int, in_chans: int = 3, image_size: int = 32) -> CifarResNet:
    """ResNet-32 (five blocks per stage, 16/32/64 channels)."""
    return CifarResNet(5, (16, 32, 64), num_classes, in_chans)


@register("resnet32-wide")
def resnet32_wide(num_classes: int, in_chans: int = 3, image_size: int = 32) -> CifarResNet:
    """ResNet-32 at four times the width (64/128/256 channels)."""
    return CifarResNet(5, (64, 128, 256), num_classes, in_chans)
