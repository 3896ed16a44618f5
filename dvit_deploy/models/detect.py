"""Which registered variant a state dict belongs to, from tensor shapes and key names alone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..helpers.errors import BadInput
from .config import VARIANTS, VariantConfig

MAX_LISTED_KEYS = 5


@dataclass(frozen=True)
class Detection:
    variant: VariantConfig
    has_predictors: bool
    evidence: str


def has_score_predictors(state_dict: Mapping[str, Any]) -> bool:
    # ViTs and ConvNeXt keep them at the top (score_predictor.*), Swin in its third layer.
    return any(k.startswith("score_predictor.") or ".score_predictor." in k for k in state_dict)


def detect_variant(state_dict: Mapping[str, Any]) -> Detection:
    """Which registered variant these weights belong to, from shapes and key names alone."""
    if "downsample_layers.0.0.weight" in state_dict or any(k.startswith("stages.") for k in state_dict):
        return _detect_hierarchical(state_dict, "convnext")
    if "cls_token" not in state_dict and any(re.match(r"layers\.\d+\.blocks\.", k) for k in state_dict):
        return _detect_hierarchical(state_dict, "swin")
    cls_token = state_dict.get("cls_token")
    if cls_token is None or "pos_embed" not in state_dict:
        raise BadInput(
            "these weights are not a DynamicViT/DeiT/LV-ViT, AdaConvNeXt or DynamicSwin model: no cls_token/pos_embed, "
            "stages.* or layers.*.blocks.* "
            f"(first keys: {_list(state_dict)})"
        )
    if "dist_token" in state_dict:
        raise BadInput("this is a distilled DeiT checkpoint (dist_token, head_dist): not supported")
    dim = int(cls_token.shape[-1])
    block_ids = {int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = max(block_ids) + 1 if block_ids else 0
    family = "lvvit" if "patch_embed.conv1.weight" in state_dict else "deit"
    has_predictors = has_score_predictors(state_dict)
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


def _detect_hierarchical(state_dict: Mapping[str, Any], family: str) -> Detection:
    """AdaConvNeXt (``stages.{s}.{j}``) or DynamicSwin (``layers.{s}.blocks.{j}``): depths and widths."""
    pattern = r"stages\.(\d+)\.(\d+)\." if family == "convnext" else r"layers\.(\d+)\.blocks\.(\d+)\."
    blocks: dict[int, set[int]] = {}
    for key in state_dict:
        if (m := re.match(pattern, key)):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    depths = tuple(max(blocks.get(s, {-1})) + 1 for s in range(4))
    width_key = "stages.{}.0.dwconv.weight" if family == "convnext" else "layers.{}.blocks.0.norm1.weight"
    try:
        dims = tuple(int(state_dict[width_key.format(s)].shape[0]) for s in range(4))
    except KeyError as exc:
        raise BadInput(f"these {family} weights lack {exc.args[0]}: not a complete four-stage model") from None
    heads: tuple[int, ...] = ()
    if family == "swin":
        tables = [state_dict.get(f"layers.{s}.blocks.0.attn.relative_position_bias_table") for s in range(4)]
        heads = tuple(int(t.shape[1]) if t is not None else 0 for t in tables)
    has_predictors = has_score_predictors(state_dict)
    matches = [v for v in VARIANTS.values()
               if v.family == family and v.depths == depths and v.dims == dims and (not heads or v.heads == heads)]
    what = f"{family} layout, depths {list(depths)}, dims {list(dims)}" + (f", heads {list(heads)}" if heads else "")
    if not matches:
        known = ", ".join(v.name for v in VARIANTS.values() if v.family == family)
        raise BadInput(f"no known variant has a {what} (known {family} variants: {known})")
    variant = matches[0]
    head = state_dict.get("head.weight")
    if head is not None and int(head.shape[0]) != variant.num_classes:
        variant = variant.replace(num_classes=int(head.shape[0]))
    evidence = what + (", with score predictors" if has_predictors else ", no score predictors")
    return Detection(variant, has_predictors, evidence)


def _list(keys: Any, limit: int = MAX_LISTED_KEYS) -> str:
    keys = list(keys)
    shown = ", ".join(map(str, keys[:limit]))
    return shown + (f", … (+{len(keys) - limit} more)" if len(keys) > limit else "")
