#!/usr/bin/env python
"""Where the time goes: per-op-type time shares of DeiT-S (sparse and dense) on ONNX Runtime and OpenVINO,
fp32 and int8, set against the GEMM limits measured in the same run.

* Profiles: ONNX Runtime's per-node trace (``SessionOptions.enable_profiling``, ``*_kernel_time``
  events, op types of the *optimized* graph ORT executes, e.g. ``MatMulIntegerToFloat``) and
  OpenVINO's per-node counters (``PERF_COUNT``, ``get_profiling_info()``: node type and the kernel,
  ``exec_type``, e.g. ``brgemm_avx512_I8``), summed per op type over ``--runs`` runs after a warm-up,
  and grouped into classes (gemm, quantize, norm, softmax, activation, elementwise, layout, pruning).
  Shares survive load better than absolute times.
* Timing: the same four configurations (plus the dense twins) without profiling, together with
  fp32 sgemm and int8 GEMM (``bench_limits``) in interleaved rounds, so each gets
  ``fraction_of_limit`` = (GFLOP per image / GEMM rate) / measured time per image, and
  ``gemm_fraction_of_limit`` = the same for the GEMM op time alone (how fast the GEMM kernels run
  against the microbenchmark; the rest is what does not shrink).
* int8 graphs: ``dvit quantize``'s recipe for this CPU class (``quantize.recipe``), run as dvit's
  runners run them (ORT session config from ``helpers.cpu.ort_int8_session_config``).
* Recorded: CPU model, class and flags, load averages before and after, versions. ``--quick``:
  batch 8, two profiled runs, short timing, 1024² GEMMs (a smoke check, not a figure).

``python benchmarks/profile_ops.py --quick --json benchmarks/results-profile-ops-quick.json``
Settings and recipes to cut that time, as interleaved ratios with agreement: ``profile_candidates.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu import ensure_export  # noqa: E402
from bench_limits import ensure_int8, int8_gemm_call, sgemm_call  # noqa: E402
from bench_precision import load_average, versions  # noqa: E402

from dvit_deploy.artifact.manifest import ModelRecord  # noqa: E402
from dvit_deploy.helpers.cpu import cpu_info, ort_int8_session_config  # noqa: E402
from dvit_deploy.helpers.fileio import manifest_path, read_json, write_json_atomic  # noqa: E402
from dvit_deploy.jobs.flops import macs_for_model  # noqa: E402
from dvit_deploy.jobs.profile import ProfileSettings, latency_stats, machine_info, measure_interleaved, seeded_batch  # noqa: E402

# op type (ORT optimized graph or OpenVINO runtime graph) -> class
OP_CLASSES = {
    "gemm": ("MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulInteger", "MatMulIntegerToFloat", "QLinearMatMul",
             "DynamicQuantizeMatMul", "QGemm", "Conv", "FusedConv", "QLinearConv", "ConvInteger", "Attention",
             "MultiHeadAttention", "FullyConnected", "FullyConnectedQuantizedLegacy", "FullyConnectedQuantized", "Convolution", "ScaledDotProductAttention", "MHA"),
    "quantize": ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "FakeQuantize", "Convert"),
    "norm": ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "MVN", "ReduceMean",
             "Sqrt", "Pow"),
    "softmax": ("Softmax", "SoftMax", "LogSoftmax"),
    "activation": ("Gelu", "BiasGelu", "FastGelu", "Erf", "Tanh", "Sigmoid", "QuickGelu"),
    "layout": ("Transpose", "Reshape", "Reorder", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Flatten",
               "Expand", "Tile", "Shape", "StridedSlice", "VariadicSplit", "Identity", "Cast"),
    "pruning": ("TopK", "Gather", "GatherElements", "GatherND", "ScatterND", "ScatterElementsUpdate", "ArgMax",
                "CumSum", "NonZero", "Range"),
    "elementwise": ("Add", "Mul", "Div", "Sub", "Eltwise", "Where", "Less", "Greater", "Equal", "Not", "Max", "Min",
                    "Exp", "Log", "Neg", "Abs", "ReduceSum", "ReduceMax"),
}
CLASS_OF = {op: cls for cls, ops in OP_CLASSES.items() for op in ops}


def op_class(op_type: str) -> str:
    if op_type in CLASS_OF:
        return CLASS_OF[op_type]
    return "subgraph (fused)" if op_type == "Subgraph" else "other"


def summarise_ops(ms_by_op: dict[str, float], nodes: Counter, runs: int, extra: dict[str, Any]) -> dict[str, Any]:
    per_run = {op: ms / runs for op, ms in ms_by_op.items()}
    total = sum(per_run.values()) or 1.0
    by_class: Counter[str] = Counter()
    for op, ms in per_run.items():
        by_class[op_class(op)] += ms
    return {"op_ms_per_run": round(total, 2),
            "by_op": {op: {"ms": round(ms, 3), "share": round(ms / total, 4), "nodes": nodes[op] // runs}
                      for op, ms in sorted(per_run.items(), key=lambda kv: -kv[1])},
            "by_class": {c: round(ms / total, 4) for c, ms in by_class.most_common()}, **extra}


def ort_options(config: dict[str, str], threads: int, profile_dir: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(profile_dir) / "ort")
    return options


def ort_session(path: Path, config: dict[str, str], threads: int, profile_dir: str | None = None):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), ort_options(config, threads, profile_dir), providers=["CPUExecutionProvider"])


def ort_profile(path: Path, config: dict[str, str], images: np.ndarray, threads: int, runs: int) -> dict[str, Any]:
    """ORT per-op-type kernel time per run (warm-up run dropped by its timestamp), and the model_run time."""
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(path, config, threads, tmp)
        feed = {session.get_inputs()[0].name: images}
        session.run(None, feed)
        for _ in range(runs):
            session.run(None, feed)
        trace = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e for e in trace if e.get("name") == "model_run"), key=lambda e: e["ts"])
    first_end = model_runs[0]["ts"] + model_runs[0]["dur"] if model_runs else 0
    ms: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and event["ts"] >= first_end:
            op = event["args"].get("op_name", "?")
            ms[op] += event["dur"] / 1000.0
            nodes[op] += 1
    run_ms = [e["dur"] / 1000.0 for e in model_runs[1:]]
    return summarise_ops(dict(ms), nodes, runs, {"run_ms": round(float(np.mean(run_ms)), 2) if run_ms else None,
                                                 "session_config": config})


def ov_compile(path: Path, threads: int, hint: str = "LATENCY", profile: bool = False, streams: str | None = "1"):
    import openvino as ov

    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint,
                              "INFERENCE_NUM_THREADS": str(threads)}
    if streams is not None:
        config["NUM_STREAMS"] = streams
    if profile:
        config["PERF_COUNT"] = True
    return core.compile_model(core.read_model(str(path)), "CPU", config)


def ov_profile(path: Path, images: np.ndarray, threads: int, runs: int) -> dict[str, Any]:
    """OpenVINO per-node-type real time per run, the GEMM kernels and the runtime precisions they ran."""
    compiled = ov_compile(path, threads, profile=True)
    request = compiled.create_infer_request()
    request.infer({0: images})
    ms: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    kernels: Counter[str] = Counter()
    wall = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({0: images})
        wall.append((time.perf_counter() - start) * 1e3)
        for info in request.get_profiling_info():
            if str(info.status).endswith("EXECUTED"):
                t = info.real_time.total_seconds() * 1e3
                ms[info.node_type] += t
                nodes[info.node_type] += 1
                if op_class(info.node_type) in ("gemm", "subgraph (fused)"):
                    kernels[f"{info.node_type}:{info.exec_type}"] += t
    runtime_precisions: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layer = str(rt["layerType"].astype(str)) if "layerType" in rt else ""
        if op_class(layer) in ("gemm", "subgraph (fused)"):
            precision = str(rt["runtimePrecision"].astype(str)) if "runtimePrecision" in rt else "?"
            runtime_precisions[f"{layer}:{precision}"] += 1
    total = sum(kernels.values()) or 1.0
    return summarise_ops(dict(ms), nodes, runs, {
        "run_ms": round(float(np.mean(wall)), 2),
        "gemm_kernels": {k: round(v / total, 4) for k, v in kernels.most_common()},
        "gemm_runtime_precisions": dict(runtime_precisions)})


def timed_calls(paths: dict[str, tuple[Path, str]], images: np.ndarray, threads: int,
                stack: contextlib.ExitStack) -> dict[str, Callable[[], Any]]:
    """Plain (unprofiled) sessions, configured as the profiled ones."""
    calls: dict[str, Callable[[], Any]] = {}
    for name, (path, backend) in paths.items():
        if backend == "ort":
            config = ort_int8_session_config(bool("reduce-range" in path.name)) if "int8" in name else {}
            session = ort_session(path, config, threads)
            feed = {session.get_inputs()[0].name: images}
            first = [session.get_outputs()[0].name]
            calls[name] = (lambda s=session, f=feed, o=first: s.run(o, f))
        else:
            request = ov_compile(path, threads).create_infer_request()
            calls[name] = (lambda r=request: r.infer({0: images}))
    return calls


def gelu_fused(path: Path) -> Path:
    """The graph dvit's ORT CPU runner loads: exact-erf GELUs and attention blocks fused
    (``runtime.ort_fusions.fuse_for_cpu``), written once."""
    import onnx

    from dvit_deploy.runtime.ort_fusions import fuse_for_cpu

    out = path.with_name(f"{path.stem}-gelu-attention.onnx")
    if not out.exists():
        model = onnx.load(str(path))
        fuse_for_cpu(model)
        onnx.save(model, str(out))
    return out


def configurations(workdir: Path, model: str, ratio: float, dense: bool, seed: int) -> tuple[dict, dict]:
    """ORT as dvit's runner runs it (GELU fused) and, sparse only, the file as is ("-unfused")."""
    recipe = "s8s8" if not cpu_info().int8_saturates else "s8s8-reduce-range"
    paths: dict[str, tuple[Path, str]] = {}
    gflop: dict[str, float] = {}
    for tag, r in [("sparse", ratio)] + ([("dense", None)] if dense else []):
        fp32 = ensure_export(workdir, model, r, seed)
        int8 = ensure_int8(fp32, recipe)
        g = 2 * macs_for_model(ModelRecord.from_json(read_json(manifest_path(fp32)))).gmacs
        entries = [(f"{tag}/ort-fp32", gelu_fused(fp32), "ort"), (f"{tag}/ov-f32", fp32, "ov"),
                   (f"{tag}/ort-int8", gelu_fused(int8), "ort"), (f"{tag}/ov-int8", int8, "ov")]
        if tag == "sparse":
            entries += [(f"{tag}/ort-fp32-unfused", fp32, "ort"), (f"{tag}/ort-int8-unfused", int8, "ort")]
        for name, path, backend in entries:
            paths[name] = (path, backend)
            gflop[name] = g
    return paths, gflop


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deit-s")
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--no-dense", action="store_true", help="skip the dense twin")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=3, help="profiled runs per configuration (after one warm-up)")
    parser.add_argument("--duration", type=float, default=6.0, help="timed seconds per configuration")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--quick", action="store_true", help="batch 8, 2 runs, 1 round of 1.5 s, 1024² GEMMs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/.artifacts"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.runs, args.duration, args.rounds, args.gemm_size = 8, 2, 1.5, 1, 1024
    return args


