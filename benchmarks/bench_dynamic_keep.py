#!/usr/bin/env python
"""CPU benchmark: does a runtime keep-count input cost anything? A --dynamic-keep DeiT-S graph fed ρ's
kept counts against the fixed export at the same ρ, on ONNX Runtime and OpenVINO (fp32), at batch 1/16/64.

Both graphs come from one seeded model (speed does not depend on the weights) and are exported with dvit's
exporter; the dynamic one runs at ρ exactly as `dvit tradeoff` and `dvit serve` run it (its manifest's keep
counts moved to ρ, fed as the ``keep_counts`` input). Each (backend, batch) loads every configuration at
once and measures them in alternating rounds; the dynamic/fixed throughput ratio is given per round, so
its spread (min–max over rounds) is visible next to the median. The logits of the two graphs on one seeded
batch are compared too (they must match: same weights, same kept counts).

    python benchmarks/bench_dynamic_keep.py --json benchmarks/results-dynamic-keep.json   # on a quiet machine
    python benchmarks/bench_dynamic_keep.py --quick                                        # smoke check

The JSON records the CPU model, class and flags (AVX2 / AVX-512 / VNNI / AMX) and the load averages before
and after: a loaded machine's figures are only good for the ratio's sign, not its size.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import ensure_export, parse_list  # noqa: E402 - benchmarks/bench_cpu.py

from dvit_deploy.artifact.store import open_artifact  # noqa: E402
from dvit_deploy.export import export_onnx  # noqa: E402
from dvit_deploy.helpers.cpu import cpu_info  # noqa: E402
from dvit_deploy.helpers.fileio import manifest_path, write_json_atomic  # noqa: E402
from dvit_deploy.jobs.profile import (ProfileSettings, latency_stats, machine_info, measure_interleaved,  # noqa: E402
                                      seeded_batch)
from dvit_deploy.models.checkpoint import load_model  # noqa: E402
from dvit_deploy.runtime import runner_for_artifact  # noqa: E402

SCHEMA = "dvit-deploy/bench-dynamic-keep/1"
QUICK = dict(batches="1,16", ratios="0.7", rounds=2, duration=0.4, warmup=0.2, min_iterations=2)


def ensure_dynamic_export(folder: Path, model: str, seed: int) -> Path:
    """The --dynamic-keep export, made once (same name = same model and seed)."""
    path = folder / f"{model}-dynkeep-seed{seed}.onnx"
    if path.exists() and manifest_path(path).exists():
        return path
    loaded = load_model(model_name=model, keep_ratio=0.7, seed=seed)
    return export_onnx(loaded, path, force=True, check_samples=2, dynamic_keep=True).path


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def measure_rounds(configs: dict[str, Any], batch: int, settings: ProfileSettings, rounds: int
                   ) -> dict[str, list[dict[str, float]]]:
    """Per configuration, one entry per round (throughput, median ms): all warmed up first, then interleaved."""
    calls = {name: runner.timed_call(seeded_batch(batch, runner.artifact)) for name, runner in configs.items()}
    per_round: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    for r in range(rounds):
        once = dataclasses.replace(settings, rounds=1, warmup_s=settings.warmup_s if r == 0 else 0.0,
                                   duration_s=settings.duration_s / rounds,
                                   min_iterations=max(1, settings.min_iterations // rounds))
        for name, m in measure_interleaved(calls, once).items():
            stats = latency_stats(m.samples_ms)
            per_round[name].append({"img_s": batch * stats.count / m.wall_s, "median_ms": stats.median,
                                    "calls": stats.count})
    return per_round


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def _logit_difference(fixed: Any, dynamic: Any) -> float:
    images = seeded_batch(2, fixed.artifact)
    return float(np.max(np.abs(fixed.run(images).logits - dynamic.run(images).logits)))


def bench_backend(backend: str, exports: dict[float, Path], dynamic: Path, batches: list[int],
                  settings: ProfileSettings, rounds: int, console: Console) -> list[dict[str, Any]]:
    import contextlib

    results = []
    dyn = open_artifact(dynamic)
    with contextlib.ExitStack() as stack:
        configs: dict[str, Any] = {}
        for ratio, path in exports.items():
            configs[f"fixed {ratio:g}"] = stack.enter_context(runner_for_artifact(open_artifact(path), backend))
            configs[f"dynamic {ratio:g}"] = stack.enter_context(runner_for_artifact(dyn.at_keep_ratio(ratio), backend))
        diffs = {ratio: _logit_difference(configs[f"fixed {ratio:g}"], configs[f"dynamic {ratio:g}"]) for ratio in exports}
        for batch in batches:
            console.print(f"{backend} batch {batch}: {len(configs)} configurations, {rounds} rounds "
                          f"(load {os.getloadavg()[0]:.1f})")
            per_round = measure_rounds(configs, batch, settings, rounds)
            for ratio in exports:
                fixed, dynamic_rounds = per_round[f"fixed {ratio:g}"], per_round[f"dynamic {ratio:g}"]
                ratios = [d["img_s"] / f["img_s"] for d, f in zip(dynamic_rounds, fixed)]
                results.append({
                    "backend": backend, "executes": configs[f"fixed {ratio:g}"].describe().get("executes", backend),
                    "batch": batch, "keep_ratio": ratio, "keep_counts": list(configs[f"dynamic {ratio:g}"].artifact.model.keep_counts),
                    "fixed_img_s": _summary([f["img_s"] for f in fixed]),
                    "dynamic_img_s": _summary([d["img_s"] for d in dynamic_rounds]),
                    "dynamic_over_fixed": {**_summary(ratios), "per_round": [round(v, 4) for v in ratios]},
                    "rounds": {"fixed": fixed, "dynamic": dynamic_rounds},
                    "max_abs_logit_diff": diffs[ratio],
                })
    return results


def _table(results: list[dict[str, Any]], loaded: bool) -> Table:
    title = "dynamic-keep / fixed throughput at the same ρ (median over rounds, min–max)" + \
        (" — LOADED machine: smoke check only" if loaded else "")
    table = Table(title=title)
    for column in ("backend", "batch", "ρ", "fixed img/s", "dynamic img/s", "dynamic/fixed", "spread", "max |Δlogit|"):
        table.add_column(column)
    for r in results:
        ratio = r["dynamic_over_fixed"]
        table.add_row(r["backend"], str(r["batch"]), f"{r['keep_ratio']:g}", f"{r['fixed_img_s']['median']:.1f}",
                      f"{r['dynamic_img_s']['median']:.1f}", f"{ratio['median']:.3f}",
                      f"{ratio['min']:.3f}–{ratio['max']:.3f}", f"{r['max_abs_logit_diff']:.1e}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deit-s", help="a DeiT/LV-ViT variant (--dynamic-keep is refused for "
                        "ConvNeXt/Swin)")
    parser.add_argument("--ratios", default="0.5,0.7,0.9", help="comma-separated keep ratios ρ")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (the ratio's spread is over these)")
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per configuration and batch, "
                        "split over the rounds")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per configuration, first round")
    parser.add_argument("--min-iterations", type=int, default=12, help="timed calls per configuration and batch")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads [default: backend's]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/.artifacts"))
    parser.add_argument("--quick", action="store_true", help="smoke check: batch 1,16, ρ 0.7, 2 short rounds")
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)

    console = Console(stderr=True)
    load_before = _load_average()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not (args.workdir / ".gitignore").exists():
        (args.workdir / ".gitignore").write_text("*\n")
    ratios, batches = parse_list(args.ratios, float), parse_list(args.batches, int)
    settings = ProfileSettings(warmup_s=args.warmup, duration_s=args.duration, min_iterations=args.min_iterations,
                               intra_op_threads=args.threads, rounds=args.rounds)
    started = time.time()
    console.print(f"[bold]exporting[/] {args.model}: --dynamic-keep and fixed at ρ {', '.join(map(str, ratios))} (cached)")
    dynamic = ensure_dynamic_export(args.workdir, args.model, args.seed)
    exports = {ratio: ensure_export(args.workdir, args.model, ratio, args.seed) for ratio in ratios}
    results = []
    for backend in parse_list(args.backends, str):
        results.extend(bench_backend(backend, exports, dynamic, batches, settings, args.rounds, console))
    load_after = _load_average()
    cores = os.cpu_count() or 1
    Console(width=130).print(_table(results, loaded=max(load_before[0], load_after[0]) > 0.5 * cores))
    if args.json is not None:
        write_json_atomic(args.json, {
            "schema": SCHEMA,
            "machine": {**machine_info(), "cpu": cpu_info().to_dict(), "load_average_before": load_before,
                        "load_average_after": load_after,
                        "load_note": "1/5/15-minute load averages (/proc/loadavg); above ~half the core count the "
                                     "figures are loaded"},
            "settings": {**settings.to_dict(), "model": args.model, "ratios": ratios, "batches": batches,
                         "quick": args.quick},
            "seconds": round(time.time() - started, 1),
            "results": results,
        })
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
