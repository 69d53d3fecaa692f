"""torchvision's ViT-B/16 weights in the layout of the registry's ``vit_b_16`` (timm's ``VisionTransformer``).

The two are the same network — patch-16 convolution, class token and learned
position embedding, 12 pre-norm blocks (LayerNorm ε = 1e-6, fused q/k/v
projection in q, k, v order, exact GELU MLP), final LayerNorm, class-token
head — under other names: torchvision's ``encoder.layers.encoder_layer_<i>.
self_attention.in_proj_weight`` is timm's ``blocks.<i>.attn.qkv.weight``, and
so on. Renaming the entries is all the conversion does; a test checks that both
models give the same logits.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

_RENAMES = (
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"^class_token$", "cls_token"),
    (r"^encoder\.pos_embedding$", "pos_embed"),
    (r"^encoder\.ln\.", "norm."),
    (r"^heads\.head\.", "head."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_1\.", r"blocks.\1.norm1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_2\.", r"blocks.\1.norm2."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(?:0|linear_1)\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.(?:3|linear_2)\.", r"blocks.\1.mlp.fc2."),
)
"""torchvision name pattern → timm name (``mlp.linear_1``/``linear_2``: the names of torchvision's older files)."""


def timm_layout(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` (a torchvision ``vit_b_16`` state dict) renamed to timm's layout; an entry no rule renames keeps
    its name, so loading reports it as unexpected."""
    out = {}
    for name, tensor in state.items():
        for pattern, replacement in _RENAMES:
            renamed, count = re.subn(pattern, replacement, name)
            if count:
                name = renamed
                break
        out[name] = tensor
    return out
