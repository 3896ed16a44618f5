#!/usr/bin/env python
"""ONNX Runtime fp32 against sgemm: where its time goes per op type, and what ORT offers for ViT, as
interleaved A/B ratios in one run.

Configurations (DeiT-S ρ = 0.7 by default, batch 64), every one measured in the same interleaved
rounds (``bench_common.measure_rounds``: A B C …, then … C B A) together with the fp32 sgemm limit
(torch, 2048³, same threads) and OpenVINO f32 for comparison:

* ``gelu`` — the graph the runner ran before: exact-erf GELU fused (``runtime.ort_fusions.fuse_erf_gelu``);
* ``gelu+attention`` — what dvit's ORT CPU runner now runs (``fuse_for_cpu``: also every self-attention
  block as one ``com.microsoft`` Attention);
* session options on top of it: ``session.intra_op.allow_spinning=0``; memory pattern and CPU arena off;
  one intra-op thread fewer (``--threads`` − 1, skipped at 1);
* ``ort-optimizer`` (``--optimizer``): ``onnxruntime.transformers.optimizer`` with ``model_type='vit'`` on the
  file as is, and which fusions it reports on this pruned graph (TopK/Gather between the blocks).

Reported per configuration: img/s, the median [min–max] of its per-round ratio to ``gelu`` and to sgemm
(``fraction of sgemm`` = img/s × GFLOP per image / sgemm GFLOP/s, same round), and the parity of every
changed graph with the file as is (max |Δlogit|, kept-set equality on the TopK outputs). Op-type
profiles (ORT's per-node trace, ``profile_ops.ort_profile``) of ``gelu`` and ``gelu+attention`` and
OpenVINO's (``profile_ops.ov_profile``) give the shares. The JSON records CPU class and load averages;
a timing taken beside other jobs is labelled loaded and only its ratios mean something.

    python benchmarks/profile_ort_fp32.py --json benchmarks/results-ort-fp32-b64.json          # ~6 quiet min
    python benchmarks/profile_ort_fp32.py --quick                                              # smoke, batch 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import load_snapshot, measure_rounds, others, ratio_spread, round_throughputs  # noqa: E402
from bench_cpu import ensure_export  # noqa: E402
from bench_limits import sgemm_call  # noqa: E402
from profile_ops import ort_profile, ov_compile, ov_profile  # noqa: E402

from dvit_deploy.artifact.manifest import ModelRecord  # noqa: E402
from dvit_deploy.helpers.cpu import cpu_info  # noqa: E402
from dvit_deploy.helpers.fileio import manifest_path, read_json, write_json_atomic  # noqa: E402
from dvit_deploy.jobs.flops import macs_for_model  # noqa: E402
from dvit_deploy.jobs.profile import machine_info, seeded_batch  # noqa: E402

BASE = "gelu"
SPIN_OFF = {"session.intra_op.allow_spinning": "0"}


def rewritten(fp32: Path, kind: str) -> Path:
    """The export with ``kind`` ('gelu' or 'gelu+attention') rewrites applied, written once beside it."""
    import onnx

    from dvit_deploy.runtime.ort_fusions import fuse_erf_gelu, fuse_for_cpu

    out = fp32.with_name(f"{fp32.stem}-{kind.replace('+', '-')}.onnx")
    if not out.exists():
        model = onnx.load(str(fp32))
        fuse_erf_gelu(model) if kind == "gelu" else fuse_for_cpu(model)
        onnx.save(model, str(out))
    return out


def ort_optimized(fp32: Path, record: ModelRecord) -> tuple[Path, dict[str, int]]:
    """ORT's transformer optimizer for ViT on the file as is; the fusions it reports."""
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model

    ort.set_default_logger_severity(3)  # its sessions list every initializer they drop
    out = fp32.with_name(f"{fp32.stem}-ortvit.onnx")
    optimized = optimize_model(str(fp32), model_type="vit", num_heads=int(record.config["num_heads"]),
                               hidden_size=int(record.config["embed_dim"]))
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    if not out.exists():
        optimized.save_model_to_file(str(out))
    return out, stats


