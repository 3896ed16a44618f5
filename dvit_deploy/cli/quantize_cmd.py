"""`dvit quantize`: fp32 ONNX -> INT8 Q/DQ ONNX (+ manifest), checked against PyTorch by agreement."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..helpers.defaults import (QUANTIZE_CALIB_BATCH, QUANTIZE_CALIB_SAMPLES, QUANTIZE_CHECK_SAMPLES, QUANTIZE_METHOD,
                        QUANTIZE_PERCENTILE, QUANTIZE_TARGET)
from ..jobs.quantize import EXCLUDED_OP_TYPES, METHODS, RECIPES, TARGETS
from .common import command_context, picked
from .failures import handle_errors
from .options import FORCE_OPTION, JSON_OPTION, NO_VERIFY_OPTION, finite
from .output import emit_json, err, styled
from .quantize_view import calibration_progress, render


@handle_errors
def quantize(
    onnx_file: Optional[Path] = typer.Argument(
        None, help="fp32 ONNX export with its manifest \\[default: the newest fp32 pruned export in ./export].",
        show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Output .onnx \\[default: <name>-int8.onnx beside the input]."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of calibration images (searched recursively; "
                                         "the model's timm preprocessing) \\[default: seeded generated scenes]."),
    calib_samples: int = typer.Option(QUANTIZE_CALIB_SAMPLES, "--calib-samples", min=1,
                                      help="Calibration images (the first N of --calib, sorted by path)."),
    method: str = typer.Option(QUANTIZE_METHOD, "--method", help=f"Activation range: {', '.join(METHODS)}."),
    percentile: float = typer.Option(QUANTIZE_PERCENTILE, "--percentile", callback=finite, help="Percentile for --method percentile."),
    calib_batch: int = typer.Option(QUANTIZE_CALIB_BATCH, "--calib-batch", min=1, help="Images per calibration run (memory)."),
    quantize_predictor: bool = typer.Option(False, "--quantize-predictor",
                                            help="Also quantize the score predictors (default: kept in float so "
                                            "pruning decisions stay stable)."),
    keep_float: Optional[str] = typer.Option(
        None, "--keep-float", help=f"Op types kept in float, comma-separated (also MatMul, Gemm, Conv) \\[default: {','.join(EXCLUDED_OP_TYPES)}]."),
    check_samples: int = typer.Option(QUANTIZE_CHECK_SAMPLES, "--check-samples", min=1,
                                      help="Inputs (generated scenes + seeded noise) for the int8-vs-PyTorch check."),
    target: str = typer.Option(QUANTIZE_TARGET, "--for", help=f"Where the int8 graph will run: {', '.join(TARGETS)} "
                               "(cpu: the recipe that is correct and fast on this CPU's class; tensorrt: full-range "
                               "int8 weights, checked with exact int8 arithmetic)."),
    recipe: str = typer.Option("auto", "--recipe", help=f"Override the recipe: auto, {', '.join(RECIPES)} "
                               "(docs/quantization.md)."),
    force: bool = FORCE_OPTION,
    no_verify: bool = NO_VERIFY_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """INT8 explicit quantization (Q/DQ, ONNX Runtime quantize_static), checked against PyTorch fp32."""
    from ..artifact.store import open_artifact
    from ..jobs.quantize import QuantizeOptions, default_source, result_json, run, select_recipe

    op_types = tuple(t.strip() for t in keep_float.split(",") if t.strip()) if keep_float is not None else EXCLUDED_OP_TYPES
    context = command_context(no_verify=no_verify)
    if onnx_file is None:
        onnx_file = default_source(context)  # reads the candidates' manifests in this run
        picked(onnx_file, "newest fp32 export in ./export")
    choice = select_recipe(target, override=recipe)
    err.print(styled("[cyan]quantize:[/] {}", choice.line()))
    options = QuantizeOptions(calib_dir=calib, calib_samples=calib_samples, calib_batch=calib_batch, method=method,
                              percentile=percentile, include_predictor=quantize_predictor,
                              exclude_op_types=op_types, check_samples=check_samples, target=target, recipe=choice,
                              output=output, force=force)
    # Opened once (manifest and sha256 checked: refused, or a warning under --no-verify, when it does not match).
    source = open_artifact(onnx_file, (".onnx",), context=context)
    with calibration_progress() as (on_phase, on_calib):
        result = run(options, context, source, on_phase=on_phase, on_calib=on_calib)
    for warning in result.check.warnings:  # on stderr, with --json too
        err.print(styled("[yellow]warning:[/] {}", warning))
    if json_output:
        emit_json(result_json(result))
    else:
        render(result)
