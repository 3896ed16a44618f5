"""The tradeoff picture: accuracy (or agreement) against throughput, one point per ρ, the dense twin as a
separate marker, the Pareto-optimal ρ ringed and the recommended keep range shaded."""

from __future__ import annotations

from pathlib import Path

from ...helpers.fileio import atomic_path, prepare_output
from ...helpers.lazy import require
from .result import TradeoffReport

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def metric_label(report: TradeoffReport) -> str:
    if report.metric == "top1":
        return "top-1 accuracy (%)"
    which = "the dense twin" if report.reference == "dense" else f"the top ρ ({report.reference_label})"
    return f"top-1 agreement with {which} (%)"


def plot_tradeoff(report: TradeoffReport, path: Path, *, title: str | None = None) -> Path:
    """Write the picture to ``path`` (PNG, SVG or PDF) and return it."""
    matplotlib = require("matplotlib", "viz", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = prepare_output(path, force=True, kinds=PLOT_SUFFIXES)
    sparse = [r for r in report.sparse if r.metric(report.metric) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    xs = [r.throughput_ips for r in sparse]
    ys = [100 * r.metric(report.metric) for r in sparse]
    ax.plot(xs, ys, "-o", color="tab:blue", label="DynamicViT at ρ", zorder=2)
    rec = report.recommendation
    for row, x, y in zip(sparse, xs, ys):
        ax.annotate(f"ρ={row.keep_ratio:g}\n{row.gmacs:.2f} GMACs", (x, y), textcoords="offset points",
                    xytext=(6, -4), fontsize=7.5)
        if rec is not None and rec.low is not None and rec.low <= row.keep_ratio <= rec.high:
            ax.scatter([x], [y], s=140, color="tab:green", alpha=0.25, zorder=1)
    front = [(x, y) for row, x, y in zip(sparse, xs, ys) if row.pareto]
    if front:
        ax.scatter(*zip(*front), s=90, facecolors="none", edgecolors="tab:red", linewidths=1.5,
                   label="Pareto-optimal", zorder=3)
    dense = report.dense
    if dense is not None and dense.metric(report.metric) is not None:
        ax.scatter([dense.throughput_ips], [100 * dense.metric(report.metric)], marker="s", s=60, color="black",
                   label=f"dense twin ({dense.gmacs:.2f} GMACs)", zorder=3)
    elif dense is not None:  # timed, not comparable (a seeded twin): its speed as a line
        ax.axvline(dense.throughput_ips, color="black", linestyle="--", linewidth=1,
                   label=f"dense twin, img/s only ({dense.gmacs:.2f} GMACs)")
    if rec is not None and rec.low is not None:
        ax.scatter([], [], s=140, color="tab:green", alpha=0.25,
                   label=f"recommended ρ {rec.low:g}–{rec.high:g} (drop ≤ {rec.max_drop:g} pt)")
    ax.set_xlabel(f"throughput (img/s, batch {report.rows[0].batch if report.rows else '?'}, {report.backend} "
                  f"{report.device})")
    ax.set_ylabel(metric_label(report))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    weights = " with SEEDED RANDOM weights (not a trained model)" if report.random_weights else ""
    ax.set_title(title or f"dvit tradeoff: {report.model}{weights}, {report.mode}\n{report.inputs.split(':')[0]}",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", dpi=110)
    plt.close(fig)
    return path
