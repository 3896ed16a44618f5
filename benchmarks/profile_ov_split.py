#!/usr/bin/env python
"""OpenVINO's compiled graph of a split model (ConvNeXt, Swin) against its dense twin: what is fused,
what the split breaks, and where the time between the FLOPs bound and the measured ratio goes.

For each model and batch, dense and sparse (ρ = ``--ratio``) are compiled on the CPU *by dvit's
OpenVINO runner* (``runtime.openvino_runner``: its precision hint, streams, threads and in-memory graph
rewrites), with ``PERF_COUNT`` added to the compile config and nothing else. Then:

* the runtime (compiled) graph, ``compiled.get_runtime_model()``: per executed node its ``layerType``,
  ``primitiveType`` (kernel), ``outputPrecisions`` and ``originalLayersNames`` (the OpenVINO ops it
  replaced, traced back to the ONNX nodes of the file: op type, and whether the node exists only for
  pruning, ``export.graph.pruning_nodes``);
* per-node time from ``get_profiling_info()`` summed over ``--runs`` runs after a warm-up;
* (a) ms per image and share per class (gemm, attention subgraph, norm, eltwise, layout, reorder,
  and, in sparse, "pruning": the nodes made only of predictor / TopK / Gather / Scatter ONNX nodes);
* (b) fusion patterns: each executed node as ``layerType[ONNX op types it fused]`` (e.g. an
  ``FullyConnected[MatMul+Add+Gelu]``), counted and timed, with the patterns dense has and sparse lost
  (and the reverse);
* (c) the split machinery in sparse: executed nodes whose ONNX origin is TopK, Gather*, Scatter*,
  Concat, and the layout / Convert / Reorder nodes, by type;
* (d) the accounting: ideal sparse time = dense time / bound (bound = dense GMACs / sparse GMACs,
  ``jobs.flops`` as ``bench_zoo``); per class, excess = sparse ms - dense ms / bound. The excesses sum to
  the gap between the profiled sparse time and the ideal one.

``--rounds`` > 0 adds an unprofiled interleaved sparse/dense throughput ratio (the runners without
PERF_COUNT). All timings on a loaded machine are "loaded": shares and structure are what count.

    python benchmarks/profile_ov_split.py --json benchmarks/results-profile-ov-split-loaded.json
    python benchmarks/profile_ov_split.py --models swin-t --batches 1,16
    python benchmarks/profile_ov_split.py --quick          # convnext-t, b1, 3 runs (< 1 min)
    python benchmarks/profile_ov_split.py --int8 s8s8      # the int8 pair (dvit quantize's recipe)

``--int8 RECIPE``: the pair quantized by ``dvit quantize`` with that recipe (``bench_limits.ensure_int8``,
cached beside the fp32 files), run by the runner at int8 precision, so the accounting shows what keeps
an int8 split model from its FLOPs bound: the float predictors, the float depthwise convs and norms on
every token, the quantize steps, beside the int8 GEMMs that shrink.

Exports are read from ``--workdir`` (default ``benchmarks/.artifacts``; made there if missing).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

SCHEMA = "dvit-deploy/profile-ov-split/1"
GEMM = {"FullyConnected", "MatMul", "Convolution", "Deconvolution"}
ATTENTION = {"Subgraph", "ScaledDotProductAttention", "MHA"}
LAYOUT = {"Reshape", "Transpose", "Concatenation", "Split", "StridedSlice", "Squeeze", "Unsqueeze", "Broadcast",
          "ShapeOf", "Range", "Tile", "Pad"}
PRUNING_OPS = {"TopK", "Gather", "GatherElements", "GatherND", "ScatterND", "ScatterElements", "ScatterNDUpdate",
               "ScatterElementsUpdate", "ScatterUpdate"}
SPLIT_CLASSES = ("split select/scatter", "gather/scatter (trunk)", "reorder/convert", "layout")
MACHINERY_ONNX = {"TopK", "Gather", "GatherElements", "GatherND", "ScatterND", "ScatterElements", "Concat"}
NORM = {"MVN", "RMS", "Normalize", "NormalizeL2"}
GEMM_CLASSES = ("gemm", "attention subgraph")  # where the MACs are
QUANTIZE = {"FakeQuantize"}
OUTSIDE = "outside nodes"
PREDICTOR = "predictor"
NOT_EXECUTED = {"Const", "Input", "Parameter", "Output", "Result"}


# ------------------------------------------------------------------------------------------------
# Pure parts: the runtime graph traced back to the ONNX file, classes, patterns, accounting


def onnx_origin(name: str, onnx_types: dict[str, str]) -> str | None:
    """The ONNX node an OpenVINO op name comes from: the name itself, or the part before the '/' or the
    '_flatten_reshape'-style suffix OpenVINO's transformations append; None when OpenVINO made it."""
    for candidate in (name, name.split("/")[0], re.sub(r"_(flatten_reshape|compressed|reshape)$", "", name)):
        if candidate in onnx_types:
            return candidate
    return None


