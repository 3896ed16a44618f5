"""The post-export check: ONNX checker, pruning structure, and ONNX Runtime vs PyTorch.

Kept tokens are checked even when the artifact has no token outputs: the check runs an
in-memory copy of the graph that also outputs each TopK's indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch

from ..helpers.batching import RunOutput, run_batched
from ..helpers.compare import Comparison, Tolerance, boundary_margins, compare
from ..helpers.defaults import EXPORT_CHECK_SAMPLES
from ..helpers.errors import CheckFailed
from ..models import kept_patch_ids
from ..models.checkpoint import LoadedModel
from .graph import StageGraph, check_pruning_structure, split_blocks_of, with_topk_outputs

CHECK_SEED = 20211206  # fixed inputs: the same numbers on every run and machine
CHECK_BATCH = 2


@dataclass
class CheckReport:
    checker: str = "not run"
    stages: list[StageGraph] = field(default_factory=list)
    structure_problems: list[str] = field(default_factory=list)
    comparison: Comparison | None = None
    provider: str | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "onnx_checker": self.checker,
            "stages": [s.to_dict() for s in self.stages],
            "structure_problems": self.structure_problems,
            "onnxruntime_provider": self.provider,
            "parity": None if self.comparison is None else self.comparison.to_dict(),
            "failures": self.failures,
        }


def seeded_images(count: int, loaded_or_shape: Any, seed: int = CHECK_SEED) -> torch.Tensor:
    """Deterministic normalised-image-like inputs (standard normal, like a normalised photo)."""
    if isinstance(loaded_or_shape, LoadedModel):
        v = loaded_or_shape.variant
        shape = (v.in_chans, v.img_size, v.img_size)
    else:
        shape = tuple(loaded_or_shape)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, *shape, generator=generator)


def reference_outputs(loaded: LoadedModel, images: torch.Tensor, batch: int) -> dict[str, Any]:
    """PyTorch logits, kept patch ids per stage and keep-boundary margins, batch by batch."""
    stages = len(loaded.keep_counts)

    def run(chunk: np.ndarray) -> RunOutput:
        with torch.no_grad():
            out, decisions = loaded.model.forward_with_decisions(torch.from_numpy(chunk))
        kept = [ids.numpy() for ids in kept_patch_ids(decisions.keep_indices, loaded.variant.num_patches,
                                                      compose=not loaded.variant.splits_tokens)]
        return RunOutput(out.numpy(), kept, {f"scores{s}": score.numpy() for s, score in enumerate(decisions.scores)})

    gathered = run_batched(run, images.numpy(), batch)
    return {
        "logits": gathered.logits,
        "kept": gathered.kept or [],
        "margins": boundary_margins([gathered.extra(f"scores{s}") for s in range(stages)], loaded.keep_counts),
    }


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
    ref = reference_outputs(loaded, images, run_batch)
    test_logits, test_kept, provider = _run_onnxruntime(with_topk_outputs(model), images, run_batch, loaded)
    report.provider = provider
    report.comparison = compare(
        ref["logits"], test_logits, Tolerance.for_precision("fp32"),
        ref_kept=ref["kept"] if test_kept else None,
        test_kept=test_kept or None,
        ref_margins=ref["margins"],
    )
    report.failures.extend(report.comparison.failures)
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


def cpu_session(model: onnx.ModelProto, what: str = "the exported graph"):
    """An ONNX Runtime CPU session on a graph dvit made; CheckFailed (exit 1) when ORT cannot load it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise CheckFailed(f"ONNX Runtime cannot load {what}: {str(exc).splitlines()[0][:200]}") from None


def _run_onnxruntime(model: onnx.ModelProto, images: torch.Tensor, batch: int, loaded: LoadedModel):
    session = cpu_session(model)
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    logits_name = output_names[0]
    stages = [s.indices_output for s in check_pruning_structure(model, loaded.keep_counts)[0]]
    def run(chunk: np.ndarray) -> RunOutput:
        outs = dict(zip(output_names, session.run(output_names, {input_name: chunk})))
        kept = kept_patch_ids([outs[name] for name in stages], loaded.variant.num_patches,
                              compose=not loaded.variant.splits_tokens) if stages else []
        return RunOutput(outs[logits_name], kept)

    gathered = run_batched(run, images.numpy(), batch)
    return gathered.logits, gathered.kept or [], session.get_providers()[0]


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

