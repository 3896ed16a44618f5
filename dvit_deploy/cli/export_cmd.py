"""`dvit export`: checkpoint (or the seeded default) -> checked ONNX + manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..helpers.defaults import DEFAULT_OPSET, EXPORT_CHECK_SAMPLES
from ..helpers.fileio import prepare_output
from ..helpers.lazy import lazy_import

checkpoints = lazy_import("dvit_deploy.models.checkpoint")
onnx_export = lazy_import("dvit_deploy.export.onnx_export")
export_check = lazy_import("dvit_deploy.export.check")
requests = lazy_import("dvit_deploy.export.requests")  # torch-free: refusals before the heavy imports
from .failures import handle_errors
from .options import FORCE_OPTION, JSON_OPTION, finite, parse_floats
from .output import emit_json, human_bytes, notes, out, styled, table
from .progress import phases


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
    ratios_given = parse_floats(stage_ratios, "--stage-ratios")
    # What the flags alone rule out, before torch and the checkpoint load (seconds): ConvNeXt/Swin requests.
    requests.check_flags(checkpoint_given=checkpoint is not None, model_name=model, keep_ratio=keep_ratio,
                         stage_ratios=ratios_given, dense=dense, dynamic_keep=dynamic_keep)
    onnx_export.validate_options(opset, batch)  # fail on bad options before spending time on the model
    if output is not None:
        prepare_output(output, force=force, kinds=(".onnx",))

    def check_default_output(variant, is_dense, ratios) -> None:  # before the model is built (seconds)
        requests.check_request(variant, dense=is_dense, stage_ratios=ratios, dynamic_keep=dynamic_keep)
        if output is None:
            prepare_output(onnx_export.default_output(variant.name, is_dense, ratios, batch=batch,
                                                      dynamic_keep=dynamic_keep), force=force, kinds=(".onnx",), create=False)

    loaded = checkpoints.load_model(
        checkpoint, model_name=model, keep_ratio=keep_ratio, stage_ratios=ratios_given,
        dense=dense, use_ema=use_ema, trust=trust_checkpoint, seed=seed, before_build=check_default_output,
    )
    notes(loaded.notes)
    with phases("export") as on_phase:
        result = onnx_export.export_onnx(loaded, output, opset=opset, batch=batch, token_outputs=token_outputs, force=force,
                             check_samples=check_samples, on_phase=on_phase,
                             dynamic_keep=dynamic_keep)
    if json_output:
        emit_json({"passed": True, "artifact": str(result.path), "manifest": str(result.manifest_path),
                   "seconds": result.seconds, **result.manifest.to_json()})
        return
    counts = "dense" if loaded.dense else "/".join(map(str, loaded.keep_counts))
    if dynamic_keep:
        counts += " at export ρ; any counts via the keep_counts input"
        for entry in result.check.per_ratio:
            parity = entry["parity"]["logits"]
            out.print(f"  ρ={entry['keep_ratio']:g}: K {entry['graph_k']} (fixed-ratio model {entry['expected_k']}), "
                      f"max |Δlogit| {parity['max_abs']:.2e}")
    out.print(table(f"{loaded.variant.name} → ONNX opset {opset}, kept tokens {counts}", ["check", "result"],
                    export_check.summary_rows(result.check)))
    size = human_bytes(result.manifest.bytes)
    out.print(styled("[green]wrote[/] {} ({}) and {} in {} s", result.path, size, result.manifest_path.name,
                     f"{sum(result.seconds.values()):.1f}"))
    if loaded.random_weights:
        out.print(styled("[yellow]note:[/] weights are random (no checkpoint given): use it to try the toolchain, not to classify"))
