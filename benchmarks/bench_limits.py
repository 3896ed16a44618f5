#!/usr/bin/env python
"""CPU configurations against this machine's limits: fp32 sgemm and int8 GEMM, measured in the same run.

Run through ``python benchmarks/bench_cpu.py --vs-limit [options]`` (or this file directly).

* Limits: fp32 sgemm GFLOP/s (torch matmul, the same thread count the runtimes use) and int8 GEMM
  GOP/s (ONNX Runtime ``MatMulInteger`` u8×s8 on its default kernels, and with its exact u8u8 mode,
  ``session.x64quantprecision=1``), on big square matrices, measured in the same interleaved rounds
  as the models (a shared machine's load hits both alike).
* Model: DeiT-S ρ=0.7 (seeded weights; speed does not depend on values), batch 64, every
  configuration loaded at once and measured interleaved. img/s is set against the limit:
  ``limit img/s = GEMM rate / GFLOP per image`` (2 × MACs, predictors included), so "fraction of
  limit" is how close the configuration runs to the machine's GEMM speed for its arithmetic.
* Agreement (the ``int8`` tolerance: top-1 ≥ 99 % on inputs whose reference margin ≥ 0.1, mean
  kept-set Jaccard ≥ 0.95) vs PyTorch fp32 on ``--agreement`` inputs. The **best configuration** is
  the fastest that agrees; a fast one that disagrees is listed, never called best.
* The int8 graphs: the recipe ``dvit quantize --for cpu`` picks on this CPU class, plus the other
  recipe, so the saturation question is measured rather than assumed (``quantize.recipe``).
* Recorded: CPU model, class and flags (``dvit_deploy.helpers.cpu``), load averages before and after.
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
from bench_precision import load_average, versions  # noqa: E402

from dvit_deploy.helpers.compare import TOLERANCES, compare  # noqa: E402
from dvit_deploy.helpers.cpu import ORT_EXACT_INT8_CONFIG, cpu_info  # noqa: E402
from dvit_deploy.helpers.fileio import manifest_path, read_json, write_json_atomic  # noqa: E402
from dvit_deploy.artifact.manifest import ModelRecord  # noqa: E402
from dvit_deploy.jobs.flops import macs_for_model  # noqa: E402
from dvit_deploy.jobs.profile import ProfileSettings, latency_stats, machine_info, measure_interleaved, seeded_batch  # noqa: E402

TARGETS_VS_TORCH = {"avx2": 1.5, "avx512": 1.5, "avx512-vnni": 2.5, "avx-vnni": 2.5, "amx": 3.0}
TOP1, JACCARD = 0.99, 0.95


def sgemm_call(n: int, threads: int) -> Callable[[], None]:
    """One n×n×n fp32 matmul (torch, ``threads`` threads): 2n³ FLOP per call."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return lambda: torch.mm(a, b)


