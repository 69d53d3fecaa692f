"""torchvision's ImageNet ResNet-50, with the CIFAR-style stem for small inputs.

For ``image_size`` ≤ 64 the 7×7 stride-2 stem and its max-pool are replaced by a
3×3 stride-1 conv and no pooling (the usual CIFAR adaptation); otherwise the
stem is torchvision's, re-made only when ``in_chans`` ≠ 3. torchvision's
in-place ReLUs are switched to out-of-place so that tracing and double
backward see plain ops.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet
from torchvision.models import resnet50 as tv_resnet50

from oba.models import register

SMALL_INPUT_MAX = 64


@register("resnet50")
def resnet50(num_classes: int, in_chans: int = 3, image_size: int = 224) -> ResNet:
    """ResNet-50 (bottleneck blocks 3-4-6-3), torchvision's layout, random initialisation."""
    model = tv_resnet50(weights=None, num_classes=num_classes)
    if image_size <= SMALL_INPUT_MAX:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_chans != 3:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model
