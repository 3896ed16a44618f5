"""Latency and throughput measured the way trtexec reports them, dense vs sparse.

Method, per (artifact, batch): stage one seeded batch (on the device unless transfers are
included), warm up for a fixed time, then time individual synchronised calls for a fixed
duration (or a fixed iteration count). Each call's latency is the host wall time around it, or
the CUDA-event time when the runner's timed call returns one. Throughput is images per second
of wall time over the measured loop. A coefficient of variation above 2.5% (trtexec's
threshold) marks the run unstable.
"""

from __future__ import annotations

from types import MappingProxyType

import contextlib
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...artifact.manifest import ModelRecord
from ...artifact.store import Artifact
from ...helpers.defaults import (PROFILE_BATCH, PROFILE_DEVICE, PROFILE_DURATION_S, PROFILE_GRAPH_OPTIMIZATION,
                        PROFILE_MIN_ITERATIONS, PROFILE_ROUNDS, PROFILE_WARMUP_S)
from ...helpers.errors import BadInput
from ...runtime.base import Runner, RunnerDescription
from ..flops import macs_for_model
from .stats import CV_WARN_PERCENT, LatencyStats, latency_stats

PROFILE_SEED = 1234
SCHEMA = "dvit-deploy/profile/1"

ProgressCallback = Callable[[str, float], None]  # (what, fraction done 0..1)

# --------------------------------------------------------------------------------------------
# Measurement


@dataclass(frozen=True)
class ProfileSettings:
    """How each (artifact, batch) is timed; the report's ``settings`` (its JSON as written)."""

    warmup_s: float = PROFILE_WARMUP_S
    duration_s: float = PROFILE_DURATION_S
    iterations: int | None = None  # a fixed count instead of a duration
    min_iterations: int = PROFILE_MIN_ITERATIONS
    include_transfer: bool = False
    cuda_graph: bool = False
    intra_op_threads: int | None = None
    # Artifacts compared in one run are measured in alternating rounds, so a change in machine
    # speed during the run (boost clocks, neighbours) hits dense and sparse alike instead of
    # landing in their ratio. 1 = one after another.
    rounds: int = PROFILE_ROUNDS

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


@dataclass(frozen=True)
class ProfileOptions:
    """Everything ``dvit profile`` is asked, once: what to measure (backend, batches, baseline),
    how (``settings``), and the backend options the runners get. ``plan_profile`` and
    ``run_profile`` take it whole; ``runner_options`` gives each backend only what it understands.
    """

    batches: tuple[int, ...] = (PROFILE_BATCH,)
    backend: str | None = None  # None: each artifact's default backend
    device: str = PROFILE_DEVICE
    precision: str | None = None  # None: each artifact's own
    settings: ProfileSettings = field(default_factory=ProfileSettings)
    dense_baseline: bool = False  # export a missing dense twin
    with_twins: bool = True  # False (--no-baseline): only the given artifacts
    graph_optimization: str = PROFILE_GRAPH_OPTIMIZATION  # ONNX Runtime
    compile: bool = False  # torch: torch.compile
    providers: str | None = None  # ONNX Runtime providers, "tensorrt,cuda,cpu"
    keep_ratio: float | None = None  # run --dynamic-keep artifacts at this ρ (a ladder engine: a rung)

    def validate(self) -> None:
        self.settings.validate()
        if self.dense_baseline and not self.with_twins:
            raise BadInput("--dense-baseline measures the dense twin and --no-baseline measures none: choose one")
        if self.compile and self.backend != "torch":
            raise BadInput(f"--compile is torch.compile: it needs --backend torch, not {self.backend or 'the default'}")
        if self.providers and self.backend not in (None, "onnxruntime"):
            raise BadInput(f"--providers are ONNX Runtime's: they do not apply to --backend {self.backend}")

    def runner_options(self, backend: str) -> dict[str, Any]:
        """The backend options ``backend``'s runner takes (the others are not passed to it)."""
        options: dict[str, Any] = {"graph_optimization": self.graph_optimization, "compile": self.compile}
        if self.providers:
            options["providers"] = self.providers
        return _options_for(backend, options)


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
        ] + [f"{Path(r.artifact).name}: FALLBACK: {r.fallback}" for r in self.results if r.fallback]

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


@dataclass(frozen=True)
class ProfileRun:
    """One artifact to measure, opened (manifest checked) once when planned, and its role."""

    artifact: Artifact
    role: str  # "sparse" or "dense"


@dataclass
class _Loaded:
    """A run whose runner is loaded for the whole profile, with what the measurement needs of it."""

    run: ProfileRun
    runner: Runner
    info: RunnerDescription  # runner.description()
    batches: set[int]  # the batch sizes it can run
    gmacs: float


def _model(artifact: Artifact | ModelRecord) -> ModelRecord:
    return artifact.model if isinstance(artifact, Artifact) else artifact


def seeded_batch(batch: int, artifact: Artifact | ModelRecord) -> np.ndarray:
    """The profile's seeded input batch for this artifact's model (the same images on every run)."""
    from ..data import seeded_inputs

    return seeded_inputs(_model(artifact), batch, PROFILE_SEED)


def supported_batches(artifact: Artifact | ModelRecord, batches: Sequence[int]) -> tuple[list[int], list[int]]:
    """Batches this artifact can run, and those it cannot (fixed-batch exports run one size)."""
    fixed = _model(artifact).batch
    if fixed is None:
        return list(batches), []
    return [b for b in batches if b == fixed], [b for b in batches if b != fixed]


