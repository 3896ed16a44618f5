"""The tradeoff's typed result: one row per ρ (and the dense twin), the Pareto front, the recommended
keep range, and the JSON written after every row (``complete`` false until the last one)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...helpers.errors import BadInput

SCHEMA = "dvit-deploy/tradeoff/1"


@dataclass
class TradeoffRow:
    label: str  # "ρ=0.7" or "dense"
    role: str  # "sparse" or "dense"
    keep_ratio: float | None
    artifact: str
    keep_counts: list[int]  # kept patch tokens after each pruning stage
    tokens_per_stage: list[int]  # tokens each stage of blocks runs on (ViTs: with the class token)
    macs: int  # per image, predictors included (jobs.flops)
    batch: int
    throughput_ips: float
    latency_ms_mean: float
    latency_ms_median: float
    cv_percent: float
    images: int  # inputs scored
    top1: float | None = None  # fractions; None without labels
    top5: float | None = None
    agreement: float | None = None  # top-1 agreement with the reference's predictions
    executes: str = ""
    pareto: bool = False

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def metric(self, name: str) -> float | None:
        return self.top1 if name == "top1" else self.agreement

    def to_dict(self) -> dict[str, Any]:
        def r(value: float | None, digits: int = 6) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "label": self.label, "role": self.role, "keep_ratio": self.keep_ratio, "artifact": self.artifact,
            "keep_counts": self.keep_counts, "tokens_per_stage": self.tokens_per_stage, "macs": self.macs,
            "gmacs": r(self.gmacs, 4),
            "batch": self.batch, "throughput_ips": r(self.throughput_ips, 2),
            "latency_ms": {"mean": r(self.latency_ms_mean, 4), "median": r(self.latency_ms_median, 4)},
            "cv_percent": r(self.cv_percent, 3), "images": self.images, "top1": r(self.top1), "top5": r(self.top5),
            "agreement": r(self.agreement), "executes": self.executes, "pareto": self.pareto,
        }


@dataclass
class Recommendation:
    low: float | None  # the smallest ρ whose drop (and every larger ρ's) stays under max_drop
    high: float | None  # the top ρ
    max_drop: float  # points
    metric: str  # "top1" or "agreement"
    drops: dict[str, float] = field(default_factory=dict)  # label -> drop vs the top ρ, points

    def to_dict(self) -> dict[str, Any]:
        return {"keep_range": None if self.low is None else [self.low, self.high], "max_drop_points": self.max_drop,
                "metric": self.metric, "drop_points": {k: round(v, 4) for k, v in self.drops.items()}}


@dataclass
class TradeoffReport:
    mode: str  # "dynamic-keep" or "fixed exports"
    backend: str
    device: str
    metric: str  # "top1" (labelled images) or "agreement"
    reference: str  # "dense" or "top"
    reference_label: str  # the row the agreement is measured against
    inputs: str  # what was scored: the folder, or the seeded inputs validate uses
    settings: dict[str, Any]
    rows: list[TradeoffRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    planned: int = 0  # rows planned
    recommendation: Recommendation | None = None
    machine: dict[str, Any] = field(default_factory=dict)  # profile's machine_info, taken once
    model: str = ""  # the variant
    random_weights: bool = False  # seeded weights (no checkpoint): agreement says nothing about accuracy

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.planned

    @property
    def sparse(self) -> list[TradeoffRow]:
        return sorted((r for r in self.rows if r.role == "sparse"), key=lambda r: float(r.keep_ratio or 0))

    @property
    def dense(self) -> TradeoffRow | None:
        return next((r for r in self.rows if r.role == "dense"), None)

    def finish(self, max_drop: float) -> None:
        """Mark the Pareto-optimal rows and recommend a keep range (done after every row)."""
        mark_pareto(self.rows, self.metric)
        self.recommendation = recommend(self.sparse, self.metric, max_drop)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "complete": self.complete, "rows_planned": self.planned, "mode": self.mode,
            "model": self.model, "random_weights": self.random_weights,
            "backend": self.backend, "device": self.device, "metric": self.metric, "reference": self.reference,
            "reference_row": self.reference_label, "inputs": self.inputs, "settings": self.settings,
            "machine": self.machine, "rows": [r.to_dict() for r in self.rows],
            "recommendation": None if self.recommendation is None else self.recommendation.to_dict(),
            "notes": self.notes,
        }


def mark_pareto(rows: list[TradeoffRow], metric: str) -> None:
    """A row is Pareto-optimal when no other row is at least as fast and as accurate, and better in one."""
    scored = [(r, r.metric(metric)) for r in rows]
    for row, value in scored:
        if value is None:
            row.pareto = False
            continue
        row.pareto = not any(
            other is not row and v is not None and other.throughput_ips >= row.throughput_ips and v >= value
            and (other.throughput_ips > row.throughput_ips or v > value)
            for other, v in scored)


def recommend(sparse: list[TradeoffRow], metric: str, max_drop: float) -> Recommendation:
    """The smallest ρ from which every larger ρ's drop vs the top ρ stays within ``max_drop`` points."""
    result = Recommendation(None, None, max_drop, metric)
    scored = [r for r in sparse if r.metric(metric) is not None]
    if not scored:
        return result
    top = scored[-1]
    best = top.metric(metric)
    low, within = None, True
    for row in reversed(scored):  # from the top ρ down, while the drop stays within bounds
        drop = 100.0 * (best - row.metric(metric))
        result.drops[row.label] = drop
        within = within and drop <= max_drop + 1e-9
        if within:
            low = row.keep_ratio
    result.low, result.high = low, top.keep_ratio
    return result


def report_path(path: Path) -> Path:
    """Where ``--output`` writes the JSON: a new file, or one an earlier ``dvit tradeoff`` wrote (replaced);
    anything else there is the user's and refused."""
    from ...helpers.fileio import prepare_output

    path = Path(path).expanduser()
    if path.suffix.lower() != ".json":
        raise BadInput(f"--output writes JSON: give a path ending in .json, not {path.name}")
    if path.is_file():
        try:
            ours = json.loads(path.read_text()).get("schema") == SCHEMA
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise BadInput(f"refusing to replace {path}: it is not a JSON 'dvit tradeoff' wrote; choose another name")
    return prepare_output(path, force=True, kinds=(".json",))


def write_report(report: TradeoffReport, path: Path) -> None:
    """The JSON as it stands, replaced atomically (after every row, so an interrupt keeps the finished ones)."""
    from ...helpers.fileio import write_json_atomic

    write_json_atomic(path, report.to_dict())
