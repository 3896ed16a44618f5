"""The table `dvit profile` prints: latency statistics per artifact and batch, throughput, speed-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..helpers.defaults import CV_WARN_PERCENT
from .output import print_wide


def _runs_on(result) -> str:
    """Short label of what executed: 'ort CPU', 'torch eager', 'trt'..."""
    text = result.executes
    if result.backend == "onnxruntime":
        provider = text.split()[-1].replace("ExecutionProvider", "")
        return f"ort {provider}"
    if result.backend == "torch":
        return "torch compile" if "compile" in text else "torch eager"
    return result.backend


TABLE_WIDTH = 124


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def measured_time(results: Any) -> str:
    """The time each artifact and batch really ran ("9.1-14.2 s"): slow calls and the minimum number of
    calls make it longer than --duration, and the table should not claim the shorter figure."""
    walls = [r.measured_s for r in results]
    low, high = min(walls), max(walls)
    return f"{low:.1f} s" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f} s"


def print_report(report: Any) -> None:
    """The profile table: latency statistics, throughput and speed-up per artifact and batch."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    labels = {f"{_runs_on(r)} {r.precision}" for r in report.results}
    per_row_backend = len(labels) > 1
    settings = report.settings
    how = (f"{settings.iterations} iterations" if settings.iterations else f"{settings.duration_s:g} s asked") + \
        f", {measured_time(report.results)} measured per artifact and batch" + \
        f" after {settings.warmup_s:g} s warm-up, transfers {'included' if settings.include_transfer else 'excluded'}"
    title = (f"profile{'' if per_row_backend else ' on ' + labels.pop()}: latency in ms ({how}); "
             f"CV ⚠ above {CV_WARN_PERCENT}%; speed-up = sparse/dense throughput (FLOPs bound)")
    grid = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    columns = ["artifact"] + (["backend"] if per_row_backend else []) + \
        ["batch", "min", "mean", "median", "p90", "p95", "p99", "max", "CV", "img/s", "speed-up"]
    for col in columns:
        if col in ("artifact", "backend"):
            grid.add_column(col, overflow="fold")
        else:
            grid.add_column(col, no_wrap=True, justify="right")
    for r in report.results:
        s = r.stats
        cv = f"{s.cv_percent:.1f}%" + ("⚠" if r.unstable else "")
        speed = "—" if r.speedup is None else f"{r.speedup:.2f}× ({r.flops_ratio:.2f}×)"
        row = [Path(r.artifact).stem] + ([f"{_runs_on(r)} {r.precision}"] if per_row_backend else []) + \
            [str(r.batch)] + [_ms(v) for v in (s.min, s.mean, s.median, s.p90, s.p95, s.p99, s.max)] + \
            [cv, f"{r.throughput_ips:.1f}", speed]
        grid.add_row(*(Text(c) for c in row))
    print_wide(grid, TABLE_WIDTH)  # eleven numeric columns do not fit 80 columns
