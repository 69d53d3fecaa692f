"""Name → model registry.

Every model family lives in its own module and registers factories with
:func:`register`. A factory takes ``num_classes``, ``in_chans`` and
``image_size`` and returns a freshly initialised ``nn.Module`` (no pretrained
weights). All models use plain ``nn.Conv2d``/``BatchNorm2d``/``Linear``/``ReLU``
modules (never in-place), residual adds via ``+`` and ``torch.flatten``, so that
Torch-Pruning's dependency graph can trace them and double backward works.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

from torch import nn


class ModelFactory(Protocol):
    def __call__(self, num_classes: int, in_chans: int, image_size: int) -> nn.Module: ...


_REGISTRY: dict[str, ModelFactory] = {}
_BUILTINS_LOADED = False
_BUILTIN_MODULES = ("vgg", "resnet_cifar", "resnet_imagenet", "vit")


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: make ``name`` resolve to the decorated model factory."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name]!r}")
        _REGISTRY[name] = factory
        return factory

    return decorate


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def names() -> list[str]:
    """Sorted names of every registered model."""
    _load_builtins()
    return sorted(_REGISTRY)


def create(name: str, num_classes: int, in_chans: int = 3, image_size: int = 32) -> nn.Module:
    """A new, randomly initialised model ``name`` for ``in_chans``×``image_size``² inputs.

    Initialisation draws from torch's global RNG: seed it first for a
    reproducible model. An unknown name raises ``ValueError`` listing the valid
    names.
    """
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(names())}")
    if num_classes < 1 or in_chans < 1 or image_size < 1:
        raise ValueError(
            f"num_classes, in_chans and image_size must be positive (got {num_classes}, {in_chans}, {image_size})"
        )
    return _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, image_size=image_size)


__all__ = ["ModelFactory", "create", "names", "register"]
