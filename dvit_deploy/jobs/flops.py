"""Analytic multiply-add counts (GMACs) of DynamicViT variants, dense and pruned, per stage.

Convention (the one the DynamicViT paper's "GFLOPs" and fvcore use: one multiply-add = 1):

* counted: every Linear and Conv layer (patch embedding or LV-ViT's conv stem, qkv, attention
  projection, MLP, classifier heads, LV-ViT's auxiliary head over the final patch tokens), and
  the two attention matrix products (Q·Kᵀ and A·V, n²·D each);
* counted by default: the score predictors (``include_predictors=False`` leaves them out);
  each predictor scores the patch tokens left by the previous stage;
* not counted: LayerNorm, BatchNorm, GELU/ReLU, softmax, residual adds, the predictor's mean,
  TopK and Gather. Together they are well under 1% of the total.

Token counts: blocks before the first pruning location see 1 + N0 tokens; from pruning
location k on, 1 + int(N0 · ρ^k) (the keep schedule of ``models.config``).

DynamicCNN / DynamicSwin (nothing is dropped): every Conv/Linear and Swin's window-attention
products (Q·Kᵀ, A·V per 7×7 window) on the full maps; in the third stage's Ada blocks the FFN/MLP
runs on the K kept positions and the fast path (Linear D→D) on the N − K others; each predictor
position adds a PredictorLG (1x1 convs / Linears D→D, D→D/2, D/2→D/4, D/4→2) on all N positions.
For these models ``stem_macs`` is everything before the third stage and ``head_macs`` everything
after it (fourth downsampling, stage 4, classifier); ``stages`` splits the third stage by
decision, ``tokens`` being the positions that take the full FFN/MLP. This reproduces the
official zoo's GFLOPs (predictors included) to < 0.05: ConvNeXt-T/S/B 3.58/5.77/10.18 at ρ=0.7,
3.91/6.76/11.93 at 0.9, Swin-T/S/B 4.04/6.85/12.07 at 0.7, dense 4.46/8.68/15.36 and 4.49/8.74/15.43.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ..helpers.errors import BadInput
from ..models.config import VARIANTS, KeepSchedule, VariantConfig, get_variant, validate_keep_ratio

if TYPE_CHECKING:
    from ..artifact.context import RunContext
    from ..artifact.manifest import ModelRecord

GIGA = 1e9
CONVENTION = (
    "multiply-adds (1 MAC = 1 multiply + 1 add) of Linear/Conv layers and the attention products "
    "QKᵀ and AV; LayerNorm/BatchNorm, activations, softmax, residual adds, TopK and Gather not counted"
)
LVVIT_STEM_WIDTH = 64


@dataclass
class StageMacs:
    """One run of blocks sharing a token count (stage 0 = before the first pruning location)."""

    stage: int
    blocks: tuple[int, int]  # first and last block index, inclusive
    tokens: int  # including CLS
    predictor_macs: int  # the predictor that chose these tokens (0 for stage 0)
    block_macs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MacsReport:
    variant: str
    keep_ratio: float | None  # None: dense
    keep_counts: tuple[int, ...]
    include_predictors: bool
    stem_macs: int
    head_macs: int
    stages: list[StageMacs] = field(default_factory=list)

    @property
    def predictor_macs(self) -> int:
        return sum(s.predictor_macs for s in self.stages) if self.include_predictors else 0

    @property
    def total_macs(self) -> int:
        return self.stem_macs + self.head_macs + sum(s.block_macs for s in self.stages) + self.predictor_macs

    @property
    def gmacs(self) -> float:
        return self.total_macs / GIGA

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "dense": self.keep_ratio is None,
            "keep_ratio": self.keep_ratio,
            "keep_counts": list(self.keep_counts),
            "include_predictors": self.include_predictors,
            "gmacs": round(self.gmacs, 4),
            "macs": self.total_macs,
            "stem_macs": self.stem_macs,
            "head_macs": self.head_macs,
            "predictor_macs": self.predictor_macs,
            "stages": [s.to_dict() for s in self.stages],
            "convention": CONVENTION,
        }


def block_macs(variant: VariantConfig, tokens: int) -> int:
    """One transformer block on ``tokens`` tokens: qkv, Q·Kᵀ, A·V, projection, two MLP layers."""
    dim = variant.embed_dim
    hidden = int(dim * variant.mlp_ratio)
    qkv = tokens * dim * 3 * dim
    attention = 2 * tokens * tokens * dim
    projection = tokens * dim * dim
    mlp = 2 * tokens * dim * hidden
    return qkv + attention + projection + mlp


def predictor_macs(variant: VariantConfig, patch_tokens: int) -> int:
    """PredictorLG on ``patch_tokens`` tokens: Linear D→D, D→D/2, D/2→D/4, D/4→2."""
    dim = variant.embed_dim
    return patch_tokens * (dim * dim + dim * (dim // 2) + (dim // 2) * (dim // 4) + (dim // 4) * 2)


def stem_macs(variant: VariantConfig) -> int:
    grid = variant.img_size // variant.patch_size
    if variant.family == "lvvit":
        # 7x7/2 conv to 64 channels, two 3x3 convs, then a (patch/2)x(patch/2) stride-(patch/2) projection.
        half = variant.img_size // 2
        width = LVVIT_STEM_WIDTH
        conv1 = half * half * width * variant.in_chans * 7 * 7
        conv23 = 2 * half * half * width * width * 3 * 3
        proj_kernel = variant.patch_size // 2
        proj = grid * grid * variant.embed_dim * width * proj_kernel * proj_kernel
        return conv1 + conv23 + proj
    return grid * grid * variant.embed_dim * variant.in_chans * variant.patch_size ** 2


def head_macs(variant: VariantConfig, final_tokens: int) -> int:
    macs = variant.embed_dim * variant.num_classes
    if variant.family == "lvvit":  # auxiliary head on every remaining patch token
        macs += (final_tokens - 1) * variant.embed_dim * variant.num_classes
    return macs


def count_macs(variant: VariantConfig, keep_ratio: float | None = None, *,
               stage_ratios: Sequence[float] | None = None, include_predictors: bool = True) -> MacsReport:
    """MACs of ``variant``: dense when neither ``keep_ratio`` nor ``stage_ratios`` is given."""
    num_patches = variant.num_patches
    if stage_ratios is not None:
        schedule = KeepSchedule.from_stage_ratios(stage_ratios, num_patches, variant.schedule_kind)
    elif keep_ratio is not None:
        schedule = variant.keep_schedule(keep_ratio)
    else:
        schedule = None
    if variant.splits_tokens:
        return _split_macs(variant, schedule, include_predictors)
    counts = () if schedule is None else schedule.counts
    boundaries = [0] + ([] if schedule is None else list(variant.pruning_loc)) + [variant.depth]
    patch_counts = [num_patches, *counts]
    stages = []
    for s in range(len(boundaries) - 1):
        first, end = boundaries[s], boundaries[s + 1]
        tokens = 1 + patch_counts[s]
        stages.append(StageMacs(
            stage=s,
            blocks=(first, end - 1),
            tokens=tokens,
            predictor_macs=0 if s == 0 else predictor_macs(variant, patch_counts[s - 1]),
            block_macs=(end - first) * block_macs(variant, tokens),
        ))
    ratio = None if schedule is None else (schedule.ratios[0] if stage_ratios is None else float(stage_ratios[0]))
    return MacsReport(
        variant=variant.name,
        keep_ratio=ratio,
        keep_counts=counts,
        include_predictors=include_predictors,
        stem_macs=stem_macs(variant),
        head_macs=head_macs(variant, 1 + patch_counts[-1]),
        stages=stages,
    )


def _hierarchical_parts(variant: VariantConfig) -> list[dict[str, int]]:
    """Per stage: map side, width, and the MACs of one block's token mixing (dwconv / window attention),
    one full FFN per position (8·C²), the fast path per position (C²) and the downsampling into it."""
    side0 = variant.img_size // 4  # both families start with a stride-4 stem
    parts = []
    for s in range(4):
        side, width = side0 // 2 ** s, variant.dims[s]
        positions = side * side
        if variant.family == "convnext":
            mixing = positions * width * 49
            into = positions * width * variant.dims[s - 1] * 4 if s else 0  # 2x2 stride-2 conv
        else:
            window = min(variant.window_size, side)
            tokens = window * window
            mixing = positions // tokens * (tokens * width * 4 * width + 2 * tokens * tokens * width)
            into = positions * 4 * variant.dims[s - 1] * width if s else 0  # PatchMerging 4C -> 2C
        parts.append(dict(side=side, width=width, positions=positions, mixing=mixing, into=into,
                          ffn=int(2 * width * width * variant.mlp_ratio), fast=width * width))
    return parts


def _split_macs(variant: VariantConfig, schedule: KeepSchedule | None, include_predictors: bool) -> MacsReport:
    parts = _hierarchical_parts(variant)
    stem = variant.in_chans * 16 * parts[0]["positions"] * variant.dims[0]  # 4x4 stride-4 conv
    for s in range(2):
        stem += parts[s]["into"]
        stem += variant.depths[s] * (parts[s]["mixing"] + parts[s]["positions"] * parts[s]["ffn"])
    third = parts[2]
    stem += third["into"]
    tail = parts[3]["into"] + variant.depths[3] * (parts[3]["mixing"] + parts[3]["positions"] * parts[3]["ffn"])
    tail += variant.dims[3] * variant.num_classes
    n = third["positions"]
    counts = () if schedule is None else schedule.counts
    boundaries = [0] + ([] if schedule is None else list(variant.pruning_loc)) + [variant.depth]
    stages = []
    for seg in range(len(boundaries) - 1):
        first, end = boundaries[seg], boundaries[seg + 1]
        kept = n if seg == 0 else counts[seg - 1]
        per_block = third["mixing"] + kept * third["ffn"] + (n - kept) * third["fast"]
        stages.append(StageMacs(
            stage=seg, blocks=(first, end - 1), tokens=kept,
            predictor_macs=0 if seg == 0 else predictor_macs(variant, n),
            block_macs=(end - first) * per_block,
        ))
    return MacsReport(
        variant=variant.name, keep_ratio=None if schedule is None else schedule.ratios[0], keep_counts=counts,
        include_predictors=include_predictors, stem_macs=stem, head_macs=tail, stages=stages,
    )


def macs_for_model(model: "ModelRecord", *, include_predictors: bool = True) -> MacsReport:
    """MACs of the model an artifact records (its manifest's ``ModelRecord``)."""
    variant = (VariantConfig.from_dict(dict(model.config)) if model.config
               else get_variant(model.require_variant("count its MACs")))
    if model.dense:
        return count_macs(variant, include_predictors=include_predictors)
    return count_macs(variant, stage_ratios=None if model.stage_ratios is None else list(model.stage_ratios),
                      keep_ratio=model.keep_ratio, include_predictors=include_predictors)


# --------------------------------------------------------------------------------------------
# `dvit flops`


@dataclass(frozen=True)
class FlopsOptions:
    """What ``dvit flops`` is asked: the variants (none: every released one), the keep ratios ρ, and whether the
    headline figures include the score predictors (the released zoo's convention) or not (the paper's)."""

    models: tuple[str, ...] = ()
    keep_ratios: tuple[float, ...] = (0.9, 0.8, 0.7)
    with_predictors: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "keep_ratios", tuple(self.keep_ratios))
        for name in self.models:
            if name not in VARIANTS:
                raise BadInput(f"unknown model '{name}'; known: {', '.join(VARIANTS)}")
        for ratio in self.keep_ratios:
            try:
                validate_keep_ratio(ratio)
            except ValueError as exc:
                raise BadInput(str(exc)) from None

    @property
    def variants(self) -> tuple[str, ...]:
        return self.models or tuple(n for n in VARIANTS if not n.startswith("tiny-"))


