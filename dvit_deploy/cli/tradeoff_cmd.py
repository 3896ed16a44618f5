"""`dvit tradeoff`: accuracy (or agreement) and throughput per keep ratio ρ, the Pareto front, a keep range."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..helpers.defaults import PREDICT_BATCH, PROFILE_BATCH, PROFILE_DEVICE, PROFILE_DURATION_S, PROFILE_WARMUP_S
from ..helpers.errors import BadInput
from ..helpers.lazy import lazy_import
from .common import command_context, open_or_default
from .failures import Terminated, handle_errors
from .options import JSON_OPTION, NO_VERIFY_OPTION, finite, parse_floats
from .output import emit_json, notes, out, print_wide, styled
from .progress import phases_then_fractions

tradeoffs, profiling = lazy_import("dvit_deploy.jobs.tradeoff"), lazy_import("dvit_deploy.jobs.profile")


@handle_errors
def tradeoff(
    artifacts: Optional[List[Path]] = typer.Argument(
        None, help="A --dynamic-keep artifact, or fixed exports of one checkpoint (and its dense twin) "
        "\\[default: the default artifact, see README; fixed exports of the same model beside it join].",
        show_default=False),
    keep_ratios: Optional[str] = typer.Option(None, "--keep-ratios", help="ρ grid, e.g. 0.5,0.7,0.9 \\[default: "
                                              "0.5…0.9 step 0.1 (--dynamic-keep), or every fixed export's ρ]."),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime, openvino, torch or tensorrt "
                                          "\\[default: from the artifact's suffix]."),
    device: str = typer.Option(PROFILE_DEVICE, "--device", help="cpu or cuda[:N]."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32/fp16/bf16/int8 \\[default: the artifact's]."),
    batch: int = typer.Option(PROFILE_BATCH, "--batch", "-b", help="Images per timed call (throughput)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder: class sub-folders or a labels file "
                                          "give top-1/top-5 (as 'dvit eval'); a flat folder, agreement only "
                                          "\\[default: the seeded inputs 'dvit validate' uses]."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels file for a flat --images folder."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Score only the first N images."),
    samples: int = typer.Option(64, "--samples", help="Seeded inputs scored when no --images are given."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Agreement with the dense twin or the top ρ: "
                                            "dense|top \\[default: dense when a twin is there]."),
    max_drop: float = typer.Option(0.5, "--max-drop", callback=finite, help="Recommended keep range: the drop vs the "
                                   "top ρ allowed, in points of accuracy (agreement)."),
    dense_baseline: bool = typer.Option(False, "--dense-baseline", help="Export a missing dense twin beside it."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="No dense point."),
    warmup: float = typer.Option(PROFILE_WARMUP_S, "--warmup", callback=finite, help="Warm-up per ρ (s)."),
    duration: float = typer.Option(PROFILE_DURATION_S, "--duration", callback=finite, help="Timed per ρ (s)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Timed calls per ρ instead of --duration."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads (CPU)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write accuracy/agreement vs img/s to this PNG."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the JSON here after every ρ "
                                          "(an interrupted run keeps the finished rows)."),
    no_verify: bool = NO_VERIFY_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Accuracy (or agreement) against throughput for each keep ratio ρ, with FLOPs and kept tokens."""
    if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise BadInput(f"--plot draws a picture: give a path ending in .png, .svg or .pdf, not {plot.name}")
    ratios = parse_floats(keep_ratios, "--keep-ratios")
    settings = profiling.ProfileSettings(warmup_s=warmup, duration_s=duration, iterations=iterations,
                                         intra_op_threads=threads, rounds=1)
    options = tradeoffs.TradeoffOptions(
        keep_ratios=None if ratios is None else tuple(ratios), backend=backend, device=device, precision=precision,
        batch=batch, eval_batch=min(batch, PREDICT_BATCH), images=images, labels_file=labels, limit=limit,
        samples=samples, reference=reference, max_drop=max_drop, dense_baseline=dense_baseline,
        with_dense=not no_baseline, settings=settings)
    options.validate()
    options = replace(options, output=None if output is None else tradeoffs.report_path(output))
    latest: list[Any] = []  # the report as of the last finished row
    context = command_context(no_verify=no_verify)
    opened = [open_or_default(path, backend=backend, context=context) for path in artifacts or [None]]
    try:
        with phases_then_fractions("tradeoff") as (on_phase, on_progress):
            report = tradeoffs.run(options, context, opened, on_phase=on_phase, on_progress=on_progress,
                                   on_row=latest.append)
    except (KeyboardInterrupt, Terminated):  # the finished rows, marked incomplete; then exit 130/143
        if json_output and latest:
            emit_json(latest[-1].to_dict())
        raise
    written = tradeoffs.plot_tradeoff(report, plot) if plot is not None else None
    if json_output:
        emit_json({**report.to_dict(), "plot": None if written is None else str(written)})
    else:
        _print(report)
        for path in (written, options.output):
            if path is not None:
                out.print(styled("[green]wrote[/] {}", path))
    notes(report.notes)


def _print(report: Any) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def _pct(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.2f}"

    labelled = report.metric == "top1"
    title = (f"tradeoff on {report.backend} {report.device} ({report.mode}); {report.inputs}; agreement = top-1 "
             f"agreement with {report.reference_label}; ★ Pareto-optimal")
    grid = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    columns = ["ρ", "kept tokens/stage", "GMACs", "img/s", "ms/batch"] + \
        (["top-1 %", "top-5 %"] if labelled else []) + ["agreement %", "drop pt", ""]
    for col in columns:
        grid.add_column(col, justify="left" if col.startswith("kept") else "right", no_wrap=True)
    rec = report.recommendation
    drops = rec.drops if rec is not None else {}
    for r in sorted(report.rows, key=lambda r: (r.role == "dense", -(r.keep_ratio or 0))):
        cells = [r.label, "/".join(map(str, r.tokens_per_stage)), f"{r.gmacs:.3f}", f"{r.throughput_ips:.1f}",
                 f"{r.latency_ms_mean:.2f}"] + ([_pct(r.top1), _pct(r.top5)] if labelled else []) + \
            [_pct(r.agreement), "—" if r.label not in drops else f"{drops[r.label]:.2f}", "★" if r.pareto else ""]
        grid.add_row(*(Text(c) for c in cells))
    print_wide(grid, 110)
    if rec is not None and rec.low is not None:
        out.print(styled("[bold]recommended keep range:[/] ρ {}–{} ({} drop vs the top ρ ≤ {} points)", f"{rec.low:g}",
                         f"{rec.high:g}", "top-1" if labelled else "agreement", f"{rec.max_drop:g}"))
