#!/usr/bin/env python
"""OpenVINO's own post-training quantization (NNCF) of the DeiT-S export against ``dvit quantize``'s Q/DQ file.

NNCF is not a dvit dependency and must not go into dvit's environment: quantize in a separate venv
(``python3 -m venv /tmp/nncf-venv && /tmp/nncf-venv/bin/pip install nncf openvino onnx onnxruntime
"numpy<2"``), then compare from dvit's environment:

1. ``python benchmarks/profile_nncf.py prepare``  (dvit env): calibration images (the generated scenes
   ``dvit quantize`` uses by default) and the node names dvit keeps float (predictors, TopK, Softmax,
   LayerNorm: ``jobs.quantize.core.excluded_nodes``) into ``--dir``.
2. ``/tmp/nncf-venv/bin/python benchmarks/profile_nncf.py quantize`` (NNCF env): ``nncf.quantize`` of
   the ONNX (``model_type=TRANSFORMER``, those nodes in ``ignored_scope``) → ``<dir>/nncf.onnx``.
3. ``python benchmarks/profile_nncf.py compare`` (dvit env): OpenVINO int8 of both files (and ORT on
   NNCF's) interleaved, with agreement vs PyTorch fp32 (int8 rule) on OpenVINO's own outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = Path("benchmarks/.artifacts/deit-s-r0.7-seed0.onnx")


def prepare(folder: Path, source: Path, samples: int) -> None:
    import onnx

    from dvit_deploy.helpers.fileio import manifest_path, read_json
    from dvit_deploy.jobs.quantize.calibration import generated_scenes
    from dvit_deploy.jobs.quantize.core import excluded_nodes

    kept = excluded_nodes(onnx.load(str(source), load_external_data=False))
    (folder / "ignored.json").write_text(json.dumps(list(kept.nodes)))
    np.save(folder / "calib.npy", generated_scenes(read_json(manifest_path(source))["data_config"], samples))
    print(f"{len(kept.nodes)} nodes kept float, {samples} calibration images in {folder}")


def quantize(folder: Path, source: Path) -> None:
    import nncf
    import onnx

    calib = np.load(folder / "calib.npy")
    names = json.loads((folder / "ignored.json").read_text())
    batches = [{"images": calib[i:i + 8]} for i in range(0, len(calib), 8)]
    started = time.time()
    quantized = nncf.quantize(onnx.load(str(source)), nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(batches), ignored_scope=nncf.IgnoredScope(names=names, validate=False))
    onnx.save(quantized, str(folder / "nncf.onnx"))
    print(f"nncf {nncf.__version__}: {folder / 'nncf.onnx'} in {time.time() - started:.0f} s")


def compare(folder: Path, source: Path, batch: int, rounds: int, duration: float, count: int, threads: int,
            out: Path | None) -> None:
    sys.path.insert(0, str(HERE))
    from bench_limits import ensure_int8
    from bench_precision import load_average, versions
    from profile_candidates import agreement, ort_call, ov_agreement, ov_call, reference

    from dvit_deploy.artifact.manifest import ModelRecord
    from dvit_deploy.helpers.cpu import cpu_info
    from dvit_deploy.helpers.fileio import manifest_path, read_json, write_json_atomic
    from dvit_deploy.jobs.profile import ProfileSettings, machine_info, measure_interleaved, seeded_batch

    load_before = load_average()
    manifest = read_json(manifest_path(source))
    dvit_int8 = ensure_int8(source, "s8s8" if not cpu_info().int8_saturates else "s8s8-reduce-range")
    nncf_file = folder / "nncf.onnx"
    images = seeded_batch(batch, ModelRecord.from_json(manifest))
    calls = {"ov-int8 dvit Q/DQ": ov_call(dvit_int8, threads, images, "LATENCY"),
             "ov-int8 nncf": ov_call(nncf_file, threads, images, "LATENCY"),
             "ort-int8 nncf": ort_call(nncf_file, {}, threads, images)}
    measured = measure_interleaved(calls, ProfileSettings(warmup_s=0.5, duration_s=duration, rounds=rounds,
                                                          min_iterations=2))
    ips = {k: batch * len(m.samples_ms) / m.wall_s for k, m in measured.items()}
    ref, agree_images = reference(manifest, count)
    rows = {name: ov_agreement(path, threads, ref, agree_images)
            for name, path in (("ov-int8 dvit Q/DQ", dvit_int8), ("ov-int8 nncf", nncf_file))}
    rows["ort-int8 nncf"] = agreement(nncf_file, {}, threads, ref, agree_images, "int8")
    base = ips["ov-int8 dvit Q/DQ"]
    for name in calls:
        print(f"{name:20s} {ips[name]:6.2f} img/s  {ips[name] / base:.3f}× ov-int8 dvit  agreement {rows[name]}")
    if out is not None:
        write_json_atomic(out, {"schema": "dvit-deploy/profile-nncf/1", "machine": {
            **machine_info(), "cpu": cpu_info().to_dict(), "threads": threads,
            "load_average_before": load_before, "load_average_after": load_average()},
            "versions": versions(), "batch": batch, "rounds": rounds, "duration_s": duration,
            "throughput_ips": ips, "ratio_to_dvit_qdq_on_openvino": {k: v / base for k, v in ips.items()},
            "agreement": rows})
        print(f"wrote {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "quantize", "compare"))
    parser.add_argument("--dir", type=Path, default=Path("/tmp/nncf"))
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--agreement", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.step == "prepare":
        prepare(args.dir, args.source, args.samples)
    elif args.step == "quantize":
        quantize(args.dir, args.source)
    else:
        compare(args.dir, args.source, args.batch, args.rounds, args.duration, args.agreement, args.threads, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
