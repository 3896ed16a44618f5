"""PyTorch definitions of DynamicViT and its dense baselines, a variant registry, checkpoints."""

from __future__ import annotations

from types import MappingProxyType

from typing import TYPE_CHECKING, Any, Sequence

from ..helpers.lazy import lazy_exports
from .config import (
    DEFAULT_KEEP_RATIO,
    DEFAULT_VARIANT,
    VARIANTS,
    KeepSchedule,
    VariantConfig,
    get_variant,
    register_variant,
)

if TYPE_CHECKING:
    from .pruning import DynamicViTBase

DEFAULT_SEED = 0

# The torch modules load on first use: the registry and configs (``dvit flops``) need no torch.
_TORCH_EXPORTS = MappingProxyType({"DynamicDeiT": "deit", "DynamicLVViT": "lvvit", "DynamicConvNeXt": "convnext",
                  "DynamicSwin": "swin", "Decisions": "pruning",
                  "DynamicViTBase": "pruning", "PredictorLG": "pruning", "WithKeptTokens": "pruning",
                  "kept_patch_ids": "pruning"})
_lazy = lazy_exports(__name__, _TORCH_EXPORTS)


def __getattr__(name: str) -> Any:
    if name == "MODEL_CLASSES":
        return model_classes()
    return _lazy(name)


def model_classes() -> dict[str, Any]:
    from .convnext import DynamicConvNeXt
    from .deit import DynamicDeiT
    from .lvvit import DynamicLVViT
    from .swin import DynamicSwin

    return {"deit": DynamicDeiT, "lvvit": DynamicLVViT, "convnext": DynamicConvNeXt, "swin": DynamicSwin}


def make_schedule(
    variant: VariantConfig,
    keep_ratio: float | None = DEFAULT_KEEP_RATIO,
    stage_ratios: Sequence[float] | None = None,
) -> KeepSchedule:
    if stage_ratios is not None:
        return KeepSchedule.from_stage_ratios(stage_ratios, variant.num_patches, variant.schedule_kind)
    return variant.keep_schedule(DEFAULT_KEEP_RATIO if keep_ratio is None else keep_ratio)


def create_model(
    variant: VariantConfig | str,
    keep_ratio: float | None = DEFAULT_KEEP_RATIO,
    *,
    stage_ratios: Sequence[float] | None = None,
    dense: bool = False,
    seed: int | None = DEFAULT_SEED,
) -> "DynamicViTBase":
    """Build a model in eval mode. With ``seed`` the random weights are reproducible."""
    if isinstance(variant, str):
        variant = get_variant(variant)
    import torch

    schedule = None if dense else make_schedule(variant, keep_ratio, stage_ratios)
    cls = model_classes()[variant.family]
    if seed is None:
        model = cls(variant, schedule)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(variant, schedule)
    return model.eval()


__all__ = (
    "DEFAULT_KEEP_RATIO",
    "DEFAULT_SEED",
    "DEFAULT_VARIANT",
    "VARIANTS",
    "Decisions",
    "DynamicViTBase",
    "KeepSchedule",
    "PredictorLG",
    "VariantConfig",
    "WithKeptTokens",
    "create_model",
    "get_variant",
    "kept_patch_ids",
    "make_schedule",
    "register_variant")
