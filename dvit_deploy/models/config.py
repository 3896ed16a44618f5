"""Variant configurations and the keep-ratio schedule of DynamicViT.

A ``VariantConfig`` holds everything needed to rebuild a model (it is written into every
artifact manifest), so the same object describes the architecture, the pruning schedule and
the preprocessing the checkpoint was trained with.
"""

from __future__ import annotations

from types import MappingProxyType

import dataclasses
from dataclasses import dataclass
from typing import Any

# The keep rule has one owner (torch-free, shared with the artifact layer); re-exported here.
from ..artifact.keep import (  # noqa: F401
    GEOMETRIC, LINEAR, SPLIT_FAMILIES, KeepSchedule, stage_ratios_for, validate_keep_ratio,
)
from ..helpers.errors import BadInput



class UnknownModel(BadInput, KeyError):
    """A model name no variant has: bad input for the CLI (one line, exit 2), a KeyError for lookups."""


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VariantConfig:
    """Architecture of one DynamicViT variant (dense baselines share it, minus predictors)."""

    name: str
    family: str  # "deit", "lvvit", "convnext" or "swin": selects the model class
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    pruning_loc: tuple[int, ...]
    qkv_bias: bool
    norm_eps: float
    skip_lam: float = 1.0
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    description: str = ""
    # Hierarchical families (convnext, swin): per-stage depths, widths and heads. For them
    # embed_dim / depth / num_heads describe the pruned (third) stage, pruning_loc indexes its
    # blocks, and num_patches counts the positions of its map (stride 16: 14x14 at 224 px).
    depths: tuple[int, ...] = ()
    dims: tuple[int, ...] = ()
    heads: tuple[int, ...] = ()
    window_size: int = 7

    @property
    def splits_tokens(self) -> bool:
        """Kept tokens take the full MLP, the rest a fast path; nothing is dropped (DynamicCNN/Swin)."""
        return self.family in SPLIT_FAMILIES

    @property
    def schedule_kind(self) -> str:
        return LINEAR if self.splits_tokens else GEOMETRIC

    def keep_schedule(self, keep_ratio: float) -> KeepSchedule:
        return KeepSchedule.from_ratio(keep_ratio, self.num_stages, self.num_patches, self.schedule_kind)

    def stage_ratios(self, keep_ratio: float) -> tuple[float, ...]:
        return stage_ratios_for(keep_ratio, self.num_stages, self.schedule_kind)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_stages(self) -> int:
        return len(self.pruning_loc)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VariantConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("pruning_loc", "mean", "std", "depths", "dims", "heads"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "VariantConfig":
        return dataclasses.replace(self, **changes)

    def data_config(self) -> dict[str, Any]:
        """Preprocessing in timm's data-config form (``timm.data.create_transform`` accepts it)."""
        return {
            "input_size": (self.in_chans, self.img_size, self.img_size),
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
            "crop_pct": self.crop_pct,
            "crop_mode": "center",
        }


_DEIT = MappingProxyType(dict(family="deit", depth=12, mlp_ratio=4.0, pruning_loc=(3, 6, 9), qkv_bias=True, norm_eps=1e-6))
# LV-ViT: no qkv bias, PyTorch's default LayerNorm eps, residual branches divided by skip_lam.
_LVVIT = MappingProxyType(dict(family="lvvit", mlp_ratio=3.0, qkv_bias=False, norm_eps=1e-5, skip_lam=2.0, crop_pct=0.9))

VARIANTS: dict[str, VariantConfig] = {
    cfg.name: cfg
    for cfg in (
        VariantConfig(name="deit-256", embed_dim=256, num_heads=4, description="DeiT-256 (DynamicViT)", **_DEIT),
        VariantConfig(name="deit-s", embed_dim=384, num_heads=6, description="DeiT-S (DynamicViT)", **_DEIT),
        VariantConfig(name="deit-b", embed_dim=768, num_heads=12, description="DeiT-B (DynamicViT)", **_DEIT),
        VariantConfig(
            name="lvvit-s", embed_dim=384, depth=16, num_heads=6, pruning_loc=(4, 8, 12),
            description="LV-ViT-S (DynamicViT)", **_LVVIT,
        ),
        VariantConfig(
            name="lvvit-m", embed_dim=512, depth=20, num_heads=8, pruning_loc=(5, 10, 15),
            description="LV-ViT-M (DynamicViT)", **{**_LVVIT, "crop_pct": 1.0},
        ),
    )
}


def _convnext(name: str, depths: tuple[int, ...], dims: tuple[int, ...], pruning_loc: tuple[int, ...],
              title: str) -> VariantConfig:
    return VariantConfig(
        name=name, family="convnext", embed_dim=dims[2], depth=depths[2], num_heads=1, mlp_ratio=4.0,
        pruning_loc=pruning_loc, qkv_bias=True, norm_eps=1e-6, depths=depths, dims=dims,
        description=f"{title} (DynamicCNN, AdaConvNeXt)",
    )


def _swin(name: str, embed: int, depths: tuple[int, ...], heads: tuple[int, ...], pruning_loc: tuple[int, ...],
          title: str) -> VariantConfig:
    dims = tuple(embed * 2 ** i for i in range(4))
    return VariantConfig(
        name=name, family="swin", embed_dim=dims[2], depth=depths[2], num_heads=heads[2], mlp_ratio=4.0,
        pruning_loc=pruning_loc, qkv_bias=True, norm_eps=1e-5, depths=depths, dims=dims, heads=heads,
        window_size=7, description=f"{title} (DynamicSwin)",
    )


# Official ``--model`` names and settings (main.py, models/dyconvnext.py, models/dyswin.py).
for _cfg in (
    _convnext("convnext-t", (3, 3, 9, 3), (96, 192, 384, 768), (1, 2, 3), "ConvNeXt-T"),
    _convnext("convnext-s", (3, 3, 27, 3), (96, 192, 384, 768), (3, 6, 9), "ConvNeXt-S"),
    _convnext("convnext-b", (3, 3, 27, 3), (128, 256, 512, 1024), (3, 6, 9), "ConvNeXt-B"),
    _swin("swin-t", 96, (2, 2, 6, 2), (3, 6, 12, 24), (1, 2, 3), "Swin-T"),
    _swin("swin-s", 96, (2, 2, 18, 2), (3, 6, 12, 24), (2, 4, 6), "Swin-S"),
    _swin("swin-b", 128, (2, 2, 18, 2), (4, 8, 16, 32), (2, 4, 6), "Swin-B"),
):
    VARIANTS[_cfg.name] = _cfg

DEFAULT_VARIANT = "deit-s"
DEFAULT_KEEP_RATIO = 0.7


def register_variant(config: VariantConfig) -> VariantConfig:
    """Add a variant (e.g. a fine-tuned size, or the tiny configs tests use) to the registry."""
    VARIANTS[config.name] = config
    return config


def get_variant(name: str) -> VariantConfig:
    try:
        return VARIANTS[name]
    except KeyError:
        raise UnknownModel(f"unknown model '{name}'; known: {', '.join(VARIANTS)}") from None
