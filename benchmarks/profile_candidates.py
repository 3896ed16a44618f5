#!/usr/bin/env python
"""Candidate settings and recipes for DeiT-S (sparse) on CPU, as interleaved ratios to their base, with agreement.

Every candidate is measured in the same interleaved rounds as its base configuration (``ratio`` =
candidate img/s / base img/s, so machine load cancels as far as it can). Candidates that change
the graph or its numerics (ORT's transformer optimizer, other int8 recipes) are checked against
PyTorch fp32 with the ``int8``/``fp32`` agreement rule (``helpers.compare``: top-1 ≥ 99 % on inputs
with reference margin ≥ 0.1, mean kept-set Jaccard ≥ 0.95); thread and scheduling settings run the
same graph and kernels as their base, so their agreement is the base's and is not re-measured.

Candidates:
* ORT fp32 and int8: the exact-erf GELU fused into one Gelu (``runtime.ort_fusions``, what dvit's ORT
  CPU runner now does); ``onnxruntime.transformers`` optimizer (``model_type='vit'``: BiasGelu,
  SkipLayerNormalization; attention is not fused on this graph); ``session.intra_op.allow_spinning=0``.
* ORT int8: ``session.x64quantprecision=1`` (u8u8 kernels); ``allow_spinning=0``.
* ``--quantize-predictor``: the int8 file with the score predictors int8 too (``dvit quantize
  --quantize-predictor``), on ORT and OpenVINO (agreement on OpenVINO's own outputs there).
* OpenVINO f32 / int8: ``PERFORMANCE_HINT`` THROUGHPUT (streams chosen by OpenVINO) against LATENCY
  with one stream (dvit's runner default).

``python benchmarks/profile_candidates.py --quick --json benchmarks/results-profile-candidates-quick.json``
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu import ensure_export  # noqa: E402
from bench_limits import OrtGraph, ensure_int8  # noqa: E402
from bench_precision import load_average, versions  # noqa: E402
from profile_ops import gelu_fused, ov_compile, ort_session  # noqa: E402

from dvit_deploy.artifact.manifest import ModelRecord  # noqa: E402
from dvit_deploy.helpers.cpu import cpu_info, ort_int8_session_config  # noqa: E402
from dvit_deploy.helpers.fileio import manifest_path, read_json, write_json_atomic  # noqa: E402
from dvit_deploy.jobs.profile import ProfileSettings, latency_stats, machine_info, measure_interleaved, seeded_batch  # noqa: E402

SPIN_OFF = {"session.intra_op.allow_spinning": "0"}


def vit_optimized(fp32: Path, heads: int, hidden: int) -> Path:
    """ORT's transformer optimizer for ViT on the export (written once beside it)."""
    import shutil

    from onnxruntime.transformers.optimizer import optimize_model

    out = fp32.with_name(f"{fp32.stem}-ortvit.onnx")
    if not out.exists():
        optimized = optimize_model(str(fp32), model_type="vit", num_heads=heads, hidden_size=hidden)
        optimized.save_model_to_file(str(out))
        shutil.copy(manifest_path(fp32), manifest_path(out))
    return out


def ort_call(path: Path, config: dict[str, str], threads: int, images: np.ndarray) -> Callable[[], Any]:
    session = ort_session(path, config, threads)
    feed, first = {session.get_inputs()[0].name: images}, [session.get_outputs()[0].name]
    return lambda: session.run(first, feed)


def ov_call(path: Path, threads: int, images: np.ndarray, hint: str) -> Callable[[], Any]:
    compiled = ov_compile(path, threads, hint=hint, streams="1" if hint == "LATENCY" else None)
    request = compiled.create_infer_request()
    return lambda: request.infer({0: images})


def ensure_qpred(fp32: Path, recipe: str) -> Path | None:
    """``dvit quantize --quantize-predictor`` (predictors int8 too), written once; None when its check fails."""
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.helpers.errors import DvitError
    from dvit_deploy.jobs.quantize import QuantizeOptions, quantize_onnx, select_recipe

    out = fp32.with_name(f"{fp32.stem}-int8-{recipe}-qpred.onnx")
    if out.exists() and manifest_path(out).exists():
        return out
    options = QuantizeOptions(target="cpu", recipe=select_recipe("cpu", override=recipe), include_predictor=True)
    try:
        return quantize_onnx(open_artifact(fp32), out, options, force=True).path
    except DvitError as exc:
        print(f"--quantize-predictor: {exc}", file=sys.stderr)
        return None


