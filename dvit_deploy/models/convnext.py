"""DynamicCNN: AdaConvNeXt-T/S/B (official ``models/dyconvnext.py``), and its dense ConvNeXt twin.

Written here with the official parameter names (``downsample_layers.*``, ``stages.*``,
``dwconv``/``pwconv1``/``pwconv2``/``gamma``, ``fast_path``/``fast_path_gamma``,
``score_predictor.*`` as 1x1 convs): timm's ConvNeXt renames every block tensor
(``conv_dw``, ``mlp.fc1``…), so its blocks would not take official weights as they are. The dense
twin has no fast paths and no predictors: exactly the layout of the official ConvNeXt releases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import KeepSchedule, VariantConfig
from .split import SplitModelBase, split_apply


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map (the official ``channels_first`` mode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class Block(nn.Module):
    """ConvNeXt block: 7x7 depthwise conv, LayerNorm, Linear 4x, GELU, Linear, layer scale, residual."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(self.dwconv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class AdaBlock(Block):
    """Block whose positions outside the decision's kept set take ``fast_path`` instead of the FFN."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__(dim, eps)
        self.fast_path = nn.Sequential(nn.LayerNorm(dim, eps=eps), nn.Linear(dim, dim))
        self.fast_path_gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def fast(self, x: torch.Tensor) -> torch.Tensor:
        return self.fast_path_gamma * self.fast_path(x)

    def forward(self, x: torch.Tensor, decision=None) -> torch.Tensor:
        if decision is None:
            return super().forward(x)
        batch, channels, height, width = x.shape
        tokens = self.dwconv(x).permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        out = split_apply(tokens, decision, self.ffn, self.fast)
        return x + out.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


class ConvPredictorLG(nn.Module):
    """PredictorLG of AdaConvNeXt: 1x1 convs on the whole map, local half + global mean half."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.in_conv = nn.Sequential(LayerNorm2d(dim, eps=eps), nn.Conv2d(dim, dim, 1), nn.GELU())
        self.out_conv = nn.Sequential(
            nn.Conv2d(dim, dim // 2, 1), nn.GELU(),
            nn.Conv2d(dim // 2, dim // 4, 1), nn.GELU(),
            nn.Conv2d(dim // 4, 2, 1), nn.LogSoftmax(dim=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Keep log-probability of every position, (B, H·W) in row-major order."""
        x = self.in_conv(x)
        half = x.shape[1] // 2
        global_x = x[:, half:].mean(dim=(2, 3), keepdim=True)
        x = torch.cat([x[:, :half], global_x.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        return self.out_conv(x)[:, 0].flatten(1)


class DynamicConvNeXt(SplitModelBase):
    def __init__(self, variant: VariantConfig, schedule: KeepSchedule | None) -> None:
        super().__init__(variant, schedule)
        dims, depths, eps = variant.dims, variant.depths, variant.norm_eps
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(variant.in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=eps))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(dims[i], eps=eps), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList()
        for s in range(4):
            blocks = [(AdaBlock if s == 2 and self.is_ada(j) else Block)(dims[s], eps) for j in range(depths[s])]
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.LayerNorm(dims[-1], eps=eps)
        self.head = nn.Linear(dims[-1], variant.num_classes)
        if schedule is not None:
            self.score_predictor = nn.ModuleList(ConvPredictorLG(dims[2], eps) for _ in variant.pruning_loc)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def before_split_stage(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for s in range(2):
            x = self.stages[s](self.downsample_layers[s](x))
        return self.downsample_layers[2](x)

    def stage3_blocks(self):
        return self.stages[2]

    def stage3_scores(self, predictor: int, x: torch.Tensor) -> torch.Tensor:
        return self.score_predictor[predictor](x)

    def after_split_stage(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages[3](self.downsample_layers[3](x))
        return self.head(self.norm(x.mean(dim=(-2, -1))))
