"""Names every layer agrees on, torch-free: graph tensor names, keep counts, kept patch ids.

The export writes these names; runners, validation and shipping read them. Defining them here
(numpy only) lets a runner or ``dvit verify`` work without importing torch or the exporter.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .keep import GEOMETRIC, KeepSchedule

INPUT_NAME = "images"
LOGITS_NAME = "logits"
TOKEN_OUTPUT_PREFIX = "kept_tokens_stage"  # per-stage kept-token outputs: kept_tokens_stage1, ...
KEEP_COUNTS_INPUT = "keep_counts"  # int32 [S] input of --dynamic-keep graphs (a TensorRT shape tensor)


def token_output_name(stage: int) -> str:
    """``kept_tokens_stage{k}`` for stage k = 1, 2, ..."""
    return f"{TOKEN_OUTPUT_PREFIX}{stage}"


def token_output_stage(name: str) -> int | None:
    """The stage number of a token output's name, or None for any other tensor."""
    suffix = name[len(TOKEN_OUTPUT_PREFIX):] if name.startswith(TOKEN_OUTPUT_PREFIX) else ""
    return int(suffix) if suffix.isdigit() else None


def keep_counts_for(keep_ratio: float, num_stages: int, num_patches: int, kind: str = GEOMETRIC) -> np.ndarray:
    """Per-stage kept counts for ρ under the official rule of ``kind`` (see ``artifact.keep``)."""
    return np.asarray(KeepSchedule.from_ratio(float(keep_ratio), num_stages, num_patches, kind).counts,
                      dtype=np.int32)


def kept_patch_ids(stage_indices: Sequence[np.ndarray], num_patches: int, *, compose: bool = True
                   ) -> list[np.ndarray]:
    """Per-stage indices (each relative to that stage's input) composed into original patch ids.

    Stage s's indices point into the token list kept by stage s-1 (in that stage's order), so
    the ids are composed stage by stage. ``compose=False`` for the split families (ConvNeXt,
    Swin), whose predictors rank the whole map each time: their indices are already positions.
    numpy in, numpy out.
    """
    composed: list[np.ndarray] = []
    current: np.ndarray | None = None
    for idx in stage_indices:
        idx = np.asarray(idx)
        current = idx if current is None or not compose else np.take_along_axis(current, idx, axis=1)
        composed.append(current)
    for ids in composed:
        if ids.size and (ids.max() >= num_patches or ids.min() < 0):
            raise ValueError("kept-token indices out of range: not produced by this model")
    return composed
