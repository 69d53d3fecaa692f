"""Small networks for tests (independent of the model registry)."""
from __future__ import annotations

import timm
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_in: int = 6, hidden: int = 7, d_out: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


class ResidualCNN(nn.Module):
    """conv-BN-ReLU stem, one residual block (identity add), pooled linear head."""

    def __init__(self, c: int = 4, classes: int = 3, in_chans: int = 2) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_chans, c, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.conv0(x)))
        y = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(x + self.bn2(self.conv2(y)))
        return self.head(x.mean(dim=(2, 3)))


class AttentionNet(nn.Module):
    """nn.MultiheadAttention over tokens, mean-pooled into a linear head."""

    def __init__(self, dim: int = 8, heads: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.attn(x, x, x, need_weights=False)
        return self.head(self.norm(x + y).mean(dim=1))


def vgg_style(in_chans: int = 3, classes: int = 10, widths: tuple[int, ...] = (8, 16, 16, 32),
              hidden: int = 32) -> nn.Sequential:
    """Conv-BN-ReLU stacks with max pooling, flatten into a two-layer classifier with ``hidden`` units."""
    layers: list[nn.Module] = []
    c = in_chans
    for i, w in enumerate(widths):
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
        c = w
    layers += [nn.Flatten(), nn.Linear(c * 8 * 8, hidden), nn.ReLU(), nn.Linear(hidden, classes)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """CIFAR-style ResNet: stem, three stages of basic blocks with residual adds."""

    def __init__(self, classes: int = 10, widths: tuple[int, int, int] = (8, 16, 32), blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, c = [], widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks):
                stages.append(BasicBlock(c, w, 2 if (b == 0 and i > 0) else 1))
                c = w
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.stages(self.stem(x)), 1), 1))


def tiny_vit(classes: int = 10, dim: int = 32, depth: int = 2, heads: int = 4, image: int = 16) -> nn.Module:
    return timm.models.vision_transformer.VisionTransformer(
        img_size=image, patch_size=4, embed_dim=dim, depth=depth, num_heads=heads, num_classes=classes, mlp_ratio=2.0
    )
