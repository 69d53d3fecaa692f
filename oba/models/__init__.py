"""Name → model registry.

Every model family lives in its own module and registers factories with
:func:`register`. A factory takes ``num_classes``, ``in_chans`` and
``image_size`` and returns a freshly initialised ``nn.Module``; :func:`create`
then loads pretrained weights when asked (:mod:`oba.models.weights`). Any
torchvision or timm classifier is also available by name, as
``torchvision:NAME`` or ``timm:NAME`` (:mod:`oba.models.by_name`). Registered
models use plain ``nn.Conv2d``/``BatchNorm2d``/``Linear``/``ReLU`` modules
(never in-place), residual adds via ``+`` and ``torch.flatten``, so that
Torch-Pruning's dependency graph can trace them and double backward works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from oba._lazy import lazy_exports
from oba._registry import Registry

if TYPE_CHECKING:
    from torch import nn


class ModelFactory(Protocol):
    def __call__(self, num_classes: int, in_chans: int, image_size: int) -> nn.Module: ...


MODELS: Registry[ModelFactory] = Registry("model", "models", __name__)
register = MODELS.register
names = MODELS.names


_BUILDING = {name: "oba.models.building" for name in ("DEFAULT_IMAGE_SIZE", "check_name", "create", "factory")}
__all__ = ["MODELS", "ModelFactory", "names", "register", *_BUILDING]
__getattr__ = lazy_exports(__name__, _BUILDING)
