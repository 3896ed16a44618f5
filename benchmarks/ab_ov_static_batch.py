#!/usr/bin/env python
"""A/B: OpenVINO's split models (ConvNeXt, Swin) compiled with a dynamic batch (every dvit export; what the
runner did before it compiled per batch) against the same file compiled with the batch fixed (the runner's
default ``static_batch``: ``Model.reshape`` before ``compile_model``, the in-memory equivalent of a
static-batch export, ``dvit export --batch N``).

``profile_ov_split.py`` found the sparse graphs spend time *outside* their nodes (wall minus the sum of node
times: per-inference shape inference and memory of shape-dependent nodes: the ScatterND's zero map, the
Range of batch offsets, the slices of the TopK order), which the dense twin barely has. This measures,
in one interleaved run (dense-dynamic, dense-static, sparse-dynamic, sparse-static; order alternating
round to round), the sparse/dense ratio either way and what fixing the batch gains on each side, and
checks that the logits agree (max |difference| between the two compiles of the same file).

    python benchmarks/ab_ov_static_batch.py --models convnext-t,swin-t --batches 1 --json out.json
    python benchmarks/ab_ov_static_batch.py --quick     # convnext-t, b1, 2 rounds of 0.3 s

Every timing on a loaded machine is "loaded"; only the interleaved ratios of one run mean something.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

SCHEMA = "dvit-deploy/ab-ov-static-batch/1"


def measure(pair: dict[str, Any], batch: int, rounds: int, round_s: float, threads: int | None) -> dict[str, Any]:
    from bench_common import load_snapshot, measure_rounds, others, pooled, ratio_spread, round_throughputs

    from dvit_deploy.jobs.profile import seeded_batch
    from dvit_deploy.runtime import runner_for_artifact

    options = {"intra_op_threads": threads} if threads else {}
    with contextlib.ExitStack() as stack:
        # the runner's own per-batch compile (its default) against the dynamic compile alone
        runners = {(role, mode): stack.enter_context(runner_for_artifact(
                       artifact, "openvino", device="cpu", static_batch=mode == "static", **options))
                   for role, artifact in pair.items() for mode in ("dynamic", "static")}
        images = {role: seeded_batch(batch, a.model) for role, a in pair.items()}
        agreement = {role: float(np.max(np.abs(runners[(role, "dynamic")].run(images[role]).logits
                                               - runners[(role, "static")].run(images[role]).logits)))
                     for role in pair}
        fixed = {role: runners[(role, "static")].compiled_for(batch)[0].inputs[0].get_partial_shape()[0].is_static
                 for role in pair}  # the static arm did compile for the batch (a failed compile falls back)
        start = load_snapshot()
        calls = {f"{r}/{m}": runner.timed_call(images[r]) for (r, m), runner in runners.items()}
        measured = measure_rounds(calls, rounds=rounds, round_s=round_s, warmup_s=round_s)
        tput = {k: round_throughputs(m, batch) for k, m in measured.items()}
        return {
            "batch": batch, "logits_max_abs_diff_static_vs_dynamic": agreement, "static_arm_fixed_batch": fixed,
            "sparse_over_dense": {m: ratio_spread(tput[f"sparse/{m}"], tput[f"dense/{m}"]) for m in ("dynamic", "static")},
            "static_over_dynamic": {r: ratio_spread(tput[f"{r}/static"], tput[f"{r}/dynamic"]) for r in pair},
            "throughput": {k: pooled(m, batch) for k, m in measured.items()},
            "others": others(start, load_snapshot())}


def per_node_us(lengths: tuple[int, int] = (50, 450), reps: int = 200) -> dict[str, float]:
    """OpenVINO's fixed cost per executed node, dynamic and static batch: the slope of the call time of a
    chain of tiny Softmax nodes (1×64; nothing to fuse) between two chain lengths, median of 7 timings."""
    import openvino as ov
    import openvino.opset13 as ops

    core, x = ov.Core(), np.random.default_rng(0).random((1, 64), dtype=np.float32)
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}
    out = {}
    for mode, batch in (("dynamic", -1), ("static", 1)):
        call_us = []
        for n in lengths:
            param = ops.parameter([batch, 64], np.float32)
            node = param
            for _ in range(n):
                node = ops.softmax(node, 1)
            request = core.compile_model(ov.Model([node], [param]), "CPU", config).create_infer_request()
            for _ in range(reps // 4):
                request.infer({0: x})
            timings = []
            for _ in range(7):
                start = time.perf_counter()
                for _ in range(reps):
                    request.infer({0: x})
                timings.append((time.perf_counter() - start) / reps * 1e6)
            call_us.append(float(np.median(timings)))
        out[mode] = round((call_us[1] - call_us[0]) / (lengths[1] - lengths[0]), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    from bench_common import load_snapshot
    from bench_cpu import ensure_export
    from bench_precision import versions
    from bench_zoo import flops_bound

    from dvit_deploy.artifact.store import as_artifact
    from dvit_deploy.helpers.cpu import cpu_info
    from dvit_deploy.helpers.fileio import write_json_atomic

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="convnext-t,swin-t")
    p.add_argument("--batches", default="1")
    p.add_argument("--ratio", type=float, default=0.7)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--round-s", type=float, default=1.5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=HERE / ".artifacts")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--per-node", action="store_true", help="also measure OpenVINO's fixed cost per executed node")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.rounds, args.round_s = "convnext-t", "1", 2, 0.3
    before, started, rows = load_snapshot(), time.time(), []
    for name in [m for m in args.models.split(",") if m]:
        pair = {"dense": as_artifact(ensure_export(args.workdir, name, None, args.seed)),
                "sparse": as_artifact(ensure_export(args.workdir, name, args.ratio, args.seed))}
        bound = flops_bound(name, args.ratio)
        for batch in [int(b) for b in args.batches.split(",") if b]:
            row = {"model": name, "flops_bound": round(bound, 4), **measure(pair, batch, args.rounds, args.round_s,
                                                                            args.threads)}
            rows.append(row)
            so = row["sparse_over_dense"]
            print(f"{name} b{batch}: sparse/dense dynamic {so['dynamic']['median']:.3f}x "
                  f"({so['dynamic']['median'] / bound:.1%} of bound), static {so['static']['median']:.3f}x "
                  f"({so['static']['median'] / bound:.1%}); static/dynamic dense "
                  f"{row['static_over_dynamic']['dense']['median']:.3f}x, sparse "
                  f"{row['static_over_dynamic']['sparse']['median']:.3f}x; logits max diff "
                  f"{row['logits_max_abs_diff_static_vs_dynamic']}; others {row['others']['per_core']} per core "
                  f"({'LOADED' if row['others'].get('loaded', True) else 'quiet'} timings)", flush=True)
    node_cost = per_node_us() if args.per_node else None
    if node_cost:
        print(f"OpenVINO per executed node (chain of tiny Softmax nodes): {node_cost} µs")
    after = load_snapshot()
    if args.json is not None:
        strip = ("cpu_busy_s", "own_cpu_s", "monotonic")
        write_json_atomic(args.json, {
            "schema": SCHEMA, "loaded": any(r["others"].get("loaded", True) for r in rows) if rows else True, "cpu": cpu_info().to_dict(), "versions": versions(),
            "load_before": {k: v for k, v in before.items() if k not in strip},
            "load_after": {k: v for k, v in after.items() if k not in strip},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "rows": rows, "per_node_us": node_cost, "seconds": round(time.time() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
