"""`dvit quantize`: fp32 ONNX -> INT8 Q/DQ ONNX (+ manifest), checked against PyTorch by agreement."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer

from ..helpers.defaults import (QUANTIZE_CALIB_BATCH, QUANTIZE_CALIB_SAMPLES, QUANTIZE_CHECK_SAMPLES, QUANTIZE_METHOD,
                        QUANTIZE_PERCENTILE, QUANTIZE_TARGET)
from ..helpers.compare import Tolerance
from ..jobs.quantize import EXCLUDED_OP_TYPES, METHODS, RECIPES, TARGETS
from .common import artifact_checks, picked
from .failures import handle_errors
from .options import FORCE_OPTION, JSON_OPTION, NO_VERIFY_OPTION, finite
from .output import emit_json, err, human_bytes, out, styled, table
from .progress import phases


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
    from ..jobs.quantize import QuantizeOptions, default_source, quantize_onnx, select_recipe

    op_types = tuple(t.strip() for t in keep_float.split(",") if t.strip()) if keep_float is not None else EXCLUDED_OP_TYPES
    with artifact_checks(no_verify):
        if onnx_file is None:
            onnx_file = default_source()
            picked(onnx_file, "newest fp32 export in ./export")
        choice = select_recipe(target, override=recipe)
        err.print(styled("[cyan]quantize:[/] {}", choice.line()))
        options = QuantizeOptions(calib_dir=calib, calib_samples=calib_samples, calib_batch=calib_batch, method=method,
                                  percentile=percentile, include_predictor=quantize_predictor,
                                  exclude_op_types=op_types, check_samples=check_samples, target=target, recipe=choice)
        # Opened once (manifest and sha256 checked: refused, or a warning under --no-verify, when it does not match).
        source = open_artifact(onnx_file, (".onnx",))
        with _progress() as (on_phase, on_calib):
            result = quantize_onnx(source, output, options, force=force, on_phase=on_phase, on_calib=on_calib)
    manifest = result.manifest
    for warning in result.check.warnings:  # on stderr, with --json too
        err.print(styled("[yellow]warning:[/] {}", warning))
    if json_output:
        emit_json({"passed": True, **manifest.to_json(), "path": str(result.path), "manifest": str(result.manifest_path),
                   "source": str(result.source), "size_ratio": round(result.size_ratio, 4),
                   "seconds": {k: round(v, 2) for k, v in result.seconds.items()}})
        return
    quantization = manifest.quantization
    out.print(table(f"{result.source.name} → INT8 Q/DQ ({quantization.calibration_method}, "
                    f"{quantization.calibration_samples} "
                    f"{quantization.calibration_source})", ["check", "result"], summary_rows(result)))
    out.print(styled("[green]wrote[/] {} ({}, {} of the fp32 file) and {}", result.path,
                     human_bytes(manifest.bytes), f"{result.size_ratio:.0%}", result.manifest_path.name))
    for note in result.check.comparison.notes if result.check.comparison else []:
        err.print(styled("[cyan]•[/] {}", note))
    if manifest.model.random_weights:
        out.print(styled("[yellow]note:[/] random weights: agreement on flat logits and scores understates "
                         "what a trained checkpoint gives"))


def summary_rows(result) -> list[tuple[str, str]]:
    """The table's rows, from the result: the recipe it was quantized with, what stayed float, the check."""
    check = result.check
    choice, kept = result.choice, result.kept_float
    execution = check.execution or {}
    rows = [("recipe", f"{choice.recipe.name} for {choice.target} ({choice.chosen_by}): "
                       f"weights {choice.recipe.weights}, activations {choice.recipe.activations}"),
            ("why this recipe", str(choice.reason)),
            ("CPU", (execution.get("cpu") or {}).get("class", "?") + f" ({(execution.get('cpu') or {}).get('model', '?')})"),
            ("onnxruntime ran", f"{execution.get('kernels', '?')}"
                                + (f" with {execution['session_config']}" if execution.get("session_config") else "")),
            ("onnx.checker (full)", check.checker)]
    if check.stages:
        rows.append(("TopK per stage (K)", f"{len(check.stages)} ({', '.join(str(s.k) for s in check.stages)})"))
        rows.append(("Gather per stage", ", ".join(str(len(s.gathers)) for s in check.stages)))
    rows.append(("Q/DQ", f"{check.qdq['quantize_linear']} Q, {check.qdq['dequantize_linear']} DQ; "
                 f"{check.qdq['per_channel_weights']} per-channel int8 weights; zero points 0"))
    rows.append(("kept in float", f"{len(kept.nodes)} nodes: predictors "
                 f"({'/'.join(map(str, kept.predictor_nodes_per_stage)) or 'quantized'}), "
                 f"{', '.join(kept.op_types)}"))
    cmp = check.comparison
    if cmp is not None:
        lg = cmp.logits
        confident = ("—" if lg.top1_agreement_confident is None
                     else f"{lg.top1_agreement_confident:.1%} of {lg.confident_samples} with margin ≥ 0.1")
        rows.append((f"ORT int8 vs PyTorch fp32, {cmp.samples} inputs",
                     f"top-1 {lg.top1_agreement:.1%} (confident: {confident}), top-5 {lg.top5_agreement:.1%}, "
                     f"max |Δlogit| {lg.max_abs:.3f}"))
        for st in cmp.stages:
            rows.append((f"kept tokens stage {st.stage} (K={st.keep_count})",
                         f"mean Jaccard {st.mean_jaccard:.4f}, {st.flipped_samples} input(s) differ "
                         f"({st.near_tie_flips} near-tie)"))
        if cmp.mean_jaccard is not None:
            rows.append(("kept tokens, all stages", f"mean Jaccard {cmp.judged_jaccard:.4f} with near-tie flips as "
                         f"agreeing (raw {cmp.mean_jaccard:.4f}; minimum {Tolerance.for_precision('int8').min_mean_jaccard:g})"))
    return rows


@contextlib.contextmanager
def _progress() -> Iterator[tuple[Callable[[str], None], Callable[[int, int], None]]]:
    """Phases as lines/spinners, calibration as a bar (images done of total)."""
    if not err.is_terminal:  # piped: one line per phase with its time (as every command), calibration by quarters
        state = {"last": -1}

        def on_calib_plain(done: int, total: int) -> None:
            quarter = int(4 * done / max(total, 1))
            if quarter > state["last"]:
                state["last"] = quarter
                err.print(f"quantize: calibration {done}/{total} images")

        with phases("quantize") as on_phase_plain:
            yield on_phase_plain, on_calib_plain
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=False) as progress:
        tasks: list = []
        calib_task: list = []

        def on_phase(name: str) -> None:
            if tasks:
                progress.update(tasks[-1], completed=progress.tasks[-1].total or 1, total=progress.tasks[-1].total or 1)
            tasks.append(progress.add_task(f"quantize: {name}", total=None))
            if name.startswith("calibrate"):
                calib_task[:] = [tasks[-1]]

        def on_calib(done: int, total: int) -> None:
            if calib_task:
                progress.update(calib_task[0], completed=done, total=total)

        try:
            yield on_phase, on_calib
        finally:
            if tasks:
                progress.update(tasks[-1], completed=1, total=1)
