#!/usr/bin/env python
"""CPU precision benchmark: DeiT-S dense vs DynamicViT ρ, ONNX Runtime fp32/int8, OpenVINO f32/bf16/int8, torch eager fp32/bf16.

Run through ``python benchmarks/bench_cpu.py --precision-suite [options]`` (or this file directly).

* Models: dvit's exporter with seeded random weights (speed does not depend on the values), the
  int8 graphs from ``dvit quantize`` (ORT ``quantize_static``, QDQ, predictors/TopK/Softmax/LayerNorm
  in float), cached in ``benchmarks/.artifacts``.
* Speed: every configuration (backend × precision × dense/sparse) is loaded at once and, per batch
  size, measured in alternating rounds with the same code as ``dvit profile``, so drift in machine
  speed affects all alike. Ratios (sparse/dense, vs ORT fp32 sparse) come from the same run.
* Agreement (``--agreement N``): each sparse configuration vs PyTorch fp32 on N inputs, half generated
  scenes and half seeded noise: raw top-1, top-1 on inputs whose reference top-1 margin ≥ 0.1,
  per-stage and mean kept-set Jaccard, near-tie and other flips.
* Recorded with the results: CPU model, the ISA flags that matter (AVX-512, VNNI, AMX) from
  /proc/cpuinfo, what OpenVINO ran (kernels, precision), library versions, and ``uptime`` load
  averages before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu import ensure_export  # noqa: E402

from dvit_deploy.helpers.compare import TOLERANCES, compare  # noqa: E402
from dvit_deploy.helpers.fileio import manifest_path, read_json, write_json_atomic  # noqa: E402
from dvit_deploy.artifact.manifest import ModelRecord  # noqa: E402
from dvit_deploy.jobs.flops import macs_for_model  # noqa: E402
from dvit_deploy.jobs.profile import ProfileSettings, latency_stats, machine_info, measure_interleaved, seeded_batch  # noqa: E402
from dvit_deploy.runtime import runner_for_artifact  # noqa: E402
from dvit_deploy.runtime.openvino_runner import cpu_flags, cpu_model  # noqa: E402

CONFIGS = ("ort-fp32", "ort-int8", "ov-f32", "ov-bf16", "ov-int8", "torch-fp32", "torch-bf16")
BASELINE = "ort-fp32"
TARGET_VS_ORT = 4.0
TARGET_SPARSE_DENSE = 1.45
TARGET_TOP1 = 0.99
TARGET_JACCARD = 0.95
TARGET_SIZE = 0.30


def load_average() -> list[float]:
    with contextlib.suppress(OSError):
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    return []


def ensure_int8(fp32: Path, calib_samples: int, method: str) -> Path:
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.jobs.quantize import QuantizeOptions, quantize_onnx

    out = fp32.with_name(f"{fp32.stem}-int8-{method}{calib_samples}.onnx")
    if out.exists() and manifest_path(out).exists():
        recorded = read_json(manifest_path(out))["quantization"]["derived_from"]["sha256"]
        if recorded == read_json(manifest_path(fp32))["onnx"]["sha256"]:
            return out
    options = QuantizeOptions(method=method, calib_samples=calib_samples)
    return quantize_onnx(open_artifact(fp32), out, options, force=True).path


class TorchBF16:
    """PyTorch eager under CPU autocast bf16 (dvit's torch runner refuses CPU bf16 on purpose: it is not
    a deployment path; here it is a reference point)."""

    def __init__(self, manifest: dict[str, Any], threads: int | None) -> None:
        import torch

        from dvit_deploy.models.checkpoint import load_model_from_record

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.loaded = load_model_from_record(manifest)
        self.model = self.loaded.model.eval()
        self.precision = "bf16"

    def describe(self) -> dict[str, Any]:
        return {"executes": f"torch {self.torch.__version__} eager, CPU autocast bfloat16", "precision": "bf16"}

    def run_logits_kept(self, images: np.ndarray):
        from dvit_deploy.models import kept_patch_ids

        torch = self.torch
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            if self.loaded.dense:
                return self.model(torch.from_numpy(images)).float().numpy(), None
            out, decisions = self.model.forward_with_decisions(torch.from_numpy(images))
        kept = kept_patch_ids(decisions.keep_indices, self.loaded.variant.num_patches)
        return out.float().numpy(), [k.numpy() for k in kept]

    def timed_call(self, images: np.ndarray) -> Callable[[], None]:
        torch = self.torch
        x = torch.from_numpy(images)

        def call() -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                self.model(x)

        return call


def open_config(name: str, artifacts: dict[str, Path], role: str, threads: int | None, stack: contextlib.ExitStack):
    fp32, int8 = artifacts[f"{role}-fp32"], artifacts[f"{role}-int8"]
    opts: dict[str, Any] = {} if threads is None else {"intra_op_threads": threads}
    if name == "ort-fp32":
        return stack.enter_context(runner_for_artifact(fp32, "onnxruntime", precision="fp32", topk_outputs=True, **opts))
    if name == "ort-int8":
        return stack.enter_context(runner_for_artifact(int8, "onnxruntime", precision="int8", topk_outputs=True, **opts))
    if name == "ov-f32":
        return stack.enter_context(runner_for_artifact(fp32, "openvino", precision="fp32", **opts))
    if name == "ov-bf16":
        return stack.enter_context(runner_for_artifact(fp32, "openvino", precision="bf16", **opts))
    if name == "ov-int8":
        return stack.enter_context(runner_for_artifact(int8, "openvino", precision="int8", **opts))
    if name == "torch-fp32":
        return stack.enter_context(runner_for_artifact(fp32, "torch", precision="fp32", **opts))
    if name == "torch-bf16":
        return TorchBF16(read_json(manifest_path(fp32)), threads)
    raise SystemExit(f"unknown configuration {name}; known: {', '.join(CONFIGS)}")


def agreement(configs: list[str], artifacts: dict[str, Path], count: int, threads: int | None, console) -> dict:
    """Each sparse configuration vs PyTorch fp32 on ``count`` inputs (half generated scenes, half noise)."""
    import torch

    from dvit_deploy.export.check import reference_outputs
    from dvit_deploy.models.checkpoint import load_model_from_record
    from dvit_deploy.jobs.quantize.calibration import mixed_inputs
    from dvit_deploy.helpers.batching import run_batched

    manifest = read_json(manifest_path(artifacts["sparse-fp32"]))
    images = mixed_inputs(manifest["data_config"], count, scenes_seed=7, noise_seed=8)
    console.print(f"agreement: PyTorch fp32 reference on {count} inputs")
    ref = reference_outputs(load_model_from_record(manifest), torch.from_numpy(images), 16)
    out: dict[str, Any] = {"inputs": f"{count - count // 2} generated scenes (seed 7) + {count // 2} seeded noise (seed 8)",
                           "samples": count, "configs": {}}
    for name in configs:
        if name == "torch-fp32":
            continue
        console.print(f"agreement: {name}")
        with contextlib.ExitStack() as stack:
            runner = open_config(name, artifacts, "sparse", threads, stack)
            if isinstance(runner, TorchBF16):
                parts = [runner.run_logits_kept(images[i:i + 16]) for i in range(0, count, 16)]
                logits = np.concatenate([p[0] for p in parts])
                kept = [np.concatenate([p[1][s] for p in parts]) for s in range(len(parts[0][1]))]
            else:
                gathered = run_batched(runner.run, images, 16)  # validate.run_in_batches is gone
                logits, kept = gathered.logits, gathered.kept
            precision = "int8" if name.endswith("int8") else "bf16" if name.endswith("bf16") else "fp32"
            cmp = compare(ref["logits"], logits, TOLERANCES[precision], ref_kept=ref["kept"], test_kept=kept,
                          ref_margins=ref["margins"])
            unexplained_bf16 = None
            if precision != "bf16":  # how the same flips read under the bf16 near-tie margin, for comparison
                unexplained_bf16 = compare(ref["logits"], logits, TOLERANCES["bf16"], ref_kept=ref["kept"],
                                           test_kept=kept, ref_margins=ref["margins"]).unexplained_flips
            lg = cmp.logits
            out["configs"][name] = {
                "precision": precision, "judged_by": cmp.judged_by, "passed": cmp.passed, "failures": cmp.failures,
                "top1_agreement": lg.top1_agreement, "top1_agreement_confident": lg.top1_agreement_confident,
                "confident_samples": lg.confident_samples, "top5_agreement": lg.top5_agreement,
                "max_abs_logit_diff": lg.max_abs, "mean_abs_logit_diff": lg.mean_abs,
                "mean_jaccard": cmp.mean_jaccard,
                "stages": [{"stage": s.stage, "keep_count": s.keep_count, "mean_jaccard": s.mean_jaccard,
                            "min_jaccard": s.min_jaccard, "flipped_samples": s.flipped_samples,
                            "near_tie_flips": s.near_tie_flips} for s in cmp.stages],
                "unexplained_flips": cmp.unexplained_flips,
                "unexplained_flips_at_bf16_margin": unexplained_bf16,
                "tie_margin": TOLERANCES[precision].tie_margin,
            }
    out["reference_margins"] = {f"stage{s + 1}": {"p10": float(np.percentile(m, 10)), "median": float(np.median(m)),
                                                  "p90": float(np.percentile(m, 90))} for s, m in enumerate(ref["margins"])}
    top2 = np.sort(ref["logits"], axis=1)[:, -2:]
    out["reference_top1_margin_median"] = float(np.median(top2[:, 1] - top2[:, 0]))
    out["reference_logit_std"] = float(ref["logits"].std())
    return out


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deit-s")
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per configuration and batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--min-iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--method", default="percentile", choices=["entropy", "percentile", "minmax"])
    parser.add_argument("--agreement", type=int, default=256, help="inputs for the agreement check (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/.artifacts"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="throughput bar chart per batch (PNG, needs matplotlib)")
    args = parser.parse_args(argv)

    console = Console(stderr=True)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    configs = [c for c in args.configs.split(",") if c.strip()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not (args.workdir / ".gitignore").exists():
        (args.workdir / ".gitignore").write_text("*\n")
    load_before = load_average()
    started = time.time()

    console.print(f"exports: {args.model} dense + ρ={args.ratio:g}, fp32 and int8 ({args.method}, "
                  f"{args.calib_samples} generated scenes)")
    artifacts = {"dense-fp32": ensure_export(args.workdir, args.model, None, args.seed),
                 "sparse-fp32": ensure_export(args.workdir, args.model, args.ratio, args.seed)}
    for role in ("dense", "sparse"):
        artifacts[f"{role}-int8"] = ensure_int8(artifacts[f"{role}-fp32"], args.calib_samples, args.method)
    sizes = {k: p.stat().st_size for k, p in artifacts.items()}

    settings = ProfileSettings(warmup_s=args.warmup, duration_s=args.duration, rounds=args.rounds,
                               min_iterations=args.min_iterations)
    results: list[dict[str, Any]] = []
    described: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        runners = {}
        for name in configs:
            for role in ("sparse", "dense"):
                console.print(f"loading {name} {role}")
                runners[(name, role)] = open_config(name, artifacts, role, args.threads, stack)
                info = runners[(name, role)].describe()
                described[f"{name}-{role}"] = {k: v for k, v in info.items() if k not in ("inputs", "outputs")}
        for batch in batches:
            calls = {}
            for (name, role), runner in runners.items():
                images = seeded_batch(batch, ModelRecord.from_json(read_json(manifest_path(artifacts[f"{role}-fp32"]))))
                calls[(name, role)] = runner.timed_call(images)
            console.print(f"batch {batch}: {len(calls)} configurations interleaved in {settings.rounds} rounds "
                          f"(load {load_average()})")
            measured = measure_interleaved(calls, settings)
            for (name, role), m in measured.items():
                stats = latency_stats(m.samples_ms)
                results.append({
                    "config": name, "role": role, "batch": batch,
                    "precision": "int8" if name.endswith("int8") else "bf16" if name.endswith("bf16") else "fp32",
                    "artifact": str(artifacts[f"{role}-{'int8' if name.endswith('int8') else 'fp32'}"]),
                    "executes": described[f"{name}-{role}"].get("executes"),
                    "latency_ms": stats.latency_ms(), "std_ms": stats.std, "cv_percent": stats.cv_percent,
                    "iterations": stats.count, "measured_s": m.wall_s,
                    "throughput_ips": batch * stats.count / m.wall_s if m.wall_s > 0 else 0.0,
                })
    by = {(r["config"], r["role"], r["batch"]): r for r in results}
    gmacs = {role: macs_for_model(ModelRecord.from_json(read_json(manifest_path(artifacts[f"{role}-fp32"])))).gmacs for role in ("dense", "sparse")}
    for r in results:
        dense = by.get((r["config"], "dense", r["batch"]))
        base = by.get((BASELINE, "sparse", r["batch"]))
        r["speedup_vs_dense"] = (r["throughput_ips"] / dense["throughput_ips"]) if r["role"] == "sparse" and dense else None
        r["vs_ort_fp32_sparse"] = r["throughput_ips"] / base["throughput_ips"] if base else None
    agree = agreement([c for c in configs], artifacts, args.agreement, args.threads, console) if args.agreement else None
    load_after = load_average()

    summary = summarise(results, agree, sizes, batches, gmacs)
    print_table(results, agree, summary)
    report = {
        "schema": "dvit-deploy/bench-cpu-precision/1",
        "machine": {**machine_info(), "cpu_model": cpu_model(), "cpu_flags": cpu_flags(),
                    "load_average_before": load_before, "load_average_after": load_after,
                    "note": "1/5/15-minute load averages from /proc/loadavg (what `uptime` prints); above ~0.5 "
                            "before the run, other work shared the cores"},
        "versions": versions(),
        "settings": {**settings.to_dict(), "model": args.model, "keep_ratio": args.ratio, "batches": batches,
                     "configs": configs, "threads": args.threads, "calibration": {"method": args.method,
                                                                                  "samples": args.calib_samples,
                                                                                  "source": "generated scenes"}},
        "artifacts": {k: {"path": str(p), "bytes": sizes[k]} for k, p in artifacts.items()},
        "described": described,
        "seconds": round(time.time() - started, 1),
        "results": results,
        "agreement": agree,
        "targets": summary,
    }
    if args.json is not None:
        write_json_atomic(args.json, report)
        console.print(f"wrote {args.json}")
    if args.plot is not None:
        plot(results, batches, configs, args.plot)
        console.print(f"wrote {args.plot}")
    return 0


def versions() -> dict[str, str]:
    found = {}
    for module in ("torch", "onnxruntime", "openvino", "onnx", "numpy"):
        with contextlib.suppress(Exception):
            mod = __import__(module)
            found[module] = getattr(mod, "__version__", None) or mod.get_version()
    return found


def summarise(results, agree, sizes, batches, gmacs) -> dict[str, Any]:
    big = max(batches)
    at_big = [r for r in results if r["batch"] == big and r["role"] == "sparse"]
    summary: dict[str, Any] = {"batch": big, "flops_ratio": gmacs["dense"] / gmacs["sparse"]}
    qualifying = []
    for r in at_big:
        a = (agree or {}).get("configs", {}).get(r["config"]) if r["config"] != "torch-fp32" else {
            "top1_agreement_confident": 1.0, "mean_jaccard": 1.0}
        ok = bool(a) and (a["top1_agreement_confident"] or 0) >= TARGET_TOP1 and (a["mean_jaccard"] or 0) >= TARGET_JACCARD
        if ok:
            qualifying.append(r)
    best = max(qualifying, key=lambda r: r["throughput_ips"]) if qualifying else None
    fastest = max(at_big, key=lambda r: r["throughput_ips"]) if at_big else None
    summary["best_agreeing_config"] = None if best is None else {
        "config": best["config"], "throughput_ips": best["throughput_ips"], "vs_ort_fp32_sparse": best["vs_ort_fp32_sparse"],
        "target": TARGET_VS_ORT, "met": (best["vs_ort_fp32_sparse"] or 0) >= TARGET_VS_ORT}
    summary["fastest_config"] = None if fastest is None else {
        "config": fastest["config"], "throughput_ips": fastest["throughput_ips"],
        "vs_ort_fp32_sparse": fastest["vs_ort_fp32_sparse"]}
    summary["sparse_over_dense"] = {r["config"]: r["speedup_vs_dense"] for r in at_big}
    summary["sparse_over_dense_target"] = TARGET_SPARSE_DENSE
    summary["sparse_over_dense_met"] = {k: v is not None and v >= TARGET_SPARSE_DENSE
                                        for k, v in summary["sparse_over_dense"].items()}
    summary["int8_size_ratio"] = {"sparse": sizes["sparse-int8"] / sizes["sparse-fp32"],
                                  "dense": sizes["dense-int8"] / sizes["dense-fp32"], "target": TARGET_SIZE,
                                  "met": sizes["sparse-int8"] / sizes["sparse-fp32"] <= TARGET_SIZE}
    if agree:
        summary["agreement_targets"] = {
            name: {"top1_confident": a["top1_agreement_confident"], "top1_raw": a["top1_agreement"],
                   "mean_jaccard": a["mean_jaccard"],
                   "met": (a["top1_agreement_confident"] or 0) >= TARGET_TOP1 and (a["mean_jaccard"] or 0) >= TARGET_JACCARD}
            for name, a in agree["configs"].items()}
    return summary


def print_table(results, agree, summary) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="CPU precision benchmark — throughput img/s (mean latency ms); ratios from one run",
                  title_justify="left")
    for col in ("config", "batch", "dense", "sparse", "sparse/dense", "vs ORT fp32 sparse", "CV sparse"):
        table.add_column(col)
    by = {(r["config"], r["role"], r["batch"]): r for r in results}
    for (config, role, batch), r in sorted(by.items(), key=lambda kv: (kv[0][2], kv[0][0])):
        if role != "sparse":
            continue
        d = by.get((config, "dense", batch))
        table.add_row(config, str(batch),
                      "—" if d is None else f"{d['throughput_ips']:.1f} ({d['latency_ms']['mean']:.0f})",
                      f"{r['throughput_ips']:.1f} ({r['latency_ms']['mean']:.0f})",
                      "—" if r["speedup_vs_dense"] is None else f"{r['speedup_vs_dense']:.2f}×",
                      "—" if r["vs_ort_fp32_sparse"] is None else f"{r['vs_ort_fp32_sparse']:.2f}×",
                      f"{r['cv_percent']:.1f}%")
    console.print(table)
    if agree:
        t = Table(title=f"agreement with PyTorch fp32, {agree['inputs']}", title_justify="left")
        for col in ("config", "top-1 raw", "top-1 (margin ≥ 0.1)", "mean Jaccard", "per stage", "flips (near-tie)"):
            t.add_column(col)
        for name, a in agree["configs"].items():
            t.add_row(name, f"{a['top1_agreement']:.1%}",
                      "—" if a["top1_agreement_confident"] is None else f"{a['top1_agreement_confident']:.1%} of {a['confident_samples']}",
                      f"{a['mean_jaccard']:.4f}", ", ".join(f"{s['mean_jaccard']:.3f}" for s in a["stages"]),
                      ", ".join(f"{s['flipped_samples']} ({s['near_tie_flips']})" for s in a["stages"]))
        console.print(t)
    console.print(summary)


def plot(results, batches, configs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    by = {(r["config"], r["role"], r["batch"]): r for r in results}
    for ax, batch in zip(axes[0], batches):
        x = np.arange(len(configs))
        dense = [by.get((c, "dense", batch), {}).get("throughput_ips", 0) for c in configs]
        sparse = [by.get((c, "sparse", batch), {}).get("throughput_ips", 0) for c in configs]
        ax.bar(x - 0.2, dense, 0.4, label="dense")
        ax.bar(x + 0.2, sparse, 0.4, label="sparse ρ")
        ax.set_xticks(x, configs, rotation=45, ha="right")
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("img/s")
        ax.legend()
    fig.suptitle(f"{cpu_model()} — {os.cpu_count()} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