def ort_call(path: Path, images: np.ndarray, threads: int, config: dict[str, str] | None = None,
             memory: bool = True) -> Callable[[], Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.enable_mem_pattern = memory
    options.enable_cpu_mem_arena = memory
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    first = [session.get_outputs()[0].name]
    return lambda: session.run(first, {"images": images})


def parity(reference: Path, changed: Path, images: np.ndarray) -> dict[str, Any]:
    """The changed graph against the file as is: max |Δlogit| and whether every stage kept the same tokens."""
    import onnx
    import onnxruntime as ort

    from dvit_deploy.export.graph import with_topk_outputs

    outs = []
    for path in (reference, changed):
        session = ort.InferenceSession(with_topk_outputs(onnx.load(str(path))).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        outs.append(session.run(None, {"images": images}))
    kept = [np.array_equal(np.sort(a, -1), np.sort(b, -1)) for a, b in zip(outs[0][1:], outs[1][1:])
            if a.dtype.kind == "i"]
    return {"max_abs_logit_diff": float(np.abs(outs[0][0] - outs[1][0]).max()), "kept_sets_equal": all(kept),
            "stages": len(kept), "inputs": int(images.shape[0])}


def configurations(args, fp32: Path, record: ModelRecord, images: np.ndarray) -> tuple[dict, dict]:
    fused = rewritten(fp32, "gelu+attention")
    calls = {BASE: ort_call(rewritten(fp32, "gelu"), images, args.threads),
             "gelu+attention": ort_call(fused, images, args.threads),
             "gelu+attention, spin off": ort_call(fused, images, args.threads, SPIN_OFF),
             "gelu+attention, no mem pattern/arena": ort_call(fused, images, args.threads, memory=False)}
    if args.threads > 1:
        calls[f"gelu+attention, {args.threads - 1} thread(s)"] = ort_call(fused, images, args.threads - 1)
    extra: dict[str, Any] = {}
    if args.optimizer:
        path, stats = ort_optimized(fp32, record)
        calls["ort-optimizer (vit)"] = ort_call(path, images, args.threads)
        extra["ort_optimizer_fusions"] = stats
        extra["ort_optimizer_path"] = path
    request = ov_compile(fp32, args.threads).create_infer_request()
    calls["openvino f32"] = lambda: request.infer({0: images})
    calls["sgemm"] = sgemm_call(args.gemm_size, args.threads)
    return calls, extra


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="deit-s")
    p.add_argument("--ratio", type=float, default=0.7)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--round-s", type=float, default=4.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--runs", type=int, default=3, help="profiled runs per op-type profile (0: no profiles)")
    p.add_argument("--gemm-size", type=int, default=2048)
    p.add_argument("--optimizer", action="store_true", help="also ORT's transformer optimizer (model_type vit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=HERE / ".artifacts")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="smoke: batch 4, 2 rounds of 0.3 s, 1 profiled run, 512³ sgemm")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.rounds, args.round_s, args.warmup_s, args.runs, args.gemm_size = 4, 2, 0.3, 0.2, 1, 512
    return args


def shares(profile: dict[str, Any]) -> dict[str, Any]:
    """The class shares, and the twelve op types that take the most node time."""
    return {**{k: profile[k] for k in ("op_ms_per_run", "run_ms", "by_class")},
            "by_op": dict(list(profile["by_op"].items())[:12])}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not (args.workdir / ".gitignore").exists():
        (args.workdir / ".gitignore").write_text("*\n")
    before = load_snapshot()
    started = time.time()
    fp32 = ensure_export(args.workdir, args.model, args.ratio, args.seed)
    record = ModelRecord.from_json(read_json(manifest_path(fp32)))
    gflop = 2 * macs_for_model(record).gmacs
    images = seeded_batch(args.batch, record)
    calls, extra = configurations(args, fp32, record, images)
    check = images[: min(4, args.batch)]
    parities = {"gelu": parity(fp32, rewritten(fp32, "gelu"), check),
                "gelu+attention": parity(fp32, rewritten(fp32, "gelu+attention"), check)}
    if "ort_optimizer_path" in extra:
        parities["ort-optimizer (vit)"] = parity(fp32, extra.pop("ort_optimizer_path"), check)
    print(f"{len(calls)} configurations, batch {args.batch}, {args.rounds} interleaved rounds of {args.round_s} s",
          flush=True)
    measured = measure_rounds(calls, rounds=args.rounds, round_s=args.round_s, warmup_s=args.warmup_s)
    sgemm = [args.gemm_size ** 3 * 2 * len(m.samples_ms) / m.wall_s / 1e9 for m in measured["sgemm"]]
    rows = {}
    base = round_throughputs(measured[BASE], args.batch)
    for name in calls:
        if name == "sgemm":
            continue
        ips = round_throughputs(measured[name], args.batch)
        rows[name] = {"img_s_per_round": [round(v, 3) for v in ips], "img_s_median": round(float(np.median(ips)), 3),
                      "vs_gelu": ratio_spread(ips, base),
                      "fraction_of_sgemm": ratio_spread([v * gflop for v in ips], sgemm)}
    profiles = {}
    if args.runs:
        profiles = {name: shares(ort_profile(rewritten(fp32, kind), {}, images, args.threads, args.runs))
                    for name, kind in (("gelu", "gelu"), ("gelu+attention", "gelu+attention"))}
        profiles["openvino f32"] = shares(ov_profile(fp32, images, args.threads, args.runs))
    after = load_snapshot()
    busy = others(before, after)
    report = {"schema": "dvit-deploy/profile-ort-fp32/1", "status": "loaded" if busy["loaded"] else "quiet",
              "machine": {**machine_info(), "cpu": cpu_info().to_dict(), "load_before": before, "load_after": after,
                          "others": busy},
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "gflop_per_image": gflop, "sgemm_gflops_per_round": [round(v, 2) for v in sgemm],
              "rows": rows, "parity": parities, "profiles": profiles, **extra,
              "seconds": round(time.time() - started, 1)}
    print_report(report)
    if args.json is not None:
        write_json_atomic(args.json, report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(f"run {report['status'].upper()}; sgemm {np.median(report['sgemm_gflops_per_round']):.0f} GFLOP/s (median)")
    for name, r in report["rows"].items():
        v, f = r["vs_gelu"], r["fraction_of_sgemm"]
        print(f"{name:<42} {r['img_s_median']:7.2f} img/s   × gelu {v['median']:.3f} [{v['min']:.3f}–{v['max']:.3f}]"
              f"   of sgemm {f['median']:.0%} [{f['min']:.0%}–{f['max']:.0%}]")
    for name, p in report["parity"].items():
        print(f"parity {name}: max |Δlogit| {p['max_abs_logit_diff']:.2e}, kept sets equal {p['kept_sets_equal']}")
    for name, p in report["profiles"].items():
        print(f"profile {name}: " + ", ".join(f"{c} {s:.0%}" for c, s in p["by_class"].items()))
    if "ort_optimizer_fusions" in report:
        print(f"ORT transformer optimizer fused: {report['ort_optimizer_fusions']}")


if __name__ == "__main__":
    raise SystemExit(main())
