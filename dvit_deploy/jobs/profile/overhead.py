"""Where the time goes: predictor + TopK + Gather share of sparse latency (ONNX Runtime's per-node profiler)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...export.graph import pruning_nodes
from ...artifact.store import Artifact
from .measure import seeded_batch


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


def pruning_overhead(artifact: Artifact, batch: int, *, runs: int = 10, warmup: int = 3,
                     intra_op_threads: int | None = None, graph_optimization: str = "all") -> OverheadBreakdown:
    """Run the opened ``artifact`` under ONNX Runtime's profiler and attribute node time to pruning."""
    import json
    import tempfile

    import onnx

    from ...runtime import runner_for_artifact

    opened = artifact  # manifest read and checked once by the caller, for the inputs and the runner
    images = seeded_batch(batch, opened)
    with tempfile.TemporaryDirectory(prefix="dvit-ort-profile-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        runner = runner_for_artifact(opened, "onnxruntime", enable_profiling=Path(tmp) / "trace",
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
    return OverheadBreakdown(str(opened.path), batch, runs, total, sum(per_stage), per_stage,
                             dict(sorted(by_op.items(), key=lambda kv: -kv[1])))