def int8_gemm_call(n: int, threads: int, config: dict[str, str]) -> Callable[[], None]:
    """One ONNX Runtime MatMulInteger, u8 activations × s8 constant weights (the Q/DQ MatMul kernels' shape)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, (n, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
        initializer=[numpy_helper.from_array(weights, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    del onnx
    return lambda: session.run(None, {"a": a})


class OrtGraph:
    """An ORT CPU session with TopK outputs for agreement: config entries as given (no dvit int8 policy),
    the exporter's GELU and attention blocks fused as dvit's ORT runner does (``runtime.ort_fusions.fuse_for_cpu``)
    unless ``fuse_gelu=False``."""

    def __init__(self, path: Path, config: dict[str, str], threads: int, fuse_gelu: bool = True) -> None:
        import onnx
        import onnxruntime as ort

        from dvit_deploy.export.graph import pruning_stages, with_topk_outputs
        from dvit_deploy.runtime.ort_fusions import fuse_for_cpu

        model = onnx.load(str(path))
        if fuse_gelu:  # and the attention blocks, as the runner does
            fuse_for_cpu(model)
        self.stages = [s.indices_output for s in pruning_stages(model)]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        for key, value in config.items():
            options.add_session_config_entry(key, value)
        self.session = ort.InferenceSession(with_topk_outputs(model).SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]

    def run(self, images: np.ndarray):
        from dvit_deploy.artifact.names import kept_patch_ids
        from dvit_deploy.helpers.batching import RunOutput

        outs = dict(zip(self.names, self.session.run(self.names, {"images": images})))
        return RunOutput(outs[self.names[0]], kept_patch_ids([outs[n].astype(np.int64) for n in self.stages], 196))

    def timed_call(self, images: np.ndarray) -> Callable[[], None]:
        first = [self.names[0]]
        return lambda: self.session.run(first, {"images": images})


PREDICTOR_SUFFIX = "+predictor"  # a recipe name ending so: dvit quantize --quantize-predictor


def ensure_int8(fp32: Path, recipe: str) -> Path:
    """``dvit quantize`` of ``fp32`` with ``recipe`` (``<recipe>+predictor``: the score predictors quantized
    too), written once beside it and reused while it derives from the same fp32 file."""
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.jobs.quantize import QuantizeOptions, quantize_onnx, select_recipe

    source = read_json(manifest_path(fp32))
    # a dense twin has no predictors: its "+predictor" file is the plain one
    include_predictor = recipe.endswith(PREDICTOR_SUFFIX) and not source.get("dense")
    recipe = recipe.removesuffix(PREDICTOR_SUFFIX)
    out = fp32.with_name(f"{fp32.stem}-int8-{recipe}{'-predictor' if include_predictor else ''}.onnx")
    if out.exists() and manifest_path(out).exists():
        recorded = read_json(manifest_path(out))["quantization"]
        if recorded["derived_from"]["sha256"] == source["onnx"]["sha256"]:
            return out
    # --for tensorrt's check runs exact int8 arithmetic, so the file is written whatever this CPU is;
    # the saturating kernels are measured below, not in the quantize check
    target = "tensorrt" if recipe == "s8s8" else "cpu"
    options = QuantizeOptions(target=target, recipe=select_recipe(target, override=recipe),
                              include_predictor=include_predictor)
    return quantize_onnx(open_artifact(fp32), out, options, force=True).path


def open_configs(fp32: Path, int8: dict[str, Path], threads: int, stack: contextlib.ExitStack) -> dict[str, Any]:
    from dvit_deploy.runtime import runner_for_artifact

    opts = {"intra_op_threads": threads}
    configs: dict[str, Any] = {
        "torch-fp32": stack.enter_context(runner_for_artifact(fp32, "torch", precision="fp32", **opts)),
        "ort-fp32": OrtGraph(fp32, {}, threads),
        "ov-f32": stack.enter_context(runner_for_artifact(fp32, "openvino", precision="fp32", topk_outputs=True, **opts)),
    }
    for recipe, path in int8.items():
        configs[f"ort-int8-{recipe}"] = OrtGraph(path, {}, threads)
        configs[f"ov-int8-{recipe}"] = stack.enter_context(runner_for_artifact(path, "openvino", precision="int8",
                                                                               topk_outputs=True, **opts))
    configs["ort-int8-s8s8-exact"] = OrtGraph(int8["s8s8"], dict(ORT_EXACT_INT8_CONFIG), threads)
    return configs


def limit_kind(name: str) -> str:
    if "int8" not in name:
        return "fp32 sgemm"
    return "int8 GEMM (exact u8u8)" if name.endswith("-exact") else "int8 GEMM (u8s8)"


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deit-s")
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per configuration")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--min-iterations", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--agreement", type=int, default=64, help="inputs for the agreement check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/.artifacts"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    console = Console(stderr=True)
    cpu = cpu_info()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not (args.workdir / ".gitignore").exists():
        (args.workdir / ".gitignore").write_text("*\n")
    load_before = load_average()
    started = time.time()
    console.print(f"CPU: {cpu.summary()}; {args.threads} threads; load {load_before}")

    fp32 = ensure_export(args.workdir, args.model, args.ratio, args.seed)
    int8 = {recipe: ensure_int8(fp32, recipe) for recipe in ("s8s8", "s8s8-reduce-range")}
    manifest = read_json(manifest_path(fp32))
    gflop_per_image = 2 * macs_for_model(ModelRecord.from_json(manifest)).gmacs

    # The limits are measured as three more configurations inside the interleaved rounds, so that
    # other load on a shared machine slows them as much as the models.
    gemm_ops = 2 * args.gemm_size ** 3
    limit_calls = {"fp32 sgemm": sgemm_call(args.gemm_size, args.threads),
                   "int8 GEMM (u8s8)": int8_gemm_call(args.gemm_size, args.threads, {}),
                   "int8 GEMM (exact u8u8)": int8_gemm_call(args.gemm_size, args.threads, dict(ORT_EXACT_INT8_CONFIG))}

    import torch

    from dvit_deploy.export.check import reference_outputs
    from dvit_deploy.models.checkpoint import load_model_from_record
    from dvit_deploy.jobs.quantize.calibration import mixed_inputs
    from dvit_deploy.helpers.batching import run_batched

    images = mixed_inputs(manifest["data_config"], args.agreement, scenes_seed=7, noise_seed=8)
    console.print(f"agreement: PyTorch fp32 reference on {args.agreement} inputs")
    ref = reference_outputs(load_model_from_record(manifest), torch.from_numpy(images), 16)

    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        configs = open_configs(fp32, int8, args.threads, stack)
        batch = seeded_batch(args.batch, ModelRecord.from_json(manifest))
        calls = {name: runner.timed_call(batch) for name, runner in configs.items()}
        settings = ProfileSettings(warmup_s=args.warmup, duration_s=args.duration, rounds=args.rounds,
                                   min_iterations=args.min_iterations)
        console.print(f"batch {args.batch}: {len(calls)} configurations and {len(limit_calls)} GEMM limits "
                      f"({args.gemm_size}², {args.threads} threads) interleaved in {args.rounds} rounds")
        measured = measure_interleaved({**calls, **limit_calls}, settings)
        limits = {}
        for name in limit_calls:
            stats = latency_stats(measured[name].samples_ms)
            limits[name] = gemm_ops * stats.count / measured[name].wall_s / 1e9
        for name, runner in configs.items():
            stats = latency_stats(measured[name].samples_ms)
            ips = args.batch * stats.count / measured[name].wall_s
            if name == "torch-fp32":
                agree = {"top1_confident": 1.0, "confident_samples": None, "mean_jaccard": 1.0, "passed": True,
                         "note": "the reference itself"}
            else:
                console.print(f"agreement: {name}")
                gathered = run_batched(runner.run, images, 16)
                logits, kept = gathered.logits, gathered.kept
                cmp = compare(ref["logits"], logits, TOLERANCES["int8"], ref_kept=ref["kept"], test_kept=kept,
                              ref_margins=ref["margins"])
                lg = cmp.logits
                agree = {"top1_confident": lg.top1_agreement_confident, "confident_samples": lg.confident_samples,
                         "top1_raw": lg.top1_agreement, "mean_jaccard": cmp.mean_jaccard,
                         "passed": (lg.top1_agreement_confident or 0) >= TOP1 and (cmp.mean_jaccard or 0) >= JACCARD}
            kind = limit_kind(name)
            limit_ips = limits[kind] / gflop_per_image
            rows.append({"config": name, "throughput_ips": ips, "latency_ms": stats.latency_ms(),
                         "cv_percent": stats.cv_percent, "iterations": stats.count, "limit": kind,
                         "limit_ips": limit_ips, "fraction_of_limit": ips / limit_ips,
                         "fraction_of_fp32_limit": ips / (limits["fp32 sgemm"] / gflop_per_image),
                         "agreement": agree})
    torch_ips = next(r["throughput_ips"] for r in rows if r["config"] == "torch-fp32")
    for r in rows:
        r["vs_torch_fp32"] = r["throughput_ips"] / torch_ips
    agreeing = [r for r in rows if r["agreement"]["passed"]]
    best = max(agreeing, key=lambda r: r["throughput_ips"])
    fastest = max(rows, key=lambda r: r["throughput_ips"])
    target = TARGETS_VS_TORCH.get(cpu.cpu_class)
    summary = {"best_agreeing": best["config"], "best_vs_torch_fp32": best["vs_torch_fp32"],
               "target_vs_torch_fp32": target, "met": None if target is None else best["vs_torch_fp32"] >= target,
               "fastest": fastest["config"], "fastest_agrees": fastest["agreement"]["passed"],
               "fp32_best_fraction_of_sgemm": max(r["fraction_of_limit"] for r in rows if r["limit"] == "fp32 sgemm")}

    table = Table(title=f"{args.model} ρ={args.ratio:g}, batch {args.batch}, {cpu.cpu_class} CPU "
                        f"({gflop_per_image:.2f} GFLOP/image); limits: sgemm {limits['fp32 sgemm']:.0f} GFLOP/s, "
                        f"int8 {limits['int8 GEMM (u8s8)']:.0f} / exact {limits['int8 GEMM (exact u8u8)']:.0f} GOP/s",
                  title_justify="left")
    for col in ("config", "img/s", "× torch fp32", "limit", "of limit", "of fp32 limit", "top-1 (margin ≥ 0.1)",
                "Jaccard", "agrees", "CV"):
        table.add_column(col)
    for r in sorted(rows, key=lambda r: -r["throughput_ips"]):
        a = r["agreement"]
        mark = " ← best" if r is best else ""
        table.add_row(r["config"] + mark, f"{r['throughput_ips']:.1f}", f"{r['vs_torch_fp32']:.2f}×", r["limit"],
                      f"{r['fraction_of_limit']:.0%}", f"{r['fraction_of_fp32_limit']:.0%}",
                      f"{a['top1_confident']:.1%}", f"{a['mean_jaccard']:.3f}", "yes" if a["passed"] else "NO",
                      f"{r['cv_percent']:.0f}%")
    Console(width=170).print(table)
    console.print(summary)
    load_after = load_average()
    if args.json is not None:
        write_json_atomic(args.json, {
            "schema": "dvit-deploy/bench-cpu-limits/1",
            "machine": {**machine_info(), "cpu": cpu.to_dict(), "threads": args.threads,
                        "load_average_before": load_before, "load_average_after": load_after},
            "versions": versions(),
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "gflop_per_image": gflop_per_image,
            "limits_gops": limits,
            "results": rows,
            "summary": summary,
            "seconds": round(time.time() - started, 1),
        })
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