def candidates(fp32: Path, int8: Path, vit: dict[str, Path], threads: int, images: np.ndarray,
               qpred: Path | None = None) -> dict[str, dict]:
    """name -> {"base": name or None, "call": ..., "agreement": (path, config) to check or None}."""
    int8_cfg = ort_int8_session_config("reduce-range" in int8.name)
    found: dict[str, dict] = {
        "ort-fp32": {"base": None, "call": ort_call(fp32, {}, threads, images), "check": None},
        "ort-fp32 spin off": {"base": "ort-fp32", "call": ort_call(fp32, SPIN_OFF, threads, images), "check": None},
        "ort-int8": {"base": None, "call": ort_call(int8, int8_cfg, threads, images), "check": None},
        "ort-int8 u8u8 (x64quantprecision)": {"base": "ort-int8", "check": (int8, {"session.x64quantprecision": "1"}),
                                              "call": ort_call(int8, {"session.x64quantprecision": "1"}, threads, images)},
        "ort-int8 spin off": {"base": "ort-int8", "call": ort_call(int8, {**int8_cfg, **SPIN_OFF}, threads, images),
                              "check": None},
        "ov-f32 latency": {"base": None, "call": ov_call(fp32, threads, images, "LATENCY"), "check": None},
        "ov-f32 throughput": {"base": "ov-f32 latency", "call": ov_call(fp32, threads, images, "THROUGHPUT"),
                              "check": None},
        "ov-int8 latency": {"base": None, "call": ov_call(int8, threads, images, "LATENCY"), "check": None},
        "ov-int8 throughput": {"base": "ov-int8 latency", "call": ov_call(int8, threads, images, "THROUGHPUT"),
                               "check": None},
    }
    for base, path, cfg in (("ort-fp32", fp32, {}), ("ort-int8", int8, int8_cfg)):
        fused = gelu_fused(path)
        found[f"{base} fused (dvit runner: GELU, attention)"] = {"base": base, "call": ort_call(fused, cfg, threads, images),
                                                     "check": (fused, cfg)}
    if qpred is not None:
        found["ort-int8 predictors int8"] = {"base": "ort-int8", "call": ort_call(qpred, int8_cfg, threads, images),
                                             "check": (qpred, int8_cfg)}
        found["ov-int8 predictors int8"] = {"base": "ov-int8 latency", "call": ov_call(qpred, threads, images, "LATENCY"),
                                            "check": (qpred, None)}
    for kind, path in vit.items():
        base, cfg = ("ort-fp32", {}) if kind == "fp32" else ("ort-int8", int8_cfg)
        found[f"{base} vit-optimizer"] = {"base": base, "call": ort_call(path, cfg, threads, images),
                                          "check": (path, cfg)}
    return found


def agreement(path: Path, config: dict[str, str], threads: int, ref: dict, images: np.ndarray,
              tolerance: str) -> dict[str, Any]:
    from dvit_deploy.helpers.batching import run_batched
    from dvit_deploy.helpers.compare import TOLERANCES, compare

    graph = OrtGraph(path, config, threads)
    got = run_batched(graph.run, images, 16)
    cmp = compare(ref["logits"], got.logits, TOLERANCES[tolerance], ref_kept=ref["kept"], test_kept=got.kept,
                  ref_margins=ref["margins"])
    lg = cmp.logits
    return {"tolerance": tolerance, "top1_confident": lg.top1_agreement_confident,
            "confident_samples": lg.confident_samples, "mean_jaccard": cmp.mean_jaccard,
            "passed": (lg.top1_agreement_confident or 0) >= 0.99 and (cmp.mean_jaccard or 0) >= 0.95,
            "max_abs_logit_diff": float(np.max(np.abs(ref["logits"] - got.logits)))}


def ov_outputs(path: Path, images: np.ndarray, threads: int):
    """OpenVINO (f32 rest, latency, one stream) logits and kept patch ids (TopK indices as extra outputs)."""
    import openvino as ov

    from dvit_deploy.artifact.names import kept_patch_ids

    core = ov.Core()
    model = core.read_model(str(path))
    topks = [op for op in model.get_ordered_ops() if op.get_type_name() == "TopK"]
    model.add_outputs([t.output(1) for t in topks])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                                 "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads)})
    logits, kept = [], []
    for start in range(0, len(images), 16):
        out = compiled.create_infer_request().infer({0: images[start:start + 16]})
        values = [out[compiled.outputs[k]] for k in range(len(compiled.outputs))]
        logits.append(values[0])
        kept.append(kept_patch_ids([v.astype(np.int64) for v in values[-len(topks):]], 196))
    return np.concatenate(logits), [np.concatenate([k[s] for k in kept]) for s in range(len(topks))]


