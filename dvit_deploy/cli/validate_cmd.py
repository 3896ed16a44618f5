"""`dvit validate`: every backend against the PyTorch fp32 reference, logits and kept tokens."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..helpers.defaults import VALIDATE_BATCH as DEFAULT_BATCH, VALIDATE_SAMPLES as DEFAULT_SAMPLES
from ..helpers.lazy import lazy_import
from .common import command_context, open_or_default
from .failures import handle_errors
from .options import CHECKPOINT_OPTION, JSON_OPTION, NO_VERIFY_OPTION, finite
from .output import emit_json, err, notes, styled, warn
from .validate_view import print_report
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
    checkpoint: Optional[Path] = CHECKPOINT_OPTION,
    keep_ratio: Optional[float] = typer.Option(None, "--keep-ratio", "-r", callback=finite, help="Run a --dynamic-keep "
                                               "artifact at this ρ (a --keep-ladder engine: one of its rungs); the "
                                               "PyTorch reference is rebuilt at it \\[default: the export's ρ]."),
    no_verify: bool = NO_VERIFY_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Check every backend against PyTorch fp32: logits, top-1/top-5, per-stage kept tokens."""
    only = backend[0] if backend and len(backend) == 1 else None
    options = validate_lib.ValidateOptions(backends=tuple(backend) if backend else None, samples=samples, batch=batch,
                                           images_dir=images, device=device, precision=precision, keep_ratio=keep_ratio)
    context = command_context(no_verify=no_verify, checkpoint=checkpoint)  # --checkpoint: the reference's new place
    # Each artifact opened (manifest read and checked, sha256 verified) once, here; the job runs on it.
    opened = [open_or_default(path, backend=only, context=context) for path in artifacts or [None]]
    with phases("validate") as on_phase:
        report = validate_lib.run(options, context, opened, on_phase=on_phase)
    for result in report.results:
        if result.fallback:
            err.print(styled("[bold yellow]FALLBACK:[/] {}: {}", Path(result.artifact).name, result.fallback))
    if json_output:
        emit_json(report.to_dict())
    else:
        print_report(report)
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
