"""Name → model registry.

Every model family lives in its own module and registers factories with
:func:`register`. A factory takes ``num_classes``, ``in_chans`` and
``image_size`` and returns a freshly initialised ``nn.Module``; :func:`create`
then loads pretrained weights when asked (:mod:`oba.models.weights`). All models use plain ``nn.Conv2d``/``BatchNorm2d``/``Linear``/``ReLU``
modules (never in-place), residual adds via ``+`` and ``torch.flatten``, so that
Torch-Pruning's dependency graph can trace them and double backward works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from .weights import Weights


class ModelFactory(Protocol):
    def __call__(self, num_classes: int, in_chans: int, image_size: int) -> nn.Module: ...


BUILTINS = {
    "vgg19": f"{__name__}.vgg", "vgg-tiny": f"{__name__}.vgg",
    "resnet8": f"{__name__}.resnet_cifar", "resnet32": f"{__name__}.resnet_cifar",
    "resnet32-wide": f"{__name__}.resnet_cifar", "resnet50": f"{__name__}.resnet_imagenet",
    "vit_b_16": f"{__name__}.vit", "vit-tiny": f"{__name__}.vit",
}
"""Every built-in model and the module that registers it."""

_MODELS: Registry[ModelFactory] = Registry("model", "models", BUILTINS)
register = _MODELS.register
names = _MODELS.names


def create(
    name: str, num_classes: int, in_chans: int = 3, image_size: int = 32, *, weights: str | Weights | None = None
) -> nn.Module:
    """A new model ``name`` for ``in_chans``×``image_size``² inputs: randomly initialised, or with ``weights``.

    Initialisation draws from torch's global RNG: seed it first for a
    reproducible model. ``weights`` (a source string such as
    ``"torchvision:IMAGENET1K_V2"``, or a :class:`~oba.models.weights.Weights`
    with a SHA-256 pin and download permission) are read offline from where
    their library caches them and must fit the model exactly;
    :class:`~oba.models.weights.WeightsError` says otherwise in one line. An
    unknown name raises ``ValueError`` listing the valid names.
    """
    factory = _MODELS.get(name)
    if num_classes < 1 or in_chans < 1 or image_size < 1:
        raise ValueError(
            f"num_classes, in_chans and image_size must be positive (got {num_classes}, {in_chans}, {image_size})"
        )
    model = factory(num_classes=num_classes, in_chans=in_chans, image_size=image_size)
    if weights is not None:
        from .weights import Weights, load_weights

        spec = weights if isinstance(weights, Weights) else Weights(weights)
        load_weights(model, name, spec, f"{num_classes} classes, {in_chans}×{image_size}² inputs")
    return model


__all__ = ["ModelFactory", "create", "names", "register"]
