"""`dvit export` as a library call: checkpoint (or the seeded default) -> checked ONNX + manifest.

``run(ExportOptions(...), RunContext())`` does what the command does, in the same order: the refusals the
options alone decide (before torch is imported), the checkpoint read, the refusals that need its variant
(before the model is built), the model, then the export and its check (``export.onnx_export``). Every check
of the options lives in ``export.requests``, beside ``ExportOptions`` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..artifact.context import RunContext
from ..export.requests import ExportOptions, check_model_request, check_options

if TYPE_CHECKING:
    from ..artifact.manifest import OnnxManifest
    from ..export.check import CheckReport

__all__ = ("ExportOptions", "ExportResult", "check_model_request", "check_options", "run", "run_export")


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


def run(options: ExportOptions, context: RunContext, *, on_phase: Callable[[str], None] | None = None,
        on_notes: Callable[[list[str]], None] | None = None) -> ExportResult:
    """Export and check; ``on_notes`` gets what loading the model found (variant, weights) before the export
    starts, ``on_phase`` each phase's name. Raises ``BadInput`` / ``CheckFailed`` (nothing written)."""
    check_options(options)
    from ..export import onnx_export
    from ..models import checkpoint as checkpoints

    # context: resolve_model(..., context=context) once models/ takes the RunContext (trust, moved checkpoint)
    request = checkpoints.resolve_model(
        options.checkpoint, model_name=options.model, keep_ratio=options.keep_ratio,
        stage_ratios=options.stage_ratios, dense=options.dense, use_ema=options.use_ema,
        trust=options.trust_checkpoint, seed=options.seed)
    check_model_request(options, request)
    loaded = checkpoints.build_model(request)
    if on_notes is not None:
        on_notes(loaded.notes)
    written = onnx_export.export_onnx(loaded, options=options, on_phase=on_phase)
    return ExportResult(written.path, written.manifest_path, written.manifest, written.check, loaded.variant.name,
                        loaded.dense, tuple(loaded.keep_counts), loaded.random_weights, tuple(loaded.notes),
                        written.seconds)


def run_export(options: ExportOptions, *, on_phase: Callable[[str], None] | None = None,
               on_notes: Callable[[list[str]], None] | None = None) -> ExportResult:
    """``run`` with a fresh ``RunContext`` (the Python API before the context existed)."""
    return run(options, RunContext(), on_phase=on_phase, on_notes=on_notes)
