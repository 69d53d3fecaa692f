"""Any torchvision or timm classifier by name: ``torchvision:<name>`` and ``timm:<name>``.

``torchvision:<name>`` is ``torchvision.models.get_model(<name>, weights=None,
num_classes=...)`` for a name of ``torchvision.models.list_models(module=
torchvision.models)``; for ``in_chans`` ≠ 3 its first ``nn.Conv2d`` (the stem,
in every torchvision classifier) is replaced by one taking ``in_chans``
channels, with PyTorch's default initialisation. ``timm:<name>`` is
``timm.create_model(<name>, num_classes=..., in_chans=...)`` for a name of
``timm.list_models()`` (an architecture, without a pretrained tag); models
whose timm configuration has a fixed input size (ViTs, Swin, …) are also given
``img_size``. Networks whose size is a constructor argument in torchvision
(ViTs, MaxViT) are given it too. Nothing is downloaded: published weights are
loaded by :func:`oba.models.create` from local files
(:mod:`oba.models.weights`).

In-place activations are switched to out-of-place, as in the registered
models, so that tracing and double backward see plain ops. googlenet and
inception_v3 are built without their auxiliary heads (their training-mode
outputs would otherwise be tuples).
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from oba._lazy import lazy_module, loaded

timm = lazy_module("timm")
torchvision_models = lazy_module("torchvision.models")

if TYPE_CHECKING:
    from oba.models import ModelFactory


@dataclass(frozen=True)
class Library:
    """A model library: its valid names, how a model is built, and how a user lists the names."""

    names: Callable[[], Collection[str]]
    build: Callable[[str, int, int, int], nn.Module]
    listing: str


def _torchvision_names() -> Collection[str]:
    return frozenset(torchvision_models.list_models(module=loaded(torchvision_models)))


TORCHVISION_KEYWORDS: dict[str, Callable[[int], dict[str, Any]]] = {
    "vit_": lambda size: {"image_size": size},
    "maxvit_": lambda size: {"input_size": (size, size)},
    "googlenet": lambda size: {"aux_logits": False, "init_weights": True},
    "inception_v3": lambda size: {"aux_logits": False, "init_weights": True},
}
"""torchvision name prefix → its builder's extra keywords, given the image size."""


def _torchvision_keywords(name: str, image_size: int) -> dict[str, Any]:
    return next((extra(image_size) for prefix, extra in TORCHVISION_KEYWORDS.items() if name.startswith(prefix)), {})


def _torchvision(name: str, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    model = torchvision_models.get_model(name, weights=None, num_classes=num_classes, **_torchvision_keywords(name, image_size))
    if in_chans != 3:
        _replace_input_conv(model, in_chans)
    return model


def _replace_input_conv(model: nn.Module, in_chans: int) -> None:
    """Swap the first ``nn.Conv2d`` of ``model`` (its stem, which takes 3 channels) for one taking ``in_chans``."""
    path, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels != 3 or conv.groups != 1:
        raise ValueError(f"cannot adapt {type(model).__name__} to {in_chans} input channels: its first convolution "
                         f"{path} takes {conv.in_channels} channels in {conv.groups} group(s)")
    replacement = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                            bias=conv.bias is not None, padding_mode=conv.padding_mode)
    parent, _, attribute = path.rpartition(".")
    setattr(model.get_submodule(parent), attribute, replacement)


def _timm_names() -> Collection[str]:
    return frozenset(timm.list_models())


def _timm(name: str, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    fixed = timm.models.get_pretrained_cfg_value(name, "fixed_input_size")
    size = {"img_size": image_size} if fixed else {}
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **size)


LIBRARIES = {
    "torchvision": Library(_torchvision_names, _torchvision,
                           "torchvision.models.list_models(module=torchvision.models) lists them"),
    "timm": Library(_timm_names, _timm, "timm.list_models() lists them, timm.list_models('*convnext*') by pattern"),
}
"""Name prefix → library."""


def factory(name: str) -> ModelFactory:
    """The factory of ``<library>:<model>``; ``ValueError`` (one line, saying how to list names) if unknown."""
    prefix, _, model = name.partition(":")
    library = LIBRARIES.get(prefix)
    if library is None:
        raise ValueError(f"unknown model library {prefix!r} in {name!r}; valid: {', '.join(LIBRARIES)}")
    if model not in library.names():
        hint = f" (name the architecture; give a pretrained tag as weights, e.g. timm:{model.partition('.')[2]})" \
            if prefix == "timm" and "." in model else ""
        raise ValueError(f"unknown {prefix} model {model!r}{hint}; {library.listing}")

    def build(num_classes: int, in_chans: int, image_size: int) -> nn.Module:
        return _out_of_place(library.build(model, num_classes, in_chans, image_size))

    return build


def _out_of_place(model: nn.Module) -> nn.Module:
    """``model`` with every module's ``inplace`` flag (ReLU, Hardswish, Dropout, …) cleared."""
    for module in model.modules():
        if getattr(module, "inplace", None) is True:
            module.inplace = False
    return model