@dataclass
class ModelFlops:
    """One variant: dense, and at each keep ratio."""

    variant: str
    dense: MacsReport
    sparse: list[MacsReport]

    def both_counts(self, report: MacsReport) -> dict[str, float]:
        """Both conventions for a sparse entry, whatever the headline uses, and its ratio to dense."""
        variant = get_variant(self.variant)
        without = count_macs(variant, report.keep_ratio, include_predictors=False)
        with_ = count_macs(variant, report.keep_ratio, include_predictors=True)
        return {
            "ratio_to_dense": round(self.dense.total_macs / report.total_macs, 4),
            "gmacs_without_predictors": round(without.gmacs, 4),
            "gmacs_with_predictors": round(with_.gmacs, 4),
            "predictor_gmacs": round(with_.predictor_macs / 1e9, 4),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "dense": self.dense.to_dict(),
                "sparse": [s.to_dict() | self.both_counts(s) for s in self.sparse]}


@dataclass
class FlopsResult:
    include_predictors: bool
    keep_ratios: tuple[float, ...]
    models: list[ModelFlops]

    def to_dict(self) -> dict[str, Any]:
        return {"convention": CONVENTION, "include_predictors": self.include_predictors,
                "models": [m.to_dict() for m in self.models]}


def run(options: FlopsOptions, context: "RunContext | None" = None) -> FlopsResult:
    """GMACs of every asked variant, dense and at each keep ratio (analytic: no artifact, no torch; ``context``
    is taken for the one job shape and not needed)."""
    include = options.with_predictors
    models = []
    for name in options.variants:
        variant = get_variant(name)
        dense = count_macs(variant, include_predictors=include)
        sparse = []
        for ratio in options.keep_ratios:
            try:
                sparse.append(count_macs(variant, ratio, include_predictors=include))
            except ValueError as exc:
                raise BadInput(f"{name}, ρ={ratio}: {exc}") from None
        models.append(ModelFlops(name, dense, sparse))
    return FlopsResult(include, options.keep_ratios, models)
