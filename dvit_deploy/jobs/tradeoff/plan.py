"""What ``dvit tradeoff`` measures: the ρ points (one --dynamic-keep artifact fed each ρ, or fixed exports
of one checkpoint), the dense twin, and which outputs the agreement is measured against.

A point of a --dynamic-keep artifact is the same file opened with its model record moved to ρ (keep ratio,
stage ratios, kept counts by the official rule): every runner then feeds ρ's counts as the ``keep_counts``
input, and FLOPs are those of ρ, with no runner knowing about the tradeoff.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ...artifact.store import Artifact, artifacts, find_dense_twin, open_artifact
from ...helpers.defaults import PREDICT_BATCH, PROFILE_BATCH, PROFILE_DEVICE
from ...helpers.errors import BadInput
from ..profile import ProfileSettings

if TYPE_CHECKING:
    from ...artifact.context import RunContext

DEFAULT_KEEP_RATIOS = (0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_MAX_DROP = 0.5  # points of accuracy (or agreement): the paper's "less than 0.5%" claim
DEFAULT_SAMPLES = 64  # seeded inputs compared when no --images are given
REFERENCES = ("dense", "top")


@dataclass(frozen=True)
class TradeoffOptions:
    """Everything ``dvit tradeoff`` is asked, once; ``plan_tradeoff`` and ``run_tradeoff`` take it whole."""

    keep_ratios: tuple[float, ...] | None = None  # None: the default grid (dynamic) or every export's ρ (fixed)
    backend: str | None = None  # None: the artifact's default backend
    device: str = PROFILE_DEVICE
    precision: str | None = None  # None: the artifact's own
    batch: int = PROFILE_BATCH  # images per timed call
    eval_batch: int = PREDICT_BATCH  # images per call while scoring
    images: Path | None = None  # a labelled folder (accuracy) or a flat one (agreement only)
    labels_file: Path | None = None
    limit: int | None = None  # at most this many images
    samples: int = DEFAULT_SAMPLES  # seeded inputs when no images are given
    reference: str | None = None  # "dense" or "top"; None: dense when a twin is there, else top
    max_drop: float = DEFAULT_MAX_DROP  # points
    dense_baseline: bool = False  # export a missing dense twin
    with_dense: bool = True  # False: no dense point
    settings: ProfileSettings = field(default_factory=lambda: ProfileSettings(rounds=1))
    output: Path | None = None  # the JSON, rewritten after every row (checked by ``result.report_path``)

    def validate(self) -> None:
        self.settings.validate()
        for name, value in (("--batch", self.batch), ("--eval-batch", self.eval_batch), ("--samples", self.samples)):
            if value < 1:
                raise BadInput(f"{name} must be ≥ 1, got {value}")
        if self.limit is not None and self.limit < 1:
            raise BadInput(f"--limit must be ≥ 1, got {self.limit}")
        if self.reference is not None and self.reference not in REFERENCES:
            raise BadInput(f"--reference is dense or top, got '{self.reference}'")
        if self.dense_baseline and not self.with_dense:
            raise BadInput("--dense-baseline exports the dense twin and --no-baseline leaves it out: choose one")
        if self.reference == "dense" and not self.with_dense:
            raise BadInput("--reference dense needs the dense twin; it cannot be used with --no-baseline")
        if not math.isfinite(self.max_drop) or not 0 <= self.max_drop <= 100:
            raise BadInput(f"--max-drop is in points, between 0 and 100, got {self.max_drop}")
        if self.keep_ratios is not None:
            if not self.keep_ratios:
                raise BadInput("--keep-ratios needs at least one ratio")
            bad = [r for r in self.keep_ratios if not 0 < r <= 1]
            if bad:
                raise BadInput(f"--keep-ratios are in (0, 1], got {bad[0]:g}")
            if len(set(self.keep_ratios)) != len(self.keep_ratios):
                raise BadInput(f"--keep-ratios lists a ratio twice: {','.join(f'{r:g}' for r in self.keep_ratios)}")


@dataclass(frozen=True)
class Point:
    """One row to measure: an artifact opened at its ρ (``None`` for the dense twin)."""

    artifact: Artifact
    keep_ratio: float | None

    @property
    def role(self) -> str:
        return "dense" if self.keep_ratio is None else "sparse"

    @property
    def label(self) -> str:
        return "dense" if self.keep_ratio is None else f"ρ={self.keep_ratio:g}"


@dataclass
class TradeoffPlan:
    points: list[Point]  # in the order to run: the reference first
    mode: str  # "dynamic-keep" or "fixed exports"
    reference: str  # "dense" or "top"
    dense: Point | None
    notes: list[str] = field(default_factory=list)
    dense_comparable: bool = True  # False: a seeded dense twin, timed but not compared (other random weights)

    @property
    def sparse(self) -> list[Point]:
        return [p for p in self.points if p.keep_ratio is not None]


def _same_checkpoint(a: Artifact, b: Artifact) -> bool:
    """Fixed exports of one model: same variant, config, weights, batch layout, precision and kind."""
    x, y = a.model, b.model
    ckpt_x, ckpt_y = x.checkpoint or {}, y.checkpoint or {}
    return ((x.variant, dict(x.config), x.seed, x.batch, ckpt_x.get("sha256"), ckpt_x.get("use_ema"))
            == (y.variant, dict(y.config), y.seed, y.batch, ckpt_y.get("sha256"), ckpt_y.get("use_ema"))
            and a.precision == b.precision and a.path.suffix == b.path.suffix and a.kind == b.kind)


def _siblings(artifact: Artifact, notes: list[str]) -> list[Artifact]:
    """Fixed exports of the same checkpoint beside ``artifact`` (at other ρ), newest first per ρ."""
    found = [artifact]
    ratios = {artifact.model.keep_ratio}
    for path in artifacts(artifact.path.parent, artifact.path.suffix):
        if path.resolve() == artifact.path.resolve():
            continue
        try:
            other = open_artifact(path, context=artifact.context)
        except BadInput:
            continue
        m = other.model
        if m.dense or m.dynamic_keep or m.keep_ratio in ratios or not _same_checkpoint(artifact, other):
            continue
        ratios.add(m.keep_ratio)
        found.append(other)
    if len(found) > 1:
        notes.append(f"found {len(found) - 1} other fixed export(s) of the same model beside {artifact.name}: "
                     + ", ".join(a.name for a in found[1:]))
    return found


def _sparse_points(opened: list[Artifact], options: TradeoffOptions, notes: list[str]) -> tuple[list[Point], str]:
    sparse = [a for a in opened if not a.model.dense]
    if not sparse:
        raise BadInput("tradeoff needs a pruned artifact (a --dynamic-keep export, or fixed exports at several ρ); "
                       "only dense ones were given")
    dynamic = [a for a in sparse if a.model.dynamic_keep]
    if dynamic:
        if len(sparse) > 1:
            raise BadInput(f"give one --dynamic-keep artifact, or fixed exports of one checkpoint, not both "
                           f"({dynamic[0].name} and {len(sparse) - 1} more)")
        ratios = options.keep_ratios or DEFAULT_KEEP_RATIOS
        return [Point(dynamic[0].at_keep_ratio(r), float(r)) for r in ratios], "dynamic-keep"
    if len(sparse) == 1:
        sparse = _siblings(sparse[0], notes)
    first = sparse[0]
    for other in sparse[1:]:
        if not _same_checkpoint(first, other):
            raise BadInput(f"{other.name} is not an export of the same model as {first.name} (variant, weights, batch "
                           "layout, precision and file kind must match): a tradeoff compares one checkpoint's ρ")
    by_ratio: dict[float, Artifact] = {}
    for a in sparse:
        ratio = a.model.keep_ratio
        if ratio is None:
            raise BadInput(f"{a.name}'s manifest records no keep ratio: cannot place it on the ρ axis")
        if ratio in by_ratio:
            raise BadInput(f"{by_ratio[ratio].name} and {a.name} are both exported at ρ={ratio:g}: give one of them")
        by_ratio[ratio] = a
    if options.keep_ratios is not None:
        missing = [r for r in options.keep_ratios if r not in by_ratio]
        if missing:
            raise BadInput(f"no fixed export at ρ={missing[0]:g} (exported: {', '.join(f'{r:g}' for r in sorted(by_ratio))}); "
                           "export it, or use a --dynamic-keep export")
        by_ratio = {r: by_ratio[r] for r in options.keep_ratios}
    if len(by_ratio) == 1:
        only = next(iter(by_ratio))
        notes.append(f"only ρ={only:g} is exported: export the same checkpoint at other --keep-ratio values (or once "
                     "with --dynamic-keep, DeiT/LV-ViT) for a curve")
    return [Point(a, float(r)) for r, a in by_ratio.items()], "fixed exports"


def _dense_point(opened: list[Artifact], sparse: Point, options: TradeoffOptions,
                 on_phase: Callable[[str], None] | None, notes: list[str]) -> Point | None:
    given = [a for a in opened if a.model.dense]
    if len(given) > 1:
        raise BadInput(f"give at most one dense twin, got {', '.join(a.name for a in given)}")
    if given:
        return Point(given[0], None)
    if not options.with_dense:
        return None
    twin = find_dense_twin(sparse.artifact)
    if twin is None and options.dense_baseline:
        from ...export.onnx_export import export_dense_twin  # the export layer makes the twin

        twin = export_dense_twin(sparse.artifact, on_phase)
        notes.append(f"exported the dense twin of {sparse.artifact.name}: {twin}")
    elif twin is None:
        notes.append(f"no dense twin of {sparse.artifact.name} beside it: pass --dense-baseline to export one")
        return None
    return Point(open_artifact(twin, context=sparse.artifact.context), None)


def plan_tradeoff(given: Sequence[Artifact], options: TradeoffOptions, context: "RunContext",
                  on_phase: Callable[[str], None] | None = None) -> TradeoffPlan:
    """The points to measure, the dense twin, and the reference, from the opened artifacts (the CLI opens the
    default one when none is given)."""
    options.validate()
    if not given:
        raise BadInput("nothing to measure: give a pruned artifact (the CLI picks the default one)")
    opened = list(given)
    notes: list[str] = []
    sparse, mode = _sparse_points(opened, options, notes)
    sparse.sort(key=lambda p: -float(p.keep_ratio or 0))  # the top ρ first: it may be the reference
    dense = _dense_point(opened, sparse[0], options, on_phase, notes)
    # Seeded dense and pruned models draw their random weights in another order (the predictors come first):
    # the "twin" of a seeded export has other weights, so its predictions are not comparable, only its speed.
    comparable = dense is not None and not (dense.artifact.model.random_weights or sparse[0].artifact.model.random_weights)
    if dense is not None and not comparable:
        notes.append(f"{dense.artifact.name} and {sparse[0].artifact.name} have seeded random weights, drawn differently "
                     "for dense and pruned models: the dense point is timed, its agreement is not comparable")
    reference = options.reference or ("dense" if comparable else "top")
    if reference == "dense" and dense is None:
        raise BadInput(f"--reference dense needs the dense twin of {sparse[0].artifact.name}: pass --dense-baseline "
                       "to export it (ONNX), give it as an ARTIFACT, or use --reference top")
    if options.reference is None:
        notes.append("agreement is measured against " + ("the dense twin" if reference == "dense" else
                                                         f"the top ρ ({sparse[0].label})"))
    points = ([dense] if dense is not None and reference == "dense" else []) + sparse + \
        ([dense] if dense is not None and reference == "top" else [])
    return TradeoffPlan(points=points, mode=mode, reference=reference, dense=dense, notes=notes,
                        dense_comparable=comparable)
