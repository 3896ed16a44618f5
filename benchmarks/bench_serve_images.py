"""`dvit serve` fed encoded images (``image_bytes``) against preprocessed FP32 tensors (``images``).

One server, one artifact; for each concurrency, closed-loop gRPC clients (one ``tritonclient`` client
per thread, batch-1 requests) send the same picture either as a JPEG file's bytes (decoded and
preprocessed in the server with the model's data_config, as ``dvit predict`` does) or as the FP32
tensor that preprocessing makes. The two kinds are measured alternately at each concurrency.

Reported: throughput (img/s), p50/p99 latency, failures, the JPEG/FP32 throughput ratio; the direct
runner in-process on the FP32 tensor at batch c for each concurrency c, and served/direct ratios
(throughput, p50) per input kind — the server-overhead bounds, with ``image_bytes`` too; the client
payload per image (tensor bytes on the wire: 4-byte length + file for BYTES, 4·C·H·W for FP32); the
server-side decode + preprocessing cost per image measured in-process (one torch thread, as the
server runs it); the CPU, its flags and the load average before/after (the machine may be shared).

    python benchmarks/bench_serve_images.py --artifact export/deit-s-r0.7.onnx --backend openvino \\
        --image photo.jpg --json benchmarks/results-serve-images.json
    python benchmarks/bench_serve_images.py --quick      # a tiny model exported on the fly, 2 s points

Without ``--image`` the picture is generated (a smooth 500×375 scene with texture, JPEG quality 90):
pass a real photo for representative JPEG sizes and decode times.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import Server, machine, percentiles  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def generated_photo(size: tuple[int, int] = (500, 375), seed: int = 0):
    from PIL import Image

    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    channels = [np.sin(x / (23 + 7 * c)) * np.cos(y / (31 + 5 * c)) * 80 + 120 + 30 * np.sin((x + y) / 57)
                for c in range(3)]
    rgb = np.clip(np.stack(channels, -1) + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def encoded(args) -> bytes:
    if args.image:
        return Path(args.image).read_bytes()
    buffer = io.BytesIO()
    generated_photo().save(buffer, format="JPEG", quality=args.quality)
    return buffer.getvalue()


def decode_cost_ms(blob: bytes, data_config: dict, repeats: int) -> float:
    """Server-side work per image (PIL decode, predict's checks, the timm transform), one torch thread."""
    from dvit_deploy.jobs.serve.decode import decode_images, single_threaded_preprocessing

    single_threaded_preprocessing()
    value = np.asarray([[blob]], dtype=object)
    decode_images(value, data_config)
    start = time.perf_counter()
    for _ in range(repeats):
        decode_images(value, data_config)
    return (time.perf_counter() - start) / repeats * 1e3


def direct(artifact: Path, backend: str, image: np.ndarray, batches: list[int], duration_s: float,
           threads: int | None) -> dict:
    """The runner in-process on the FP32 tensor, back to back, at each batch size (the floor the server adds to)."""
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.runtime import open_runner

    found = {}
    with open_runner(backend, open_artifact(artifact), **({"intra_op_threads": threads} if threads else {})) as runner:
        for batch in batches:
            data = np.ascontiguousarray(np.repeat(image, batch, axis=0))
            runner.run(data)
            latencies, start = [], time.monotonic()
            while time.monotonic() - start < duration_s or len(latencies) < 3:
                t0 = time.perf_counter()
                runner.run(data)
                latencies.append(time.perf_counter() - t0)
            found[str(batch)] = {"throughput_ips": batch * len(latencies) / (time.monotonic() - start),
                                 "latency_ms": percentiles(latencies)}
    return found


def closed_loop(server: Server, kind: str, payload: np.ndarray, concurrency: int, duration_s: float) -> dict:
    import tritonclient.grpc as grpc

    name, dtype = ("image_bytes", "BYTES") if kind != "fp32" else ("images", "FP32")
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration_s

    def worker() -> None:
        client = grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        inputs = [grpc.InferInput(name, list(payload.shape), dtype)]
        inputs[0].set_data_from_numpy(payload)
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                client.infer(server.name, inputs).as_numpy("logits")
                error = None
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                error = f"{type(exc).__name__}: {str(exc)[:120]}"
            with lock:
                (failures.append(error) if error else latencies.append(time.perf_counter() - t0))
        client.close()

    start = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    return {"input": kind, "concurrency": concurrency, "requests": len(latencies) + len(failures),
            "failed": len(failures), "failure_examples": sorted(set(failures))[:3], "seconds": wall,
            "throughput_ips": len(latencies) / wall, "latency_ms": percentiles(latencies)}


def quick_artifact(folder: Path) -> Path:
    """A tiny DeiT (dim 64, depth 4, 224 px) exported on the fly: the quick mode's model."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models import VARIANTS, VariantConfig, register_variant
    from dvit_deploy.models.checkpoint import load_model

    if "bench-tiny-deit" not in VARIANTS:
        register_variant(VariantConfig(name="bench-tiny-deit", family="deit", embed_dim=64, depth=4, num_heads=2,
                                       mlp_ratio=2.0, pruning_loc=(1, 2, 3), qkv_bias=True, norm_eps=1e-6,
                                       num_classes=10))
    return export_onnx(load_model(model_name="bench-tiny-deit", keep_ratio=0.7), folder / "bench-tiny.onnx",
                       check_samples=1).path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("export/deit-s-r0.7.onnx"))
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--image", type=Path, default=None, help="a JPEG (or PNG/WebP) to send; default: generated")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the generated picture")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured point")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny model exported here, onnxruntime, 2 s points, c=1,4")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.jobs.data import data_config_of
    from dvit_deploy.jobs.serve.decode import decode_images

    scratch = tempfile.TemporaryDirectory(prefix="bench-serve-images-")
    if args.quick:
        args.artifact, args.backend, args.duration, args.concurrency = (
            quick_artifact(Path(scratch.name)), "onnxruntime", 2.0, "1,4")
    data_config = data_config_of(open_artifact(args.artifact).model)
    blob = encoded(args)
    fp32 = decode_images(np.asarray([[blob]], dtype=object), data_config)  # the same picture, preprocessed
    payloads = {"jpeg": np.asarray([[blob]], dtype=object), "fp32": fp32}
    record: dict = {"schema": "dvit-deploy/bench-serve-images/1", "machine": machine(), "loadavg_before": os.getloadavg(),
                    "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "payload_bytes_per_image": {"jpeg": len(blob) + 4, "fp32": int(fp32.nbytes)},
                    "image": str(args.image) if args.image else f"generated 500x375, JPEG quality {args.quality}",
                    "decode_ms_per_image": decode_cost_ms(blob, data_config, 5 if args.quick else 30), "served": []}
    print(f"payload per image: JPEG {record['payload_bytes_per_image']['jpeg']:,} B, FP32 "
          f"{record['payload_bytes_per_image']['fp32']:,} B; server decode + preprocessing "
          f"{record['decode_ms_per_image']:.1f} ms/image (in-process, 1 torch thread)", flush=True)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    record["direct"] = direct(args.artifact, args.backend, fp32, sorted(set(concurrencies)), args.duration, args.threads)
    print("direct (in-process, FP32): " + ", ".join(f"batch {b} {d['throughput_ips']:.1f} img/s p50 "
                                                    f"{d['latency_ms']['p50']:.1f} ms" for b, d in record["direct"].items()),
          flush=True)
    extra = ["--max-batch", str(args.max_batch), "--max-queue-delay-us", str(args.queue_delay_us)]
    server = Server(args.artifact, args.backend, *extra, *(["--threads", str(args.threads)] if args.threads else []))
    try:
        for kind, payload in payloads.items():  # warm both paths
            closed_loop(server, kind, payload, 2, 1.0)
        for concurrency in concurrencies:
            for kind, payload in payloads.items():
                point = closed_loop(server, kind, payload, concurrency, args.duration)
                record["served"].append(point)
                lat = point["latency_ms"]
                print(f"{kind:>4} c={concurrency:<3} {point['throughput_ips']:7.1f} img/s  p50 {lat['p50'] or 0:7.1f}  "
                      f"p99 {lat['p99'] or 0:7.1f} ms  failed {point['failed']}", flush=True)
    finally:
        record["server_exit_code"] = server.stop()
        scratch.cleanup()
    by = {(p["input"], p["concurrency"]): p for p in record["served"]}
    record["jpeg_over_fp32_throughput"] = {str(c): by[("jpeg", c)]["throughput_ips"] / max(by[("fp32", c)]["throughput_ips"], 1e-9)
                                           for (kind, c) in by if kind == "jpeg"}
    # Item 3's bounds, per input: served throughput at concurrency c against the direct runner at batch c
    # (the most Triton can form from c batch-1 clients), and the served p50 at c = 1 against direct batch 1.
    record["served_over_direct"] = {
        f"{kind} c={c}": {"throughput_ratio": p["throughput_ips"] / record["direct"][str(c)]["throughput_ips"],
                          "p50_ratio": (p["latency_ms"]["p50"] or 0) / record["direct"][str(c)]["latency_ms"]["p50"]}
        for (kind, c), p in by.items()}
    print("served / direct:", json.dumps({k: {m: round(v, 3) for m, v in d.items()}
                                          for k, d in record["served_over_direct"].items()}), flush=True)
    record["loadavg_after"] = os.getloadavg()
    print("JPEG / FP32 throughput:", json.dumps({k: round(v, 3) for k, v in record["jpeg_over_fp32_throughput"].items()}),
          f"| load average {record['loadavg_before'][0]:.1f} -> {record['loadavg_after'][0]:.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
