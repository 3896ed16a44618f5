"""`dvit build`: ONNX (newest export by default) -> TensorRT engine + manifest in ./engines."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from ..helpers.defaults import (BUILD_HARDWARE_COMPAT, BUILD_KEEP_RANGE, BUILD_MAX_BATCH, BUILD_MIN_BATCH, BUILD_OPT_BATCH,
                                DEFAULT_OPT_LEVEL, DEFAULT_WORKSPACE_MB)
from ..engines.targets import PARSER_TARGETS as TARGETS
from ..helpers.errors import MissingDependency
from ..helpers.lazy import lazy_import
from .common import artifact_or_default, command_context
from .failures import handle_errors
from .options import FORCE_OPTION, JSON_OPTION, NO_VERIFY_OPTION, parse_floats
from .output import emit_json, human_bytes, notes, out, styled, table, warn
from .progress import phases

build_job = lazy_import("dvit_deploy.jobs.build")  # onnx, the fp16 check: loaded when the command runs
doctor_lib = lazy_import("dvit_deploy.engines.doctor")


def _ratios(keep_range: Optional[str], keep_ladder: Optional[str]) -> dict:
    """--keep-range and --keep-ladder as options; given together, BuildOptions refuses the pair unparsed."""
    ladder = () if keep_ladder is not None and keep_range is not None else parse_floats(keep_ladder, "--keep-ladder")
    return {"keep_range": build_job.keep_range_flag(parse_floats(keep_range, "--keep-range"), keep_range),
            "keep_ladder": None if ladder is None else tuple(ladder)}


@contextlib.contextmanager
def _install_hint() -> Iterator[None]:
    """A missing TensorRT is named with the extra to install and the command that needs it."""
    try:
        yield
    except MissingDependency as exc:
        extra = {"tensorrt": ("tensorrt", "dvit build"), "tensorrt_rtx": ("rtx", "dvit build --target rtx")}
        if exc.package not in extra:
            raise
        raise MissingDependency(exc.package, *extra[exc.package]) from None


@handle_errors
def build(
    onnx_path: Optional[Path] = typer.Argument(None, help="ONNX graph \\[default: the default artifact, see README].",
                                               show_default=False),
    fp16: bool = typer.Option(False, "--fp16", help="FP16 (TRT 10: builder flag; TRT 11: mixed-precision graph, strongly typed)."),
    bf16: bool = typer.Option(False, "--bf16", help="BF16 builder flag (TensorRT 10, weakly typed)."),
    tf32: bool = typer.Option(False, "--tf32", help="Allow TF32 for fp32 math (off by default, for exact fp32)."),
    int8: bool = typer.Option(False, "--int8", help="Build an explicitly quantized (Q/DQ) ONNX, e.g. from dvit quantize "
                              "(TRT 10: INT8 flag, with --fp16 also the FP16 fallback; TRT 11: strongly typed)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Engine path, .engine or .plan (--onnx-only: .onnx); never the source ONNX "
                                          "\\[default: ./engines/<name>-<gpu>-<precision>.engine]."),
    min_batch: Optional[int] = typer.Option(None, "--min-batch", help=f"Profile minimum batch \\[default: {BUILD_MIN_BATCH}]."),
    opt_batch: Optional[int] = typer.Option(None, "--opt-batch", help=f"Profile batch TensorRT tunes for \\[default: min({BUILD_OPT_BATCH}, max)]."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help=f"Profile maximum batch \\[default: {BUILD_MAX_BATCH}]."),
    keep_range: Optional[str] = typer.Option(None, "--keep-range", help=f"ρ range LOW,HIGH a --dynamic-keep engine serves \\[default: {BUILD_KEEP_RANGE[0]:g},{BUILD_KEEP_RANGE[1]:g}]."),
    keep_ladder: Optional[str] = typer.Option(None, "--keep-ladder", help="ρ values, e.g. 0.5,0.6,0.7,0.8,0.9: a --dynamic-keep engine "
                                              "with one optimization profile per ρ, keep counts pinned (static shapes per "
                                              "profile; see docs/tensorrt.md). Excludes --keep-range."),
    workspace: int = typer.Option(DEFAULT_WORKSPACE_MB, "--workspace", help="Workspace memory pool limit in MB."),
    opt_level: int = typer.Option(DEFAULT_OPT_LEVEL, "--opt-level", help="Builder optimization level 0-5."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file to load (if present) and save."),
    hardware_compat: str = typer.Option(BUILD_HARDWARE_COMPAT, "--hardware-compat", help="none, ampere+ or same-cc."),
    version_compatible: bool = typer.Option(False, "--version-compatible", help="Engine runs on later TensorRT of the same major."),
    strongly_typed: bool = typer.Option(False, "--strongly-typed", help="TensorRT 10: build strongly typed (fp16 via the converted graph, as on 11)."),
    target: Optional[str] = typer.Option(None, "--target", help="rtx: a TensorRT-RTX engine, built ahead of time on any machine "
                                         f"(no GPU needed). Else the doctor target \\[default: from the installed TensorRT; {', '.join(t for t in TARGETS if t != 'rtx')}]."),
    compute_capability: Optional[List[str]] = typer.Option(None, "--compute-capability", metavar="<list>", help="--target rtx: a comma-separated list of the GPUs' compute "
                                                           "capabilities the engine is compiled for, e.g. 8.6,8.9 (7.5 is refused: no FP32 GEMM) "
                                                           "\\[default: TensorRT-RTX's own set, 8.0/8.6/8.9/12.0/12.1]."),
    onnx_only: bool = typer.Option(False, "--onnx-only", help="With --fp16: only write and check the mixed-precision ONNX (no TensorRT needed) "
                                   "\\[default: ./engines/<onnx stem>-fp16mixed.onnx]."),
    verbose: bool = typer.Option(False, "--verbose", help="TensorRT verbose log."),
    force: bool = FORCE_OPTION,
    no_verify: bool = NO_VERIFY_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Build a TensorRT engine (TensorRT 10 or 11) or a TensorRT-RTX engine (--target rtx, no GPU needed); runs `dvit doctor` first."""
    precision, int8_fp16 = build_job.precision_from_flags(fp16=fp16, bf16=bf16, tf32=tf32, int8=int8)
    context = command_context(no_verify=no_verify)
    with _install_hint():
        onnx_path = artifact_or_default(onnx_path, (".onnx",), context=context,  # picked inside: manifest read once
                                        only=build_job.default_sources(precision))
        with phases("build") as on_phase:
            options = build_job.BuildOptions(
                precision=precision, output=output, target=target, force=force, onnx_only=onnx_only,
                min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, **_ratios(keep_range, keep_ladder),
                workspace_mb=workspace, optimization_level=opt_level, hardware_compat=hardware_compat,
                version_compatible=version_compatible, timing_cache=timing_cache, strongly_typed=strongly_typed,
                int8_fp16=int8_fp16, verbose=verbose, compute_capabilities=compute_capability)
            result = build_job.run(options, context, build_job.open_onnx(onnx_path, context), on_phase=on_phase)
    if json_output:
        emit_json(result.to_json())
    else:
        _render(result)


def _render(result) -> None:
    warnings = [r for r in doctor_lib.summary_rows(result.doctor) if r[0] != "info"]
    if warnings:
        out.print(table("readiness warnings", ["severity", "check", "finding"], warnings))
    if result.fp16 is not None:
        out.print(result.fp16_summary())
    if result.engine_path is None:
        out.print(styled("[green]wrote[/] {} (TensorRT 11 fp16 build input; checked in ONNX Runtime)", result.fp16_onnx))
        return
    engine = result.manifest
    out.print(table(f"engine {result.engine_path.name}", ["", ""], result.summary_rows()))
    out.print(styled("[green]wrote[/] {} ({}), {}", result.engine_path, human_bytes(engine.bytes),
                     result.manifest_path.name + (f", {engine.inspector}" if engine.inspector else "")))
    for line in result.warnings:  # post-build problems that did not cost the engine (inspection, timing cache)
        warn(line)
    notes(result.engine_notes())
