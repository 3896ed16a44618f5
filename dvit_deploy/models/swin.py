"""DynamicSwin: AdaSwin-T/S/B (official ``models/dyswin.py``), and its dense Swin twin.

Written here with the official (Microsoft Swin) parameter names: ``patch_embed.*``,
``layers.{i}.blocks.{j}.{norm1,attn,norm2,mlp}``, ``fastmlp.fc1.{0,1}``, ``layers.{i}.downsample``
at the *end* of stage i, ``layers.2.score_predictor.*``, and the persistent buffers
``attn.relative_position_index`` / ``attn_mask`` the official state dicts carry. timm's Swin moves
the downsampling to the start of the next stage and keeps those buffers out of the state dict, so
its blocks would not take official weights as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import KeepSchedule, VariantConfig
from .pruning import PredictorLG
from .split import SplitModelBase, split_apply

MASK_VALUE = -100.0  # the official shifted-window attention mask value


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B·nW, window², C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """(B·nW, window², C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    img = torch.zeros(1, h, w, 1)
    spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for hs in spans:
        for ws in spans:
            img[:, hs, ws, :] = region
            region += 1
    ids = window_partition(img, window).squeeze(-1)
    mask = ids.unsqueeze(1) - ids.unsqueeze(2)
    return mask.masked_fill(mask != 0, MASK_VALUE).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(-1, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FastMlp(nn.Module):
    """The official ``fastMlp``: LayerNorm + Linear(D, D), no activation."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.fc1 = nn.Sequential(nn.LayerNorm(dim, eps=eps), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(x)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int, shift: int,
                 mlp_ratio: float, eps: float, ada: bool) -> None:
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:  # official rule: one window covers the map, no shift
            window, shift = min(resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if ada:
            self.fastmlp = FastMlp(dim, eps)
        self.register_buffer("attn_mask", shifted_window_mask(*resolution, window, shift) if shift else None)

    def full(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor, decision=None) -> torch.Tensor:
        h, w = self.resolution
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, self.window), self.attn_mask), self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        if decision is None:
            return x + self.full(x)
        return x + split_apply(x, decision, self.full, self.fastmlp)


class PatchMerging(nn.Module):
    def __init__(self, resolution: tuple[int, int], dim: int, eps: float) -> None:
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    def __init__(self, blocks: list[SwinBlock], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.downsample = downsample


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class DynamicSwin(SplitModelBase):
    STEM_PATCH = 4

    def __init__(self, variant: VariantConfig, schedule: KeepSchedule | None) -> None:
        super().__init__(variant, schedule)
        dims, depths, heads, eps = variant.dims, variant.depths, variant.heads, variant.norm_eps
        self.patch_embed = PatchEmbed(self.STEM_PATCH, variant.in_chans, dims[0], eps)
        grid = variant.img_size // self.STEM_PATCH
        self.layers = nn.ModuleList()
        for s in range(4):
            res = (grid // 2 ** s, grid // 2 ** s)
            blocks = [SwinBlock(dims[s], res, heads[s], variant.window_size,
                                0 if j % 2 == 0 else variant.window_size // 2, variant.mlp_ratio, eps,
                                ada=s == 2 and self.is_ada(j)) for j in range(depths[s])]
            self.layers.append(BasicLayer(blocks, PatchMerging(res, dims[s], eps) if s < 3 else None))
        if schedule is not None:
            self.layers[2].score_predictor = nn.ModuleList(PredictorLG(dims[2]) for _ in variant.pruning_loc)
        self.norm = nn.LayerNorm(dims[-1], eps=eps)
        self.head = nn.Linear(dims[-1], variant.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def score_predictor(self) -> nn.ModuleList:  # where the shared code looks for the predictors
        return self.layers[2].score_predictor

    def before_split_stage(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        for s in range(2):
            x = self.layers[s].downsample(self.layers[s].blocks(x))
        return x

    def stage3_blocks(self):
        return self.layers[2].blocks

    def stage3_scores(self, predictor: int, x: torch.Tensor) -> torch.Tensor:
        return self.score_predictor[predictor](x)[..., 0]

    def after_split_stage(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers[3].blocks(self.layers[2].downsample(x))
        return self.head(self.norm(x).mean(dim=1))
