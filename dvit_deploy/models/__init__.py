"""PyTorch definitions of DynamicViT and its dense baselines, a variant registry, checkpoints."""

from __future__ import annotations

from typing import Sequence

import torch

from .config import (
    DEFAULT_KEEP_RATIO,
    DEFAULT_VARIANT,
    VARIANTS,
    KeepSchedule,
    VariantConfig,
    get_variant,
    register_variant,
)
from .deit import DynamicDeiT
from .lvvit import DynamicLVViT
from .pruning import Decisions, DynamicViTBase, PredictorLG, WithKeptTokens, kept_patch_ids

MODEL_CLASSES = {"deit": DynamicDeiT, "lvvit": DynamicLVViT}

DEFAULT_SEED = 0


def make_schedule(
    variant: VariantConfig,
    keep_ratio: float | None = DEFAULT_KEEP_RATIO,
    stage_ratios: Sequence[float] | None = None,
) -> KeepSchedule:
    if stage_ratios is not None:
        return KeepSchedule.from_stage_ratios(stage_ratios, variant.num_patches)
    return KeepSchedule.from_ratio(
        DEFAULT_KEEP_RATIO if keep_ratio is None else keep_ratio, variant.num_stages, variant.num_patches
    )


def create_model(
    variant: VariantConfig | str,
    keep_ratio: float | None = DEFAULT_KEEP_RATIO,
    *,
    stage_ratios: Sequence[float] | None = None,
    dense: bool = False,
    seed: int | None = DEFAULT_SEED,
) -> DynamicViTBase:
    """Build a model in eval mode. With ``seed`` the random weights are reproducible."""
    if isinstance(variant, str):
        variant = get_variant(variant)
    schedule = None if dense else make_schedule(variant, keep_ratio, stage_ratios)
    cls = MODEL_CLASSES[variant.family]
    if seed is None:
        model = cls(variant, schedule)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(variant, schedule)
    return model.eval()


__all__ = [
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
    "register_variant",
]
