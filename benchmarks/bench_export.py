"""Export time with and without torch's ONNX optimizer, and whether the exported model changes.

`dvit export` spends most of its time in `torch.onnx.export`; part of that is the exporter's
onnxscript optimizer (`optimize=True`, torch's default), whose rewrites ONNX Runtime and TensorRT
redo when they load the graph. This measures, for the default DeiT-S (seeded weights, dynamic
batch, opset 18), in one process, three ways: "full" (torch's default), "light" (what dvit ships:
`onnx_export.light_optimize`, constant folding + dead nodes + CSE, no pattern rewriter), "none":

- wall time of `torch.onnx.export` + passes + save (best of --repeats);
- the graph each gives (nodes, TopK/Gather structure via dvit's own pruning-structure check);
- ORT parity of each against PyTorch (max |Δlogit|, kept-token sets);
- ORT CPU throughput of the two graphs at --batch, measured interleaved (--rounds).

    python benchmarks/bench_export.py --json benchmarks/results-export.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "avx_vnni")))


def export(loaded, path: Path, optimize: str) -> float:
    """optimize: "full" (torch's default optimizer), "light" (dvit's passes) or "none"."""
    import torch

    from dvit_deploy.export.onnx_export import EXAMPLE_BATCH, MAX_DYNAMIC_BATCH, light_optimize

    example = torch.randn(EXAMPLE_BATCH, 3, 224, 224)
    start = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(loaded.model, (example,), dynamo=True, opset_version=18,
                                    optimize=optimize == "full",
                                    input_names=["images"], output_names=["logits"], verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},))
        if optimize == "light":
            light_optimize(program)
        program.save(str(path), external_data=False)
    return time.perf_counter() - start


def throughput(paths: dict[str, Path], batch: int, rounds: int, seconds: float) -> dict[str, float]:
    import onnxruntime as ort

    sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    images = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    for s in sessions.values():
        s.run(None, {"images": images})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for key, session in sessions.items():
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                session.run(None, {"images": images})
                times[key].append(time.perf_counter() - t0)
    return {k: batch / float(np.median(v)) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--cli-runs", type=int, default=3, help="also time `dvit export` end to end this many times")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import onnx
    import torch

    from dvit_deploy.export.check import check_export
    from dvit_deploy.export.graph import pruning_stages
    from dvit_deploy.models.checkpoint import load_model

    loaded = load_model(model_name="deit-s", keep_ratio=0.7)
    results: dict = {"machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                                 "cpu_flags": cpu_flags(), "torch": torch.__version__,
                                 "load_average": os.getloadavg()}, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for optimize in ("full", "light", "none"):
            key = optimize
            path = Path(tmp) / f"{key}.onnx"
            walls = [export(loaded, path, optimize) for _ in range(args.repeats)]
            model = onnx.load(str(path))
            report = check_export(path, loaded, batch=None, samples=4)
            parity = report.comparison
            results["variants"][key] = {
                "export_s_best": round(min(walls), 2), "export_s_all": [round(w, 2) for w in walls],
                "nodes": len(model.graph.node), "topk_k": [s.k for s in pruning_stages(model)],
                "check_passed": report.passed, "max_abs_logit": parity.logits.max_abs,
                "kept_sets_identical": [s.exact_match for s in parity.stages], "bytes": path.stat().st_size}
            paths[key] = path
            print(f"{key:12s} export {min(walls):6.2f} s (runs {walls}), {len(model.graph.node)} nodes, "
                  f"check {'passed' if report.passed else 'FAILED'}, max |Δlogit| {parity.logits.max_abs:.2e}")
        ips = throughput(paths, args.batch, args.rounds, args.seconds)
    for key, value in ips.items():
        results["variants"][key][f"ort_ips_batch{args.batch}"] = round(value, 2)
    results["ort_throughput_ratio_vs_full"] = {k: round(v / ips["full"], 3) for k, v in ips.items()}
    print(f"ORT CPU batch {args.batch}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in ips.items())
          + f" (interleaved {args.rounds} rounds; ratios to full {results['ort_throughput_ratio_vs_full']})")
    if args.cli_runs:
        import subprocess
        import sys

        walls = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.cli_runs):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "dvit_deploy", "export", "--force"], cwd=tmp, check=True,
                               capture_output=True)
                walls.append(round(time.perf_counter() - start, 2))
        results["cli_export_wall_s"] = walls
        print(f"`dvit export` (default DeiT-S, as shipped: light passes) wall: {walls} s")
    results["machine"]["load_average_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
