#!/usr/bin/env python
"""CPU benchmark: DynamicCNN ConvNeXt-T/0.7 and DynamicSwin Swin-T/0.7 against their dense twins.

Exports each model sparse and dense with dvit's exporter (seeded random weights: speed does not
depend on the values), measures sparse/dense throughput at batch 1/16/64 on ONNX Runtime and
OpenVINO fp32 with the same code as `dvit profile` (interleaved rounds), and prints each ratio next
to its FLOPs ratio. Then ONNX Runtime's per-node profiler splits the sparse model's time by operator
type, so a speed-up that does not exist shows where the time went (Scatter, Gather, TopK, fast path).

    python benchmarks/bench_split.py --json benchmarks/results-split.json

The machine is shared: the load averages before and after are recorded; treat the ratios (same run,
interleaved) as the result, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import ensure_export, parse_list  # noqa: E402 - benchmarks/bench_cpu.py

from dvit_deploy.helpers.fileio import write_json_atomic  # noqa: E402
from dvit_deploy.artifact.store import open_artifact  # noqa: E402
from dvit_deploy.jobs.profile import (ProfileOptions, ProfileRun, ProfileSettings, attach_speedups,  # noqa: E402
                                   machine_info, profile_artifacts)


def op_time_by_type(path: Path, batch: int, runs: int) -> dict[str, float]:
    """Mean ms per run spent in each ONNX Runtime operator type (CPU EP, all graph optimisations)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((batch, 3, 224, 224),
                                                                                   dtype=np.float32)}
    session.run(None, feed)  # warm-up (also profiled: dropped below by counting runs)
    for _ in range(runs):
        session.run(None, feed)
    trace = json.loads(Path(session.end_profiling()).read_text())
    totals: Counter[str] = Counter()
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            totals[event["args"].get("op_name", "?")] += event["dur"] / 1000.0
    return {op: round(ms / (runs + 1), 3) for op, ms in totals.most_common()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="convnext-t,swin-t")
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per point and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--min-iterations", type=int, default=3)
    parser.add_argument("--profile-batch", type=int, default=16, help="batch of the ORT per-operator profile (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/.artifacts"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    console = Console(stderr=True)
    load_before = os.getloadavg()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not (args.workdir / ".gitignore").exists():
        (args.workdir / ".gitignore").write_text("*\n")
    batches, backends = parse_list(args.batches, int), parse_list(args.backends, str)
    settings = ProfileSettings(warmup_s=args.warmup, duration_s=args.duration, min_iterations=args.min_iterations,
                               rounds=args.rounds)
    started = time.time()
    results, per_op = [], {}
    for model in parse_list(args.models, str):
        console.print(f"[bold]exporting[/] {model} dense + ρ {args.ratio}")
        dense = ensure_export(args.workdir, model, None, args.seed)
        sparse = ensure_export(args.workdir, model, args.ratio, args.seed)
        runs = [(dense, "dense"), (sparse, "sparse")]
        for backend in backends:
            console.print(f"measuring {model} on {backend} at batch {batches} (load {os.getloadavg()[0]:.1f})")
            found = profile_artifacts([ProfileRun(open_artifact(p), role) for p, role in runs], backend,
                                      ProfileOptions(batches=tuple(batches), settings=settings))
            attach_speedups(found, {str(sparse): str(dense)})
            results.extend((model, r) for r in found)
        if args.profile_batch:
            per_op[model] = {role: op_time_by_type(p, args.profile_batch, 3) for p, role in runs}

    table = Table(title=f"sparse/dense throughput, ρ = {args.ratio} (img/s; ratio next to the FLOPs bound)")
    for column in ("model", "backend", "batch", "dense", "sparse", "sparse/dense", "FLOPs ratio"):
        table.add_column(column)
    dense_by = {(m, r.backend, r.batch): r for m, r in results if r.role == "dense"}
    for model, r in results:
        if r.role == "dense":
            continue
        base = dense_by[(model, r.backend, r.batch)]
        table.add_row(model, r.backend, str(r.batch), f"{base.throughput_ips:.2f}", f"{r.throughput_ips:.2f}",
                      f"{r.speedup:.2f}×", f"{r.flops_ratio:.2f}×")
    console.print(table)
    for model, roles in per_op.items():
        for role, ops in roles.items():
            top = ", ".join(f"{op} {ms:.1f}" for op, ms in list(ops.items())[:8])
            console.print(f"{model} {role}, ORT ms per run at batch {args.profile_batch}: {top}")
    if args.json is not None:
        write_json_atomic(args.json, {
            "schema": "dvit-deploy/bench-split/1",
            "machine": {**machine_info(), "load_average_before": load_before, "load_average_after": os.getloadavg()},
            "settings": {**settings.to_dict(), "ratio": args.ratio, "batches": batches, "backends": backends},
            "seconds": round(time.time() - started, 1),
            "results": [{"model": m, **r.to_dict()} for m, r in results],
            "ort_ms_per_op_type": per_op,
        })
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
