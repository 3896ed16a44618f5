"""`dvit profile`: latency statistics like trtexec, throughput, and the dense → sparse speed-up.

One job per module: ``stats`` (latency statistics), ``measure`` (timed, interleaved runs and their
results), ``plan`` (what to measure: the artifact, its dense twin; ``run``, the job), ``plot`` (the
``--plot`` picture), ``overhead`` (the predictor + TopK + Gather share, from ONNX Runtime's per-node profiler).
"""

from __future__ import annotations

from ...artifact.store import find_dense_twin, is_dense_twin  # the dense-twin rule, re-exported
from .measure import (BACKEND_OPTIONS, PROFILE_SEED, SCHEMA, Measurement, ProfileOptions, ProfileReport,
                      ProfileResult, ProfileRun, ProfileSettings, attach_speedups, machine_info, measure,
                      measure_interleaved, profile_artifacts, seeded_batch, supported_batches)
from .overhead import OverheadBreakdown, pruning_overhead
from .plan import ProfilePlan, plan_profile, run, run_profile
from .plot import plot_results
from .stats import CV_WARN_PERCENT, PERCENTILES, LatencyStats, latency_stats, nearest_rank

__all__ = (
    "BACKEND_OPTIONS", "CV_WARN_PERCENT", "PERCENTILES", "PROFILE_SEED", "SCHEMA", "LatencyStats", "Measurement",
    "OverheadBreakdown", "ProfileOptions", "ProfilePlan", "ProfileReport", "ProfileResult", "ProfileRun",
    "ProfileSettings", "attach_speedups",
    "find_dense_twin", "is_dense_twin", "latency_stats", "machine_info", "measure",
    "measure_interleaved", "nearest_rank", "plan_profile", "plot_results",
    "profile_artifacts", "pruning_overhead", "run", "run_profile", "seeded_batch", "supported_batches")