def origin_label(name: str, onnx_types: dict[str, str]) -> str | None:
    """What an OpenVINO op name stands for: the ONNX op type, with the PyTorch op the exporter named the
    node after when it differs (``Mul:gelu`` is the last Mul of an exported GELU); ``ov:Type`` for an op
    OpenVINO's transformations made (``ov:MVN``, ``ov:ReduceMean``); None for an empty name."""
    origin = onnx_origin(name, onnx_types)
    if origin is None:
        made = re.match(r"[A-Za-z]+", name)
        return f"ov:{made.group(0)}" if made else None
    op_type = onnx_types[origin]
    torch_op = re.match(r"node_([A-Za-z]+(?:_[A-Za-z]+)*?)(?:_\d+)?$", origin)
    if torch_op is None or torch_op.group(1).lower() == op_type.lower():
        return op_type
    return f"{op_type}:{torch_op.group(1)}"


def trace_nodes(nodes: list[dict[str, Any]], onnx_types: dict[str, str], pruning: set[str]) -> list[dict[str, Any]]:
    """Each executed runtime node with ``onnx_ops`` (what the OpenVINO ops it fused stand for, in order,
    ``origin_label``), ``role`` (pruning: every ONNX origin is a pruning node; trunk: none is; mixed;
    inserted: no ONNX origin, e.g. a Reorder or an op OpenVINO made) and ``klass``."""
    traced = []
    for node in nodes:
        if node["type"] in NOT_EXECUTED:
            continue
        origins = [o for o in (onnx_origin(n, onnx_types) for n in node["originals"]) if o is not None]
        ops = list(dict.fromkeys(label for label in (origin_label(n, onnx_types) for n in node["originals"]) if label))
        in_pruning = [o in pruning for o in origins]
        role = ("inserted" if not origins else "pruning" if all(in_pruning)
                else "trunk" if not any(in_pruning) else "mixed")
        traced.append({**node, "onnx_ops": ops, "role": role, "klass": node_class(node["type"], role, node["precision"], ops)})
    return traced


def node_class(layer_type: str, role: str, precision: str = "f32", onnx_ops: list[str] | tuple = ()) -> str:
    """The class an executed node's time is booked to. Pruning nodes split in two: the predictor's compute
    (GEMMs, norms, float element-wise) and the selection (TopK, Gather, Scatter, index arithmetic)."""
    if role == "pruning":
        compute = layer_type in GEMM | NORM or (layer_type in ("Eltwise", "Reduce", "Softmax") and "i" not in precision[:1])
        return "predictor" if compute else "split select/scatter"
    if layer_type in PRUNING_OPS:
        return "gather/scatter (trunk)"  # e.g. Swin's q/k/v selection, in dense too
    if layer_type in GEMM:
        return "gemm"
    if layer_type in ATTENTION:  # a Snippets Subgraph without MatMul/Softmax is fused element-wise work
        bases = {op.split(":")[0] for op in onnx_ops}
        return "attention subgraph" if layer_type != "Subgraph" or bases & {"MatMul", "Softmax"} else "eltwise"
    if layer_type in NORM:
        return "norm"
    if layer_type == "Softmax":
        return "softmax"
    if layer_type == "Eltwise":
        return "eltwise"
    if layer_type in ("Reorder", "Convert"):
        return "reorder/convert"
    if layer_type in QUANTIZE:
        return "quantize"
    if layer_type in LAYOUT:
        return "layout"
    if layer_type in ("Reduce", "Pooling"):
        return "reduce/pool"
    return "other"


