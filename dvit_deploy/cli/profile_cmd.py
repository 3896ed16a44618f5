"""`dvit profile`: latency statistics like trtexec, throughput, and the dense → sparse speed-up."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..helpers.errors import BadInput
from ..helpers.defaults import (PROFILE_BATCH, PROFILE_DEVICE, PROFILE_DURATION_S, PROFILE_GRAPH_OPTIMIZATION,
                                PROFILE_ROUNDS, PROFILE_WARMUP_S)
from ..helpers.lazy import lazy_import
from .common import command_context, open_or_default
from .failures import handle_errors
from .options import JSON_OPTION, NO_VERIFY_OPTION, finite, parse_ints
from .output import emit_json, err, notes, out, styled, warn
from .profile_table import print_report
from .progress import phases_then_fractions


profiling = lazy_import("dvit_deploy.jobs.profile")
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


@handle_errors
def profile(
    artifacts: Optional[List[Path]] = typer.Argument(
        None, help="Artifacts to measure \\[default: the default artifact (see README), "
        "plus its dense twin when present].", show_default=False),
    batch: str = typer.Option(str(PROFILE_BATCH), "--batch", "-b", help="Batch size, or a sweep: 1,8,32,64."),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime, openvino, torch or tensorrt "
                                          "\\[default: from the artifact's suffix]."),
    device: str = typer.Option(PROFILE_DEVICE, "--device", help="cpu or cuda[:N]."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32/fp16/bf16/int8 (openvino runs an fp32 export as bf16) \\[default: the artifact's]."),
    dense_baseline: bool = typer.Option(False, "--dense-baseline", help="Also measure the dense twin, "
                                        "exporting it beside the artifact when missing."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Measure only the given artifacts."),
    warmup: float = typer.Option(PROFILE_WARMUP_S, "--warmup", callback=finite, help="Warm-up time per batch size (s)."),
    duration: float = typer.Option(PROFILE_DURATION_S, "--duration", callback=finite, help="Measured time per batch size (s)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="A fixed number of timed calls "
                                             "instead of --duration."),
    rounds: int = typer.Option(PROFILE_ROUNDS, "--rounds", help="Measure the artifacts in this many alternating rounds, so "
                               "machine-speed drift does not bias their ratio (1: one after another)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads (CPU) \\[default: the backend's]."),
    include_transfer: bool = typer.Option(False, "--include-transfer/--exclude-transfer",
                                          help="Count host↔device copies in the latency (GPU)."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="Replay a captured CUDA graph (GPU)."),
    providers: Optional[str] = typer.Option(None, "--providers", help="ONNX Runtime providers in order, "
                                            "e.g. tensorrt,cuda,cpu."),
    graph_optimization: str = typer.Option(PROFILE_GRAPH_OPTIMIZATION, "--graph-optimization",
                                           help="ONNX Runtime graph optimization: disable, basic, extended, all."),
    compile_model: bool = typer.Option(False, "--compile", help="torch backend: torch.compile the model."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write latency/throughput vs batch to this PNG."),
    keep_ratio: Optional[float] = typer.Option(None, "--keep-ratio", "-r", callback=finite, help="Run a --dynamic-keep "
                                               "artifact at this ρ (a --keep-ladder engine: one of its rungs) "
                                               "\\[default: the export's ρ]."),
    no_verify: bool = NO_VERIFY_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Measure latency (min/mean/median/p90/p95/p99/max), throughput and the speed-up over dense."""
    batches = parse_ints(batch, "--batch")
    if plot is not None and plot.suffix.lower() not in PLOT_SUFFIXES:
        raise BadInput(f"--plot draws a picture: give a path ending in {', '.join(PLOT_SUFFIXES)}, not {plot.name}")
    settings = profiling.ProfileSettings(warmup_s=warmup, duration_s=duration, iterations=iterations,
                                         include_transfer=include_transfer, cuda_graph=cuda_graph,
                                         intra_op_threads=threads, rounds=rounds)
    options = profiling.ProfileOptions(batches=tuple(batches), backend=backend, device=device, precision=precision,
                                       settings=settings, dense_baseline=dense_baseline, with_twins=not no_baseline,
                                       graph_optimization=graph_optimization, compile=compile_model,
                                       providers=providers or None, keep_ratio=keep_ratio)
    options.validate()
    context = command_context(no_verify=no_verify)
    # Each artifact opened (manifest read and checked, sha256 verified) once, here; plan and runs use it.
    opened = [open_or_default(path, backend=backend, context=context) for path in artifacts or [None]]
    with phases_then_fractions("profile") as (on_phase, on_progress):
        report = profiling.run(options, context, opened, on_phase=on_phase, on_progress=on_progress)
    if not report.results:
        notes(report.notes)
        err.print(styled("[bold red]error:[/] nothing was measured (no artifact supports the requested batch sizes)"))
        raise typer.Exit(2)
    written = profiling.plot_results(report.results, plot) if plot is not None else None
    if json_output:
        data = report.to_dict()
        data["plot"] = None if written is None else str(written)
        emit_json(data)
    else:
        print_report(report)
        if written is not None:
            out.print(styled("[green]wrote[/] {}", written))
    notes(report.notes)
    for warning in report.warnings:
        warn(warning)
