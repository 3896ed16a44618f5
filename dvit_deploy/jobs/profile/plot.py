"""The ``--plot`` picture of a profile: latency and throughput against batch, dense dashed."""

from __future__ import annotations

from pathlib import Path

from ...helpers.fileio import atomic_path
from .measure import ProfileResult


def plot_results(results: list[ProfileResult], path: Path) -> Path:
    """Latency and throughput vs batch, one line per artifact and backend (dense dashed)."""
    from ...helpers.lazy import require
    from ...helpers.fileio import prepare_output

    matplotlib = require("matplotlib", "viz", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = prepare_output(path, force=True, kinds=(".png", ".svg", ".pdf"))
    series: dict[tuple[str, str, str], list[ProfileResult]] = {}
    for r in results:
        series.setdefault((r.artifact, r.backend, r.role), []).append(r)
    fig, (ax_lat, ax_tput) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (artifact, backend, role), rows in series.items():
        rows = sorted(rows, key=lambda r: r.batch)
        label = f"{Path(artifact).stem} ({role}, {backend})"
        style = "--" if role == "dense" else "-"
        batches = [r.batch for r in rows]
        ax_lat.plot(batches, [r.stats.mean for r in rows], style, marker="o", label=label)
        ax_tput.plot(batches, [r.throughput_ips for r in rows], style, marker="o", label=label)
    for ax, ylabel in ((ax_lat, "mean latency (ms)"), (ax_tput, "throughput (img/s)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_tput.legend(fontsize=8)
    fig.suptitle("dvit profile: dense vs sparse")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return path
