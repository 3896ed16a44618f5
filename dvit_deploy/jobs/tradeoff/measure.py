"""Measure the plan's points one at a time: score the inputs (top-1/top-5 with labels, top-1 agreement with
the reference always), then time one batch the way ``dvit profile`` does, then hand the row on.

Each finished row goes to ``on_row(report)`` at once (and to ``options.output``), so an interrupted run keeps
what it finished. ``run(options, context, artifacts)`` is the job: ``plan_tradeoff``, then ``run_tradeoff``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from ...artifact.manifest import ModelRecord
from ...artifact.store import Artifact
from ...helpers.batching import pad_batch
from ...helpers.errors import BadInput
from ..flops import macs_for_model
from ..profile import latency_stats, machine_info, measure, seeded_batch
from .plan import Point, TradeoffOptions, TradeoffPlan, plan_tradeoff
from .result import TradeoffReport, TradeoffRow, write_report

if TYPE_CHECKING:
    from ...artifact.context import RunContext

ProgressCallback = Callable[[str, float], None]  # (what, fraction done 0..1)


@dataclass
class ScoredInputs:
    """What every point is scored on: a labelled folder (eval's loader), a flat one, or validate's seeded inputs."""

    description: str
    labelled: bool
    count: int
    _batches: Callable[[int], Iterator[tuple[np.ndarray, np.ndarray | None]]]

    def batches(self, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        return self._batches(batch)


def _labelled(folder: Path, labels_file: Path | None) -> bool:
    from ..data import LABEL_FILE_NAMES

    return labels_file is not None or any((folder / n).is_file() for n in LABEL_FILE_NAMES) or \
        any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())


def scored_inputs(model: ModelRecord, options: TradeoffOptions) -> ScoredInputs:
    from ..data import data_config_of, list_images, read_dataset
    from ..predict import num_classes_of
    from ..validate import VALIDATE_SEED, load_inputs

    folder = options.images
    if folder is None:
        source = load_inputs(model, options.samples, None)
        return ScoredInputs(f"{source.count} seeded random inputs (seed {VALIDATE_SEED}, the inputs 'dvit validate' "
                            "uses): top-1 agreement only, no accuracy", False, source.count,
                            lambda b: ((x, None) for x in source.batches(b)))
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise BadInput(f"--images {folder} is not a folder" if folder.exists() else f"--images folder {folder} not found")
    if _labelled(folder, options.labels_file):
        dataset = read_dataset(folder, labels_file=options.labels_file,
                               num_classes=num_classes_of(model)).limit(options.limit)
        if not len(dataset):
            raise BadInput(f"no images in {folder}")
        config = data_config_of(model)
        d = dataset.describe()
        return ScoredInputs(f"{d['images']} labelled image(s) from {folder} ({d['layout']}; labels: {d['label_mapping']})",
                            True, len(dataset), lambda b: ((x, y) for x, y, _ in dataset.batches(b, config)))
    found = len(list_images(folder, recursive=True))
    if not found:
        raise BadInput(f"no images in {folder}")
    source = load_inputs(model, min(found, options.limit or found), folder)
    return ScoredInputs(f"{source.description}, no labels: top-1 agreement only", False, source.count,
                        lambda b: ((x, None) for x in source.batches(b)))


def _topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def _open(point: Point, backend: str, options: TradeoffOptions) -> Any:
    from ...runtime import runner_for_artifact
    from ..profile import ProfileOptions

    opts = ProfileOptions(backend=backend, settings=options.settings).runner_options(backend)
    if options.settings.intra_op_threads is not None and backend != "tensorrt":
        opts["intra_op_threads"] = options.settings.intra_op_threads
    return runner_for_artifact(point.artifact, backend, device=options.device, precision=options.precision, **opts)


def _score(runner: Any, model: ModelRecord, inputs: ScoredInputs, batch: int,
           progress: Callable[[float], None]) -> tuple[np.ndarray, float | None, float | None]:
    """Top-1 predictions over the inputs, and top-1/top-5 accuracy when they are labelled."""
    fixed = model.batch
    step = fixed or batch
    preds, hits1, hits5, done = [], 0, 0, 0
    for images, labels in inputs.batches(step):
        padded, real = pad_batch(images, fixed)
        logits = np.asarray(runner.run(padded).logits)[:real]
        preds.append(np.argmax(logits, axis=1))
        if labels is not None:
            hits1 += _topk_hits(logits, labels, 1)
            hits5 += _topk_hits(logits, labels, 5)
        done += real
        progress(0.5 * done / max(inputs.count, 1))
    if not inputs.labelled:
        return np.concatenate(preds), None, None
    return np.concatenate(preds), hits1 / done, hits5 / done


def measure_point(point: Point, backend: str, options: TradeoffOptions, inputs: ScoredInputs,
                  reference: np.ndarray | None, on_progress: ProgressCallback | None = None
                  ) -> tuple[TradeoffRow, np.ndarray]:
    """One row: scores, agreement with ``reference`` (None: this point is the reference), timing, FLOPs."""
    model = point.artifact.model
    label = f"{point.label} [{backend}]"

    def progress(fraction: float) -> None:
        if on_progress is not None:
            on_progress(label, fraction)

    batch = model.batch or options.batch  # a fixed-batch export runs its own batch
    with _open(point, backend, options) as runner:
        preds, top1, top5 = _score(runner, model, inputs, options.eval_batch, progress)
        measured = measure(runner.timed_call(seeded_batch(batch, model), include_transfer=options.settings.include_transfer),
                           options.settings, lambda f: progress(0.5 + 0.5 * f))
        executes = str(runner.describe().get("executes", backend))
    stats = latency_stats(measured.samples_ms)
    macs = macs_for_model(model)
    agreement = 1.0 if reference is None else float(np.mean(preds == reference))
    row = TradeoffRow(
        label=point.label, role=point.role, keep_ratio=point.keep_ratio, artifact=str(point.artifact.path),
        keep_counts=list(model.keep_counts), tokens_per_stage=[s.tokens for s in macs.stages], macs=macs.total_macs,
        batch=batch, throughput_ips=batch * stats.count / measured.wall_s if measured.wall_s > 0 else 0.0,
        latency_ms_mean=stats.mean, latency_ms_median=stats.median, cv_percent=stats.cv_percent,
        images=len(preds), top1=top1, top5=top5, agreement=agreement, executes=executes)
    return row, preds


def run(options: TradeoffOptions, context: "RunContext", artifacts: Sequence[Artifact], *,
        on_phase: Callable[[str], None] | None = None, on_progress: ProgressCallback | None = None,
        on_row: Callable[[TradeoffReport], None] | None = None) -> TradeoffReport:
    """The tradeoff of the opened ``artifacts`` (a --dynamic-keep export, or fixed exports of one checkpoint, and
    the dense twin): ``on_phase`` hears the planning (exporting a twin), ``on_progress`` the measurement, and
    ``on_row(report)`` each finished row."""
    artifacts = [a.in_context(context) for a in artifacts]  # twins and the torch reference: this run's
    plan = plan_tradeoff(artifacts, options, context, on_phase=on_phase)
    return run_tradeoff(plan, options, context, on_progress=on_progress, on_row=on_row)


def run_tradeoff(plan: TradeoffPlan, options: TradeoffOptions, context: "RunContext", *,
                 on_progress: ProgressCallback | None = None,
                 on_row: Callable[[TradeoffReport], None] | None = None) -> TradeoffReport:
    """Measure every point of ``plan`` on one backend, the reference first. After each row the JSON is
    rewritten atomically at ``options.output`` (``complete`` false until the last) and ``on_row(report)`` called."""
    from ...runtime import default_backend

    options.validate()
    first = plan.points[0].artifact
    backend = options.backend or default_backend(first.path)
    inputs = scored_inputs(first.model, options)
    reference_point = plan.dense if plan.reference == "dense" else plan.sparse[0]
    report = TradeoffReport(
        mode=plan.mode, backend=backend, device=options.device, metric="top1" if inputs.labelled else "agreement",
        reference=plan.reference, reference_label=reference_point.label, inputs=inputs.description,
        settings={**options.settings.to_dict(), "batch": options.batch, "eval_batch": options.eval_batch},
        notes=list(plan.notes), planned=len(plan.points), machine=machine_info(), model=str(first.model.variant),
        random_weights=first.model.random_weights)
    reference: np.ndarray | None = None
    for point in plan.points:
        row, preds = measure_point(point, backend, options, inputs, reference, on_progress)
        if point is plan.dense and not plan.dense_comparable and point is not reference_point:
            row.agreement = None  # other random weights: its predictions say nothing about pruning
        if point is reference_point:
            reference = preds
        report.rows.append(row)
        report.finish(options.max_drop)
        if options.output is not None:
            write_report(report, options.output)
        if on_row is not None:
            on_row(report)
    return report
