"""The model zoo the structured pruner is checked against (``tests/test_zoo.py``, ``benchmarks/zoo.py``).

Every classifier ``torchvision.models.list_models(module=torchvision.models)`` lists, and one architecture of each
major timm family (:data:`TIMM_FAMILIES`), built with random initialisation by :func:`oba.models.create` at the
smallest input of :data:`INPUT_SIZES` whose forward runs (:func:`at_smallest_input`). What the pruner refuses, and
why, is :data:`REFUSALS`: a zoo model refused for another reason, or one listed there that prunes, is a defect.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from oba._lazy import lazy_module, loaded
from oba.models.building import create

torchvision_models = lazy_module("torchvision.models")

TIMM_FAMILIES: tuple[str, ...] = (
    "resnet10t", "resnext26ts", "regnetx_002", "regnety_002", "efficientnet_b0", "mobilenetv3_small_050",
    "mobilenetv4_conv_small", "mobilevit_xxs", "convnext_atto", "convnextv2_atto", "ghostnet_050", "densenet121",
    "dla34", "dpn48b", "hrnet_w18_small", "rexnet_100", "lcnet_050", "tinynet_e", "vgg11", "repvgg_a0",
    "levit_128s", "deit_tiny_patch16_224", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224",
    "efficientformer_l1", "poolformer_s12", "coatnet_nano_rw_224", "maxvit_nano_rw_256", "edgenext_xx_small",
    "fastvit_t8", "inception_v3", "xception41", "res2net50_14w_8s", "cspresnet50", "darknet17", "ese_vovnet19b_slim",
    "mixnet_s", "mnasnet_050", "hardcorenas_a", "fbnetc_100", "pit_ti_224", "cait_xxs24_224", "crossvit_tiny_240",
    "twins_svt_small", "tresnet_m", "nfnet_l0", "regnetz_005", "efficientvit_b0", "tiny_vit_5m_224",
)
"""One timm architecture per major family (ResNet and its variants, RegNet, EfficientNet, MobileNet, ConvNeXt,
the ViT family, Swin, hybrids, …): the smallest or most common of each."""

LARGE_MODEL_PARAMETERS = 100_000_000
"""Above this many parameters the zoo prunes with ``magnitude-l1`` only: a Hessian-vector product needs several times
a model's size (``oba`` on a 640M-parameter model took more than 14 GB), and each large model's family has smaller
members that the second-order criteria prune."""

INPUT_SIZES: tuple[int, ...] = (32, 64, 96, 128, 160, 224, 240, 256, 299)
"""Square input sizes tried, smallest first."""


@dataclass(frozen=True)
class Refusal:
    """Why the structured pruner refuses a zoo model: ``pattern``, a regular expression that the one-line error
    matches, and ``why``, in words (``docs/models.md``)."""

    pattern: str
    why: str


_SWIN = Refusal(r"^SwinTransformer: cannot build pruning groups: features\.1\.0\.attn\.qkv \(Linear\).*ShiftedWindowAttention",
                "its window attention applies the `qkv` Linear's weight through functional code, not the Linear's "
                "forward, so the graph cannot follow it (refused in seconds, before tracing)")


def _timeout(model: str, why: str) -> Refusal:
    return Refusal(rf"^{model}: building its pruning groups did not finish within", why)


def _mapping(model: str, why: str) -> Refusal:
    return Refusal(rf"^{model}: cannot build pruning groups: Torch-Pruning maps the units of .* to element", why)


def _resized(model: str, module: str, why: str) -> Refusal:
    return Refusal(rf"^{model}: its forward fails once one unit of every pruning group is removed, at .* \({module}\)",
                   why)


REFUSALS: dict[str, Refusal] = {
    **{f"torchvision:{name}": _SWIN for name in ("swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b")},
    "torchvision:maxvit_t": _timeout("MaxVit", "the smallest input its windows take is 224 pixels, where Torch-Pruning's "
                                     "dependency graph does not finish (its own MetaPruner: no graph after 12 minutes "
                                     "and 21 GB); the graph-build bound refuses it"),
    "timm:coatnet_nano_rw_224": _timeout("MaxxVit", "Torch-Pruning's dependency graph of its relative-position "
                                         "attention does not finish (its own MetaPruner runs out of 10 GB)"),
    "timm:maxvit_nano_rw_256": _timeout("MaxxVit", "as coatnet: Torch-Pruning's graph of its window and grid "
                                        "attention does not finish (its own MetaPruner runs out of 10 GB)"),
    "timm:rexnet_100": _timeout("RexNet", "Torch-Pruning's dependency graph of its partial residual adds (a slice of "
                                "the channels) does not finish (its own MetaPruner: no result within 200 s)"),
    "timm:res2net50_14w_8s": _mapping("ResNet", "Torch-Pruning's index mapping through its channel splits and concats "
                                      "points past the layers' widths (its own MetaPruner: IndexError)"),
    "timm:dpn48b": _mapping("DPN", "Torch-Pruning's index mapping through its dual-path slices and concats points past "
                            "the layers' widths (its own MetaPruner: IndexError)"),
    "timm:cait_xxs24_224": _mapping("Cait", "its talking-heads attention mixes heads with Linear layers over the head "
                                    "dimension, which Torch-Pruning maps as channels (its own MetaPruner: IndexError)"),
    "timm:twins_svt_small": Refusal(r"^Twins: cannot build pruning groups: Torch-Pruning failed with ZeroDivisionError",
                                    "Torch-Pruning divides by zero inferring the reshapes of its positional "
                                    "convolution (its own MetaPruner fails the same way)"),
    "timm:mixnet_s": _resized("EfficientNet", "MixedConv2d", "its mixed convolutions split channels by sizes stored "
                              "on the module, which pruning does not update (its own MetaPruner: the same error)"),
    "timm:tresnet_m": _resized("TResNet", "BlurPool2d", "its anti-aliasing blur applies a fixed per-channel kernel "
                               "buffer (its own MetaPruner: the same error)"),
    "timm:nfnet_l0": _resized("NormFreeNet", "ScaledStdConv2d", "its weight-standardised convolutions keep a gain "
                              "per output channel that pruning does not shrink (its own MetaPruner: the same error)"),
    "timm:cspresnet50": _mapping("CspNet", "Torch-Pruning's index mapping through its cross-stage split and concat "
                                 "points past the layers' widths (its own MetaPruner: IndexError)"),
    "timm:efficientvit_b0": _mapping("EfficientVit", "Torch-Pruning's index mapping through its multi-scale linear "
                                     "attention's qkv reshapes points past the layers' widths (its own MetaPruner: "
                                     "IndexError)"),
    "timm:levit_128s": _resized("LevitDistilled", "Linear", "its attention downsampling reshapes keys and values to a "
                                "fixed head layout, so removing one channel breaks the query projection's input (its "
                                "own MetaPruner: IndexError)"),
    "timm:swin_tiny_patch4_window7_224": _resized("SwinTransformer", "LayerNorm", "its patch merging concatenates four "
                                                  "neighbours' channels by a reshape that Torch-Pruning maps wrongly, so "
                                                  "the merged norm loses other channels than the removed ones (its own "
                                                  "MetaPruner: the same error)"),
    "timm:crossvit_tiny_240": _resized("CrossVit", "CrossAttention", "its cross attention projects with separate "
                                       "`wq`/`wk`/`wv` layers whose heads the pruner does not know, so removing one "
                                       "channel breaks its head reshape"),
}
"""Zoo models the structured pruner refuses, by name."""


@dataclass(frozen=True)
class ZooModel:
    """A zoo model built for the zoo's input: ``size`` pixels square, 3 channels, 10 classes."""

    name: str
    model: nn.Module
    size: int


def zoo_names() -> list[str]:
    """``torchvision:NAME`` for every torchvision classifier, then ``timm:NAME`` for each of :data:`TIMM_FAMILIES`."""
    return ([f"torchvision:{name}" for name in torchvision_models.list_models(module=loaded(torchvision_models))]
            + [f"timm:{name}" for name in TIMM_FAMILIES])


def at_smallest_input(name: str, num_classes: int = 10) -> ZooModel:
    """``name`` built (random init, eval mode) at the smallest of :data:`INPUT_SIZES` whose forward runs.

    Raises ``ValueError`` naming the model and the last size's error when no size runs.
    """
    last: Exception | None = None
    for size in INPUT_SIZES:
        try:
            model = create(name, num_classes, in_chans=3, image_size=size).eval()
            with torch.no_grad():
                model(torch.randn(1, 3, size, size))
            return ZooModel(name, model, size)
        except (RuntimeError, ValueError, AssertionError) as err:
            last = err
    raise ValueError(f"{name}: no input of {INPUT_SIZES} pixels runs its forward ({type(last).__name__}: {last})")
