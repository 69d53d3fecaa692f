"""Vision Transformers built directly with timm's ``VisionTransformer`` (never a pretrained download).

Patch size: 16 for ImageNet-sized inputs (``image_size`` > 64, e.g. ViT-B/16 at
224), 4 for small inputs (32×32 CIFAR → 8×8 = 64 tokens, 28×28 MNIST → 49,
8×8 digits → 4), the usual CIFAR adaptation. The image size must be a multiple
of the patch size. timm's ``Attention`` modules are kept (``qkv``,
``num_heads``), which is what head pruning needs.
"""

from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer

from oba.models import register

SMALL_INPUT_MAX = 64


def patch_size_for(image_size: int) -> int:
    """The patch size used for ``image_size`` (16 above 64 pixels, else 4)."""
    return 16 if image_size > SMALL_INPUT_MAX else 4


def _vit(
    num_classes: int, in_chans: int, image_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float
) -> VisionTransformer:
    patch = patch_size_for(image_size)
    if image_size % patch:
        raise ValueError(f"image_size {image_size} is not a multiple of the ViT patch size {patch}")
    return VisionTransformer(
        img_size=image_size,
        patch_size=patch,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=True,
    )


@register("vit_b_16")
def vit_b_16(num_classes: int, in_chans: int = 3, image_size: int = 224) -> VisionTransformer:
    """ViT-Base (768 wide, 12 blocks, 12 heads); patch 16 at 224, patch 4 at CIFAR sizes."""
    return _vit(num_classes, in_chans, image_size, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0)


@register("vit-tiny")
def vit_tiny(num_classes: int, in_chans: int = 3, image_size: int = 32) -> VisionTransformer:
    """A laptop ViT: 64 wide, 4 blocks, 4 heads, MLP ratio 2."""
    return _vit(num_classes, in_chans, image_size, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)
