"""Accuracy on a labelled image folder, per backend, and agreement with the PyTorch reference.

Every batch is preprocessed once and run through every backend, so the backends see identical
inputs; agreement (top-1/top-5, kept-token sets) comes from ``compare.compare``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..helpers.compare import Tolerance, compare
from .data import LabelledImages, data_config_of, read_dataset
from ..helpers.errors import BadInput
from .predict import DEFAULT_BATCH, num_classes_of, resolve_artifact
from ..runtime import default_backend, runner_for_artifact
from ..helpers.batching import Gathered, pad_batch
from ..artifact.store import Artifact

REFERENCE = "torch"


@dataclass
class BackendScore:
    backend: str
    executes: str
    images: int
    top1: float
    top5: float
    seconds: float
    images_per_second: float
    reference: bool = False
    agreement: dict[str, Any] | None = None  # vs PyTorch: top1/top5 agreement, kept-token Jaccard per stage
    notes: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    artifact: str
    dataset: dict[str, Any]
    scores: list[BackendScore]

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "dataset": self.dataset, "results": [asdict(s) for s in self.scores]}


def _topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def evaluate(
    data: Path,
    artifact: Path | Artifact | None = None,
    backends: Sequence[str] | None = None,
    *,
    labels_file: Path | None = None,
    limit: int | None = None,
    batch: int = DEFAULT_BATCH,
    device: str = "cpu",
    reference: bool = True,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Top-1/top-5 of each backend on ``data``; with ``reference`` also PyTorch and agreement with it."""
    if batch < 1:
        raise BadInput(f"--batch must be ≥ 1, got {batch}")
    if limit is not None and limit < 1:
        raise BadInput(f"--limit must be ≥ 1, got {limit}")
    opened = resolve_artifact(artifact, backends[0] if backends else None)  # read and checked once
    path = opened.path
    dataset: LabelledImages = read_dataset(data, labels_file=labels_file,
                                           num_classes=num_classes_of(opened.model)).limit(limit)
    names = list(dict.fromkeys(backends or [default_backend(path)]))
    if reference and REFERENCE not in names:
        names.insert(0, REFERENCE)
    fixed = opened.model.batch
    step = fixed if fixed else batch
    data_config = data_config_of(opened.model)

    gathered = {n: Gathered() for n in names}  # images stream in batch by batch: one per runner
    seconds = dict.fromkeys(names, 0.0)
    labels: list[np.ndarray] = []
    with contextlib.ExitStack() as stack:
        runners = {}
        for name in names:
            backend_name, _, spec_precision = name.partition(":")  # "openvino:bf16": one backend, one precision
            options = {"topk_outputs": True} if backend_name in ("onnxruntime", "openvino") else {}
            # The reference is PyTorch fp32 whatever the artifact's precision; the rest run the artifact's own.
            precision = "fp32" if name == REFERENCE else (spec_precision or None)
            runners[name] = stack.enter_context(runner_for_artifact(opened, backend_name, device=device,
                                                                    precision=precision, **options))
        if on_start:
            on_start(len(dataset))
        for images, batch_labels, _ in dataset.batches(step, data_config):
            images, real = pad_batch(images, step if fixed else None)
            labels.append(batch_labels)
            for name, runner in runners.items():
                start = time.perf_counter()
                out = runner.run(images)
                seconds[name] += time.perf_counter() - start
                gathered[name].add(out, real)
            if on_progress:
                on_progress(real)
        described = {n: r.description() for n, r in runners.items()}
        runner_notes = {n: r.report_notes() for n, r in runners.items()}

    y = np.concatenate(labels)
    merged = {n: g.logits for n, g in gathered.items()}
    merged_kept = {n: g.kept for n, g in gathered.items()}
    scores = []
    for name in names:
        count = len(y)
        score = BackendScore(
            backend=name,
            executes=described[name].executes,
            images=count,
            top1=_topk_hits(merged[name], y, 1) / count,
            top5=_topk_hits(merged[name], y, 5) / count,
            seconds=seconds[name],
            images_per_second=count / seconds[name] if seconds[name] > 0 else 0.0,
            reference=reference and name == REFERENCE,
            notes=runner_notes[name],
        )
        if reference and name != REFERENCE:
            precision = described[name].precision
            tol = Tolerance.for_precision(precision if precision in ("fp32", "tf32", "fp16", "bf16", "int8") else "fp32")
            cmp = compare(merged[REFERENCE], merged[name], tol, ref_kept=merged_kept[REFERENCE],
                          test_kept=merged_kept[name])
            score.agreement = {
                "top1": cmp.logits.top1_agreement,
                "top5": cmp.logits.top5_agreement,
                "max_abs_logit_diff": cmp.logits.max_abs,
                "kept_tokens": [{"stage": s.stage, "keep_count": s.keep_count, "mean_jaccard": s.mean_jaccard,
                                 "exact_match": s.exact_match} for s in cmp.stages] or None,
            }
        scores.append(score)
    return EvalResult(str(path), dataset.describe(), scores)
