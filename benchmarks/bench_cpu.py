#!/usr/bin/env python
"""CPU benchmark: DeiT-S dense vs DynamicViT ρ = 0.9/0.8/0.7, ONNX Runtime and PyTorch eager.

Exports the models with dvit's exporter (seeded random weights: speed does not depend on the
values), measures them with the same code as `dvit profile`, and prints one table plus the
ratios the project targets:

* sparse/dense throughput at the largest batch, smallest ρ, ONNX Runtime (target ≥ 1.54×);
* predictor + TopK + Gather share of sparse latency, from ONNX Runtime's per-node profiler
  (target ≤ 5%);
* ONNX Runtime vs PyTorch eager on the same model (target ≥ 1.3×).

    python benchmarks/bench_cpu.py --json benchmarks/results-cpu.json

Run it on a quiet machine: other processes sharing the cores make every number noisy.

    python benchmarks/bench_cpu.py --precision-suite --json benchmarks/results-cpu-precision.json

measures reduced precision instead (ORT fp32/int8, OpenVINO f32/bf16/int8, torch eager fp32/bf16,
dense and sparse, interleaved): see benchmarks/bench_precision.py.

    python benchmarks/bench_cpu.py --vs-limit --json benchmarks/results-cpu-limits-<class>.json

measures every CPU configuration (fp32 and each int8 recipe, ORT and OpenVINO) at batch 64 against
this machine's fp32 sgemm and int8 GEMM rates, next to its agreement, and names the fastest one that
agrees: see benchmarks/bench_limits.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dvit_deploy.artifact.store import open_artifact
from dvit_deploy.export import export_onnx
from dvit_deploy.helpers.fileio import manifest_path, write_json_atomic
from dvit_deploy.jobs.flops import count_macs
from dvit_deploy.models import get_variant
from dvit_deploy.models.checkpoint import load_model
from dvit_deploy.jobs.profile import (ProfileOptions, ProfileRun, ProfileSettings, attach_speedups, machine_info,
                                   profile_artifacts, pruning_overhead)

TARGET_SPEEDUP = 1.54
TARGET_OVERHEAD = 0.05
TARGET_ORT_VS_TORCH = 1.3


def parse_list(text: str, kind=float) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def ensure_export(folder: Path, model: str, ratio: float | None, seed: int) -> Path:
    """Export once; later runs reuse the file (same name = same model, seed and settings)."""
    tag = "dense" if ratio is None else f"r{ratio:g}"
    path = folder / f"{model}-{tag}-seed{seed}.onnx"
    if path.exists() and manifest_path(path).exists():
        return path
    loaded = load_model(model_name=model, keep_ratio=ratio, dense=ratio is None, seed=seed)
    return export_onnx(loaded, path, force=True, check_samples=2).path


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--precision-suite" in argv:
        from bench_precision import main as precision_main  # benchmarks/bench_precision.py

        return precision_main([a for a in argv if a != "--precision-suite"])
    if "--vs-limit" in argv:
        from bench_limits import main as limits_main  # benchmarks/bench_limits.py

        return limits_main([a for a in argv if a != "--vs-limit"])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deit-s")
    parser.add_argument("--batches", default="1,16,64", help="comma-separated batch sizes")
    parser.add_argument("--ratios", default="0.9,0.8,0.7", help="comma-separated keep ratios ρ")
    parser.add_argument("--backends", default="onnxruntime,torch", help="onnxruntime and/or torch")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per point")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating measurement rounds (drift-robust ratios; 1 = sequential)")
    parser.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds per point")
    parser.add_argument("--min-iterations", type=int, default=10, help="timed calls per point, at least")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads [default: backend's]")
    parser.add_argument("--graph-optimization", default="all", choices=["disable", "basic", "extended", "all"])
    parser.add_argument("--overhead-runs", type=int, default=10,
                        help="profiled ORT runs for the predictor/TopK/Gather share (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/.artifacts"))
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    args = parser.parse_args(argv)

    console = Console(stderr=True)
    batches = parse_list(args.batches, int)
    ratios = parse_list(args.ratios)
    backends = parse_list(args.backends, str)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ignore = args.workdir / ".gitignore"
    if not ignore.exists():  # cached exports (~90 MB each) never belong in the repository
        ignore.write_text("*\n")

    console.print(f"[bold]exporting[/] {args.model} dense + ρ {ratios} into {args.workdir}")
    dense = ensure_export(args.workdir, args.model, None, args.seed)
    sparse = {r: ensure_export(args.workdir, args.model, r, args.seed) for r in ratios}
    twins = {str(p): str(dense) for p in sparse.values()}

    settings = ProfileSettings(warmup_s=args.warmup, duration_s=args.duration, intra_op_threads=args.threads,
                               min_iterations=args.min_iterations, rounds=args.rounds)
    results = []
    started = time.time()
    runs = [ProfileRun(open_artifact(dense), "dense")] + [ProfileRun(open_artifact(p), "sparse") for p in sparse.values()]
    options = ProfileOptions(batches=tuple(batches), settings=settings, graph_optimization=args.graph_optimization)
    for backend in backends:
        console.print(f"measuring dense + {len(sparse)} sparse models on {backend} at batch {batches}, "
                      f"interleaved in {settings.rounds} rounds")
        results.extend(profile_artifacts(runs, backend, options))
    attach_speedups(results, twins)

    overhead = None
    if args.overhead_runs and "onnxruntime" in backends and ratios:
        smallest = sparse[min(ratios)]
        console.print(f"profiling nodes of {smallest.name} at batch {max(batches)} (ORT profiler)")
        overhead = pruning_overhead(open_artifact(smallest), max(batches), runs=args.overhead_runs,
                                    intra_op_threads=args.threads, graph_optimization=args.graph_optimization)

    variant = get_variant(args.model)
    summary = summarise(results, overhead, variant, ratios, batches)
    print_table(results, summary, variant.name)
    if args.json is not None:
        write_json_atomic(args.json, {
            "schema": "dvit-deploy/bench-cpu/1",
            "machine": machine_info(),
            "settings": {**settings.to_dict(), "graph_optimization": args.graph_optimization,
                         "model": args.model, "batches": batches, "ratios": ratios, "backends": backends},
            "seconds": round(time.time() - started, 1),
            "results": [r.to_dict() for r in results],
            "overhead": None if overhead is None else overhead.to_dict(),
            "targets": summary,
        })
        console.print(f"wrote {args.json}")
    return 0


def summarise(results, overhead, variant, ratios, batches) -> dict:
    by = {(r.backend, r.keep_ratio, r.batch): r for r in results}
    big, low = max(batches), min(ratios) if ratios else None
    summary: dict = {}
    sparse_ort = by.get(("onnxruntime", low, big))
    if sparse_ort is not None and sparse_ort.speedup is not None:
        summary["speedup_ort"] = {"batch": big, "keep_ratio": low, "measured": round(sparse_ort.speedup, 3),
                                  "flops_bound": round(sparse_ort.flops_ratio, 3), "target": TARGET_SPEEDUP,
                                  "met": sparse_ort.speedup >= TARGET_SPEEDUP}
    if overhead is not None:
        summary["pruning_overhead"] = {"batch": overhead.batch, "keep_ratio": low,
                                       "share": round(overhead.share, 4), "target": TARGET_OVERHEAD,
                                       "met": overhead.share <= TARGET_OVERHEAD,
                                       "per_stage_ms": [round(v, 3) for v in overhead.per_stage_ms],
                                       "by_op_ms": {k: round(v, 3) for k, v in overhead.by_op.items()}}
    ratios_vs_torch = []
    for (backend, ratio, batch), r in by.items():
        other = by.get(("torch", ratio, batch))
        if backend == "onnxruntime" and other is not None and other.throughput_ips > 0:
            ratios_vs_torch.append({"keep_ratio": ratio, "batch": batch,
                                    "ratio": round(r.throughput_ips / other.throughput_ips, 3)})
    if ratios_vs_torch:
        worst = min(ratios_vs_torch, key=lambda x: x["ratio"])
        summary["ort_vs_torch"] = {"per_point": ratios_vs_torch, "min": worst["ratio"],
                                   "target": TARGET_ORT_VS_TORCH, "met": worst["ratio"] >= TARGET_ORT_VS_TORCH}
    summary["gmacs"] = {"dense": round(count_macs(variant).gmacs, 3),
                        **{f"rho_{r:g}": round(count_macs(variant, r).gmacs, 3) for r in ratios}}
    return summary


def print_table(results, summary, model: str) -> None:
    console = Console()
    table = Table(title=f"{model} on CPU — mean latency (ms) / throughput (img/s); speed-up vs dense "
                  "(FLOPs bound)", title_justify="left")
    for col in ("backend", "model", "batch", "mean ms", "p99 ms", "CV", "img/s", "speed-up", "bound"):
        table.add_column(col)
    for r in sorted(results, key=lambda r: (r.backend, r.batch, -(r.keep_ratio or 1.0))):
        label = "dense" if r.keep_ratio is None else f"ρ={r.keep_ratio:g}"
        table.add_row(r.backend, label, str(r.batch), f"{r.stats.mean:.2f}", f"{r.stats.p99:.2f}",
                      f"{r.stats.cv_percent:.1f}%" + ("⚠" if r.unstable else ""), f"{r.throughput_ips:.1f}",
                      "—" if r.speedup is None else f"{r.speedup:.2f}×",
                      "—" if r.flops_ratio is None else f"{r.flops_ratio:.2f}×")
    console.print(table)
    if "speedup_ort" in summary:
        s = summary["speedup_ort"]
        console.print(f"ONNX Runtime sparse/dense throughput, batch {s['batch']}, ρ={s['keep_ratio']:g}: "
                      f"{s['measured']:.2f}× (FLOPs bound {s['flops_bound']:.2f}×; target ≥ {s['target']}×) "
                      + ("[green]met[/]" if s["met"] else "[red]missed[/]"))
    if "pruning_overhead" in summary:
        s = summary["pruning_overhead"]
        console.print(f"predictor + TopK + Gather share of sparse latency (ORT profiler, batch {s['batch']}): "
                      f"{s['share']:.1%} (target ≤ {s['target']:.0%}) " + ("[green]met[/]" if s["met"] else "[red]missed[/]"))
    if "ort_vs_torch" in summary:
        s = summary["ort_vs_torch"]
        console.print(f"ONNX Runtime vs PyTorch eager throughput, worst point: {s['min']:.2f}× "
                      f"(target ≥ {s['target']}×) " + ("[green]met[/]" if s["met"] else "[red]missed[/]"))


if __name__ == "__main__":
    sys.exit(main())
