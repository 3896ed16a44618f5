"""`dvit tradeoff`: what each keep ratio ρ costs in accuracy (or agreement) and buys in throughput.

``run(options, context, artifacts)`` is the job. ``plan`` (which ρ, the dense twin, the reference), ``measure``
(scoring and timing one point at a time; ``run``), ``result`` (rows, Pareto front, recommended keep range, JSON),
``plot`` (the PNG).
"""

from __future__ import annotations

from .plan import (DEFAULT_KEEP_RATIOS, DEFAULT_MAX_DROP, DEFAULT_SAMPLES, REFERENCES, Point, TradeoffOptions,
                   TradeoffPlan, plan_tradeoff)
from .plot import PLOT_SUFFIXES, plot_tradeoff
from .result import (SCHEMA, Recommendation, TradeoffReport, TradeoffRow, mark_pareto, recommend, report_path,
                     write_report)
from .measure import ScoredInputs, measure_point, run, run_tradeoff, scored_inputs

__all__ = (
    "DEFAULT_KEEP_RATIOS", "DEFAULT_MAX_DROP", "DEFAULT_SAMPLES", "PLOT_SUFFIXES", "REFERENCES", "SCHEMA", "Point",
    "Recommendation", "ScoredInputs", "TradeoffOptions", "TradeoffPlan", "TradeoffReport", "TradeoffRow",
    "mark_pareto", "measure_point", "plan_tradeoff", "plot_tradeoff", "recommend", "report_path",
    "run", "run_tradeoff", "scored_inputs", "write_report")
