#!/usr/bin/env python
"""ONNX Runtime's side of ``profile_ov_split.py``: where the time between the FLOPs bound and the measured
sparse/dense ratio of a split model (ConvNeXt, Swin) goes on ORT's CPU provider, fp32 or int8.

For each model and batch, dense and sparse (ρ = ``--ratio``) run the graph dvit's ORT CPU runner loads
(``profile_ops.gelu_fused``: exact-erf GELU and attention fused; int8: the file as quantized, with the
runner's session config), with ORT's per-node profiling on. ORT's *optimized* graph is saved next to the
trace, so every profiled node is traced to its op type and to whether it exists only for pruning
(``export.graph.pruning_nodes`` works on ORT's optimized graph too). Then, per class (gemm, norm,
activation, layout, element-wise, predictor, split select/scatter, and the time outside the nodes):

* ms per image in dense and sparse, the shrink, the allowance and the excess against the ideal sparse
  time (``profile_ov_split.account``: dense / bound, the predictor its FLOPs' share);
* ``gemm_only_bound``: the ratio if only the GEMMs (and the activations ORT runs apart from them: the MLP's
  GELU, which OpenVINO fuses into its GEMM) shrank with the trunk's FLOPs and everything else kept its
  dense time. A split model runs its depthwise conv or window attention, norms, element-wise work and
  layout on every token, so this is what the dense profile leaves attainable; the FLOPs bound counts that
  work as free.

Profiled runs alternate dense and sparse (A B, B A, ...) after one warm-up each. Totals are node-time sums:
ORT's profiler adds its own time between nodes, so the profiled wall time (kept in the JSON) is not used. Shares survive load better
than absolute times; the JSON records the CPU flags and load averages.

    python benchmarks/profile_ort_split.py --models convnext-t,swin-s --batches 1 --json out.json
    python benchmarks/profile_ort_split.py --int8 s8s8 --models convnext-t --batches 16
    python benchmarks/profile_ort_split.py --quick       # convnext-t, batch 1, 3 runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

SCHEMA = "dvit-deploy/profile-ort-split/1"
GEMM_OPS = {"MatMul", "FusedMatMul", "Gemm", "FusedGemm", "Conv", "FusedConv", "Attention", "MultiHeadAttention",
            "MatMulIntegerToFloat", "MatMulInteger", "QLinearMatMul", "QLinearConv", "ConvInteger", "QGemm",
            "DynamicQuantizeMatMul"}
SHRINKING = ("gemm", "activation")  # classes whose work is on the kept tokens only (the MLP)
# the predictor's compute (as opposed to its selection: TopK, Gather, index arithmetic, Scatter)
PREDICTOR_OPS = GEMM_OPS | {"LayerNormalization", "SkipLayerNormalization", "Gelu", "BiasGelu", "FastGelu",
                            "Softmax", "LogSoftmax", "ReduceMean", "Erf", "Add", "Mul", "Div", "Sub",
                            "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def node_class(op_type: str, in_pruning: bool) -> str:
    """The class a profiled node's time is booked to (``profile_ops.op_class`` for the trunk)."""
    from profile_ops import op_class

    if in_pruning:
        return "predictor" if op_type in PREDICTOR_OPS else "split select/scatter"
    if op_type in GEMM_OPS:
        return "gemm"
    klass = op_class(op_type)
    return "layout" if op_type.startswith("Reorder") else klass


def summarise(node_ms: dict[str, float], op_types: dict[str, str], pruning: set[str], runs: int, batch: int,
              wall_ms: float) -> dict[str, Any]:
    """Per class ms per image and share (of the node sum), and the wall time per image."""
    classes: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    machinery: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])  # the split's own work and layout, by op
    for name, ms in node_ms.items():
        op_type = op_types.get(name, "?")
        klass = node_class(op_type, name in pruning)
        classes[klass][0] += ms / runs
        classes[klass][1] += 1
        if klass in ("split select/scatter", "layout"):
            machinery[f"{op_type} ({klass})"][0] += ms / runs
            machinery[f"{op_type} ({klass})"][1] += 1
    total = sum(v[0] for v in classes.values()) or 1.0
    return {"ms_per_image": round(total / batch, 4), "profiled_wall_ms_per_image": round(wall_ms / batch, 4),
            "by_class": {k: {"ms_per_image": round(v[0] / batch, 4), "share": round(v[0] / total, 4), "nodes": int(v[1])}
                         for k, v in sorted(classes.items(), key=lambda kv: -kv[1][0])},
            "split_machinery": {k: {"ms_per_image": round(v[0] / batch, 4), "nodes": int(v[1])}
                                for k, v in sorted(machinery.items(), key=lambda kv: -kv[1][0])}}


