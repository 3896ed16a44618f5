"""Building models from checkpoints: what a user asked for, and what a manifest records.

``load_model`` is the one entry point: it reads the file (``checkpoint_file.read_checkpoint``:
``weights_only=True``, the state dict picked), detects the variant from tensor shapes, checks every
key and shape against the model, and returns the model with notes saying what was detected or
assumed. ``load_model_from_record`` rebuilds the model a manifest describes, from the checkpoint the
run's context says (``RunContext.checkpoint``: ``--checkpoint``, a moved file) or the recorded one.
Every user-caused problem becomes a ``BadInput`` with one readable line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

if TYPE_CHECKING:
    from ..artifact.context import RunContext
    from ..artifact.manifest import ModelRecord

from ..helpers.errors import BadInput
from ..helpers.fileio import sha256_file
from .checkpoint_file import (  # noqa: F401 - re-exported: the reading half of this module's API
    STATE_DICT_KEYS,
    STRIPPED_PREFIXES,
    Checkpoint,
    _first_line,
    read_checkpoint,
)
from .detect import Detection, _list, detect_variant, has_score_predictors  # noqa: F401 - detect_variant is API
from .config import DEFAULT_KEEP_RATIO, DEFAULT_VARIANT, VARIANTS, VariantConfig, get_variant, validate_keep_ratio

@dataclass
class ModelRequest:
    """What ``load_model`` will build, known before the model is (seconds): the variant, its ratios, the read
    checkpoint. A job checks its outputs against it (``resolve_model``), then builds it (``build_model``)."""

    variant: VariantConfig
    dense: bool
    stage_ratios: tuple[float, ...] | None
    checkpoint: Checkpoint | None
    seed: int | None
    use_ema: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class LoadedModel(ModelRequest):  # a built ModelRequest: the model, its weights loaded
    model: Any = None  # DynamicViTBase

    @property
    def keep_counts(self) -> tuple[int, ...]:
        return () if self.model.schedule is None else self.model.schedule.counts

    @property
    def random_weights(self) -> bool:
        return self.checkpoint is None

    def record(self) -> dict[str, Any]:
        """What a manifest needs to rebuild exactly this model (see ``load_model_from_record``)."""
        ckpt = self.checkpoint
        return {
            "variant": self.variant.name,
            "config": self.variant.to_dict(),
            "dense": self.dense,
            "keep_ratio": None if self.dense else self.stage_ratios[0],
            "keep_schedule": self.variant.schedule_kind,
            "stage_ratios": None if self.dense else list(self.stage_ratios),
            "keep_counts": list(self.keep_counts),
            "pruning_locations": [] if self.dense else list(self.variant.pruning_loc),
            "num_patches": self.variant.num_patches,
            "random_weights": self.random_weights,
            "seed": self.seed if ckpt is None else None,
            "checkpoint": None
            if ckpt is None
            else {
                "path": str(ckpt.path.resolve()),
                "sha256": ckpt.sha256,
                "source_key": ckpt.source_key,
                "use_ema": self.use_ema,
                "trusted": ckpt.trusted,
            },
        }


# --------------------------------------------------------------------------------------------
# Building the model


def load_model(checkpoint: str | Path | None = None, **request: Any) -> LoadedModel:
    """Build the model a user asked for: from a checkpoint, or the seeded random default. ``request``: the
    keywords of ``resolve_model``; a job that checks its outputs before the model is built calls the two steps."""
    return build_model(resolve_model(checkpoint, **request))


def resolve_model(checkpoint: str | Path | None = None, *, model_name: str | None = None,
                  keep_ratio: float | None = None, stage_ratios: Sequence[float] | None = None, dense: bool = False,
                  use_ema: bool = False, trust: bool = False, seed: int | None = None) -> ModelRequest:
    """Read the checkpoint (if any), detect the variant and resolve its ratios; the model is not built."""
    from . import DEFAULT_SEED

    if keep_ratio is not None:
        _check_ratio(keep_ratio)
    for ratio in stage_ratios or ():
        _check_ratio(ratio)
    notes: list[str] = []
    if model_name is not None and model_name not in VARIANTS:
        raise BadInput(f"unknown model '{model_name}'; known: {', '.join(VARIANTS)}")

    if checkpoint is None:
        variant = get_variant(model_name or DEFAULT_VARIANT)
        seed = DEFAULT_SEED if seed is None else seed
        notes.append(f"no checkpoint given: {variant.name} with RANDOM weights (seed {seed}); "
                     "numerics and speed are real, predictions are not")
        ckpt = None
    else:
        ckpt = read_checkpoint(checkpoint, use_ema=use_ema, trust=trust)
        detection = _detect_for(ckpt, model_name)
        variant = detection.variant if model_name is None else get_variant(model_name).replace(
            num_classes=detection.variant.num_classes)
        how = "given with --model" if model_name else "detected"
        notes.append(f"{variant.name} {how} ({detection.evidence}); weights from '{ckpt.source_key}'")
        registered = get_variant(variant.name).num_classes
        if variant.num_classes != registered:
            notes.append(f"classification head: {registered} → {variant.num_classes} classes (from the checkpoint's "
                         "head.weight); ImageNet class names do not apply")
        if not dense and not detection.has_predictors:
            raise BadInput(
                f"this looks like a dense {variant.family} checkpoint: it has no score_predictor weights "
                "— export it with --dense or pass a DynamicViT checkpoint"
            )
        seed = None

    ratios = _resolve_ratios(variant, dense, keep_ratio, stage_ratios, ckpt, notes)
    return ModelRequest(variant, dense, ratios, ckpt, seed, use_ema, notes)


def build_model(request: ModelRequest) -> LoadedModel:
    """Build the model ``request`` describes and load its weights (or spread the seeded random ones)."""
    from . import create_model

    try:
        model = create_model(request.variant, stage_ratios=request.stage_ratios, dense=request.dense,
                             seed=request.seed)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    notes = list(request.notes)
    if request.checkpoint is not None:
        _load_weights(model, request.checkpoint, request.variant, request.dense, notes)
    else:
        _spread_predictor_scores(model, request.seed)
    return LoadedModel(**{**vars(request), "notes": notes}, model=model)


def load_model_from_record(record: "ModelRecord | Mapping[str, Any]", *, context: "RunContext | None" = None,
                           trust: bool | None = None) -> LoadedModel:
    """Rebuild the model a manifest describes (the PyTorch reference for validation).

    ``record``: the manifest's ``ModelRecord`` (``artifact.model``), or JSON with its keys
    (``LoadedModel.record()``), typed here once. ``context``: the run (``artifact.context``); its
    ``checkpoint`` (``--checkpoint``: the checkpoint was moved) is used instead of the path the manifest
    recorded, and must be the same file (its sha256 is checked against the manifest's).
    """
    from ..artifact.manifest import ModelRecord

    if not isinstance(record, ModelRecord):
        record = getattr(record, "model", None) or ModelRecord.from_json(record)
    record.require_variant("rebuild it in PyTorch")
    ckpt = record.checkpoint
    path = _checkpoint_path(ckpt, None if context is None else context.checkpoint)
    loaded = load_model(
        path,
        model_name=record.variant,
        stage_ratios=None if record.stage_ratios is None else list(record.stage_ratios),
        dense=record.dense,
        use_ema=bool(ckpt and ckpt.get("use_ema")),
        trust=bool(ckpt and ckpt.get("trusted")) if trust is None else trust,
        seed=record.seed,
    )
    if ckpt and loaded.checkpoint.sha256 != ckpt.get("sha256"):
        raise BadInput(f"checkpoint {path} changed since export (sha256 differs from the manifest)")
    expected = list(record.keep_counts)
    if (expected or record.dense) and list(loaded.keep_counts) != expected:
        raise BadInput(f"rebuilt model keeps {list(loaded.keep_counts)} tokens, manifest says {expected}")
    return loaded


def _checkpoint_path(ckpt: Mapping[str, Any] | None, moved: Path | None) -> Any:
    """Where to read the recorded checkpoint from: ``moved`` (``--checkpoint``, sha256-checked against the
    record), else the recorded path (refused in one line when it is no longer there)."""
    if not ckpt:
        return None
    if moved is not None:
        path = Path(moved).expanduser()
        if not path.is_file():
            raise BadInput(f"--checkpoint {path} not found")
        recorded = ckpt.get("sha256")
        if recorded and sha256_file(path) != recorded:
            raise BadInput(f"--checkpoint {path} is not the checkpoint this artifact was exported from: its sha256 "
                           f"differs from the one the manifest recorded ({str(recorded)[:12]}…, from {ckpt['path']})")
        return path
    path = ckpt["path"]
    if not Path(path).expanduser().exists():
        raise BadInput(f"the checkpoint this artifact was exported from, {path}, is not there (moved?); give its new "
                       "path with --checkpoint PATH (checked against the sha256 the manifest recorded)")
    return path


def _check_ratio(ratio: float) -> None:
    try:
        validate_keep_ratio(ratio)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _detect_for(ckpt: Checkpoint, model_name: str | None) -> Detection:
    try:
        detection = detect_variant(ckpt.state_dict)
    except BadInput:
        if model_name is None:
            raise
        # Let the key-by-key check explain what does not fit the requested model.
        variant = get_variant(model_name)
        return Detection(variant, has_score_predictors(ckpt.state_dict), "forced")
    if model_name is not None:
        wanted = get_variant(model_name)
        got = detection.variant
        if (wanted.family, wanted.embed_dim, wanted.depth, wanted.depths, wanted.dims) != \
                (got.family, got.embed_dim, got.depth, got.depths, got.dims):
            raise BadInput(
                f"checkpoint {ckpt.path.name} looks like {got.name} ({detection.evidence}) "
                f"but --model {model_name} was given"
            )
    return detection


def _resolve_ratios(
    variant: VariantConfig,
    dense: bool,
    keep_ratio: float | None,
    stage_ratios: Sequence[float] | None,
    ckpt: Checkpoint | None,
    notes: list[str],
) -> tuple[float, ...] | None:
    if dense:
        return None
    if stage_ratios is not None:
        if len(stage_ratios) != variant.num_stages:
            raise BadInput(f"{variant.name} has {variant.num_stages} pruning stages; got {len(stage_ratios)} ratios")
        return tuple(float(r) for r in stage_ratios)
    if keep_ratio is None:
        trained = (ckpt.train_args if ckpt else {}).get("base_rate")
        if isinstance(trained, (int, float)) and 0 < trained <= 1:
            keep_ratio = float(trained)
            notes.append(f"keep ratio {keep_ratio} taken from the checkpoint's training args (base_rate)")
        else:
            keep_ratio = DEFAULT_KEEP_RATIO
            if ckpt is not None:
                notes.append(f"keep ratio {keep_ratio} (default: checkpoints do not record it; pass --keep-ratio)")
    try:
        return variant.stage_ratios(keep_ratio)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _load_weights(model: torch.nn.Module, ckpt: Checkpoint, variant: VariantConfig, dense: bool, notes: list[str]) -> None:
    state_dict = dict(ckpt.state_dict)
    if dense:
        dropped = [k for k in state_dict if _pruning_only(k)]
        for key in dropped:
            del state_dict[key]
        if dropped:
            notes.append(f"dense baseline: ignored {len(dropped)} score_predictor / fast path tensors")
    expected = model.state_dict()
    # BatchNorm step counters do not affect inference, and Swin's relative-position index and
    # shifted-window mask are derived from the shapes (timm-converted files drop them): the
    # model's own values stand in when a file lacks them.
    missing = [k for k in expected if k not in state_dict and not k.endswith(DERIVED_BUFFERS)]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} ({_list(missing)})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} ({_list(unexpected)})")
        if mismatched:
            parts.append(f"wrong shape {len(mismatched)} ({_list(mismatched, 3)})")
        raise BadInput(f"checkpoint {ckpt.path.name} does not fit {variant.name}: " + "; ".join(parts))
    not_finite = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if not_finite:
        raise BadInput(f"checkpoint {ckpt.path.name} has NaN/Inf weights ({_list(not_finite)})")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}, strict=False)


DERIVED_BUFFERS = ("num_batches_tracked", "attn.relative_position_index", "attn_mask")


def _pruning_only(key: str) -> bool:
    """Tensors only the pruned model has: score predictors, ConvNeXt fast_path*, Swin fastmlp."""
    return key.startswith("score_predictor.") or ".score_predictor." in key or ".fast_path" in key \
        or ".fastmlp." in key


def _spread_predictor_scores(model: torch.nn.Module, seed: int | None) -> None:
    """Random predictors score every token almost alike, so kept sets hinge on rounding noise.

    A trained predictor separates tokens clearly; widening the last layer's random weights
    gives the seeded demo model the same property, so its kept tokens are stable across
    backends like a real model's.
    """
    if model.schedule is None:
        return
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    with torch.no_grad():
        for predictor in model.score_predictor:
            last = predictor.out_conv[4]
            last.weight.normal_(0.0, 1.0, generator=generator)
