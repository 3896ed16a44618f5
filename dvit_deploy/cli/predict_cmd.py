"""`dvit predict`: top-5 classes of image files on any backend, and the kept-token picture."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..jobs.data import expand_image_args
from ..helpers.defaults import PREDICT_BATCH as DEFAULT_BATCH
from ..helpers.lazy import lazy_import
from .common import command_context, open_or_default
from .failures import handle_errors
from .options import CHECKPOINT_OPTION, FORCE_OPTION, JSON_OPTION, NO_VERIFY_OPTION
from .output import emit_json, notes, out, styled, table
from .progress import phases

predict_lib = lazy_import("dvit_deploy.jobs.predict")


@handle_errors
def predict(
    images: List[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...) or folders of images.", show_default=False),
    artifact: Optional[Path] = typer.Option(None, "--artifact", "-a",
                                            help="ONNX model or engine \\[default: the default artifact, see README]."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b",
                                          help="torch, onnxruntime, openvino or tensorrt; name:precision picks a precision (openvino:bf16) \\[default: from the artifact's suffix]."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    top: int = typer.Option(5, "--top", "-k", help="How many classes to show per image."),
    viz: Optional[Path] = typer.Option(None, "--viz", help="Save a PNG of the patches each stage kept (needs token outputs)."),
    batch: int = typer.Option(DEFAULT_BATCH, "--batch", help="Images per inference call."),
    force: bool = FORCE_OPTION,
    checkpoint: Optional[Path] = CHECKPOINT_OPTION,
    no_verify: bool = NO_VERIFY_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Classify images (model's own preprocessing) and optionally draw the kept patches per stage."""
    paths = expand_image_args(images)
    options = predict_lib.PredictOptions(images=tuple(paths), backend=backend, top_k=top, device=device, batch=batch,
                                         viz=None if viz is None else predict_lib.viz_path(viz, force))
    context = command_context(no_verify=no_verify, checkpoint=checkpoint)
    opened = open_or_default(artifact, backend=backend, context=context)  # read, checked and verified once; the job runs on it
    with phases("predict") as on_phase:
        result = predict_lib.run(options, context, opened, on_phase=on_phase)
    notes(result.notes)
    if json_output:
        emit_json(result.to_dict())
        return
    executes = result.runner.get("executes") or result.backend
    for p in result.predictions:
        kept = f", kept tokens {'/'.join(map(str, p.kept_counts))}" if p.kept_counts else ""
        out.print(table(f"{p.image} ({executes}{kept})", ["#", "class", "index", "probability"],
                        [[r + 1, c.name, c.index, f"{c.probability:.4f}"] for r, c in enumerate(p.top)]))
    if result.viz is not None:
        out.print(styled("[green]wrote[/] {}", result.viz))
    if result.model.random_weights:
        out.print(styled("[yellow]note:[/] the model has random weights (exported without a checkpoint): "
                         "these classes mean nothing"))
