"""`dvit export` as a library call: checkpoint (or the seeded default) -> checked ONNX + manifest.

``run_export(ExportOptions(...))`` does what the command does, in the same order: the refusals the options
alone decide (before torch is imported), the checkpoint read, the refusals that need its variant (before
the model is built), the model, then the export and its check (``export.onnx_export``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..helpers.defaults import DEFAULT_OPSET, EXPORT_CHECK_SAMPLES
from ..helpers.fileio import prepare_output

if TYPE_CHECKING:
    from ..artifact.manifest import OnnxManifest
    from ..export.check import CheckReport
    from ..models.checkpoint import ModelRequest


@dataclass(frozen=True)
class ExportOptions:
    """What ``dvit export`` was asked for; each field is the flag of the same name."""

    checkpoint: Path | None = None  # None: the seeded random default model
    model: str | None = None  # the variant; detected from the weights when None
    keep_ratio: float | None = None
    stage_ratios: tuple[float, ...] | None = None  # overrides keep_ratio
    dense: bool = False
    opset: int = DEFAULT_OPSET
    batch: int | None = None  # None: dynamic batch
    token_outputs: bool = False
    dynamic_keep: bool = False
    output: Path | None = None  # None: ./export/<variant>-r<ρ>.onnx
    force: bool = False
    use_ema: bool = False
    trust_checkpoint: bool = False
    seed: int | None = None
    check_samples: int = EXPORT_CHECK_SAMPLES

    def __post_init__(self) -> None:
        for name in ("checkpoint", "output"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.stage_ratios is not None and not isinstance(self.stage_ratios, tuple):
            object.__setattr__(self, "stage_ratios", tuple(self.stage_ratios))


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote (``path`` and its manifest) and what was exported."""

    path: Path
    manifest_path: Path
    manifest: "OnnxManifest"  # as written beside ``path``
    check: "CheckReport"
    variant: str
    dense: bool
    keep_counts: tuple[int, ...]
    random_weights: bool
    notes: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``dvit export --json``."""
        return {"passed": True, "artifact": str(self.path), "manifest": str(self.manifest_path),
                "seconds": self.seconds, **self.manifest.to_json()}


def check_options(options: ExportOptions) -> None:
    """The refusals the options alone decide, before torch, the checkpoint or the model are loaded."""
    from ..export import requests  # torch-free

    requests.check_flags(checkpoint_given=options.checkpoint is not None, model_name=options.model,
                         keep_ratio=options.keep_ratio, stage_ratios=options.stage_ratios, dense=options.dense,
                         dynamic_keep=options.dynamic_keep)
    from ..export import onnx_export

    onnx_export.validate_options(options.opset, options.batch)  # before any time is spent on the model
    if options.output is not None:
        prepare_output(options.output, force=options.force, kinds=(".onnx",))


def check_model_request(options: ExportOptions, request: "ModelRequest") -> None:
    """The refusals that need the variant (known once a checkpoint is read), before the model is built."""
    from ..export import onnx_export, requests

    requests.check_request(request.variant, dense=request.dense, stage_ratios=request.stage_ratios,
                           dynamic_keep=options.dynamic_keep)
    if options.output is None:
        default = onnx_export.default_output(request.variant.name, request.dense, request.stage_ratios,
                                             batch=options.batch, dynamic_keep=options.dynamic_keep)
        prepare_output(default, force=options.force, kinds=(".onnx",), create=False)


def run_export(options: ExportOptions, *, on_phase: Callable[[str], None] | None = None,
               on_notes: Callable[[list[str]], None] | None = None) -> ExportResult:
    """Export and check; ``on_notes`` gets what loading the model found (variant, weights) before the export
    starts, ``on_phase`` each phase's name. Raises ``BadInput`` / ``CheckFailed`` (nothing written)."""
    check_options(options)
    from ..export import onnx_export
    from ..models import checkpoint as checkpoints

    request = checkpoints.resolve_model(
        options.checkpoint, model_name=options.model, keep_ratio=options.keep_ratio,
        stage_ratios=options.stage_ratios, dense=options.dense, use_ema=options.use_ema,
        trust=options.trust_checkpoint, seed=options.seed)
    check_model_request(options, request)
    loaded = checkpoints.build_model(request)
    if on_notes is not None:
        on_notes(loaded.notes)
    written = onnx_export.export_onnx(
        loaded, options.output, opset=options.opset, batch=options.batch, token_outputs=options.token_outputs,
        force=options.force, check_samples=options.check_samples, on_phase=on_phase,
        dynamic_keep=options.dynamic_keep)
    return ExportResult(written.path, written.manifest_path, written.manifest, written.check, loaded.variant.name,
                        loaded.dense, tuple(loaded.keep_counts), loaded.random_weights, tuple(loaded.notes),
                        written.seconds)