def measure_timing(args, paths, gflop, images, stack) -> dict[str, Any]:
    calls = timed_calls(paths, images, args.threads, stack)
    limits_calls = {"fp32 sgemm": sgemm_call(args.gemm_size, args.threads),
                    "int8 GEMM": int8_gemm_call(args.gemm_size, args.threads, {})}
    settings = ProfileSettings(warmup_s=0.3, duration_s=args.duration, rounds=args.rounds, min_iterations=2)
    measured = measure_interleaved({**calls, **limits_calls}, settings)
    ops = 2 * args.gemm_size ** 3
    limits = {k: ops * len(measured[k].samples_ms) / measured[k].wall_s / 1e9 for k in limits_calls}
    timing = {"limits_gops": limits}
    for name in calls:
        stats = latency_stats(measured[name].samples_ms)
        ips = args.batch * stats.count / measured[name].wall_s
        limit = limits["int8 GEMM" if "int8" in name else "fp32 sgemm"]
        timing[name] = {"throughput_ips": ips, "cv_percent": stats.cv_percent, "iterations": stats.count,
                        "limit_ips": limit / gflop[name], "fraction_of_limit": ips * gflop[name] / limit}
    return timing


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu = cpu_info()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not (args.workdir / ".gitignore").exists():
        (args.workdir / ".gitignore").write_text("*\n")
    load_before, started = load_average(), time.time()
    print(f"CPU: {cpu.summary()}; {args.threads} threads; load {load_before}", file=sys.stderr)
    paths, gflop = configurations(args.workdir, args.model, args.ratio, not args.no_dense, args.seed)
    images = seeded_batch(args.batch, ModelRecord.from_json(read_json(manifest_path(paths["sparse/ov-f32"][0]))))

    profiles: dict[str, Any] = {}
    for name, (path, backend) in paths.items():
        print(f"profiling {name} ({path.name}) at batch {args.batch}", file=sys.stderr)
        if backend == "ort":
            config = ort_int8_session_config("reduce-range" in path.name) if "int8" in name else {}
            profiles[name] = ort_profile(path, config, images, args.threads, args.runs)
        else:
            profiles[name] = ov_profile(path, images, args.threads, args.runs)
    with contextlib.ExitStack() as stack:
        print(f"timing {len(paths)} configurations and 2 GEMM limits interleaved", file=sys.stderr)
        timing = measure_timing(args, paths, gflop, images, stack)
    for name, prof in profiles.items():
        t = timing[name]
        gemm_share = sum(v["share"] for op, v in prof["by_op"].items() if op_class(op) == "gemm")
        t["gemm_share"] = gemm_share
        t["gemm_fraction_of_limit"] = t["fraction_of_limit"] / gemm_share if gemm_share else None
    print_summary(profiles, timing)
    load_after = load_average()
    if args.json is not None:
        write_json_atomic(args.json, {
            "schema": "dvit-deploy/profile-ops/1",
            "loaded": max(load_before[:1] + load_after[:1] or [0]) > 0.5 * (os.cpu_count() or 1),
            "machine": {**machine_info(), "cpu": cpu.to_dict(), "threads": args.threads,
                        "load_average_before": load_before, "load_average_after": load_after},
            "versions": versions(),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "gflop_per_image": {k: round(v, 3) for k, v in gflop.items()},
            "profiles": profiles, "timing": timing, "seconds": round(time.time() - started, 1)})
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def print_summary(profiles: dict[str, Any], timing: dict[str, Any]) -> None:
    print("limits (GOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in timing["limits_gops"].items()))
    for name, prof in profiles.items():
        t = timing[name]
        classes = ", ".join(f"{c} {s:.0%}" for c, s in prof["by_class"].items() if s >= 0.01)
        top = ", ".join(f"{op} {v['share']:.0%}" for op, v in list(prof["by_op"].items())[:6])
        print(f"{name:18s} {t['throughput_ips']:6.1f} img/s, {t['fraction_of_limit']:.0%} of limit "
              f"(GEMM ops alone {t['gemm_fraction_of_limit'] or 0:.0%}); classes: {classes}\n{'':18s} top ops: {top}")
        if prof.get("gemm_kernels"):
            print(f"{'':18s} GEMM kernels: {prof['gemm_kernels']}")


if __name__ == "__main__":
    sys.exit(main())
