"""Latency statistics the way trtexec reports them: min, mean, median, p90/p95/p99, max, CV."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...helpers import defaults

CV_WARN_PERCENT = defaults.CV_WARN_PERCENT
PERCENTILES = (90, 95, 99)



@dataclass(frozen=True)
class LatencyStats:
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    cv_percent: float  # standard deviation / mean, in percent
    count: int

    def latency_ms(self) -> dict[str, float]:
        return {k: round(getattr(self, k), 4) for k in ("min", "mean", "median", "p90", "p95", "p99", "max")}


def nearest_rank(sorted_values: np.ndarray, percent: float) -> float:
    """The percentile as trtexec reports it: the sample at rank ceil(p/100 · n) (no interpolation)."""
    n = len(sorted_values)
    rank = max(1, math.ceil(percent / 100.0 * n))
    return float(sorted_values[min(rank, n) - 1])


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats:
    """Summary of per-call latencies in milliseconds."""
    values = np.sort(np.asarray(samples_ms, dtype=np.float64))
    if values.size == 0:
        raise ValueError("no latency samples")
    mean = float(values.mean())
    std = float(values.std())
    return LatencyStats(
        min=float(values[0]),
        mean=mean,
        median=float(np.median(values)),
        p90=nearest_rank(values, 90),
        p95=nearest_rank(values, 95),
        p99=nearest_rank(values, 99),
        max=float(values[-1]),
        std=std,
        cv_percent=100.0 * std / mean if mean > 0 else 0.0,
        count=int(values.size),
    )
