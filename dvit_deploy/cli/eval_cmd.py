"""`dvit eval`: top-1/top-5 on an image folder per backend, and agreement with PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..helpers.errors import CheckFailed
from ..helpers.defaults import PREDICT_BATCH as DEFAULT_BATCH
from ..helpers.lazy import lazy_import
from .common import command_context, open_or_default
from .failures import handle_errors
from .options import CHECKPOINT_OPTION, JSON_OPTION, NO_VERIFY_OPTION, finite
from .output import emit_json, notes, out, table
from .progress import count_progress


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"

evaluate_lib = lazy_import("dvit_deploy.jobs.evaluate")


@handle_errors
def eval_images(
    data: Path = typer.Option(..., "--data", "-d",
                              help="Image folder: class sub-folders, or flat with a labels file (labels.txt/labels.csv)."),
    artifact: Optional[Path] = typer.Option(None, "--artifact", "-a", help="ONNX model or engine \\[default: the default artifact, see README]."),
    backend: Optional[List[str]] = typer.Option(None, "--backend", "-b",
                                                help="Backend to evaluate (onnxruntime, openvino, tensorrt, torch; name:precision, e.g. openvino:bf16); repeat for several \\[default: from the artifact]."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels file for a flat folder: 'filename label' lines or CSV."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Evaluate only the first N images."),
    batch: int = typer.Option(DEFAULT_BATCH, "--batch", help="Images per inference call."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    no_reference: bool = typer.Option(False, "--no-reference", help="Skip the PyTorch reference and agreement."),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement", callback=finite,
                                                  help="Fail (exit 1) when a backend's top-1 agreement with PyTorch is below this fraction."),
    checkpoint: Optional[Path] = CHECKPOINT_OPTION,
    no_verify: bool = NO_VERIFY_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Accuracy of each backend on a labelled folder, with top-1 and kept-token agreement with PyTorch."""
    options = evaluate_lib.EvalOptions(data=data, backends=tuple(backend or ()), labels_file=labels, limit=limit,
                                       batch=batch, device=device, reference=not no_reference,
                                       min_agreement=min_agreement)
    context = command_context(no_verify=no_verify, checkpoint=checkpoint)
    opened = open_or_default(artifact, backend=backend[0] if backend else None, context=context)  # read and verified once
    with count_progress("eval") as (on_start, on_advance):
        result = evaluate_lib.run(options, context, opened, on_start=on_start, on_progress=on_advance)
    for score in result.scores:
        notes([f"{score.backend}: {n}" for n in score.notes])
    if json_output:
        emit_json({"passed": result.passed, **result.to_dict()})
    else:
        ds = result.dataset
        rows = []
        for s in result.scores:
            agree = s.agreement or {}
            kept = agree.get("kept_tokens")
            kept_text = "/".join(f"{k['mean_jaccard']:.3f}" for k in kept) if kept else ("reference" if s.reference else "—")
            rows.append([s.backend + (" (reference)" if s.reference else ""), s.executes, _pct(s.top1), _pct(s.top5),
                         "reference" if s.reference else _pct(agree.get("top1")), kept_text,
                         f"{s.images_per_second:.1f}"])
        out.print(table(f"{result.artifact} on {ds['root']} ({ds['images']} images, {ds['layout']}; labels: {ds['label_mapping']})",
                        ["backend", "executes", "top-1", "top-5", "top-1 agreement", "kept-token Jaccard/stage", "img/s"],
                        rows))
    if result.failed:
        worst = min(result.failed, key=lambda s: s.agreement["top1"])
        raise CheckFailed(f"{worst.backend} agrees with PyTorch on {_pct(worst.agreement['top1'])} of top-1 predictions, "
                          f"below --min-agreement {_pct(min_agreement)}")
