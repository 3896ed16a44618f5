"""Accuracy on a labelled image folder, per backend, and agreement with the PyTorch reference.

``run(EvalOptions(data=...), context, artifact)``: every batch is preprocessed once and run through every
backend, so the backends see identical inputs; agreement (top-1/top-5, kept-token sets) comes from
``compare.compare``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..artifact.store import Artifact
from ..helpers.batching import Gathered, pad_batch
from ..helpers.compare import Tolerance, compare
from ..helpers.errors import BadInput
from ..runtime import default_backend, runner_for_artifact
from .data import LabelledImages, data_config_of, read_dataset
from .predict import DEFAULT_BATCH, num_classes_of

if TYPE_CHECKING:
    from ..artifact.context import RunContext
    from ..runtime.base import Runner

REFERENCE = "torch"
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class EvalOptions:
    """What ``dvit eval`` is asked: the labelled folder (``data``, with ``labels_file`` for a flat one), the
    backends (``name:precision`` picks a precision; none: the artifact's default), ``reference``: also PyTorch
    and each backend's agreement with it; ``min_agreement``: the top-1 agreement a backend must reach."""

    data: Path = Path(".")
    backends: tuple[str, ...] = ()
    labels_file: Path | None = None
    limit: int | None = None
    batch: int = DEFAULT_BATCH
    device: str = "cpu"
    reference: bool = True
    min_agreement: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "backends", tuple(self.backends))
        if self.min_agreement is not None:
            if not self.reference:
                raise BadInput("--min-agreement compares with the PyTorch reference; it cannot be used with "
                               "--no-reference")
            if not 0.0 <= self.min_agreement <= 1.0:
                raise BadInput(f"--min-agreement is a fraction between 0 and 1, got {self.min_agreement}")


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
    min_agreement: float | None = None

    @property
    def failed(self) -> list[BackendScore]:
        """The backends whose top-1 agreement with PyTorch is below ``min_agreement``."""
        if self.min_agreement is None:
            return []
        return [s for s in self.scores if s.agreement and s.agreement["top1"] < self.min_agreement]

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "dataset": self.dataset, "results": [asdict(s) for s in self.scores]}


@dataclass
class _Outputs:
    """What every backend gave on the whole folder: logits and kept tokens, seconds spent, the labels."""

    gathered: dict[str, Gathered]
    seconds: dict[str, float]
    labels: np.ndarray
    described: dict[str, dict[str, Any]]
    notes: dict[str, list[str]]


def _topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def run(options: EvalOptions, context: "RunContext", artifact: Artifact, *,
        on_start: Callable[[int], None] | None = None,
        on_progress: Callable[[int], None] | None = None) -> EvalResult:
    """Top-1/top-5 of each backend on ``options.data``; with ``reference`` also PyTorch and agreement with it."""
    if options.batch < 1:
        raise BadInput(f"--batch must be ≥ 1, got {options.batch}")
    if options.limit is not None and options.limit < 1:
        raise BadInput(f"--limit must be ≥ 1, got {options.limit}")
    artifact = artifact.in_context(context)  # the torch reference reads the run's moved checkpoint
    dataset: LabelledImages = read_dataset(options.data, labels_file=options.labels_file,
                                           num_classes=num_classes_of(artifact.model)).limit(options.limit)
    names = list(dict.fromkeys(options.backends or [default_backend(artifact.path)]))
    if options.reference and REFERENCE not in names:
        names.insert(0, REFERENCE)
    outputs = _run_all(artifact, dataset, names, options, on_start, on_progress)
    scores = [_score(name, outputs, options.reference) for name in names]
    return EvalResult(str(artifact.path), dataset.describe(), scores, options.min_agreement)


def _open(opened: Artifact, name: str, device: str) -> "Runner":
    backend, _, spec_precision = name.partition(":")  # "openvino:bf16": one backend, one precision
    runner_options = {"topk_outputs": True} if backend in ("onnxruntime", "openvino") else {}
    # The reference is PyTorch fp32 whatever the artifact's precision; the rest run the artifact's own.
    precision = "fp32" if name == REFERENCE else (spec_precision or None)
    return runner_for_artifact(opened, backend, device=device, precision=precision, **runner_options)


def _run_all(opened: Artifact, dataset: LabelledImages, names: list[str], options: EvalOptions,
             on_start: Callable[[int], None] | None, on_progress: Callable[[int], None] | None) -> _Outputs:
    """Each batch preprocessed once and run through every backend, timed per backend."""
    fixed = opened.model.batch
    step = fixed if fixed else options.batch
    gathered = {n: Gathered() for n in names}  # images stream in batch by batch: one per runner
    seconds = dict.fromkeys(names, 0.0)
    labels: list[np.ndarray] = []
    with contextlib.ExitStack() as stack:
        runners = {name: stack.enter_context(_open(opened, name, options.device)) for name in names}
        if on_start:
            on_start(len(dataset))
        for images, batch_labels, _ in dataset.batches(step, data_config_of(opened.model)):
            images, real = pad_batch(images, step if fixed else None)
            labels.append(batch_labels)
            for name, runner in runners.items():
                start = time.perf_counter()
                out = runner.run(images)
                seconds[name] += time.perf_counter() - start
                gathered[name].add(out, real)
            if on_progress:
                on_progress(real)
        described = {n: r.describe() for n, r in runners.items()}
        runner_notes = {n: r.report_notes() for n, r in runners.items()}
    return _Outputs(gathered, seconds, np.concatenate(labels), described, runner_notes)


def _score(name: str, outputs: _Outputs, reference: bool) -> BackendScore:
    y, logits, seconds = outputs.labels, outputs.gathered[name].logits, outputs.seconds[name]
    count = len(y)
    score = BackendScore(
        backend=name,
        executes=str(outputs.described[name].get("executes") or name),
        images=count,
        top1=_topk_hits(logits, y, 1) / count,
        top5=_topk_hits(logits, y, 5) / count,
        seconds=seconds,
        images_per_second=count / seconds if seconds > 0 else 0.0,
        reference=reference and name == REFERENCE,
        notes=outputs.notes[name],
    )
    if reference and name != REFERENCE:
        precision = str(outputs.described[name].get("precision") or "fp32")
        tol = Tolerance.for_precision(precision if precision in PRECISIONS else "fp32")
        ref, test = outputs.gathered[REFERENCE], outputs.gathered[name]
        cmp = compare(ref.logits, test.logits, tol, ref_kept=ref.kept, test_kept=test.kept)
        score.agreement = {
            "top1": cmp.logits.top1_agreement,
            "top5": cmp.logits.top5_agreement,
            "max_abs_logit_diff": cmp.logits.max_abs,
            "kept_tokens": [{"stage": s.stage, "keep_count": s.keep_count, "mean_jaccard": s.mean_jaccard,
                             "exact_match": s.exact_match} for s in cmp.stages] or None,
        }
    return score
