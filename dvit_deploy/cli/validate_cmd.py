"""`dvit validate`: every backend against the PyTorch fp32 reference, logits and kept tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from ..helpers.defaults import VALIDATE_BATCH as DEFAULT_BATCH, VALIDATE_SAMPLES as DEFAULT_SAMPLES
from ..helpers.lazy import lazy_import
from .common import command_context, open_or_default
from .failures import handle_errors
from .options import JSON_OPTION, NO_VERIFY_OPTION, finite
from .output import emit_json, err, notes, print_wide, styled, table, warn
from .progress import phases

validate_lib = lazy_import("dvit_deploy.jobs.validate")


@handle_errors
def validate(
    artifacts: Optional[List[Path]] = typer.Argument(
        None, help="Artifacts (.onnx, .engine) with their manifests \\[default: the default artifact, see README].",
        show_default=False),
    backend: Optional[List[str]] = typer.Option(
        None, "--backend", help="Backend to check (repeatable): onnxruntime, openvino, tensorrt, torch; "
        "name:precision runs one precision, e.g. openvino:bf16 "
        "\\[default: the one that runs each artifact]."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of real images (preprocessed with the "
                                          "model's timm data config) instead of seeded random inputs."),
    samples: int = typer.Option(DEFAULT_SAMPLES, "--samples", "-n", min=1,
                                 help="Number of inputs (with --images: at most; a folder with fewer is used whole, "
                                      "with a warning)."),
    batch: int = typer.Option(DEFAULT_BATCH, "--batch", "-b", min=1, help="Batch size for dynamic-batch artifacts."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N] for the backend under test."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32/fp16/bf16/int8 \\[default: the artifact's]."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Where the checkpoint the artifact was exported from is now, if it moved (the "
        "PyTorch reference / torch backend rebuild it; its sha256 must match the manifest's)."),
    keep_ratio: Optional[float] = typer.Option(None, "--keep-ratio", "-r", callback=finite, help="Run a --dynamic-keep "
                                               "artifact at this ρ (a --keep-ladder engine: one of its rungs); the "
                                               "PyTorch reference is rebuilt at it \\[default: the export's ρ]."),
    no_verify: bool = NO_VERIFY_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Check every backend against PyTorch fp32: logits, top-1/top-5, per-stage kept tokens."""
    only = backend[0] if backend and len(backend) == 1 else None
    context = command_context(no_verify=no_verify, checkpoint=checkpoint)  # --checkpoint: the reference's new place
    # Each artifact opened (manifest read and checked, sha256 verified) once, here; the job runs on it.
    opened = [open_or_default(path, backend=only, context=context) for path in artifacts or [None]]
    with phases("validate") as on_phase:
        report = validate_lib.validate(opened, backends=backend, samples=samples, batch=batch, images_dir=images,
                                       device=device, precision=precision, on_phase=on_phase,
                                       keep_ratio=keep_ratio)
    for result in report.results:
        if result.fallback:
            err.print(styled("[bold yellow]FALLBACK:[/] {}: {}", Path(result.artifact).name, result.fallback))
    if json_output:
        emit_json(report.to_dict())
    else:
        _print(report)
    notes(report.notes)
    for line in report.warnings:
        warn(line)
    if report.failed:
        err.print(styled("[bold red]check failed:[/] {} of {} backend check(s) outside tolerance",
                         len(report.failed), len(report.results)))
        raise typer.Exit(1)
    if report.skipped:
        for r in report.skipped:
            err.print(styled("[bold red]error:[/] {} on {} not checked: {}", Path(r.artifact).name, r.backend, r.reason))
        raise typer.Exit(2)


TABLE_WIDTH = 140


def _print(report: Any) -> None:
    rows = []
    for r in report.results:
        name = Path(r.artifact).name
        if r.comparison is None:
            rows.append([name, r.backend, "—", "—", "—", "—", "—", "—", styled("[yellow]skipped[/]: {}", r.reason)])
            continue
        lg = r.comparison.logits
        tokens = _token_summary(r)
        status = styled("[green]pass[/]") if r.passed else styled("[red]FAIL[/]: {}", "; ".join(r.comparison.failures))
        rows.append([name, f"{_short(r.executes)} {r.precision}", f"{lg.max_abs:.2e}", f"{lg.mean_abs:.2e}",
                     f"{lg.cosine_min:.6f}", _top1(r), f"{lg.top5_agreement:.0%}", tokens, status])
    grid = table(f"validate vs PyTorch fp32 — {report.samples} inputs, {report.inputs}",
                 ["artifact", "backend", "max |Δ|", "mean |Δ|", "cos min", "top-1", "top-5",
                  "kept tokens (Jaccard per stage)", "result"], rows)
    print_wide(grid, TABLE_WIDTH)


def _top1(result) -> str:
    """Raw top-1 agreement; for precisions judged by agreement also on the confidently classified inputs."""
    lg = result.comparison.logits
    text = f"{lg.top1_agreement:.0%}"
    if result.comparison.judged_by == "agreement" and lg.top1_agreement_confident is not None:
        text += f" (conf. {lg.top1_agreement_confident:.0%} of {lg.confident_samples})"
    return text


def _token_summary(result) -> str:
    if result.token_info == "dense model":
        return "dense (no pruning)"
    if not result.comparison.stages:
        return styled("[yellow]no token info[/]")
    parts = [f"S{s.stage}: {s.mean_jaccard:.4f}" + (f" ({s.flipped_samples} flip" + (
             f", {s.near_tie_flips} near-tie)" if s.near_tie_flips else ")") if s.flipped_samples else "")
             for s in result.comparison.stages]
    if result.comparison.judged_by == "agreement" and result.comparison.mean_jaccard is not None:
        parts.append(f"mean {result.comparison.mean_jaccard:.4f}")
    return ", ".join(parts)


def _short(executes: str | None) -> str:
    """'onnxruntime 1.31.1 CPUExecutionProvider' -> 'onnxruntime CPU'."""
    words = (executes or "").replace("ExecutionProvider", "").split()
    return " ".join(w for w in words if not w[:1].isdigit())
