"""Variant configurations and the keep-ratio schedule of DynamicViT.

A ``VariantConfig`` holds everything needed to rebuild a model (it is written into every
artifact manifest), so the same object describes the architecture, the pruning schedule and
the preprocessing the checkpoint was trained with.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VariantConfig:
    """Architecture of one DynamicViT variant (dense baselines share it, minus predictors)."""

    name: str
    family: str  # "deit" or "lvvit": selects the model class
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
        for key in ("pruning_loc", "mean", "std"):
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


@dataclass(frozen=True)
class KeepSchedule:
    """Per-stage keep ratios and the resulting token counts.

    The official code keeps ``int(N0 * ratio_k)`` tokens at stage k, with ``ratio_k = rho**(k+1)``
    computed in Python floats and N0 the *original* number of patches (196), never the count
    left by the previous stage. Reproducing that float expression exactly matters: 0.7**3 is
    0.34299999..., and int() truncates.
    """

    ratios: tuple[float, ...]
    counts: tuple[int, ...]
    num_patches: int

    @classmethod
    def from_ratio(cls, keep_ratio: float, num_stages: int, num_patches: int) -> "KeepSchedule":
        validate_keep_ratio(keep_ratio)
        ratios = tuple(keep_ratio ** (k + 1) for k in range(num_stages))
        return cls.from_stage_ratios(ratios, num_patches)

    @classmethod
    def from_stage_ratios(cls, ratios: Sequence[float], num_patches: int) -> "KeepSchedule":
        for r in ratios:
            validate_keep_ratio(r)
        counts = tuple(int(num_patches * r) for r in ratios)
        if any(c < 1 for c in counts):
            raise ValueError(
                f"keep ratios {list(ratios)} keep no token at some stage (counts {list(counts)})"
            )
        if any(b > a for a, b in zip(counts, counts[1:])):
            raise ValueError(f"per-stage keep ratios must not increase, got {list(ratios)}")
        return cls(tuple(float(r) for r in ratios), counts, num_patches)


def validate_keep_ratio(ratio: float) -> None:
    if not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0.0 < ratio <= 1.0:
        raise ValueError(f"keep ratio must be in (0, 1], got {ratio}")


_DEIT = dict(family="deit", depth=12, mlp_ratio=4.0, pruning_loc=(3, 6, 9), qkv_bias=True, norm_eps=1e-6)
# LV-ViT: no qkv bias, PyTorch's default LayerNorm eps, residual branches divided by skip_lam.
_LVVIT = dict(family="lvvit", mlp_ratio=3.0, qkv_bias=False, norm_eps=1e-5, skip_lam=2.0, crop_pct=0.9)

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
        raise KeyError(f"unknown model '{name}'; known: {', '.join(VARIANTS)}") from None
