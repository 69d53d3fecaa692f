"""Pretrained weights read from where users keep them: offline, verified, never silently downloaded.

A weights ``source`` is one of

``torchvision:<MEMBER>`` or ``torchvision:<Enum>.<MEMBER>``
    A torchvision weights enum, e.g. ``torchvision:IMAGENET1K_V2`` for
    ``resnet50`` (``ResNet50_Weights.IMAGENET1K_V2``) or
    ``torchvision:IMAGENET1K_V1`` for ``vit_b_16`` (``ViT_B_16_Weights``, its
    entries renamed to the model's timm layout on loading), or a weight of
    ``<name>`` for model ``torchvision:<name>``. The file is where
    ``torch.hub`` caches it: ``$TORCH_HOME/hub/checkpoints/<file name of the
    enum's URL>`` (:func:`torch.hub.get_dir`).
``timm:<tag>`` or ``timm:<architecture>.<tag>``
    A timm pretrained tag, e.g. ``timm:deit_base_patch16_224.fb_in1k`` (or
    ``timm:augreg2_in21k_ft_in1k`` for ``vit_b_16``, whose timm architecture is
    ``vit_base_patch16_224``, and ``timm:fb_in1k`` for model
    ``timm:convnext_tiny``). The file is where timm would load it from: the
    Hugging Face cache (``model.safetensors``, else ``pytorch_model.bin``, of
    the tag's hub repository; ``HF_HUB_CACHE``/``HF_HOME``, read offline), else
    the torch hub cache for a tag that has only a URL.
a URI (``s3://…``, ``gs://…``, ``file://…``)
    Read through the pyarrow filesystem of the URI.
anything else
    A local file path (relative to the working directory).

A file holds a state dict (``torch.save``, read with ``weights_only``, or
safetensors), possibly under a ``"state_dict"`` or ``"model"`` entry. Nothing
is downloaded unless ``download`` is true (torch.hub or huggingface_hub then
fetch into their caches; torch.hub verifies the hash prefix in torchvision's
file names). A file already in place is never verified by torch.hub, so the
file's SHA-256 is computed here on every load, recorded, and compared with the
``sha256`` pin when one is given. Weights must fit the model exactly — the
same classes, channels and input size; a classifier head is never
re-initialised, because a model given weights is evaluated, not trained.
:func:`published_input` tells the input a ``torchvision:``/``timm:`` source was
made for, which :func:`oba.models.create` builds by default.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import torch
from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError
from torch import Tensor, nn

from oba._lazy import lazy_module
from oba.models.vit_weight_names import timm_layout
from oba.models.weights_files import WeightsError, read_state_dict, sha256_of

timm = lazy_module("timm")
torchvision_models = lazy_module("torchvision.models")

SETTINGS = ("weights", "weights_sha256", "weights_download")
"""The ``[dense]`` suite keys that describe :class:`Weights` (``source``, ``sha256``, ``download``)."""

TORCHVISION_ARCHITECTURES = {"resnet50": "resnet50"}
"""Registry model → torchvision builder whose weights enum ``torchvision:<MEMBER>`` names (same state-dict layout)."""

TORCHVISION_RENAMED: dict[str, tuple[str, Callable[[Mapping[str, Tensor]], dict[str, Tensor]]]] = {
    "vit_b_16": ("vit_b_16", timm_layout),
}
"""Registry model → (torchvision builder, the function renaming its state dict into the model's layout): the same
network under other names (:mod:`oba.models.vit_weight_names`)."""

TIMM_ARCHITECTURES = {"vit_b_16": "vit_base_patch16_224"}
"""Registry model → timm architecture that a bare ``timm:<tag>`` completes (same state-dict layout at 224²)."""

HF_FILES = ("model.safetensors", "pytorch_model.bin")
"""The files timm loads from a Hugging Face repository, in its order of preference."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class WeightsMisfit(WeightsError):
    """Weights whose tensors do not fit the model's (names or shapes)."""


@dataclass(frozen=True)
class Weights:
    """Where dense weights come from (``source``, see the module docstring), an optional SHA-256 pin,
    and whether a missing file may be downloaded."""

    source: str
    sha256: str | None = None
    download: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise WeightsError(f"weights must be a non-empty source string, got {self.source!r}")
        if self.sha256 is not None:
            if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256.lower()):
                raise WeightsError(f"weights_sha256 must be 64 hexadecimal digits, got {self.sha256!r}")
            object.__setattr__(self, "sha256", self.sha256.lower())

    def identity(self) -> dict[str, Any]:
        """What changes a result (the source and its pin; not whether it may be downloaded), as suite keys."""
        return {"weights": self.source, "weights_sha256": self.sha256}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Weights:
        """The weights described by suite keys ``weights``, ``weights_sha256``, ``weights_download``."""
        return cls(settings["weights"], settings.get("weights_sha256"), bool(settings.get("weights_download", False)))


