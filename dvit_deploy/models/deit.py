"""DynamicViT on DeiT (deit-256, deit-s, deit-b), built from timm's ViT blocks.

Parameter names match the official ``VisionTransformerDiffPruning`` (and timm's DeiT, so a
dense DeiT checkpoint loads into the dense baseline unchanged).
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from .config import KeepSchedule, VariantConfig
from .pruning import DynamicViTBase


class DynamicDeiT(DynamicViTBase):
    def __init__(self, variant: VariantConfig, schedule: KeepSchedule | None) -> None:
        super().__init__(variant, schedule)
        dim = variant.embed_dim
        norm_layer = partial(nn.LayerNorm, eps=variant.norm_eps)
        self.patch_embed = PatchEmbed(
            img_size=variant.img_size, patch_size=variant.patch_size, in_chans=variant.in_chans, embed_dim=dim
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, variant.num_patches + 1, dim))
        self.blocks = nn.ModuleList(
            Block(dim, variant.num_heads, mlp_ratio=variant.mlp_ratio, qkv_bias=variant.qkv_bias, norm_layer=norm_layer)
            for _ in range(variant.depth)
        )
        self.norm = norm_layer(dim)
        self.head = nn.Linear(dim, variant.num_classes)
        self.init_tokens()

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens[:, 0])
