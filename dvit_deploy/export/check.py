"""The post-export check: ONNX checker, pruning structure, and ONNX Runtime vs PyTorch.

Kept tokens are checked even when the artifact has no token outputs: the check runs an
in-memory copy of the graph that also outputs each TopK's indices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch

from ..helpers.batching import RunOutput
from ..helpers.comparator import Comparator, Outputs, RunBatch, gather, margin_key
from ..helpers.compare import Tolerance, boundary_margins
from ..helpers.defaults import EXPORT_CHECK_SAMPLES
from ..helpers.ort_session import cpu_session
from ..models import kept_patch_ids
from ..models.checkpoint import LoadedModel
from .graph import check_pruning_structure, split_blocks_of, with_topk_outputs
from .report import CheckReport  # noqa: F401 - the report of this check, importable from here too

CHECK_SEED = 20211206  # fixed inputs: the same numbers on every run and machine
CHECK_BATCH = 2


def seeded_images(count: int, loaded_or_shape: Any, seed: int = CHECK_SEED) -> torch.Tensor:
    """Deterministic normalised-image-like inputs (standard normal, like a normalised photo)."""
    if isinstance(loaded_or_shape, LoadedModel):
        v = loaded_or_shape.variant
        shape = (v.in_chans, v.img_size, v.img_size)
    else:
        shape = tuple(loaded_or_shape)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, *shape, generator=generator)


def reference_run(loaded: LoadedModel) -> RunBatch:
    """One PyTorch batch: logits, kept patch ids per stage and keep-boundary margins (``margin_key``)."""

    def run(chunk: np.ndarray) -> RunOutput:
        with torch.no_grad():
            out, decisions = loaded.model.forward_with_decisions(torch.from_numpy(np.ascontiguousarray(chunk)))
        kept = [ids.numpy() for ids in kept_patch_ids(decisions.keep_indices, loaded.variant.num_patches,
                                                      compose=not loaded.variant.splits_tokens)]
        margins = boundary_margins([score.numpy() for score in decisions.scores], loaded.keep_counts)
        return RunOutput(out.numpy(), kept, {margin_key(s): m for s, m in enumerate(margins)})

    return run


def reference_outputs(loaded: LoadedModel, images: torch.Tensor | np.ndarray, batch: int) -> Outputs:
    """PyTorch logits, kept patch ids per stage and keep-boundary margins, batch by batch."""
    images = images.numpy() if isinstance(images, torch.Tensor) else images
    return gather(reference_run(loaded), images, batch)


def check_export(
    path: Path,
    loaded: LoadedModel,
    *,
    batch: int | None,
    samples: int = EXPORT_CHECK_SAMPLES,
    on_phase: Callable[[str], None] | None = None,
) -> CheckReport:
    phase = on_phase or (lambda name: None)
    report = CheckReport()
    model = check_file_and_structure(path, report, loaded.keep_counts, on_phase=phase,
                                     split_blocks=None if loaded.dense else split_blocks_of(loaded.variant))

    phase("onnxruntime parity")
    run_batch = batch or CHECK_BATCH
    images = check_images(loaded, samples, run_batch)
    probe = with_topk_outputs(model)
    session = cpu_session(probe)
    report.provider = session.get_providers()[0]
    test = session_run(session, [s.indices_output for s in check_pruning_structure(probe, loaded.keep_counts)[0]],
                       loaded.variant.num_patches, compose=not loaded.variant.splits_tokens)
    tolerance = Tolerance.for_precision("fp32")
    report.record(Comparator(tolerance).run(reference_run(loaded), test, images.numpy(), batch=run_batch))
    return report


def check_file_and_structure(path: Path, report: CheckReport, keep_counts, *, dynamic_keep: bool = False,
                             on_phase: Callable[[str], None] | None = None,
                             split_blocks: tuple[int, ...] | None = None) -> onnx.ModelProto:
    """The first two checks of every export: onnx.checker (full) and the pruning structure."""
    phase = on_phase or (lambda name: None)
    phase("onnx.checker")
    try:
        onnx.checker.check_model(str(path), full_check=True)
        report.checker = "passed"
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        report.checker = f"failed: {str(exc).splitlines()[0]}"
        report.failures.append(f"onnx.checker: {str(exc).splitlines()[0]}")

    phase("graph structure")
    model = onnx.load(str(path))
    report.stages, report.structure_problems = check_pruning_structure(model, keep_counts, dynamic_keep=dynamic_keep,
                                                                       split_blocks=split_blocks)
    report.failures.extend(report.structure_problems)
    return model


def check_images(loaded: LoadedModel, samples: int, batch: int) -> torch.Tensor:
    """At least ``samples`` seeded images, a whole number of batches."""
    count = max(samples, batch)
    return seeded_images(count - count % batch, loaded)


def session_run(session: Any, stage_outputs: list[str], num_patches: int, *, compose: bool = True,
                extra_inputs: dict[str, np.ndarray] | None = None) -> RunBatch:
    """One batch through an ORT session on a graph dvit made: logits (first output) and, from the
    per-stage TopK index outputs, kept original patch ids (none when ``stage_outputs`` is empty)."""
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]

    def run(chunk: np.ndarray) -> RunOutput:
        outs = dict(zip(names, session.run(names, {input_name: chunk, **(extra_inputs or {})})))
        kept = kept_patch_ids([outs[n].astype(np.int64) for n in stage_outputs], num_patches,
                              compose=compose) if stage_outputs else None
        return RunOutput(outs[names[0]], kept, {n: outs[n] for n in names[1:] if n not in stage_outputs})

    return run


def summary_rows(report: CheckReport) -> list[tuple[str, str]]:
    """Human-readable (check, result) lines for tables."""
    rows = [("onnx.checker (full)", report.checker)]
    if report.stages:
        ks = ", ".join(str(s.k) if s.k is not None else "computed" for s in report.stages)
        gathers = ", ".join(str(len(s.gathers)) for s in report.stages)
        rows.append(("TopK per stage (K)", f"{len(report.stages)} ({ks})"))
        rows.append(("Gather per stage", gathers))
        if any(s.split for s in report.stages):
            rows.append(("Scatter per position (Ada blocks)", ", ".join(str(len(s.scatters)) for s in report.stages)))
    else:
        rows.append(("TopK / Gather", "none (dense graph)"))
    for problem in report.structure_problems:
        rows.append(("structure", problem))
    cmp = report.comparison
    if cmp is not None:
        rows.append((f"ORT ({report.provider}) vs PyTorch, {cmp.samples} samples",
                     f"max |Δlogit| {cmp.logits.max_abs:.2e}, mean {cmp.logits.mean_abs:.2e}, "
                     f"top-1 agree {cmp.logits.top1_agreement:.0%}"))
        for st in cmp.stages:
            rows.append((f"kept tokens stage {st.stage} (K={st.keep_count})",
                         f"{st.exact_match:.0%} identical sets, mean Jaccard {st.mean_jaccard:.4f}"
                         + (f", {st.near_tie_flips} near-tie flip(s)" if st.near_tie_flips else "")))
    return rows

