"""What the sparse-vs-dense benchmarks share: rounds of interleaved timing, the spread of a ratio
across rounds, and the machine's load.

Import-light on purpose (numpy and dvit_deploy's measurement code only, no rich/typer/matplotlib):
``bench_gpu.py`` imports it on a machine that has nothing but torch, timm, onnx and onnxruntime.

Timing reuses ``dvit_deploy.jobs.profile.measure_interleaved`` (the loop behind ``dvit profile``),
one round per call, so each round's throughput stays separate: a ratio is then reported with the
spread of its per-round values (min–max, and a bootstrap interval over rounds), and two runs of a
benchmark can be compared within it.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np

from dvit_deploy.jobs.profile.measure import Measurement, ProfileSettings, measure_interleaved
from dvit_deploy.jobs.profile.stats import latency_stats

# A run is "loaded" (never a result) when the 1-minute load average exceeds this per core.
LOADED_PER_CORE = 0.5
BOOTSTRAP_SAMPLES = 2000


def measure_rounds(calls: dict[Hashable, Callable[[], Any]], *, rounds: int, round_s: float, warmup_s: float,
                   min_iterations: int = 1) -> dict[Hashable, list[Measurement]]:
    """``rounds`` interleaved rounds of every call, one ``Measurement`` per call and round.

    The first round warms every call up for ``warmup_s``; the order of the calls alternates
    from round to round (A B, B A, ...) so that neither side always runs first.
    """
    settings = ProfileSettings(warmup_s=warmup_s, duration_s=round_s, min_iterations=min_iterations, rounds=1)
    keys = list(calls)
    out: dict[Hashable, list[Measurement]] = {key: [] for key in keys}
    for r in range(rounds):
        order = keys if r % 2 == 0 else keys[::-1]
        measured = measure_interleaved({key: calls[key] for key in order},
                                       settings if r == 0 else replace(settings, warmup_s=0.0))
        for key in keys:
            out[key].append(measured[key])
    return out


def round_throughputs(measurements: list[Measurement], batch: int) -> list[float]:
    """Images per second of wall time in each round."""
    return [batch * len(m.samples_ms) / m.wall_s if m.wall_s > 0 else 0.0 for m in measurements]


def pooled(measurements: list[Measurement], batch: int, skip: int = 0) -> dict[str, Any]:
    """Throughput over all rounds and latency statistics of the pooled samples (ms)."""
    samples = [s for m in measurements for s in m.samples_ms[skip:]]
    wall = sum(m.wall_s for m in measurements)
    count = sum(len(m.samples_ms) for m in measurements)
    stats = latency_stats(samples)
    return {"throughput_ips": round(batch * count / wall, 3) if wall > 0 else 0.0, "iterations": count,
            "latency_ms": stats.latency_ms(), "cv_percent": round(stats.cv_percent, 2)}


def ratio_spread(numerator: list[float], denominator: list[float], seed: int = 0) -> dict[str, Any]:
    """Per-round ratios numerator[r] / denominator[r] (same round, interleaved), their median,
    min–max, and a 95 % bootstrap interval of their mean (rounds resampled; None below 3 rounds)."""
    ratios = np.array([n / d for n, d in zip(numerator, denominator) if d > 0], dtype=np.float64)
    if ratios.size == 0:
        return {"rounds": [], "median": None, "min": None, "max": None, "ci95": None}
    ci = None
    if ratios.size >= 3:
        rng = np.random.default_rng(seed)
        means = rng.choice(ratios, size=(BOOTSTRAP_SAMPLES, ratios.size), replace=True).mean(axis=1)
        ci = [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]
    return {"rounds": [round(float(r), 4) for r in ratios], "median": round(float(np.median(ratios)), 4),
            "min": round(float(ratios.min()), 4), "max": round(float(ratios.max()), 4), "ci95": ci}


def _cpu_seconds() -> tuple[float | None, float]:
    """(CPU seconds every process has used since boot, from /proc/stat; this process's own, threads and
    waited-for children included). None where /proc/stat cannot be read."""
    own = sum(os.times()[:4])
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None, own
    values = [int(v) for v in fields]
    busy = sum(values) - values[3] - (values[4] if len(values) > 4 else 0)  # all but idle and iowait
    return busy / ticks, own


def load_snapshot() -> dict[str, Any]:
    """Load averages now, per core, and whether that counts as loaded; CPU-time counters for ``others``."""
    cores = os.cpu_count() or 1
    busy, own = _cpu_seconds()
    counters = {"cpu_busy_s": busy, "own_cpu_s": own, "monotonic": time.monotonic()}
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # not on this platform: unknown load is reported, never called quiet
        return {"time": time.time(), "load_average": None, "cores": cores, "per_core": None, "loaded": True,
                **counters}
    return {"time": time.time(), "load_average": [round(one, 2), round(five, 2), round(fifteen, 2)],
            "cores": cores, "per_core": round(one / cores, 3), "loaded": one / cores > LOADED_PER_CORE,
            **counters}


def others(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """What *other* processes used between two snapshots, per core (0 = idle, 1 = every core busy).

    The load average counts the benchmark's own threads: a 2-thread measurement on 2 cores drives it to ~2
    by itself, so it cannot tell a quiet machine from a busy one while a benchmark runs. This can: all CPU
    time used in the interval minus this process's own. Loaded above ``LOADED_PER_CORE``."""
    wall = end["monotonic"] - start["monotonic"]
    if start.get("cpu_busy_s") is None or end.get("cpu_busy_s") is None or wall <= 0:
        return {"per_core": None, "loaded": True}  # unknown is never called quiet
    foreign = (end["cpu_busy_s"] - start["cpu_busy_s"]) - (end["own_cpu_s"] - start["own_cpu_s"])
    per_core = max(foreign, 0.0) / wall / start["cores"]
    return {"per_core": round(per_core, 3), "loaded": per_core > LOADED_PER_CORE}


def verdict(before: dict[str, Any], after: dict[str, Any]) -> str:
    """'quiet' only when neither end of the run was loaded; otherwise 'loaded' (not a result)."""
    return "loaded" if before["loaded"] or after["loaded"] else "quiet"


class Budget:
    """Wall-clock budget of a run: how much is left, and whether a step of a given cost still fits."""

    def __init__(self, seconds: float, margin_s: float = 5.0) -> None:
        self.start = time.monotonic()
        self.seconds = seconds
        self.margin_s = margin_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def fits(self, estimate_s: float) -> bool:
        return estimate_s + self.margin_s <= self.left()


def torch_machine_info(device: str) -> dict[str, Any]:
    """Versions, CPU and GPU of a torch run (torch imported here: this module stays import-light)."""
    import platform
    import subprocess
    from importlib import metadata

    import torch

    from dvit_deploy.helpers.cpu import cpu_info

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_info().model,
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        **{p: version(p) for p in ("timm", "numpy", "triton", "onnx", "onnxruntime")},
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "load_before": load_snapshot(), "gpu": None,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count,
                       "driver": _driver_version()}
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                            capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def _driver_version() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None
