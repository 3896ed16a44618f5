"""`dvit serve`'s own overhead, per hop, with ``image_bytes`` (JPEG) and FP32 ``images``.

One server, one artifact. Measured in one run, interleaved so that a change of load hits both sides:

* **direct**, in-process, at every batch size 1..max(concurrency): ``fp32`` = the runner on the
  preprocessed tensor; ``jpeg`` = what ``dvit predict`` does in one process: decode + the model's
  preprocessing (serially, image by image) + the runner. Rounds alternate the two. With ONNX Runtime
  also ``fp32-as-served`` / ``jpeg-as-served``: the same with the session options ``dvit serve`` adds
  (``serve.backend.SERVED_ORT_OPTIONS``: idle intra-op threads sleep), so the ratios are given against
  the runner's defaults (what a user of ``dvit predict`` gets) and like with like.
* **served**, gRPC, closed-loop clients (one ``tritonclient`` client per thread, batch-1 requests) at
  each concurrency, JPEG and FP32 alternately; per point, **where the time goes** from Triton's own
  statistics (``/v2/models/<m>/stats``: queue, compute input/infer/output, batch sizes) and the
  backend's counters on the metrics port (``dvit_backend_seconds_total``: execute, decode, runner):
  client/transport = client latency − Triton's request time; queue; IPC = compute_infer per batch −
  the backend's execute; decode; runner; the backend's other work (checks, tensors).
* **the HTTP front**: HTTP clients at concurrency 1 through ``dvit serve``'s port and straight to
  Triton's private HTTP port, alternately, same payloads.

Ratios against issue 24's bounds: at the highest concurrency, served img/s ≥ 0.9 × the direct
img/s at the mean batch size Triton formed (interpolated between measured batch sizes); at
concurrency 1, served p50 ≤ 1.15 × direct p50. JPEG is judged against direct-with-decode (the same
work in one process) and, for reference, against direct FP32.

    python benchmarks/bench_serve_images.py --artifact export/deit-s-r0.7.onnx --backend onnxruntime \\
        --json benchmarks/results-serve-images.json
    python benchmarks/bench_serve_images.py --quick      # a tiny model exported on the fly, 2 s points
    python benchmarks/bench_serve_images.py --ab-root /work/main   # also serve that checkout, alternate with it
    python benchmarks/bench_serve_images.py --ab-root . --ab-args "--threads 1"   # this checkout, other flags

Without ``--image`` the picture is generated (a smooth 500×375 scene with texture, JPEG quality 90):
pass a real photo for representative JPEG sizes and decode times.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import Server, loop_summary, machine, percentiles, run_workers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dvit_deploy.jobs.serve.backend import SERVED_ORT_OPTIONS  # noqa: E402


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




class RootServer(Server):
    """``dvit serve`` from the checkout at ``root`` (``--ab-root``: the baseline of an A/B run)."""

    def __init__(self, root: Path, artifact: Path, backend: str, *extra: str) -> None:
        import bench_serve

        # `python -m` puts the working directory first on sys.path: start it inside ``root``.
        saved, bench_serve.REPO, here = bench_serve.REPO, root, Path.cwd()
        os.chdir(root)
        try:
            super().__init__(artifact, backend, *extra)
        finally:
            bench_serve.REPO = saved
            os.chdir(here)
        self.label = str(root)

    def triton_http_port(self) -> int:
        """Triton's own (private) HTTP port, read from tritonserver's command line."""
        for pid in self.server_pids():
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for arg in args:
                if arg.startswith(b"--http-port="):
                    return int(arg.split(b"=", 1)[1])
        raise SystemExit("cannot find tritonserver's HTTP port")


FLUSH_PAUSE_S = 0.3  # > serve.backend.BackendTimes.EVERY_S: the next batch sends everything counted so far


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def snapshot(server: RootServer, port: int) -> dict:
    """Triton's statistics of the model and the backend's dvit_backend_* counters, now."""
    stats = get_json(f"http://127.0.0.1:{port}/v2/models/{server.name}/stats")["model_stats"][0]
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    counters = {}
    for phase, value in re.findall(r'^dvit_backend_seconds_total\{[^}]*phase="(\w+)"[^}]*\} (\S+)$', text, re.M):
        counters[phase] = float(value)
    found = re.search(r"^dvit_backend_batches_total\{[^}]*\} (\S+)$", text, re.M)
    counters["batches"] = float(found.group(1)) if found else 0.0
    inference = {k: (int(v["count"]), int(v["ns"])) for k, v in stats["inference_stats"].items()}
    batches = {int(b["batch_size"]): (int(b["compute_infer"]["count"]), int(b["compute_infer"]["ns"]))
               for b in stats.get("batch_stats", [])}
    return {"inference": inference, "batches": batches, "executions": int(stats["execution_count"]),
            "backend": counters}


def hops(before: dict, after: dict, client_mean_ms: float) -> dict:
    """Per-hop milliseconds per request (and per batch) between two snapshots."""
    def delta(key: str) -> tuple[int, int]:
        (c0, n0), (c1, n1) = before["inference"].get(key, (0, 0)), after["inference"][key]
        return c1 - c0, n1 - n0

    requests, success_ns = delta("success")
    executions = after["executions"] - before["executions"]
    if not requests or not executions:
        return {}
    per_request = {k: delta(k)[1] / requests / 1e6 for k in ("queue", "compute_input", "compute_infer", "compute_output")}
    rows = sum(size * (count - before["batches"].get(size, (0, 0))[0]) for size, (count, _) in after["batches"].items())
    infer_ns = sum(ns - before["batches"].get(size, (0, 0))[1] for size, (_, ns) in after["batches"].items())
    backend = {k: after["backend"].get(k, 0.0) - before["backend"].get(k, 0.0) for k in after["backend"]}
    batches = backend.get("batches") or executions
    per_batch: dict = {"compute_infer_ms": infer_ns / executions / 1e6}
    for phase in ("execute", "decode", "runner"):  # None: a server without the dvit_backend_* counters
        per_batch[f"{phase}_ms"] = backend[phase] / batches * 1e3 if phase in backend else None
    if per_batch["execute_ms"] is not None:
        per_batch["ipc_ms"] = per_batch["compute_infer_ms"] - per_batch["execute_ms"]
        per_batch["backend_other_ms"] = per_batch["execute_ms"] - per_batch["decode_ms"] - per_batch["runner_ms"]
    triton_ms = success_ns / requests / 1e6
    return {"requests": requests, "executions": executions, "mean_batch": rows / executions,
            "client_mean_ms": client_mean_ms, "triton_request_ms": triton_ms,
            "client_and_transport_ms": client_mean_ms - triton_ms, "per_request_ms": per_request, "per_batch": per_batch}


def decode_cost_ms(blob: bytes, data_config: dict, repeats: int) -> float:
    """Decode + preprocessing per image in-process (one torch thread, as the server runs it)."""
    from dvit_deploy.jobs.serve.decode import decode_images, single_threaded_preprocessing

    single_threaded_preprocessing()
    value = np.asarray([[blob]], dtype=object)
    decode_images(value, data_config)
    start = time.perf_counter()
    for _ in range(repeats):
        decode_images(value, data_config)
    return (time.perf_counter() - start) / repeats * 1e3


class Direct:
    """In-process: ``fp32`` (the runner on the tensor) and ``jpeg`` (decode + preprocessing + the runner,
    what ``dvit predict`` does: images decoded one after another), at each batch size, round by round."""

    def __init__(self, artifact: Path, backend: str, blob: bytes, data_config: dict, batches: list[int],
                 threads: int | None) -> None:
        from dvit_deploy.artifact.store import open_artifact
        from dvit_deploy.jobs.serve.decode import decode_images
        from dvit_deploy.runtime import open_runner

        self.decode, self.data_config, self.batches = decode_images, data_config, batches
        self.blobs = {b: np.asarray([[blob]] * b, dtype=object) for b in batches}
        self.tensors = {b: decode_images(self.blobs[b], data_config) for b in batches}
        settings = {"intra_op_threads": threads} if threads else {}
        self.runner = open_runner(backend, open_artifact(artifact), **settings).load()
        # ``*-as-served``: the runner with the session options `dvit serve` adds (ORT: no spinning), to
        # compare like with like; ``fp32``/``jpeg`` run with the defaults a user of the runner gets.
        self.served = (open_runner(backend, open_artifact(artifact), **settings, **SERVED_ORT_OPTIONS).load()
                       if backend == "onnxruntime" else None)
        self.kinds = ("jpeg", "fp32") + (("jpeg-as-served", "fp32-as-served") if self.served is not None else ())
        for b in batches:
            self.runner.run(self.tensors[b])
            if self.served is not None:
                self.served.run(self.tensors[b])
        self.latencies: dict[tuple[str, int], list[float]] = {}
        self.busy: dict[tuple[str, int], float] = {}

    def round(self, seconds: float) -> None:
        for batch in self.batches:
            for kind in self.kinds:
                key, start = (kind, batch), time.monotonic()
                runner = self.served if kind.endswith("-as-served") else self.runner
                while time.monotonic() - start < seconds or len(self.latencies.get(key, [])) < 2:
                    t0 = time.perf_counter()
                    runner.run(self.decode(self.blobs[batch], self.data_config) if kind.startswith("jpeg")
                               else self.tensors[batch])
                    self.latencies.setdefault(key, []).append(time.perf_counter() - t0)
                self.busy[key] = self.busy.get(key, 0.0) + time.monotonic() - start

    def results(self) -> dict:
        return {kind: {str(b): {"throughput_ips": b * len(self.latencies[(kind, b)]) / self.busy[(kind, b)],
                                "latency_ms": percentiles(self.latencies[(kind, b)])} for b in self.batches}
                for kind in self.kinds}

    def close(self) -> None:
        self.runner.close()
        if self.served is not None:
            self.served.close()


def closed_loop(server: RootServer, kind: str, payload: np.ndarray, concurrency: int, duration_s: float,
                protocol: str = "grpc", port: int | None = None) -> dict:
    """Closed-loop clients, batch-1 requests; ``protocol`` http goes to ``port`` (the front or Triton's own)."""
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    name, dtype = ("image_bytes", "BYTES") if kind != "fp32" else ("images", "FP32")
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration_s

    def worker() -> None:
        address = f"127.0.0.1:{server.grpc_port if protocol == 'grpc' else port}"
        client = module.InferenceServerClient(address)
        inputs = [module.InferInput(name, list(payload.shape), dtype)]
        inputs[0].set_data_from_numpy(payload, **({} if protocol == "grpc" else {"binary_data": True}))
        while time.monotonic() < stop_at or not (latencies or failures):
            t0 = time.perf_counter()
            try:
                client.infer(server.name, inputs).as_numpy("logits")
                error = None
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                error = f"{type(exc).__name__}: {str(exc)[:120]}"
            with lock:
                (failures.append(error) if error else latencies.append(time.perf_counter() - t0))
        client.close()

    wall = run_workers(worker, concurrency, time.monotonic())
    return {"input": kind, "concurrency": concurrency, "protocol": protocol, **loop_summary(latencies, failures, wall)}


def served_point(server: RootServer, kind: str, payload: np.ndarray, concurrency: int, duration_s: float) -> dict:
    """One gRPC point with its per-hop split (the counters flushed by one more request after a pause)."""
    port = server.triton_http_port()
    before = snapshot(server, port)
    point = closed_loop(server, kind, payload, concurrency, duration_s)
    time.sleep(FLUSH_PAUSE_S)
    closed_loop(server, kind, payload, 1, 0.0)  # one request: the backend sends its counters with it
    time.sleep(0.2)  # Triton updates its statistics just after the response
    point["hops"] = hops(before, snapshot(server, port), point["latency_ms"]["mean"] or 0.0)
    point["server"] = server.label
    return point


def front_round(server: RootServer, payloads: dict, seconds: float, found: dict) -> None:
    """HTTP, concurrency 1: through ``dvit serve``'s front and straight to Triton's port, alternately."""
    for kind, payload in payloads.items():
        for via, port in (("front", server.http_port), ("triton", server.triton_http_port())):
            point = closed_loop(server, kind, payload, 1, seconds, "http", port)
            found.setdefault(f"{server.label} | {kind} via {via}", []).append(point)


def front_summary(found: dict) -> dict:
    summary = {}
    for key, points in found.items():
        p50s = [p["latency_ms"]["p50"] for p in points if p["latency_ms"]["p50"]]
        summary[key] = {"p50_ms": float(np.median(p50s)) if p50s else None,
                        "throughput_ips": float(np.mean([p["throughput_ips"] for p in points])),
                        "failed": sum(p["failed"] for p in points)}
    for key in list(summary):
        if key.endswith(" via front"):
            base = key[: -len(" via front")]
            front, triton = summary[key]["p50_ms"], summary[f"{base} via triton"]["p50_ms"]
            if front and triton:
                summary[f"{base}: front - triton p50 ms"] = front - triton
    return summary


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


def interpolated(direct_kind: dict, batch: float) -> float:
    """Direct img/s at a (mean) batch size, linear between the measured sizes around it."""
    sizes = sorted(int(b) for b in direct_kind)
    values = [direct_kind[str(b)]["throughput_ips"] for b in sizes]
    return float(np.interp(batch, sizes, values))


def summarize(points: list[dict]) -> dict:
    """Per server, input and concurrency: mean img/s, median p50, the hops of the point nearest that p50."""
    grouped: dict = {}
    for p in points:
        grouped.setdefault((p["server"], p["input"], p["concurrency"]), []).append(p)
    found = {}
    for (server, kind, c), group in grouped.items():
        p50s = [g["latency_ms"]["p50"] or 0.0 for g in group]
        middle = group[int(np.argsort(p50s)[len(p50s) // 2])]
        found[f"{server} | {kind} c={c}"] = {
            "server": server, "input": kind, "concurrency": c, "points": len(group),
            "throughput_ips": float(np.mean([g["throughput_ips"] for g in group])), "p50_ms": float(np.median(p50s)),
            "failed": sum(g["failed"] for g in group), "hops": middle.get("hops", {})}
    return found


def against_targets(summary: dict, direct_found: dict, saturation: int) -> dict:
    """Issue 24's bounds per served line: throughput at saturation, p50 at concurrency 1."""
    ratios = {}
    for key, s in summary.items():
        kind, c = s["input"], s["concurrency"]
        bases = {"direct " + kind: direct_found[kind]} if kind == "fp32" else {
            "direct jpeg (decode + runner)": direct_found["jpeg"], "direct fp32": direct_found["fp32"]}
        if f"{kind}-as-served" in direct_found:  # the runner with the server's session options: like with like
            bases[f"direct {kind}{' (decode + runner)' if kind == 'jpeg' else ''}, served session options"] = (
                direct_found[f"{kind}-as-served"])
        for label, base in bases.items():
            if c == 1:
                ratios[f"{key} p50 / {label} p50 (≤ 1.15)"] = s["p50_ms"] / base["1"]["latency_ms"]["p50"]
            if c == saturation:
                batch = s["hops"].get("mean_batch") or float(c)
                ratios[f"{key} img/s / {label} at batch {batch:.2f} (≥ 0.90)"] = (
                    s["throughput_ips"] / interpolated(base, batch))
    return ratios


def print_hops(summary: dict) -> None:
    print("where the time goes (ms; per request: client+transport, queue; per Triton batch: IPC, decode, runner, "
          "other backend work):")
    for key, s in summary.items():
        h = s["hops"]
        if not h:
            continue
        b, r = h["per_batch"], h["per_request_ms"]
        split = (f"IPC {b['ipc_ms']:5.2f} decode {b['decode_ms']:5.1f} runner {b['runner_ms']:6.1f} other "
                 f"{b['backend_other_ms']:5.2f}" if b.get("ipc_ms") is not None else
                 f"compute_infer {b['compute_infer_ms']:6.1f} (no dvit_backend counters)")
        print(f"  {key:<40} batch {h['mean_batch']:.2f}  client {h['client_mean_ms']:6.1f} = client+transport "
              f"{h['client_and_transport_ms']:5.1f} + Triton {h['triton_request_ms']:6.1f} (queue {r['queue']:5.1f}, "
              f"in {r['compute_input']:.2f}, out {r['compute_output']:.2f}) | per batch: {split}", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("export/deit-s-r0.7.onnx"))
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--image", type=Path, default=None, help="a JPEG (or PNG/WebP) to send; default: generated")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the generated picture")
    parser.add_argument("--concurrency", default="1,4", help="the last one is the saturation point")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured point, over its rounds")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (direct, served, front)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--queue-delay-us", type=int, default=100, help="dvit serve's default")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ab-root", type=Path, default=None,
                        help="also serve from this checkout (e.g. the main branch) and alternate with it")
    parser.add_argument("--ab-args", default="", help="extra `dvit serve` flags for the --ab-root server only")
    parser.add_argument("--quick", action="store_true", help="tiny model exported here, onnxruntime, 2 s points")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def measure(args, direct: Direct, servers: list, payloads: dict, concurrencies: list[int]) -> tuple[list, dict]:
    """``args.rounds`` rounds of: the direct runs, every served point on every server, the front's check."""
    points: list[dict] = []
    front: dict = {}
    for server in servers:
        for kind, payload in payloads.items():  # warm both paths
            closed_loop(server, kind, payload, 2, 1.0)
    seconds = args.duration / args.rounds
    for index in range(args.rounds):
        direct.round(seconds)
        for concurrency in concurrencies:
            for server in servers if index % 2 == 0 else servers[::-1]:  # neither server always goes first
                for kind, payload in payloads.items():
                    point = served_point(server, kind, payload, concurrency, seconds)
                    points.append(point)
                    lat = point["latency_ms"]
                    print(f"{server.label[-24:]:>24} {kind:>4} c={concurrency:<3} {point['throughput_ips']:7.1f} img/s"
                          f"  p50 {lat['p50'] or 0:7.1f}  p99 {lat['p99'] or 0:7.1f} ms  failed {point['failed']}",
                          flush=True)
        for server in servers:
            front_round(server, payloads, seconds, front)
    return points, front


def main() -> None:
    args = parse_args()
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.jobs.data import data_config_of
    from dvit_deploy.jobs.serve.decode import decode_images

    scratch = tempfile.TemporaryDirectory(prefix="bench-serve-images-")
    if args.quick:
        args.artifact, args.backend, args.duration, args.rounds = (
            quick_artifact(Path(scratch.name)), "onnxruntime", 4.0, 2)
    args.artifact = args.artifact.resolve()
    data_config = data_config_of(open_artifact(args.artifact).model)
    blob = encoded(args)
    fp32 = decode_images(np.asarray([[blob]], dtype=object), data_config)  # the same picture, preprocessed
    payloads = {"jpeg": np.asarray([[blob]], dtype=object), "fp32": fp32}
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    record: dict = {"schema": "dvit-deploy/bench-serve-images/2", "machine": machine(), "loadavg_before": os.getloadavg(),
                    "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "payload_bytes_per_image": {"jpeg": len(blob) + 4, "fp32": int(fp32.nbytes)},
                    "image": str(args.image) if args.image else f"generated 500x375, JPEG quality {args.quality}",
                    "decode_ms_per_image": decode_cost_ms(blob, data_config, 5 if args.quick else 30)}
    print(f"payload per image: JPEG {record['payload_bytes_per_image']['jpeg']:,} B, FP32 "
          f"{record['payload_bytes_per_image']['fp32']:,} B; decode + preprocessing "
          f"{record['decode_ms_per_image']:.1f} ms/image (in-process, 1 torch thread)", flush=True)
    direct = Direct(args.artifact, args.backend, blob, data_config, list(range(1, max(concurrencies) + 1)), args.threads)
    extra = ["--max-batch", str(args.max_batch), "--max-queue-delay-us", str(args.queue_delay_us),
             *(["--threads", str(args.threads)] if args.threads else [])]
    servers = [RootServer(REPO, args.artifact, args.backend, *extra)]
    try:
        if args.ab_root:
            servers.append(RootServer(args.ab_root.resolve(), args.artifact, args.backend, *extra,
                                      *args.ab_args.split()))
            servers[-1].label = f"{servers[-1].label} {args.ab_args}".strip()  # the same root, other flags: apart
        record["served"], front = measure(args, direct, servers, payloads, concurrencies)
        record["front"] = front_summary(front)
    finally:
        record["server_exit_codes"] = [server.stop() for server in servers]
        direct.close()
        scratch.cleanup()
    record["direct"] = direct.results()
    for kind, found in record["direct"].items():
        print(f"direct {kind}: " + ", ".join(f"b{b} {d['throughput_ips']:.1f} img/s p50 {d['latency_ms']['p50']:.1f} ms"
                                            for b, d in found.items()), flush=True)
    report(record, concurrencies[-1], args.json)


def report(record: dict, saturation: int, path: Path | None) -> None:
    record["summary"] = summarize(record["served"])
    record["ratios"] = against_targets(record["summary"], record["direct"], saturation)
    record["loadavg_after"] = os.getloadavg()
    print_hops(record["summary"])
    for key, value in record["ratios"].items():
        print(f"  {value:6.3f}  {key}")
    print("HTTP, c=1, p50 through the front and straight to Triton's port:")
    for key, value in record["front"].items():
        print(f"  {key}: {value:.2f}" if isinstance(value, float) else f"  {key}: p50 {value['p50_ms'] or 0:.1f} ms, "
              f"{value['throughput_ips']:.1f} img/s, failed {value['failed']}")
    print(f"load average {record['loadavg_before'][0]:.1f} -> {record['loadavg_after'][0]:.1f}", flush=True)
    if path:
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
