"""Latency and throughput measured the way trtexec reports them, dense vs sparse.

Method, per (artifact, batch): stage one seeded batch (on the device unless transfers are
included), warm up for a fixed time, then time individual synchronised calls for a fixed
duration (or a fixed iteration count). Each call's latency is the host wall time around it, or
the CUDA-event time when the runner's timed call returns one. Throughput is images per second
of wall time over the measured loop. A coefficient of variation above 2.5% (trtexec's
threshold) marks the run unstable.
"""

from __future__ import annotations

import json
import math
import os
import platform
import contextlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import defaults
from .errors import BadInput
from .fileio import atomic_path, manifest_path, read_json
from .flops import macs_for_manifest

CV_WARN_PERCENT = defaults.CV_WARN_PERCENT
PERCENTILES = (90, 95, 99)
PROFILE_SEED = 1234
SCHEMA = "dvit-deploy/profile/1"

ProgressCallback = Callable[[str, float], None]  # (what, fraction done 0..1)


# --------------------------------------------------------------------------------------------
# Statistics


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


# --------------------------------------------------------------------------------------------
# Measurement


@dataclass
class ProfileSettings:
    warmup_s: float = 1.0
    duration_s: float = 3.0
    iterations: int | None = None  # a fixed count instead of a duration
    min_iterations: int = 10
    include_transfer: bool = False
    cuda_graph: bool = False
    intra_op_threads: int | None = None
    # Artifacts compared in one run are measured in alternating rounds, so a change in machine
    # speed during the run (boost clocks, neighbours) hits dense and sparse alike instead of
    # landing in their ratio. 1 = one after another.
    rounds: int = 5

    def validate(self) -> None:
        if self.warmup_s < 0:
            raise BadInput(f"--warmup must be ≥ 0 seconds, got {self.warmup_s}")
        if self.iterations is None and self.duration_s <= 0:
            raise BadInput(f"--duration must be > 0 seconds, got {self.duration_s}")
        if self.iterations is not None and self.iterations < 1:
            raise BadInput(f"--iterations must be ≥ 1, got {self.iterations}")
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise BadInput(f"--threads must be ≥ 1, got {self.intra_op_threads}")
        if self.rounds < 1:
            raise BadInput(f"--rounds must be ≥ 1, got {self.rounds}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Measurement:
    samples_ms: list[float]
    wall_s: float  # wall time of the measured loop
    warmup_iterations: int


def measure(call: Callable[[], Any], settings: ProfileSettings, on_progress: Callable[[float], None] | None = None
            ) -> Measurement:
    """Warm up by time, then time each call (host wall clock, or the call's own CUDA-event ms)."""
    return measure_interleaved({"only": call}, replace(settings, rounds=1),
                               None if on_progress is None else (lambda key, f: on_progress(f)))["only"]


def measure_interleaved(calls: dict[Any, Callable[[], Any]], settings: ProfileSettings,
                        on_progress: Callable[[Any, float], None] | None = None) -> dict[Any, Measurement]:
    """Measure several calls in ``settings.rounds`` alternating rounds; samples pooled per call.

    Each call is warmed up by time first. Every round then gives each call an equal share of
    the duration (or of the iteration count), and at least its share of ``min_iterations``.
    """
    progress = on_progress or (lambda key, fraction: None)
    clock = time.perf_counter
    rounds = settings.rounds
    warmups: dict[Any, int] = {}
    for key, call in calls.items():
        start = clock()
        count = 0
        while count == 0 or clock() - start < settings.warmup_s:
            call()
            count += 1
        warmups[key] = count
        progress(key, 0.0)

    if settings.iterations is not None:  # an exact count, split as evenly as the rounds allow
        rounds = min(rounds, settings.iterations)
        round_counts = [settings.iterations // rounds + (r < settings.iterations % rounds) for r in range(rounds)]
    per_round_s = settings.duration_s / rounds
    per_round_min = -(-settings.min_iterations // rounds)
    samples: dict[Any, list[float]] = {key: [] for key in calls}
    walls: dict[Any, float] = {key: 0.0 for key in calls}
    for r in range(rounds):
        for key, call in calls.items():
            loop_start = clock()
            taken = 0
            while True:
                t0 = clock()
                device_ms = call()
                t1 = clock()
                samples[key].append(float(device_ms) if isinstance(device_ms, (int, float)) else (t1 - t0) * 1e3)
                taken += 1
                if settings.iterations is not None:
                    if taken >= round_counts[r]:
                        break
                elif t1 - loop_start >= per_round_s and taken >= per_round_min:
                    break
            walls[key] += clock() - loop_start
            progress(key, (r + 1) / rounds)
    return {key: Measurement(samples[key], walls[key], warmups[key]) for key in calls}


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class ProfileResult:
    artifact: str
    role: str  # "sparse" or "dense"
    variant: str
    keep_ratio: float | None
    keep_counts: list[int]
    backend: str
    device: str
    precision: str
    executes: str
    batch: int
    stats: LatencyStats
    throughput_ips: float
    measured_s: float
    warmup_iterations: int
    gmacs: float
    include_transfer: bool
    cuda_graph: bool
    intra_op_threads: int | None
    fallback: str | None = None
    baseline: str | None = None  # the dense artifact this sparse result is compared with
    speedup: float | None = None  # sparse throughput / dense throughput, same batch
    latency_speedup: float | None = None  # dense mean latency / sparse mean latency
    flops_ratio: float | None = None  # dense GMACs / sparse GMACs: the ideal speed-up

    @property
    def unstable(self) -> bool:
        return self.stats.cv_percent > CV_WARN_PERCENT

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "role": self.role,
            "variant": self.variant,
            "keep_ratio": self.keep_ratio,
            "keep_counts": self.keep_counts,
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "executes": self.executes,
            "fallback": self.fallback,
            "batch": self.batch,
            "iterations": self.stats.count,
            "warmup_iterations": self.warmup_iterations,
            "measured_s": round(self.measured_s, 3),
            "latency_ms": self.stats.latency_ms(),
            "std_ms": round(self.stats.std, 4),
            "cv_percent": round(self.stats.cv_percent, 3),
            "unstable": self.unstable,
            "throughput_ips": round(self.throughput_ips, 2),
            "gmacs": round(self.gmacs, 4),
            "include_transfer": self.include_transfer,
            "cuda_graph": self.cuda_graph,
            "intra_op_threads": self.intra_op_threads,
            "baseline": self.baseline,
            "speedup": None if self.speedup is None else round(self.speedup, 4),
            "latency_speedup": None if self.latency_speedup is None else round(self.latency_speedup, 4),
            "flops_ratio": None if self.flops_ratio is None else round(self.flops_ratio, 4),
        }


@dataclass
class ProfileReport:
    settings: ProfileSettings
    results: list[ProfileResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [
            f"{Path(r.artifact).name} batch {r.batch}: unstable, coefficient of variation "
            f"{r.stats.cv_percent:.1f}% > {CV_WARN_PERCENT}%"
            for r in self.results if r.unstable
        ] + [f"{Path(r.artifact).name}: {r.fallback}" for r in self.results if r.fallback]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "machine": machine_info(),
            "settings": self.settings.to_dict(),
            "results": [r.to_dict() for r in self.results],
            "warnings": self.warnings,
            "notes": self.notes,
        }


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------------------------
# Running


def seeded_batch(batch: int, manifest: dict[str, Any]) -> np.ndarray:
    from .data import seeded_inputs

    return seeded_inputs(manifest, batch, PROFILE_SEED)


def supported_batches(manifest: dict[str, Any], batches: Sequence[int]) -> tuple[list[int], list[int]]:
    """Batches this artifact can run, and those it cannot (fixed-batch exports run one size)."""
    fixed = manifest.get("batch")
    if fixed is None:
        return list(batches), []
    return [b for b in batches if b == fixed], [b for b in batches if b != fixed]


def profile_artifacts(
    artifacts: Sequence[tuple[Path, str]],
    backend: str,
    batches: Sequence[int],
    settings: ProfileSettings,
    *,
    device: str = "cpu",
    precision: str | None = None,
    options: dict[str, Any] | None = None,
    on_progress: ProgressCallback | None = None,
    notes: list[str] | None = None,
) -> list[ProfileResult]:
    """Measure (artifact, role) pairs on one backend, interleaved at each batch size.

    All runners stay loaded for the whole run so that, batch by batch, the artifacts can be
    measured in alternating rounds (``settings.rounds``): their ratios are then robust to the
    machine's speed drifting during the run.
    """
    from .runtime import runner_for_artifact

    opts = dict(options or {})
    if settings.intra_op_threads is not None and backend != "tensorrt":  # CPU threads mean nothing to engines
        opts["intra_op_threads"] = settings.intra_op_threads
    if settings.cuda_graph:
        opts["cuda_graph"] = True
    loaded = []
    with contextlib.ExitStack() as stack:
        for artifact, role in artifacts:
            manifest = read_json(manifest_path(artifact), what=f"manifest of {artifact.name}")
            runnable, skipped = supported_batches(manifest, batches)
            if skipped and notes is not None:
                notes.append(f"{artifact.name} was exported with a fixed batch {manifest.get('batch')}: "
                             f"batch {', '.join(map(str, skipped))} skipped")
            if not runnable:
                continue
            runner = stack.enter_context(
                runner_for_artifact(artifact, backend, device=device, precision=precision, **opts))
            if notes is not None:
                notes.extend(f"{artifact.name} on {backend}: {n}" for n in getattr(runner, "notes", []))
            loaded.append((artifact, role, manifest, runner, runner.describe(), set(runnable),
                           macs_for_manifest(manifest).gmacs))

        results: list[tuple[int, int, ProfileResult]] = []  # (artifact index, batch index, result)
        for batch_index, batch in enumerate(batches):
            group = [item for item in loaded if batch in item[5]]
            calls = {}
            for index, (artifact, _, manifest, runner, _, _, _) in enumerate(group):
                images = seeded_batch(batch, manifest)
                calls[index] = runner.timed_call(images, include_transfer=settings.include_transfer)

            def progress(index: int, fraction: float, group=group, batch=batch) -> None:
                if on_progress is not None:
                    on_progress(f"{group[index][0].name} [{backend}] batch {batch}", fraction)

            measured = measure_interleaved(calls, settings, progress)
            for index, (artifact, role, manifest, runner, info, _, gmacs) in enumerate(group):
                m = measured[index]
                stats = latency_stats(m.samples_ms)
                results.append((loaded.index(group[index]), batch_index, ProfileResult(
                    artifact=str(artifact),
                    role=role,
                    variant=str(manifest.get("variant")),
                    keep_ratio=None if manifest.get("dense") else manifest.get("keep_ratio"),
                    keep_counts=list(manifest.get("keep_counts") or []),
                    backend=backend,
                    device=device,
                    precision=runner.precision,
                    executes=str(info.get("executes", backend)),
                    batch=batch,
                    stats=stats,
                    throughput_ips=batch * stats.count / m.wall_s if m.wall_s > 0 else 0.0,
                    measured_s=m.wall_s,
                    warmup_iterations=m.warmup_iterations,
                    gmacs=gmacs,
                    include_transfer=settings.include_transfer,
                    cuda_graph=settings.cuda_graph,
                    intra_op_threads=info.get("intra_op_threads", settings.intra_op_threads),
                    fallback=info.get("fallback"),
                )))
    return [result for _, _, result in sorted(results, key=lambda item: item[:2])]  # artifact by artifact


def attach_speedups(results: list[ProfileResult], twins: dict[str, str]) -> None:
    """Fill speed-up and FLOPs ratio of each sparse result from its dense twin at the same batch."""
    def key(path: str) -> Path:
        return Path(path).resolve()

    resolved_twins = {key(s): d for s, d in twins.items()}
    by_key = {(key(r.artifact), r.backend, r.precision, r.batch): r for r in results}
    for r in results:
        dense_artifact = resolved_twins.get(key(r.artifact))
        if r.role != "sparse" or dense_artifact is None:
            continue
        dense = by_key.get((key(dense_artifact), r.backend, r.precision, r.batch))
        if dense is None:
            continue
        r.baseline = dense.artifact
        r.speedup = r.throughput_ips / dense.throughput_ips if dense.throughput_ips > 0 else None
        r.latency_speedup = dense.stats.mean / r.stats.mean if r.stats.mean > 0 else None
        r.flops_ratio = dense.gmacs / r.gmacs if r.gmacs > 0 else None


# --------------------------------------------------------------------------------------------
# Dense twins


def is_dense_twin(sparse: dict[str, Any], candidate: dict[str, Any]) -> bool:
    """Same model (variant, config, checkpoint or seed), batch layout and precision, but dense."""
    if not candidate.get("dense") or sparse.get("dense"):
        return False
    # Compare as JSON would store them (an in-memory manifest holds tuples where a file has lists).
    sparse, candidate = (json.loads(json.dumps(m, default=str)) for m in (sparse, candidate))
    same = ("variant", "config", "batch", "kind")
    if any(sparse.get(k) != candidate.get(k) for k in same):
        return False
    if (sparse.get("precision") or "fp32") != (candidate.get("precision") or "fp32"):
        return False
    s_ckpt, c_ckpt = sparse.get("checkpoint"), candidate.get("checkpoint")
    if s_ckpt or c_ckpt:
        return bool(s_ckpt and c_ckpt and s_ckpt.get("sha256") == c_ckpt.get("sha256")
                    and s_ckpt.get("use_ema") == c_ckpt.get("use_ema"))
    return sparse.get("seed") == candidate.get("seed")


def find_dense_twin(artifact: Path, manifest: dict[str, Any]) -> Path | None:
    """The newest dense twin of ``artifact`` in its folder (same suffix), if any."""
    from .workspace import artifacts

    for candidate in artifacts(artifact.parent, artifact.suffix):
        if candidate.resolve() == artifact.resolve():
            continue
        try:
            other = read_json(manifest_path(candidate))
        except BadInput:
            continue
        if is_dense_twin(manifest, other):
            return candidate
    return None


def export_dense_twin(artifact: Path, manifest: dict[str, Any], on_phase: Callable[[str], None] | None = None) -> Path:
    """Export the dense baseline of the model ``artifact`` was exported from, beside it."""
    from .export import export_onnx
    from .models.checkpoint import load_model_from_record
    from .workspace import onnx_name

    if artifact.suffix != ".onnx":
        raise BadInput(f"{artifact.name} has no dense twin beside it and only ONNX twins can be exported "
                       "here: export and build the dense baseline the same way (--dense), then pass both")
    record = {**manifest, "dense": True, "stage_ratios": None, "keep_ratio": None, "keep_counts": []}
    loaded = load_model_from_record(record)
    output = artifact.parent / onnx_name(loaded.variant.name, True, None, batch=manifest.get("batch"))
    if output.exists():  # a dense export of a different model already has the usual name
        output = artifact.with_name(f"{artifact.stem}-dense-twin.onnx")
    result = export_onnx(loaded, output, opset=int(manifest.get("opset") or 18), batch=manifest.get("batch"),
                         force=output.exists(), on_phase=on_phase)
    return result.path


# --------------------------------------------------------------------------------------------
# Plot


def plot_results(results: list[ProfileResult], path: Path) -> Path:
    """Latency and throughput vs batch, one line per artifact and backend (dense dashed)."""
    from .errors import require
    from .fileio import prepare_output

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


# --------------------------------------------------------------------------------------------
# What to profile


@dataclass
class ProfilePlan:
    runs: list[tuple[Path, str]]  # (artifact, role) in the order to run
    twins: dict[str, str]  # sparse artifact -> its dense twin
    notes: list[str] = field(default_factory=list)


def newest_sparse_artifact(backend: str | None = None) -> Path:
    """The default artifact (``workspace.default_artifact``) among the files ``backend`` runs."""
    from .runtime import FILE_BACKENDS
    from .workspace import ALL_SUFFIXES, default_artifact

    return default_artifact(FILE_BACKENDS.get(backend, ALL_SUFFIXES) if backend else ALL_SUFFIXES)[0]


def plan_profile(artifacts_given: Sequence[Path] | None, *, backend: str | None, dense_baseline: bool,
                 with_twins: bool = True, on_phase: Callable[[str], None] | None = None) -> ProfilePlan:
    """Artifacts to measure and the dense twin of each sparse one (found beside it, or exported
    when ``dense_baseline`` asks for a baseline that is missing)."""
    paths = [Path(p) for p in artifacts_given] if artifacts_given else [newest_sparse_artifact(backend)]
    plan = ProfilePlan(runs=[], twins={})
    seen: set[Path] = set()

    def add(path: Path, role: str) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            plan.runs.append((path, role))

    from .workspace import load_manifest

    for path in paths:
        manifest = load_manifest(path)  # not found, no dvit manifest, or sha256 mismatch: one line, exit 2
        if manifest.get("dense"):
            add(path, "dense")
            continue
        add(path, "sparse")
        if not with_twins:
            continue
        twin = find_dense_twin(path, manifest)
        if twin is None and dense_baseline:
            twin = export_dense_twin(path, manifest, on_phase)
            plan.notes.append(f"exported the dense twin of {path.name}: {twin}")
        elif twin is None:
            plan.notes.append(f"no dense twin of {path.name} beside it: pass --dense-baseline to export one")
        if twin is not None:
            plan.twins[str(path)] = str(twin)
    # Dense twins run after their sparse artifacts, and each only once.
    for sparse, dense in plan.twins.items():
        add(Path(dense), "dense")
    return plan


def run_profile(plan: ProfilePlan, *, backend: str | None, batches: Sequence[int], settings: ProfileSettings,
                device: str = "cpu", precision: str | None = None, options: dict[str, Any] | None = None,
                on_progress: ProgressCallback | None = None) -> ProfileReport:
    from .runtime import default_backend

    settings.validate()
    report = ProfileReport(settings=settings, notes=list(plan.notes))
    by_backend: dict[str, list[tuple[Path, str]]] = {}
    for artifact, role in plan.runs:
        by_backend.setdefault(backend or default_backend(artifact), []).append((artifact, role))
    for chosen, runs in by_backend.items():
        report.results.extend(profile_artifacts(
            runs, chosen, batches, settings, device=device, precision=precision,
            options=_options_for(chosen, options or {}), on_progress=on_progress, notes=report.notes))
    attach_speedups(report.results, plan.twins)
    return report


# Options that only one backend understands; the others do not receive them.
BACKEND_OPTIONS = {
    "onnxruntime": {"providers", "graph_optimization", "execution_mode", "inter_op_threads", "enable_profiling"},
    "torch": {"compile"},
}


def _options_for(backend: str, options: dict[str, Any]) -> dict[str, Any]:
    foreign = set().union(*(names for b, names in BACKEND_OPTIONS.items() if b != backend))
    return {k: v for k, v in options.items() if k not in foreign or k in BACKEND_OPTIONS.get(backend, set())}


# --------------------------------------------------------------------------------------------
# Where the time goes: predictor + TopK + Gather share (ONNX Runtime's per-node profiler)


@dataclass
class OverheadBreakdown:
    artifact: str
    batch: int
    runs: int
    total_node_ms: float  # per run, all nodes
    pruning_ms: float  # per run: predictors + TopK + index arithmetic + Gather
    per_stage_ms: list[float]
    by_op: dict[str, float]  # per run, op type -> ms, pruning nodes only

    @property
    def share(self) -> float:
        return self.pruning_ms / self.total_node_ms if self.total_node_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": round(self.share, 5)}


def pruning_nodes(model: Any) -> list[set[str]]:
    """Per pruning stage, the nodes that exist only for pruning, found structurally.

    The predictor is every ancestor of the TopK's score input that is not also an ancestor of
    the token tensor the stage gathers from (the trunk); then the TopK, the index arithmetic
    and the Gather it feeds. Works on the exporter's graph and on ORT's optimized graph alike.
    """
    from .export.graph import GATHER_OPS, INDEX_OPS

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def ancestors(tensor: str) -> set[str]:
        seen: set[str] = set()
        frontier = [tensor]
        while frontier:
            node = producer.get(frontier.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            frontier.extend(node.input)
        return seen

    stages = []
    for topk in (n for n in graph.node if n.op_type == "TopK"):
        nodes = {topk.name}
        gather_data = None
        frontier = [topk.output[1]]
        while frontier:  # index arithmetic down to the Gather
            name = frontier.pop()
            for node in consumers.get(name, []):
                if node.name in nodes:
                    continue
                if node.op_type in GATHER_OPS and len(node.input) > 1 and node.input[1] == name:
                    nodes.add(node.name)
                    gather_data = node.input[0]
                elif node.op_type in INDEX_OPS:
                    nodes.add(node.name)
                    frontier.extend(node.output)
        trunk = ancestors(gather_data) if gather_data else set()
        nodes |= ancestors(topk.input[0]) - trunk
        stages.append(nodes)
    return stages


def pruning_overhead(artifact: Path, batch: int, *, runs: int = 10, warmup: int = 3,
                     intra_op_threads: int | None = None, graph_optimization: str = "all") -> OverheadBreakdown:
    """Run ``artifact`` under ONNX Runtime's profiler and attribute node time to pruning."""
    import json
    import tempfile

    import onnx

    from .runtime import runner_for_artifact

    manifest = read_json(manifest_path(artifact), what=f"manifest of {artifact.name}")
    images = seeded_batch(batch, manifest)
    with tempfile.TemporaryDirectory(prefix="dvit-ort-profile-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        runner = runner_for_artifact(artifact, "onnxruntime", enable_profiling=Path(tmp) / "trace",
                                     optimized_model_path=optimized, intra_op_threads=intra_op_threads,
                                     graph_optimization=graph_optimization)
        with runner:
            call = runner.timed_call(images)
            for _ in range(warmup):
                call()
            # The profiler records every run; warm-up runs are told apart by their order below.
            for _ in range(runs):
                call()
        events = json.loads(Path(runner.profile_file).read_text())
        stages = pruning_nodes(onnx.load(str(optimized), load_external_data=False))

    run_events = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    measured = run_events[-runs:]
    first_ts = measured[0]["ts"] if measured else 0
    node_time: dict[str, float] = {}
    node_op: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e["ts"] < first_ts:
            continue
        name = e["name"][: -len("_kernel_time")]
        node_time[name] = node_time.get(name, 0.0) + e["dur"] / 1e3
        node_op[name] = e.get("args", {}).get("op_name", "?")
    total = sum(node_time.values()) / runs
    per_stage = [sum(node_time.get(n, 0.0) for n in nodes) / runs for nodes in stages]
    by_op: dict[str, float] = {}
    for nodes in stages:
        for n in nodes:
            if n in node_time:
                by_op[node_op[n]] = by_op.get(node_op[n], 0.0) + node_time[n] / runs
    return OverheadBreakdown(str(artifact), batch, runs, total, sum(per_stage), per_stage,
                             dict(sorted(by_op.items(), key=lambda kv: -kv[1])))