@dataclass(frozen=True)
class WeightsFile:
    """A source resolved to one file: the canonical source name, where the file is read, its SHA-256."""

    source: str
    location: str
    sha256: str


@dataclass(frozen=True)
class _Located:
    """Where a source's file is (``location``, None when not found), how to fetch it, and where to place it."""

    source: str
    location: str | None
    expected: str
    url: str | None = None
    hf: tuple[str, str | None, tuple[str, ...]] | None = None

    def downloadable(self) -> bool:
        return self.url is not None or self.hf is not None


def _hub_file(url: str) -> str:
    """Where torch.hub caches ``url``: ``<hub dir>/checkpoints/<basename of the URL's path>``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def _torchvision_architecture(model_name: str) -> str | None:
    """The torchvision builder whose weights fit ``model_name``: its counterpart, or ``<name>`` of
    ``torchvision:<name>``."""
    renamed = TORCHVISION_RENAMED.get(model_name)
    by_name = model_name.removeprefix("torchvision:") if model_name.startswith("torchvision:") else None
    return TORCHVISION_ARCHITECTURES.get(model_name) or (renamed[0] if renamed else by_name)


def _torchvision_weight(spec: str, model_name: str) -> Any:
    """The torchvision weights enum member ``spec`` names for ``model_name``."""
    architecture = _torchvision_architecture(model_name)
    if architecture is None:
        raise WeightsError(f"model {model_name!r} has no torchvision counterpart (models with one: "
                           f"{', '.join([*TORCHVISION_ARCHITECTURES, *TORCHVISION_RENAMED])}, torchvision:<name>); "
                           "give a file path or URI as weights")
    enum = torchvision_models.get_model_weights(architecture)
    enum_name, _, member = spec.rpartition(".")
    if enum_name and enum_name != enum.__name__ or member not in enum.__members__:
        raise WeightsError(f"torchvision:{spec} is not a weight of {model_name} ({enum.__name__}); valid: "
                           f"{', '.join(f'torchvision:{m}' for m in enum.__members__)}")
    return enum[member]


def _torchvision(spec: str, model_name: str) -> _Located:
    weight = _torchvision_weight(spec, model_name)
    path = _hub_file(weight.url)
    return _Located(f"torchvision:{type(weight).__name__}.{weight.name}", path if os.path.isfile(path) else None,
                    path, url=weight.url)


def _torchvision_input(spec: str, model_name: str) -> tuple[int, int]:
    """(3, the crop size of the weights' preprocessing): the inputs torchvision's weights were made for."""
    return 3, int(_torchvision_weight(spec, model_name).transforms.keywords["crop_size"])


def _timm_cfg(spec: str, model_name: str) -> tuple[str, Any]:
    """The full ``<architecture>.<tag>`` name of ``spec`` for ``model_name`` and timm's pretrained configuration."""
    by_name = model_name.removeprefix("timm:") if model_name.startswith("timm:") else None
    architecture = TIMM_ARCHITECTURES.get(model_name) or by_name
    if "." in spec:
        name = spec
    elif architecture is not None:
        name = f"{architecture}.{spec}"
    else:
        raise WeightsError(f"timm:{spec}: model {model_name!r} has no default timm architecture (models with one: "
                           f"{', '.join(TIMM_ARCHITECTURES)}, timm:<name>); name it, as timm:<architecture>.{spec}")
    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError as err:  # timm's error for an unknown architecture or tag
        raise WeightsError(f"timm:{spec}: {err} (`timm.list_pretrained()` lists the valid names)") from err
    assert cfg is not None  # allow_unregistered=False raises instead
    return name, cfg


def _timm(spec: str, model_name: str) -> _Located:
    name, cfg = _timm_cfg(spec, model_name)
    source = f"timm:{name}"
    if cfg.hf_hub_id:
        return _hf_cached(source, cfg.hf_hub_id, cfg.hf_hub_filename)
    if cfg.url and not cfg.custom_load and not cfg.url.endswith(".npz"):
        path = _hub_file(cfg.url)
        return _Located(source, path if os.path.isfile(path) else None, path, url=cfg.url)
    raise WeightsError(f"{source} has no state-dict file this loader reads (only {cfg.url or 'nothing'}); "
                       "convert it to a state dict and give the file's path as weights")


def _timm_input(spec: str, model_name: str) -> tuple[int, int]:
    """(channels, height) of the input size in timm's pretrained configuration of ``spec``."""
    channels, height, _ = _timm_cfg(spec, model_name)[1].input_size
    return int(channels), int(height)


PUBLISHED_INPUTS: dict[str, Callable[[str, str], tuple[int, int]]] = {
    "torchvision": _torchvision_input, "timm": _timm_input,
}
"""Source scheme of published weights → (spec, model name) → (channels, image size) the weights were made for."""


def published_input(source: str, model_name: str) -> tuple[int, int] | None:
    """The (channels, image size) that published weights ``source`` (``torchvision:…``, ``timm:…``) were made
    for, for ``model_name``; None for a file or URI, whose input is not known."""
    scheme, _, spec = source.partition(":")
    reader = PUBLISHED_INPUTS.get(scheme)
    return reader(spec, model_name) if reader and spec else None


def _hf_cached(source: str, hub_id: str, filename: str | None) -> _Located:
    repo, _, revision = hub_id.partition("@")
    files = (filename,) if filename else HF_FILES
    for name in files:
        found = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(found, str):
            return _Located(source, found, found, hf=(repo, revision or None, files))
    folder = os.path.join(constants.HF_HUB_CACHE, f"models--{repo.replace('/', '--')}")
    expected = (f"{folder}/snapshots/<commit>/{files[0]}"
                + (f" (or {files[1]})" if len(files) > 1 else "")
                + f" with {folder}/refs/{revision or 'main'} holding <commit> (copy the folder {folder} from a "
                f"Hugging Face cache that has it, e.g. after `hf download {repo} {files[0]}`)")
    return _Located(source, None, expected, hf=(repo, revision or None, files))


def _locate(source: str, model_name: str) -> _Located:
    scheme, _, spec = source.partition(":")
    if scheme == "torchvision" and spec:
        return _torchvision(spec, model_name)
    if scheme == "timm" and spec:
        return _timm(spec, model_name)
    if "://" in source:
        try:
            fs, path = pafs.FileSystem.from_uri(source)
            found = fs.get_file_info(path).type == pafs.FileType.File
        except (OSError, ValueError, pa.ArrowException) as err:
            raise WeightsError(f"weights {source} cannot be reached: {' '.join(str(err).split())}") from err
        return _Located(source, source if found else None, source)
    path = os.path.abspath(source)
    return _Located(source, path if os.path.isfile(path) else None, path)


def _download(located: _Located) -> str:
    if located.url is not None:
        os.makedirs(os.path.dirname(located.expected), exist_ok=True)
        torch.hub.download_url_to_file(located.url, located.expected, hash_prefix=_hash_prefix(located.url),
                                       progress=False)
        return located.expected
    assert located.hf is not None
    repo, revision, files = located.hf
    for name in files:
        try:
            return hf_hub_download(repo, name, revision=revision)
        except EntryNotFoundError:
            continue
    raise WeightsError(f"weights {located.source}: Hugging Face repository {repo} has none of {', '.join(files)}")


def _hash_prefix(url: str) -> str | None:
    """The SHA-256 prefix torch.hub checks in a file name like ``resnet50-11ad3fa6.pth``."""
    match = re.search(r"-([a-f0-9]+)\.", os.path.basename(urlparse(url).path))
    return match.group(1) if match else None


def resolve(weights: Weights, model_name: str) -> WeightsFile:
    """The file of ``weights`` for registry model ``model_name``, downloaded if allowed, its SHA-256 checked.

    Raises :class:`WeightsError` (one line) for an unknown source, a missing
    file (naming the exact file to place and where), or a SHA-256 that differs
    from the pin.
    """
    located = _locate(weights.source, model_name)
    if located.location is None:
        _missing(weights, located, model_name)
        return _verified(weights, located.source, _download(located))
    return _verified(weights, located.source, located.location)


def check(weights: Weights, model_name: str) -> WeightsFile | str:
    """What :func:`resolve` would use, downloading nothing: the checked file, or where a missing one will be
    downloaded to (when ``weights.download`` allows it). Raises as :func:`resolve` does."""
    located = _locate(weights.source, model_name)
    if located.location is None:
        _missing(weights, located, model_name)
        return located.expected
    return _verified(weights, located.source, located.location)


def _missing(weights: Weights, located: _Located, model_name: str) -> None:
    """Raise the missing-file error unless the file may be downloaded."""
    if not (weights.download and located.downloadable()):
        hint = ", or set weights_download = true to download it" if located.downloadable() else ""
        raise WeightsError(f"weights {located.source} for {model_name} are missing: place the file at "
                           f"{located.expected}{hint}")


def _verified(weights: Weights, source: str, location: str) -> WeightsFile:
    digest = sha256_of(location)
    if weights.sha256 is not None and digest != weights.sha256:
        raise WeightsError(f"weights {source}: file {location} has SHA-256 {digest}, "
                           f"not the pinned {weights.sha256}; replace the file or correct weights_sha256")
    return WeightsFile(source, location, digest)


def load_state(model: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """Copy ``state`` into ``model``, which it must fit exactly (``what`` names both in the error).

    Only batch-norm ``num_batches_tracked`` counters may be absent. A misfit
    raises :class:`WeightsError` naming the differing entries and shapes.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = [*shapes, *(f"missing {k}" for k in missing), *(f"unexpected {k}" for k in unexpected)]
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise WeightsMisfit(f"{what}: {'; '.join(problems[:3])}{more} (weights must match the model's classes, "
                           "channels and input size; the head is never re-initialised)")
    model.load_state_dict(state, strict=False)


def load_weights(model: nn.Module, model_name: str, weights: Weights, describe: str = "") -> WeightsFile:
    """Load ``weights`` into ``model`` (registry model ``model_name``, ``describe``-d in errors); return the file used."""
    file = resolve(weights, model_name)
    state = read_state_dict(file.location)
    if file.source.startswith("torchvision:") and model_name in TORCHVISION_RENAMED:
        state = TORCHVISION_RENAMED[model_name][1](state)
    load_state(model, state, f"weights {file.source} do not fit {model_name}{f' ({describe})' if describe else ''}")
    return file


__all__ = ["SETTINGS", "Weights", "WeightsError", "WeightsFile", "WeightsMisfit", "check", "load_state",
           "load_weights", "published_input", "read_state_dict", "resolve", "sha256_of"]
