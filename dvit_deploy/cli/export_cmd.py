"""`dvit export`: checkpoint (or the seeded default) -> checked ONNX + manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..artifact.context import RunContext
from ..helpers.defaults import DEFAULT_OPSET, EXPORT_CHECK_SAMPLES
from ..helpers.lazy import lazy_import
from ..jobs import export as export_job  # torch-free: its refusals come before the heavy imports
from ..jobs.export import ExportOptions

export_check = lazy_import("dvit_deploy.export.check")
from .failures import handle_errors
from .options import FORCE_OPTION, JSON_OPTION, finite, parse_floats
from .output import emit_json, human_bytes, notes, out, styled, table
from .progress import phases_from_first


@handle_errors
def export(
    checkpoint: Optional[Path] = typer.Argument(
        None, help="DynamicViT checkpoint (.pth/.pt/.safetensors). Omit to export a seeded random DeiT-S.",
        show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Variant; detected from the weights when omitted."),
    keep_ratio: Optional[float] = typer.Option(None, "--keep-ratio", "-r", callback=finite, help="ρ: stage k keeps int(196·ρ^k) tokens (ConvNeXt/Swin: int(196·(ρ−0.2·(k−1)))) \\[default: 0.7]."),
    stage_ratios: Optional[str] = typer.Option(None, "--stage-ratios", help="Per-stage ratios, e.g. 0.7,0.49,0.343 (overrides ρ)."),
    dense: bool = typer.Option(False, "--dense", help="Export the dense baseline (no predictors, no pruning)."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset (TensorRT 10 parses up to 20)."),
    batch: Optional[int] = typer.Option(None, "--batch", "-b", help="Fixed batch size \\[default: dynamic batch]."),
    token_outputs: bool = typer.Option(False, "--token-outputs", help="Also output each stage's kept-token indices."),
    dynamic_keep: bool = typer.Option(False, "--dynamic-keep", help="Add an int32 'keep_counts' input so one graph (and engine) serves several keep ratios."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output .onnx \\[default: ./export/<variant>-r<ρ>.onnx]."),
    force: bool = FORCE_OPTION,
    use_ema: bool = typer.Option(False, "--use-ema", help="Take the weights from the checkpoint's 'model_ema' entry."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow arbitrary pickled objects (unsafe)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the random weights when no checkpoint is given."),
    check_samples: int = typer.Option(EXPORT_CHECK_SAMPLES, "--check-samples", min=1, help="Seeded inputs for the ORT-vs-PyTorch check."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Export to ONNX (one TopK + one Gather per pruning stage) and check it against PyTorch."""
    options = ExportOptions(
        checkpoint=checkpoint, model=model, keep_ratio=keep_ratio, stage_ratios=parse_floats(stage_ratios, "--stage-ratios"),
        dense=dense, opset=opset, batch=batch, token_outputs=token_outputs, dynamic_keep=dynamic_keep, output=output,
        force=force, use_ema=use_ema, trust_checkpoint=trust_checkpoint, seed=seed, check_samples=check_samples)
    with phases_from_first("export") as on_phase:
        result = export_job.run(options, RunContext(), on_phase=on_phase, on_notes=notes)
    if json_output:
        emit_json(result.to_json())
        return
    counts = "dense" if result.dense else "/".join(map(str, result.keep_counts))
    if dynamic_keep:
        counts += " at export ρ; any counts via the keep_counts input"
        for entry in result.check.per_ratio:
            parity = entry["parity"]["logits"]
            out.print(f"  ρ={entry['keep_ratio']:g}: K {entry['graph_k']} (fixed-ratio model {entry['expected_k']}), "
                      f"max |Δlogit| {parity['max_abs']:.2e}")
    out.print(table(f"{result.variant} → ONNX opset {opset}, kept tokens {counts}", ["check", "result"],
                    export_check.summary_rows(result.check)))
    size = human_bytes(result.manifest.bytes)
    out.print(styled("[green]wrote[/] {} ({}) and {} in {} s", result.path, size, result.manifest_path.name,
                     f"{sum(result.seconds.values()):.1f}"))
    if result.random_weights:
        out.print(styled("[yellow]note:[/] weights are random (no checkpoint given): use it to try the toolchain, not to classify"))
