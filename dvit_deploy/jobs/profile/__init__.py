"""`dvit profile`: latency statistics like trtexec, throughput, and the dense → sparse speed-up.

One job per module: ``stats`` (latency statistics), ``measure`` (timed, interleaved runs and their
results), ``plan`` (what to measure: the artifact, its dense twin), ``overhead`` (the predictor +
TopK + Gather share, from ONNX Runtime's per-node profiler).
"""

from __future__ import annotations

from ...artifact.store import find_dense_twin, is_dense_twin  # the dense-twin rule, re-exported
from .measure import (BACKEND_OPTIONS, PROFILE_SEED, SCHEMA, Measurement, ProfileOptions, ProfileReport,
                      ProfileResult, ProfileSettings, attach_speedups, machine_info, measure, measure_interleaved,
                      plot_results, profile_artifacts, seeded_batch, supported_batches)
from .overhead import OverheadBreakdown, pruning_overhead
from .plan import ProfilePlan, default_profile_artifact, plan_profile, run_profile
from .stats import CV_WARN_PERCENT, PERCENTILES, LatencyStats, latency_stats, nearest_rank

__all__ = [
    "default_profile_artifact",
    "BACKEND_OPTIONS", "CV_WARN_PERCENT", "PERCENTILES", "PROFILE_SEED", "SCHEMA", "LatencyStats", "Measurement",
    "OverheadBreakdown", "ProfileOptions", "ProfilePlan", "ProfileReport", "ProfileResult", "ProfileSettings", "attach_speedups",
    "find_dense_twin", "is_dense_twin", "latency_stats", "machine_info", "measure",
    "measure_interleaved", "nearest_rank", "plan_profile", "plot_results",
    "profile_artifacts", "pruning_overhead", "run_profile", "seeded_batch", "supported_batches",
]
