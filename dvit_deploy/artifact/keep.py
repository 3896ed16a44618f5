"""The keep rule: the one place that turns ρ into per-stage keep ratios and kept-token counts.

Torch-free and numpy-free, so models, flops, the artifact layer and the runners all share it.

Two schedule kinds exist in the official code (raoyongming/DynamicViT ``main.py``):

* ``geometric`` (DeiT, LV-ViT): ratio_k = ρ**(k+1);
* ``linear`` (DynamicCNN / DynamicSwin): ratio_k = ρ − 0.2·k, i.e. ``[ρ, ρ-0.2, ρ-0.4]``
  (``SPARSE_RATIO`` there, written as those float subtractions).

Either way the count is ``int(N · ratio_k)`` in Python floats with N the *original* token count
(196 at 224 px): never the previous stage's count. The float expression matters: 0.7**3 is
0.34299999… (→ 67) and 0.7 − 0.2 is 0.49999999999999994 (→ 97, not 98).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

GEOMETRIC = "geometric"
LINEAR = "linear"
SCHEDULE_KINDS = (GEOMETRIC, LINEAR)
LINEAR_STEP = 0.2
# Families whose predictors rank the *whole* map at each position (tokens are split, not dropped):
# their per-stage indices are already original positions and are never composed.
SPLIT_FAMILIES = ("convnext", "swin")


def validate_keep_ratio(ratio: float) -> None:
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or math.isnan(ratio) \
            or not 0.0 < ratio <= 1.0:
        raise ValueError(f"keep ratio must be in (0, 1], got {ratio}")


def stage_ratios_for(keep_ratio: float, num_stages: int, kind: str = GEOMETRIC) -> tuple[float, ...]:
    """Per-stage ratios for ρ under ``kind``, as the official code computes them in floats."""
    validate_keep_ratio(keep_ratio)
    if kind == GEOMETRIC:
        return tuple(keep_ratio ** (k + 1) for k in range(num_stages))
    if kind == LINEAR:
        ratios = tuple(keep_ratio - LINEAR_STEP * k for k in range(num_stages))
        if ratios[-1] <= 0:
            low = LINEAR_STEP * (num_stages - 1)
            raise ValueError(f"keep ratio {keep_ratio} leaves no token at the last position of the linear "
                             f"schedule [ρ, ρ−0.2, …]: it must be above {low:.1f}")
        return ratios
    raise ValueError(f"unknown keep schedule '{kind}' (known: {', '.join(SCHEDULE_KINDS)})")


@dataclass(frozen=True)
class KeepSchedule:
    """Per-stage keep ratios and the resulting token counts (``int(N · ratio)``)."""

    ratios: tuple[float, ...]
    counts: tuple[int, ...]
    num_patches: int
    kind: str = GEOMETRIC

    @classmethod
    def from_ratio(cls, keep_ratio: float, num_stages: int, num_patches: int,
                   kind: str = GEOMETRIC) -> "KeepSchedule":
        return cls.from_stage_ratios(stage_ratios_for(keep_ratio, num_stages, kind), num_patches, kind)

    @classmethod
    def from_stage_ratios(cls, ratios: Sequence[float], num_patches: int, kind: str = GEOMETRIC) -> "KeepSchedule":
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown keep schedule '{kind}' (known: {', '.join(SCHEDULE_KINDS)})")
        for r in ratios:
            validate_keep_ratio(r)
        counts = tuple(int(num_patches * r) for r in ratios)
        if any(c < 1 for c in counts):
            raise ValueError(
                f"keep ratios {list(ratios)} keep no token at some stage (counts {list(counts)})"
            )
        if any(b > a for a, b in zip(counts, counts[1:])):
            raise ValueError(f"per-stage keep ratios must not increase, got {list(ratios)}")
        return cls(tuple(float(r) for r in ratios), counts, num_patches, kind)


def schedule_kind_of(record: Mapping[str, Any]) -> str:
    """The schedule kind a manifest records. Without one, the family's: ViT manifests written before
    the field existed are geometric, and engines built before 0.1's typed writer omitted it for
    ConvNeXt/Swin too, whose schedule is linear."""
    kind = record.get("keep_schedule")
    if kind in SCHEDULE_KINDS:
        return kind
    config = record.get("config")
    family = config.get("family") if isinstance(config, Mapping) else None
    return LINEAR if family_splits_tokens(family) else GEOMETRIC


def family_splits_tokens(family: str | None) -> bool:
    return family in SPLIT_FAMILIES
