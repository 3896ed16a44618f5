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
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens[:, 0])