def profile_pair(files: dict[str, Path], batch: int, runs: int, threads: int, int8: bool) -> dict[str, Any]:
    """Both graphs profiled in alternating runs; per role the class summary."""
    import onnx
    import onnxruntime as ort
    from profile_ops import gelu_fused

    from dvit_deploy.artifact.store import as_artifact
    from dvit_deploy.export.graph import pruning_nodes
    from dvit_deploy.helpers.cpu import ort_int8_session_config
    from dvit_deploy.jobs.profile import seeded_batch

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sessions, feeds, optimized = {}, {}, {}
        for role, path in files.items():
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = threads
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / role)
            optimized[role] = Path(tmp) / f"{role}-optimized.onnx"
            options.optimized_model_filepath = str(optimized[role])
            config = ort_int8_session_config("reduce-range" in path.name) if int8 else {}
            for key, value in config.items():
                options.add_session_config_entry(key, value)
            source = str(path) if int8 else str(gelu_fused(path))
            sessions[role] = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
            images = seeded_batch(batch, as_artifact(path).model)
            feeds[role] = {sessions[role].get_inputs()[0].name: images}
            sessions[role].run(None, feeds[role])  # warm-up: its events are dropped below
        order = list(files)
        for run in range(runs):
            for role in order if run % 2 == 0 else order[::-1]:
                sessions[role].run(None, feeds[role])
        for role, session in sessions.items():
            trace = json.loads(Path(session.end_profiling()).read_text())
            model_runs = sorted((e for e in trace if e.get("name") == "model_run"), key=lambda e: e["ts"])
            first_end = model_runs[0]["ts"] + model_runs[0]["dur"]
            node_ms: dict[str, float] = defaultdict(float)
            for event in trace:
                name = event.get("name", "")
                if event.get("cat") == "Node" and name.endswith("_kernel_time") and event["ts"] >= first_end:
                    node_ms[name[: -len("_kernel_time")]] += event["dur"] / 1000.0
            graph = onnx.load(str(optimized[role]), load_external_data=False)
            op_types = {n.name: n.op_type for n in graph.graph.node}
            pruning = set().union(*pruning_nodes(graph)) if role == "sparse" else set()
            wall = float(np.median([e["dur"] / 1000.0 for e in model_runs[1:]]))
            out[role] = {**summarise(dict(node_ms), op_types, pruning, runs, batch, wall),
                         "unknown_nodes": sorted(n for n in node_ms if n not in op_types)[:5]}
    return out


def study(name: str, args) -> list[dict[str, Any]]:
    from profile_ov_split import account, pair_and_bounds

    files, bound, trunk_bound = pair_and_bounds(name, args)
    rows = []
    for batch in args.batches:
        print(f"{name} b{batch}: profiling dense and sparse on ONNX Runtime ({args.runs} runs)", file=sys.stderr, flush=True)
        prof = profile_pair(files, batch, args.runs, args.threads, bool(args.int8))
        row = {"model": name, "batch": batch, "precision": "int8" if args.int8 else "fp32",
               "files": {r: p.name for r, p in files.items()}, "dense": prof["dense"], "sparse": prof["sparse"],
               "accounting": account(prof["dense"], prof["sparse"], bound, trunk_bound, SHRINKING)}
        print_row(row)
        rows.append(row)
    return rows


def print_row(row: dict[str, Any]) -> None:
    acc = row["accounting"]
    print(f"\n== {row['model']} b{row['batch']} ({row['precision']}, ONNX Runtime CPU) ==")
    print(f"profiled ms/image (node sums): dense {acc['dense_ms']:.2f}, sparse {acc['sparse_ms']:.2f} -> "
          f"{acc['profiled_ratio']:.3f}x = {acc['profiled_fraction_of_bound']:.1%} of the FLOPs bound {acc['bound']:.3f}")
    print(f"GEMMs + activations are {acc['dense_gemm_share']:.1%} of dense; if only they shrank: bound {acc['gemm_only_bound']:.3f}x "
          f"= {acc['gemm_only_bound'] / acc['bound']:.1%} of the FLOPs bound; profiled = "
          f"{acc['fraction_of_gemm_only_bound']:.1%} of it")
    print(f"{'class':<24}{'dense ms':>9}{'sparse ms':>10}{'shrink':>8}{'allowed':>8}{'excess':>8}")
    for klass, a in acc["by_class"].items():
        shrink = f"{a['shrink']:.2f}" if a["shrink"] else "-"
        print(f"{klass:<24}{a['dense_ms']:9.3f}{a['sparse_ms']:10.3f}{shrink:>8}{a['allowed_ms']:8.3f}{a['excess_ms']:8.3f}")
    d = row["dense"]["split_machinery"]
    print("split machinery and layout, sparse (dense) ms/nodes: " + ", ".join(
        f"{k} {v['ms_per_image']:.3f}/{v['nodes']} ({d.get(k, {}).get('ms_per_image', 0):.3f}/{d.get(k, {}).get('nodes', 0)})"
        for k, v in list(row["sparse"]["split_machinery"].items())[:8]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from profile_ov_split import add_pair_arguments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_arguments(p)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quick", action="store_true", help="convnext-t, batch 1, 3 runs")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.runs = "convnext-t", "1", 3
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    return args


def main(argv: list[str] | None = None) -> int:
    from bench_common import others
    from profile_ov_split import run_rows, write_report

    args = parse_args(argv)
    cpu, before, after, rows, started = run_rows(args, study)
    # what other processes used meanwhile decides (the load average counts this script's own threads)
    foreign = others(before, after)
    print(f"other processes: {foreign['per_core']} of each core ({'LOADED' if foreign['loaded'] else 'quiet'})",
          file=sys.stderr)
    if args.json is not None:
        write_report(args.json, SCHEMA, args, cpu, before, after, rows, started, foreign["loaded"], others=foreign)
    return 0


if __name__ == "__main__":
    sys.exit(main())