def profile_artifacts(runs: Sequence[ProfileRun], backend: str, options: ProfileOptions, *,
                      on_progress: ProgressCallback | None = None, notes: list[str] | None = None) -> list[ProfileResult]:
    """Measure the planned runs (opened artifact and role) on one backend, interleaved at each batch size of
    ``options.batches``, timed as ``options.settings`` says, on ``options.device`` at ``options.precision``.

    All runners stay loaded for the whole run so that, batch by batch, the artifacts can be
    measured in alternating rounds (``settings.rounds``): their ratios are then robust to the
    machine's speed drifting during the run.
    """
    runs = list(runs)
    _check_memory(runs, backend, options.batches, options.device)
    results: list[tuple[int, int, ProfileResult]] = []  # (artifact index, batch index, result)
    with contextlib.ExitStack() as stack:
        loaded = _load(runs, backend, options, stack, notes)
        for batch_index, batch in enumerate(options.batches):
            group = [item for item in loaded if batch in item.batches]
            for item, result in _measure_batch(group, backend, batch, options, on_progress):
                results.append((loaded.index(item), batch_index, result))
    return [result for _, _, result in sorted(results, key=lambda item: item[:2])]  # artifact by artifact


def _load(runs: list[ProfileRun], backend: str, options: ProfileOptions, stack: contextlib.ExitStack,
          notes: list[str] | None) -> list[_Loaded]:
    """A loaded runner per run that can run one of the batch sizes (fixed-batch exports skip the others)."""
    from ...runtime import runner_for_artifact

    opts = options.runner_options(backend)
    settings = options.settings
    if settings.intra_op_threads is not None and backend != "tensorrt":  # CPU threads mean nothing to engines
        opts["intra_op_threads"] = settings.intra_op_threads
    if settings.cuda_graph:
        opts["cuda_graph"] = True
        on_gpu = options.device != "cpu" or backend == "tensorrt" or (
            backend == "onnxruntime" and any(p in (options.providers or "").lower() for p in ("cuda", "trt", "tensorrt")))
        if not on_gpu and notes is not None:  # ORT with GPU providers captures the graph whatever --device says
            notes.append(f"--cuda-graph ignored: {backend} runs on the CPU here (--device cuda to use it)")
    loaded: list[_Loaded] = []
    for run in runs:
        artifact = run.artifact
        runnable, skipped = supported_batches(artifact, options.batches)
        if skipped and notes is not None:
            notes.append(f"{artifact.name} was exported with a fixed batch {artifact.model.batch}: "
                         f"batch {', '.join(map(str, skipped))} skipped")
        if not runnable:
            continue
        runner = stack.enter_context(
            runner_for_artifact(artifact, backend, device=options.device, precision=options.precision, **opts))
        if notes is not None:
            notes.extend(f"{artifact.name} on {backend}: {n}" for n in runner.report_notes())
        loaded.append(_Loaded(run, runner, runner.description(), set(runnable), macs_for_model(artifact.model).gmacs))
    return loaded


def _measure_batch(group: list[_Loaded], backend: str, batch: int, options: ProfileOptions,
                   on_progress: ProgressCallback | None) -> list[tuple[_Loaded, ProfileResult]]:
    """The loaded runs that take ``batch``, measured in alternating rounds at that batch size."""
    settings = options.settings
    calls = {index: item.runner.timed_call(seeded_batch(batch, item.run.artifact),
                                           include_transfer=settings.include_transfer)
             for index, item in enumerate(group)}

    def progress(index: int, fraction: float) -> None:
        if on_progress is not None:
            on_progress(f"{group[index].run.artifact.name} [{backend}] batch {batch}", fraction)

    measured = measure_interleaved(calls, settings, progress)
    results = []
    for index, item in enumerate(group):
        artifact, info, model, m = item.run.artifact, item.info, item.run.artifact.model, measured[index]
        stats = latency_stats(m.samples_ms)
        results.append((item, ProfileResult(
            artifact=str(artifact.path), role=item.run.role, variant=str(model.variant),
            keep_ratio=None if model.dense else model.keep_ratio, keep_counts=list(model.keep_counts),
            backend=backend, device=options.device, precision=item.runner.precision,
            executes=info.executes, batch=batch, stats=stats,
            throughput_ips=batch * stats.count / m.wall_s if m.wall_s > 0 else 0.0,
            measured_s=m.wall_s, warmup_iterations=m.warmup_iterations, gmacs=item.gmacs,
            include_transfer=settings.include_transfer, cuda_graph=settings.cuda_graph,
            intra_op_threads=settings.intra_op_threads if backend == "tensorrt" else info.intra_op_threads, fallback=None if info.fallback is None else info.fallback.reason)))
    return results


def _check_memory(runs: list[ProfileRun], backend: str, batches: Sequence[int], device: str) -> None:
    """Refuse a run the out-of-memory killer would end: every runner stays loaded, each at its largest batch."""
    from ...runtime.memory import MemoryNeed, check_fits, per_image_bytes, weight_bytes

    needs = []
    for run in runs:
        artifact = run.artifact
        runnable, _ = supported_batches(artifact, batches)
        if runnable:
            needs.append((artifact.name, MemoryNeed(weight_bytes(artifact, backend),
                                                    per_image_bytes(artifact.model), max(runnable))))
    check_fits(needs, what=f"profile --batch {max(batches)} on {backend}", option="--batch", device=device)


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


# Options that only one backend understands; the others do not receive them.
BACKEND_OPTIONS = MappingProxyType({
    "onnxruntime": frozenset({"providers", "graph_optimization", "execution_mode", "inter_op_threads",
                              "enable_profiling"}),
    "torch": frozenset({"compile"}),
})


def _options_for(backend: str, options: dict[str, Any]) -> dict[str, Any]:
    foreign = set().union(*(names for b, names in BACKEND_OPTIONS.items() if b != backend))
    return {k: v for k, v in options.items() if k not in foreign or k in BACKEND_OPTIONS.get(backend, set())}