def ov_agreement(path: Path, threads: int, ref: dict, images: np.ndarray) -> dict[str, Any]:
    """Agreement (int8 rule) of OpenVINO's own outputs and kept tokens with the PyTorch fp32 reference."""
    from dvit_deploy.helpers.compare import TOLERANCES, compare

    logits, kept = ov_outputs(path, images, threads)
    cmp = compare(ref["logits"], logits, TOLERANCES["int8"], ref_kept=ref["kept"], test_kept=kept,
                  ref_margins=ref["margins"])
    top1 = cmp.logits.top1_agreement_confident
    return {"tolerance": "int8", "backend": "openvino", "top1_confident": top1,
            "confident_samples": cmp.logits.confident_samples, "mean_jaccard": cmp.mean_jaccard,
            "passed": (top1 or 0) >= 0.99 and (cmp.mean_jaccard or 0) >= 0.95}


def reference(manifest: dict, count: int) -> tuple[dict, np.ndarray]:
    import torch

    from dvit_deploy.export.check import reference_outputs
    from dvit_deploy.jobs.quantize.calibration import mixed_inputs
    from dvit_deploy.models.checkpoint import load_model_from_record

    images = mixed_inputs(manifest["data_config"], count, scenes_seed=7, noise_seed=8)
    return reference_outputs(load_model_from_record(manifest), torch.from_numpy(images), 16), images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deit-s")
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--agreement", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="batch 8, 2 rounds of 2 s, 16 agreement inputs")
    parser.add_argument("--quantize-predictor", action="store_true",
                        help="also the int8 file with the predictors quantized (quantized once, minutes)")
    parser.add_argument("--only", default=None, help="regular expression: measure only the candidates it matches "
                        "(and their bases)")
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/.artifacts"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.duration, args.rounds, args.agreement = 8, 2.0, 2, 16
    cpu, load_before, started = cpu_info(), load_average(), time.time()
    print(f"CPU: {cpu.summary()}; load {load_before}", file=sys.stderr)
    fp32 = ensure_export(args.workdir, args.model, args.ratio, 0)
    int8 = ensure_int8(fp32, "s8s8" if not cpu.int8_saturates else "s8s8-reduce-range")
    manifest = read_json(manifest_path(fp32))
    record = ModelRecord.from_json(manifest)
    vit: dict[str, Path] = {}
    for kind, path in (("fp32", fp32), ("int8", int8)):
        try:
            if args.model == "deit-s" and (not args.only or re.search(args.only, f"ort-{kind} vit-optimizer")):
                vit[kind] = vit_optimized(path, heads=6, hidden=384)
        except Exception as exc:  # noqa: BLE001 - a candidate that does not apply is reported, not fatal
            print(f"vit optimizer failed on {path.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    images = seeded_batch(args.batch, record)
    qpred = ensure_qpred(fp32, int8.stem.split("-int8-")[-1]) if args.quantize_predictor else None
    cands = candidates(fp32, int8, vit, args.threads, images, qpred)
    if args.only:
        chosen = {k for k in cands if re.search(args.only, k)}
        chosen |= {cands[k]["base"] for k in chosen if cands[k]["base"]}
        cands = {k: v for k, v in cands.items() if k in chosen}
    settings = ProfileSettings(warmup_s=0.5, duration_s=args.duration, rounds=args.rounds, min_iterations=2)
    measured = measure_interleaved({k: v["call"] for k, v in cands.items()}, settings)
    ips = {k: args.batch * len(m.samples_ms) / m.wall_s for k, m in measured.items()}
    ref, agree_images = reference(manifest, args.agreement)
    rows = []
    for name, cand in cands.items():
        stats = latency_stats(measured[name].samples_ms)
        base = cand["base"]
        row = {"candidate": name, "base": base, "throughput_ips": ips[name], "cv_percent": stats.cv_percent,
               "iterations": stats.count, "median_ms": stats.median,
               "ratio_to_base": ips[name] / ips[base] if base else None,
               "median_ratio_to_base": latency_stats(measured[base].samples_ms).median / stats.median if base else None}
        if cand["check"] is not None:
            path, config = cand["check"]
            row["agreement"] = (ov_agreement(path, args.threads, ref, agree_images) if config is None else
                                agreement(path, config, args.threads, ref, agree_images,
                                          "int8" if "int8" in name else "fp32"))
        rows.append(row)
        ratio = f"{row['ratio_to_base']:.3f}× {cand['base']}" if cand["base"] else "base"
        print(f"{name:36s} {ips[name]:6.2f} img/s  CV {stats.cv_percent:4.1f}%  {ratio}  "
              f"{row.get('agreement', {}).get('passed', '')}")
    load_after = load_average()
    if args.json is not None:
        write_json_atomic(args.json, {
            "schema": "dvit-deploy/profile-candidates/1",
            "loaded": max(load_before[:1] + load_after[:1] or [0]) > 0.5 * (os.cpu_count() or 1),
            "machine": {**machine_info(), "cpu": cpu.to_dict(), "threads": args.threads,
                        "load_average_before": load_before, "load_average_after": load_after},
            "versions": versions(), "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "results": rows, "seconds": round(time.time() - started, 1)})
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
