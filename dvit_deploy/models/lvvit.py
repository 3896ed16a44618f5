"""DynamicViT on LV-ViT (lvvit-s, lvvit-m): conv stem, ``skip_lam`` residuals, auxiliary head.

timm has no LV-ViT, so the stem and block are written here with the official parameter names
(``patch_embed.conv1..bn3``, ``patch_embed.proj``, ``aux_head``); attention and MLP are timm's.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import Attention
from torch import nn

from .config import KeepSchedule, VariantConfig
from .pruning import DynamicViTBase


class ConvStem(nn.Module):
    """LV-ViT's 4-layer patch embedding: 7x7/2 conv + two 3x3 convs, then an (patch/2) projection."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.proj = nn.Conv2d(width, embed_dim, kernel_size=patch_size // 2, stride=patch_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.proj(x).flatten(2).transpose(1, 2)


class SkipLamBlock(nn.Module):
    """Pre-norm transformer block whose residual branches are divided by ``skip_lam``."""

    def __init__(self, variant: VariantConfig) -> None:
        super().__init__()
        dim = variant.embed_dim
        norm_layer = partial(nn.LayerNorm, eps=variant.norm_eps)
        self.skip_lam = variant.skip_lam
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=variant.num_heads, qkv_bias=variant.qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * variant.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x)) / self.skip_lam
        return x + self.mlp(self.norm2(x)) / self.skip_lam


class DynamicLVViT(DynamicViTBase):
    def __init__(self, variant: VariantConfig, schedule: KeepSchedule | None) -> None:
        super().__init__(variant, schedule)
        dim = variant.embed_dim
        self.patch_embed = ConvStem(variant.patch_size, variant.in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, variant.num_patches + 1, dim))
        self.blocks = nn.ModuleList(SkipLamBlock(variant) for _ in range(variant.depth))
        self.norm = nn.LayerNorm(dim, eps=variant.norm_eps)
        self.head = nn.Linear(dim, variant.num_classes)
        self.aux_head = nn.Linear(dim, variant.num_classes)
        self.init_tokens()

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        # Official eval output: class-token head plus half the strongest per-token aux logit.
        return self.head(tokens[:, 0]) + 0.5 * self.aux_head(tokens[:, 1:]).amax(dim=1)
