"""Building a model by name: a registered factory or any torchvision/timm classifier, randomly initialised or with
published weights (:mod:`oba.models.weights`)."""
from __future__ import annotations

import torch
from torch import nn

from oba.models import MODELS, ModelFactory
from oba.models.by_name import factory as by_name
from oba.models.weights import Weights, WeightsMisfit, load_weights, published_input

DEFAULT_IMAGE_SIZE = 32
"""The input size :func:`create` builds for when neither ``image_size`` nor published weights give one."""


def factory(name: str) -> ModelFactory:
    """The factory of ``name``: a registered model, or ``torchvision:NAME`` / ``timm:NAME`` for any torchvision or
    timm classifier (:mod:`oba.models.by_name`). An unknown name raises ``ValueError`` saying where valid ones are."""
    if ":" in name and name not in MODELS:
        return by_name(name)
    try:
        return MODELS.get(name)
    except ValueError as err:
        raise ValueError(f"{err}; or torchvision:NAME / timm:NAME for any torchvision or timm classifier") from None


def check_name(name: str) -> None:
    """Raise ``ValueError`` (one line) unless :func:`create` knows model ``name``."""
    factory(name)


def create(
    name: str, num_classes: int, in_chans: int = 3, image_size: int | None = None, *,
    weights: str | Weights | None = None,
) -> nn.Module:
    """A new model ``name`` for ``in_chans``×``image_size``² inputs: randomly initialised, or with ``weights``.

    ``name`` is a registered model (:func:`names`) or ``torchvision:NAME`` /
    ``timm:NAME``. Initialisation draws from torch's global RNG: seed it first
    for a reproducible model. ``weights`` (a source string such as
    ``"torchvision:IMAGENET1K_V2"``, or a :class:`~oba.models.weights.Weights`
    with a SHA-256 pin and download permission) are read offline from where
    their library caches them and must fit the model exactly;
    :class:`~oba.models.weights.WeightsError` says otherwise in one line.
    ``image_size`` defaults to the size published weights were made for
    (e.g. 224 for ImageNet, so ``resnet50`` gets its ImageNet stem), else to
    :data:`DEFAULT_IMAGE_SIZE`; weights that do not fit because a given size or
    channel count changes the architecture say so in one line. An unknown
    name raises ``ValueError`` saying where the valid names are.
    """
    build = factory(name)
    spec = _weights_spec(weights)
    published = _published_input(spec, name)
    size = image_size if image_size is not None else published[1] if published else DEFAULT_IMAGE_SIZE
    if num_classes < 1 or in_chans < 1 or size < 1:
        raise ValueError(
            f"num_classes, in_chans and image_size must be positive (got {num_classes}, {in_chans}, {size})"
        )
    model = build(num_classes=num_classes, in_chans=in_chans, image_size=size)
    if spec is not None:
        _load(model, build, name, spec, published, num_classes, in_chans, size)
    return model


def _load(model: nn.Module, build: ModelFactory, name: str, spec: Weights, published: tuple[int, int] | None,
          num_classes: int, in_chans: int, image_size: int) -> None:
    """Load ``spec`` into ``model``; a misfit due to an explicit input size or channel count says so."""
    try:
        load_weights(model, name, spec, f"{num_classes} classes, {in_chans}×{image_size}² inputs")
    except WeightsMisfit as misfit:
        other = (_other_architecture(build, name, spec.source, published, num_classes, in_chans, image_size)
                 if published is not None else None)
        if other:
            raise WeightsMisfit(other) from misfit
        raise


def _weights_spec(weights: str | Weights | None) -> Weights | None:
    if weights is None:
        return None
    return weights if isinstance(weights, Weights) else Weights(weights)


def _published_input(spec: Weights | None, name: str) -> tuple[int, int] | None:
    if spec is None:
        return None
    return published_input(spec.source, name)


def _other_architecture(build: ModelFactory, name: str, source: str, published: tuple[int, int], num_classes: int,
                        in_chans: int, image_size: int) -> str | None:
    """Why ``name`` for ``in_chans``×``image_size``² inputs is not the architecture it has for the inputs published
    weights ``source`` were made for (compared on the meta device), or None when it is the same."""
    if (in_chans, image_size) == published:
        return None
    channels, size = published
    with torch.device("meta"):
        wanted = build(num_classes=num_classes, in_chans=channels, image_size=size).state_dict()
        asked = build(num_classes=num_classes, in_chans=in_chans, image_size=image_size).state_dict()
    differ = sorted(k for k in wanted.keys() | asked.keys()
                    if k not in wanted or k not in asked or wanted[k].shape != asked[k].shape)
    if not differ:
        return None
    return (f"weights {source} were made for {channels}×{size}² inputs; {name} for {in_chans}×{image_size}² inputs "
            f"is another architecture ({differ[0]} differs): leave in_chans and image_size out (they default to the "
            f"weights' {channels}×{size}²)")
