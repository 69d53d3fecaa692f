"""Name → model registry.

Every model family lives in its own module and registers factories with
:func:`register`. A factory takes ``num_classes``, ``in_chans`` and
``image_size`` and returns a freshly initialised ``nn.Module`` (no pretrained
weights). All models use plain ``nn.Conv2d``/``BatchNorm2d``/``Linear``/``ReLU``
modules (never in-place), residual adds via ``+`` and ``torch.flatten``, so that
Torch-Pruning's dependency graph can trace them and double backward works.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn

from ..registry import Registry


class ModelFactory(Protocol):
    def __call__(self, num_classes: int, in_chans: int, image_size: int) -> nn.Module: ...


_MODELS: Registry[ModelFactory] = Registry(
    "model", "models", tuple(f"{__name__}.{m}" for m in ("vgg", "resnet_cifar", "resnet_imagenet", "vit"))
)
register = _MODELS.register
names = _MODELS.names


def create(name: str, num_classes: int, in_chans: int = 3, image_size: int = 32) -> nn.Module:
    """A new, randomly initialised model ``name`` for ``in_chans``×``image_size``² inputs.

    Initialisation draws from torch's global RNG: seed it first for a
    reproducible model. An unknown name raises ``ValueError`` listing the valid
    names.
    """
    factory = _MODELS.get(name)
    if num_classes < 1 or in_chans < 1 or image_size < 1:
        raise ValueError(
            f"num_classes, in_chans and image_size must be positive (got {num_classes}, {in_chans}, {image_size})"
        )
    return factory(num_classes=num_classes, in_chans=in_chans, image_size=image_size)


__all__ = ["ModelFactory", "create", "names", "register"]
