"""Which registered variant a state dict belongs to, from tensor shapes and key names alone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import BadInput
from .config import VARIANTS, VariantConfig

MAX_LISTED_KEYS = 5


@dataclass(frozen=True)
class Detection:
    variant: VariantConfig
    has_predictors: bool
    evidence: str


def detect_variant(state_dict: Mapping[str, Any]) -> Detection:
    """Which registered variant these weights belong to, from shapes and key names alone."""
    cls_token = state_dict.get("cls_token")
    if cls_token is None or "pos_embed" not in state_dict:
        raise BadInput(
            "these weights are not a DynamicViT/DeiT/LV-ViT model: no cls_token/pos_embed "
            f"(first keys: {_list(state_dict)})"
        )
    if "dist_token" in state_dict:
        raise BadInput("this is a distilled DeiT checkpoint (dist_token, head_dist): not supported")
    dim = int(cls_token.shape[-1])
    block_ids = {int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = max(block_ids) + 1 if block_ids else 0
    family = "lvvit" if "patch_embed.conv1.weight" in state_dict else "deit"
    has_predictors = any(k.startswith("score_predictor.") for k in state_dict)
    matches = [v for v in VARIANTS.values() if (v.family, v.embed_dim, v.depth) == (family, dim, depth)]
    if not matches:
        raise BadInput(
            f"no known variant has a {family} layout with dim {dim} and depth {depth} "
            f"(known: {', '.join(VARIANTS)}); pass --model only if it is one of these"
        )
    variant = matches[0]
    head = state_dict.get("head.weight")
    if head is not None and int(head.shape[0]) != variant.num_classes:
        variant = variant.replace(num_classes=int(head.shape[0]))
    evidence = f"{family} layout, dim {dim}, depth {depth}"
    if family == "lvvit":
        evidence += ", conv stem and aux_head"
    evidence += ", with score predictors" if has_predictors else ", no score predictors"
    return Detection(variant, has_predictors, evidence)


def _list(keys: Any, limit: int = MAX_LISTED_KEYS) -> str:
    keys = list(keys)
    shown = ", ".join(map(str, keys[:limit]))
    return shown + (f", … (+{len(keys) - limit} more)" if len(keys) > limit else "")