def pattern(node: dict[str, Any]) -> str:
    ops = "+".join(node["onnx_ops"]) if node["onnx_ops"] else "-"
    return f"{node['type']}[{ops}]"


def summarise(traced: list[dict[str, Any]], ms: dict[str, float], batch: int) -> dict[str, Any]:
    """Per class and per fusion pattern: ms per image, share, nodes; the split machinery by layer type."""
    total = sum(ms.get(n["name"], 0.0) for n in traced) or 1.0
    classes: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    patterns: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    machinery: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for node in traced:
        t = ms.get(node["name"], 0.0)
        for table, key in ((classes, node["klass"]), (patterns, pattern(node))):
            table[key][0] += t
            table[key][1] += 1
        if node["klass"] in SPLIT_CLASSES or {op.split(":")[0] for op in node["onnx_ops"]} & MACHINERY_ONNX:
            key = f"{node['type']} ({node['role']})"
            machinery[key][0] += t
            machinery[key][1] += 1

    def table(rows: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        return {k: {"ms_per_image": round(v[0] / batch, 4), "share": round(v[0] / total, 4), "nodes": int(v[1])}
                for k, v in sorted(rows.items(), key=lambda kv: -kv[1][0])}

    pattern_rows = table(patterns)
    for node in traced:  # one example per pattern: the executed node and the OpenVINO/ONNX names it fused
        row = pattern_rows[pattern(node)]
        row.setdefault("example", {"node": node["name"], "kernel": node["primitive"], "fused": node["originals"][:8]})
    return {"ms_per_image": round(total / batch, 4), "executed_nodes": len(traced), "by_class": table(classes),
            "patterns": pattern_rows, "split_machinery": table(machinery)}


def kernel_times(traced: list[dict[str, Any]], ms: dict[str, float], batch: int) -> dict[str, dict[str, float]]:
    """GEMM-class nodes (trunk and predictor) by kernel: ms per image and node count."""
    rows: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for node in traced:
        if node["type"] in GEMM | ATTENTION:
            key = f"{node['klass']}: {node['type']}:{node['primitive']}"
            rows[key][0] += ms.get(node["name"], 0.0)
            rows[key][1] += 1
    return {k: {"ms_per_image": round(v[0] / batch, 4), "nodes": int(v[1])}
            for k, v in sorted(rows.items(), key=lambda kv: -kv[1][0])}


def gemm_shrink(dense: dict[str, Any], sparse: dict[str, Any]) -> float | None:
    """Dense / sparse time of the trunk's GEMMs (gemm class and attention subgraphs, predictors left out):
    to set against the trunk's FLOPs ratio (``trunk_bound``)."""
    def ms(prof: dict[str, Any]) -> float:
        return sum(prof["by_class"].get(k, {}).get("ms_per_image", 0.0) for k in ("gemm", "attention subgraph"))

    return round(ms(dense) / ms(sparse), 4) if ms(sparse) > 0 else None


def compare_patterns(dense: dict[str, dict], sparse: dict[str, dict]) -> dict[str, Any]:
    """Fusion patterns whose node count differs: lost (dense has more) and new (sparse has more)."""
    lost, new = {}, {}
    for key in sorted(set(dense) | set(sparse)):
        d, s = dense.get(key, {}).get("nodes", 0), sparse.get(key, {}).get("nodes", 0)
        if d > s:
            lost[key] = {"dense_nodes": d, "sparse_nodes": s}
        elif s > d:
            new[key] = {"dense_nodes": d, "sparse_nodes": s,
                        "sparse_ms_per_image": sparse[key]["ms_per_image"]}
    return {"lost_in_sparse": lost, "new_in_sparse": new}


def account(dense: dict[str, Any], sparse: dict[str, Any], bound: float, trunk_bound: float | None = None,
            shrinking: tuple[str, ...] = GEMM_CLASSES) -> dict[str, Any]:
    """Where the gap between the profiled sparse time and the ideal one (dense / bound) goes, per class.

    bound = D / (T + P): dense GMACs over the sparse model's trunk T plus predictors P; trunk_bound = D / T.
    Every class but the predictor is allowed dense ms / trunk_bound (it should shrink like the trunk's
    FLOPs), the predictor dense total x P / D (its FLOPs at the dense model's average speed); excess =
    sparse ms - allowance, and the excesses sum to the gap. Without trunk_bound, every class is allowed
    dense ms / bound and the predictor nothing. With ``wall_ms_per_image`` (the profiled runs' median wall
    time), the time outside the nodes (wall - sum of node times: per-node dispatch, shape inference and
    memory of a dynamic-shape graph) is one more class and the totals are wall times.

    ``gemm_only_bound``: the ratio if the ``shrinking`` classes (gemm, attention subgraph: where the MACs are)
    shrank by trunk_bound, the predictor took its allowance, and every other class kept its dense time. A split
    model runs its norms, element-wise work, depthwise conv and layout on every token by design, so this
    is what the dense profile leaves attainable; the FLOPs bound counts that work as free."""
    def classes(prof: dict[str, Any]) -> dict[str, float]:
        rows = {k: v["ms_per_image"] for k, v in prof["by_class"].items()}
        if "wall_ms_per_image" in prof:
            rows[OUTSIDE] = round(prof["wall_ms_per_image"] - prof["ms_per_image"], 4)
        return rows

    d_rows, s_rows = classes(dense), classes(sparse)
    d_total, s_total = sum(d_rows.values()), sum(s_rows.values())
    trunk = trunk_bound or bound
    rows = {}
    for klass in sorted(set(d_rows) | set(s_rows) | {PREDICTOR}):
        d, s = d_rows.get(klass, 0.0), s_rows.get(klass, 0.0)
        allowed = d_total * (1 / bound - 1 / trunk) if klass == PREDICTOR else d / trunk
        rows[klass] = {"dense_ms": d, "sparse_ms": s, "shrink": round(d / s, 3) if s > 0 and d > 0 else None,
                       "allowed_ms": round(allowed, 4), "excess_ms": round(s - allowed, 4)}
    ratio = d_total / s_total if s_total else None
    node_sum = dense["ms_per_image"] / sparse["ms_per_image"] if sparse["ms_per_image"] else None
    gemm_d = sum(d_rows.get(k, 0.0) for k in shrinking)
    attainable = gemm_d / trunk + rows[PREDICTOR]["allowed_ms"] + (d_total - gemm_d)
    gemm_only = d_total / attainable if attainable > 0 else None
    return {"bound": round(bound, 4), "trunk_bound": round(trunk, 4),
            "shrinking_classes": list(shrinking), "dense_gemm_share": round(gemm_d / d_total, 4) if d_total else None,
            "gemm_only_bound": round(gemm_only, 4) if gemm_only else None,
            "fraction_of_gemm_only_bound": round(ratio / gemm_only, 4) if ratio and gemm_only else None,
            "node_sum_ratio": round(node_sum, 4) if node_sum else None,
            "totals": "wall" if OUTSIDE in d_rows else "node sum",
            "dense_ms": round(d_total, 4), "sparse_ms": round(s_total, 4),
            "profiled_ratio": round(ratio, 4) if ratio else None,
            "profiled_fraction_of_bound": round(ratio / bound, 4) if ratio else None,
            "ideal_sparse_ms": round(d_total / bound, 4), "gap_ms": round(s_total - d_total / bound, 4),
            "by_class": dict(sorted(rows.items(), key=lambda kv: -kv[1]["excess_ms"]))}


# ------------------------------------------------------------------------------------------------
# OpenVINO: the runner's compile with PERF_COUNT, the runtime graph, the per-node times


def runtime_nodes(compiled) -> list[dict[str, Any]]:
    def rt(info, key: str) -> str:
        return str(info[key].astype(str)) if key in info else ""

    nodes = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        nodes.append({"name": op.get_friendly_name(), "type": rt(info, "layerType") or op.get_type_name(),
                      "primitive": rt(info, "primitiveType"), "precision": rt(info, "outputPrecisions"),
                      "originals": [n for n in rt(info, "originalLayersNames").split(",") if n]})
    return nodes


def profile_times(requests: dict[str, Any], runs: int) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Per request and runtime node, the median ms over ``runs`` inferences, the requests interleaved
    (A B, B A, ...) after one warm-up each, so load drifts hit both alike; wall ms per run."""
    samples: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in requests}
    wall: dict[str, list[float]] = {k: [] for k in requests}
    for request in requests.values():
        request.infer()
    order = list(requests)
    for run in range(runs):
        for key in order if run % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            requests[key].infer()
            wall[key].append((time.perf_counter() - start) * 1e3)
            for info in requests[key].get_profiling_info():
                if str(info.status).rsplit(".", 1)[-1] == "EXECUTED":
                    samples[key][info.node_name].append(info.real_time.total_seconds() * 1e3)
    return {k: {n: float(np.median(v)) for n, v in nodes.items()} for k, nodes in samples.items()}, wall


def onnx_facts(path: Path) -> tuple[dict[str, str], set[str]]:
    import onnx

    from dvit_deploy.export.graph import pruning_nodes

    model = onnx.load(str(path), load_external_data=False)
    pruning: set[str] = set()
    for stage in pruning_nodes(model):
        pruning |= stage
    return {n.name: n.op_type for n in model.graph.node}, pruning


def profile_pair(pair: dict[str, Any], batch: int, runs: int, threads: int | None,
                 static: bool = False, precision: str = "fp32") -> dict[str, dict[str, Any]]:
    """Dense and sparse compiled by dvit's runner (plus PERF_COUNT; ``static``: batch fixed first),
    profiled in interleaved runs."""
    from dvit_deploy.jobs.profile import seeded_batch
    from dvit_deploy.runtime import runner_for_artifact

    options: dict[str, Any] = {"intra_op_threads": threads} if threads else {}
    options["precision"] = precision
    options["static_batch"] = static  # the runner's own per-batch compile only when --static-batch asks
    options["properties"] = {"PERF_COUNT": True}
    with contextlib.ExitStack() as stack:
        runners = {r: stack.enter_context(runner_for_artifact(a, "openvino", device="cpu", **options))
                   for r, a in pair.items()}
        for role, runner in runners.items():
            runner.timed_call(seeded_batch(batch, pair[role].model))  # compiles for the batch, stages the inputs
        compiled = {r: runner.compiled_for(batch) for r, runner in runners.items()}
        nodes = {r: runtime_nodes(c) for r, (c, _) in compiled.items()}
        ms, wall = profile_times({r: request for r, (_, request) in compiled.items()}, runs)
        executes = runners["sparse"].describe().get("executes")
    out = {}
    for role, artifact in pair.items():
        onnx_types, pruning = onnx_facts(artifact.path)
        traced = trace_nodes(nodes[role], onnx_types, pruning)
        attention = [n for n in traced if n["klass"] == "attention subgraph" or n["type"] == "Softmax"]
        out[role] = {"executes": executes, "wall_ms_per_image": round(float(np.median(wall[role])) / batch, 4),
                     **summarise(traced, ms[role], batch),
                     "attention_nodes": Counter(pattern(n) + f" <{n['primitive']}>" for n in attention),
                     "gemm_kernels": kernel_times(traced, ms[role], batch)}
    return out


def interleaved_ratio(pair: dict[str, Any], batch: int, args) -> dict[str, Any]:
    """Unprofiled sparse/dense throughput, ``args.rounds`` interleaved rounds (bench_zoo's loop)."""
    from bench_common import load_snapshot, measure_rounds, others, ratio_spread, round_throughputs

    from dvit_deploy.jobs.profile import seeded_batch
    from dvit_deploy.runtime import runner_for_artifact

    options: dict[str, Any] = {"intra_op_threads": args.threads} if args.threads else {}
    options["static_batch"] = args.static_batch  # the runner's own per-batch compile only when asked
    options["precision"] = precision_of(args)
    with contextlib.ExitStack() as stack:
        runners = {r: stack.enter_context(runner_for_artifact(a, "openvino", device="cpu", **options))
                   for r, a in pair.items()}
        start = load_snapshot()
        calls = {r: runners[r].timed_call(seeded_batch(batch, pair[r].model)) for r in ("dense", "sparse")}
        measured = measure_rounds(calls, rounds=args.rounds, round_s=args.round_s, warmup_s=args.round_s)
        tput = {r: round_throughputs(m, batch) for r, m in measured.items()}
        return {"ratio": ratio_spread(tput["sparse"], tput["dense"]), "others": others(start, load_snapshot())}


# ------------------------------------------------------------------------------------------------
# The run


def add_pair_arguments(p: argparse.ArgumentParser) -> None:
    """The options both split profilers take: which pairs, batches, ratio, runs, int8 recipe and files."""
    p.add_argument("--models", default="convnext-t,swin-t")
    p.add_argument("--batches", default="1")
    p.add_argument("--ratio", type=float, default=0.7)
    p.add_argument("--runs", type=int, default=20, help="profiled runs per model (after one warm-up)")
    p.add_argument("--int8", metavar="RECIPE", default=None,
                   help="profile the int8 pair dvit quantize makes with RECIPE (s8s8, s8s8-reduce-range, "
                        "<recipe>+predictor)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=HERE / ".artifacts", help="export cache (git-ignored)")
    p.add_argument("--json", type=Path, default=None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_arguments(p)
    p.add_argument("--rounds", type=int, default=3, help="unprofiled interleaved rounds for the ratio (0: none)")
    p.add_argument("--round-s", type=float, default=1.5)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads [the runner's default]")
    p.add_argument("--static-batch", action="store_true",
                   help="compile with the batch fixed (the runner's default; ab_ov_static_batch.py: what it gains)")
    p.add_argument("--quick", action="store_true", help="convnext-t, batch 1, 3 runs, 1 round of 0.3 s")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.runs, args.rounds, args.round_s = "convnext-t", "1", 3, 1, 0.3
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    return args


def pair_and_bounds(name: str, args) -> tuple[dict[str, Path], float, float]:
    """The dense and sparse files (exported once into ``args.workdir``; ``args.int8``: quantized with that
    recipe), the FLOPs bound and the trunk's FLOPs ratio (what the trunk's GEMMs alone should shrink by:
    dense GMACs / sparse GMACs without the predictors)."""
    from bench_cpu import ensure_export
    from bench_zoo import flops_bound

    from dvit_deploy.jobs.flops import count_macs
    from dvit_deploy.models import get_variant

    files = {"dense": ensure_export(args.workdir, name, None, args.seed),
             "sparse": ensure_export(args.workdir, name, args.ratio, args.seed)}
    if args.int8:
        from bench_limits import ensure_int8

        files = {role: ensure_int8(path, args.int8) for role, path in files.items()}
    variant = get_variant(name)
    trunk_bound = count_macs(variant).gmacs / count_macs(variant, args.ratio, include_predictors=False).gmacs
    return files, flops_bound(name, args.ratio), trunk_bound


def precision_of(args) -> str:
    return "int8" if getattr(args, "int8", None) else "fp32"


def study(name: str, args) -> list[dict[str, Any]]:
    from dvit_deploy.artifact.store import as_artifact

    files, bound, trunk_bound = pair_and_bounds(name, args)
    pair = {role: as_artifact(path) for role, path in files.items()}
    rows = []
    for batch in args.batches:
        print(f"{name} b{batch}: profiling dense and sparse ({args.runs} runs)", file=sys.stderr, flush=True)
        prof = profile_pair(pair, batch, args.runs, args.threads, args.static_batch, precision_of(args))
        row = {"model": name, "batch": batch, "static_batch": args.static_batch, "precision": precision_of(args),
               "files": {r: a.path.name for r, a in pair.items()},
               "dense": prof["dense"], "sparse": prof["sparse"],
               "fusion_diff": compare_patterns(prof["dense"]["patterns"], prof["sparse"]["patterns"]),
               "accounting": account(prof["dense"], prof["sparse"], bound, trunk_bound)}
        row["accounting"]["gemm_shrink"] = gemm_shrink(prof["dense"], prof["sparse"])
        if args.rounds > 0:
            row["interleaved"] = interleaved_ratio(pair, batch, args)
            r = row["interleaved"]["ratio"]["median"]
            row["interleaved"]["fraction_of_bound"] = None if r is None else round(r / bound, 4)
        print_row(row)
        rows.append(row)
    return rows


def print_row(row: dict[str, Any], top: int = 8) -> None:
    acc, d, s = row["accounting"], row["dense"], row["sparse"]
    loaded = row.get("interleaved", {}).get("others", {}).get("loaded", True)
    print(f"\n== {row['model']} b{row['batch']}  ({s['executes']}; {'LOADED' if loaded else 'quiet'} timings) ==")
    print(f"profiled ms/image ({acc['totals']}): dense {acc['dense_ms']:.2f}, sparse {acc['sparse_ms']:.2f} -> "
          f"{acc['profiled_ratio']:.3f}x = {acc['profiled_fraction_of_bound']:.1%} of bound {acc['bound']:.3f}; "
          f"gap {acc['gap_ms']:.2f} ms/image")
    print(f"node-time sums: dense {d['ms_per_image']:.2f}, sparse {s['ms_per_image']:.2f} -> {acc['node_sum_ratio']:.3f}x "
          f"= {acc['node_sum_ratio'] / acc['bound']:.1%} of bound")
    print(f"trunk GEMMs (gemm + attention subgraph) shrink {acc['gemm_shrink']}x; trunk FLOPs ratio "
          f"(predictors left out) {acc['trunk_bound']}x")
    print(f"GEMMs are {acc['dense_gemm_share']:.1%} of dense; if only they shrank (the rest runs on every token): "
          f"bound {acc['gemm_only_bound']:.3f}x = {acc['gemm_only_bound'] / acc['bound']:.1%} of the FLOPs bound; "
          f"profiled = {acc['fraction_of_gemm_only_bound']:.1%} of it")
    if "interleaved" in row:
        i = row["interleaved"]
        print(f"unprofiled interleaved sparse/dense {i['ratio']['median']:.3f}x "
              f"({i['fraction_of_bound']:.1%} of bound; others {i['others']['per_core']} per core)")
    print(f"{'class':<24}{'dense ms':>9}{'share':>7}{'sparse ms':>10}{'share':>7}{'shrink':>8}{'allowed':>8}{'excess':>8}")
    for klass, a in acc["by_class"].items():
        ds, ss = a["dense_ms"] / acc["dense_ms"], a["sparse_ms"] / acc["sparse_ms"]
        shrink = f"{a['shrink']:.2f}" if a["shrink"] else "-"
        print(f"{klass:<24}{a['dense_ms']:9.3f}{ds:7.1%}{a['sparse_ms']:10.3f}{ss:7.1%}{shrink:>8}"
              f"{a['allowed_ms']:8.3f}{a['excess_ms']:8.3f}")
    print("split machinery, sparse (dense) ms/nodes: " + ", ".join(
        f"{k} {v['ms_per_image']:.3f}/{v['nodes']} ({d['split_machinery'].get(k, {}).get('ms_per_image', 0):.3f}/"
        f"{d['split_machinery'].get(k, {}).get('nodes', 0)})" for k, v in list(s["split_machinery"].items())[:top]))
    diff = row["fusion_diff"]
    print("fusions lost in sparse: " + (", ".join(
        f"{k} {v['dense_nodes']}->{v['sparse_nodes']}" for k, v in list(diff["lost_in_sparse"].items())[:top]) or "none"))
    new = sorted(diff["new_in_sparse"].items(), key=lambda kv: -kv[1]["sparse_ms_per_image"])[:top]
    print("new in sparse: " + ", ".join(f"{k} {v['dense_nodes']}->{v['sparse_nodes']} "
                                        f"({v['sparse_ms_per_image']:.3f} ms)" for k, v in new))
    for role, prof in (("dense", d), ("sparse", s)):
        print(f"{role} GEMM kernels: " + ", ".join(f"{k} {v['ms_per_image']:.2f} ms/{v['nodes']}"
                                                  for k, v in prof["gemm_kernels"].items()))
    print(f"attention nodes: dense {dict(d['attention_nodes'])}\n                 sparse {dict(s['attention_nodes'])}")


def write_report(path: Path, schema: str, args, cpu, before: dict[str, Any], after: dict[str, Any],
                 rows: list[dict[str, Any]], started: float, loaded: bool, **extra: Any) -> None:
    """The profilers' JSON (this one and ``profile_ort_split.py``): machine, CPU flags, load before and after,
    versions, settings, rows."""
    from bench_precision import versions

    from dvit_deploy.helpers.fileio import write_json_atomic
    from dvit_deploy.jobs.profile import machine_info

    strip = ("cpu_busy_s", "own_cpu_s", "monotonic")
    write_json_atomic(path, {
        "schema": schema, "loaded": loaded, **extra,
        "machine": {**machine_info(), "cpu": cpu.to_dict(), "cores": os.cpu_count(),
                    "load_before": {k: v for k, v in before.items() if k not in strip},
                    "load_after": {k: v for k, v in after.items() if k not in strip}},
        "versions": versions(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows, "seconds": round(time.time() - started, 1)})
    print(f"wrote {path}", file=sys.stderr)


def run_rows(args, study_one) -> tuple[Any, dict[str, Any], dict[str, Any], list[dict[str, Any]], float]:
    """Every model's rows (``study_one(name, args)``), with the CPU and a load snapshot before and after:
    (cpu, before, after, rows, start time)."""
    from bench_common import load_snapshot

    from dvit_deploy.helpers.cpu import cpu_info

    before, started = load_snapshot(), time.time()
    cpu = cpu_info()
    print(f"CPU: {cpu.summary()}; load {before['load_average']}", file=sys.stderr)
    rows = [row for name in args.models for row in study_one(name, args)]
    return cpu, before, load_snapshot(), rows, started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu, before, after, rows, started = run_rows(args, study)
    if args.json is not None:
        # what other processes used during the rows (``others``) decides; the load average counts this
        # benchmark's own threads and, just after another benchmark, that one's too
        loaded = (any(r.get("interleaved", {}).get("others", {}).get("loaded", True) for r in rows)
                  if rows else bool(before["loaded"] or after["loaded"]))
        write_report(args.json, SCHEMA, args, cpu, before, after, rows, started, loaded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
