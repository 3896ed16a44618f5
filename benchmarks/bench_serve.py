"""`dvit serve` under load: throughput and latency per concurrency, server overhead, dynamic batching, soak.

For one artifact (default: DeiT-S ρ=0.7, seeded weights, ``./export/deit-s-r0.7.onnx``) on one CPU
backend (default openvino, the fastest fp32 CPU backend measured in this project):

1. **direct**: the same runner in-process, batch 1, back to back (the floor the server adds to);
2. **served**: ``dvit serve`` on loopback, closed-loop clients (one ``tritonclient`` client per
   thread, batch-1 requests) at each concurrency, over HTTP and gRPC, with Triton's dynamic
   batching on, then again with it off (``--no-dynamic-batching``);
3. **soak**: ``--soak-requests`` requests (default 10,000) at ``--soak-concurrency`` over gRPC, on
   ``--soak-artifact`` (default: the same artifact); every failure counted; the server's RSS
   (tritonserver + backend stub, from /proc) sampled after warm-up and then every 10 % of the run.

Reported: throughput (img/s), p50/p95/p99 latency (ms), failures; overhead = served p50 at
concurrency 1 / direct p50; batching gain = throughput with batching / without, per concurrency.
JSON with the CPU model and flags, load average before/after (the machine may be shared).

    python benchmarks/bench_serve.py --json benchmarks/results-serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def percentiles(latencies_s: list[float]) -> dict[str, float | None]:
    if not latencies_s:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    ms = np.asarray(latencies_s) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}


class Server:
    def __init__(self, artifact: Path, backend: str, *extra: str) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dvit_deploy", "serve", str(artifact), "--backend", backend,
             "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
             "--metrics-port", str(self.metrics_port), *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dvit serve did not start: {self.process.stderr.read() if self.process.stderr else ''}")
            time.sleep(0.3)
        self.name = Path(artifact).stem.replace(".", "_")

    def server_pids(self) -> list[int]:
        """tritonserver (our child) and everything in its session (the backend stub)."""
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout.split()
        pids = []
        for child in children:
            pids += [int(p) for p in subprocess.run(["pgrep", "-s", child], capture_output=True, text=True).stdout.split()]
        return sorted(set(pids))

    def rss_mb(self) -> float:
        total = 0
        for pid in self.server_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return self.process.returncode


def make_client(protocol: str, server: Server):
    if protocol == "http":
        import tritonclient.http as module

        return module, module.InferenceServerClient(f"127.0.0.1:{server.http_port}", network_timeout=300)
    import tritonclient.grpc as module

    return module, module.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


def closed_loop(server: Server, protocol: str, concurrency: int, *, duration_s: float | None = None,
                requests: int | None = None, image: np.ndarray, on_progress=None) -> dict:
    """``concurrency`` threads, each with its own client, each sending the next request when answered."""
    latencies: list[float] = []
    failures: list[str] = []
    rhos: list[float] = []
    lock = threading.Lock()
    sent = [0]
    start = time.monotonic()
    stop_at = None if duration_s is None else start + duration_s

    def worker() -> None:
        module, client = make_client(protocol, server)
        inputs = [module.InferInput("images", list(image.shape), "FP32")]
        inputs[0].set_data_from_numpy(image)
        while True:
            with lock:
                if (requests is not None and sent[0] >= requests) or (stop_at is not None and time.monotonic() >= stop_at):
                    return
                sent[0] += 1
                n = sent[0]
            t0 = time.perf_counter()
            try:
                result = client.infer(server.name, inputs)
                ok = result.as_numpy("logits").shape == (1, 1000) or result.as_numpy("logits").shape[0] == 1
                error = None if ok else "wrong shape"
                rho = result.as_numpy("keep_ratio")
                if rho is not None:
                    with lock:
                        rhos.append(round(float(rho.ravel()[0]), 4))
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                error = f"{type(exc).__name__}: {str(exc)[:120]}"
            elapsed = time.perf_counter() - t0
            with lock:
                if error:
                    failures.append(error)
                else:
                    latencies.append(elapsed)
            if on_progress is not None:
                on_progress(n)

    wall = run_workers(worker, concurrency, start)
    return {"protocol": protocol, "concurrency": concurrency, **loop_summary(latencies, failures, wall),
            "keep_ratio_used": {str(r): rhos.count(r) for r in sorted(set(rhos))}}


def run_workers(worker: Callable[[], None], concurrency: int, start: float) -> float:
    """``concurrency`` threads of ``worker``, until all return; the seconds since ``start``."""
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start


def loop_summary(latencies: list[float], failures: list[str], wall: float) -> dict:
    """What a closed-loop run reports: requests, failures (three examples), throughput, latency percentiles."""
    return {"requests": len(latencies) + len(failures), "failed": len(failures),
            "failure_examples": sorted(set(failures))[:3], "seconds": wall,
            "throughput_ips": len(latencies) / wall, "latency_ms": percentiles(latencies)}


def slo_suite(args, image: np.ndarray, threads: list[str]) -> list[dict]:
    """Overload a --dynamic-keep artifact: fixed ρ (the export's) against --slo-ms adaptive ρ."""
    results = []
    for label, extra in (("fixed", []), ("adaptive", ["--slo-ms", str(args.slo_ms)])):
        server = Server(args.dynamic_artifact, args.backend, "--max-batch", str(args.max_batch), "--max-queue-delay-us",
                        str(args.queue_delay_us), "--keep-range", args.keep_range, *extra, *threads)
        try:
            closed_loop(server, "grpc", 2, requests=4, image=image)
            point = closed_loop(server, "grpc", args.slo_concurrency, duration_s=args.slo_duration, image=image)
        finally:
            point["server_exit_code"] = server.stop()
        point["mode"] = label
        point["slo_ms"] = args.slo_ms if label == "adaptive" else None
        results.append(point)
        lat = point["latency_ms"]
        print(f"slo {label:>8} c={args.slo_concurrency}: {point['throughput_ips']:.1f} img/s  p50 {lat['p50'] or 0:.0f}  "
              f"p99 {lat['p99'] or 0:.0f} ms  failed {point['failed']}  rho used {point['keep_ratio_used']}", flush=True)
    return results


def direct(artifact: Path, backend: str, image: np.ndarray, duration_s: float, threads: int | None) -> dict:
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.runtime import open_runner

    options = {"intra_op_threads": threads} if threads else {}
    with open_runner(backend, open_artifact(artifact), **options) as runner:
        for _ in range(3):
            runner.run(image)
        latencies = []
        start = time.monotonic()
        while time.monotonic() - start < duration_s or len(latencies) < 10:
            t0 = time.perf_counter()
            runner.run(image)
            latencies.append(time.perf_counter() - t0)
        executes = runner.describe().get("executes")
    wall = time.monotonic() - start
    return {"executes": executes, "requests": len(latencies), "throughput_ips": len(latencies) / wall,
            "latency_ms": percentiles(latencies)}


def machine() -> dict:
    from dvit_deploy.runtime.openvino_runner import cpu_flags, cpu_model

    versions = {}
    for module in ("onnxruntime", "openvino", "numpy", "tritonclient"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001
            versions[module] = None
    from importlib.metadata import version

    versions["nvidia-pytriton"] = version("nvidia-pytriton")
    return {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(),
            "python": platform.python_version(), **versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("export/deit-s-r0.7.onnx"))
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measured point")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-batching-protocols", default="grpc", help="protocols measured with batching off")
    parser.add_argument("--soak-requests", type=int, default=10000)
    parser.add_argument("--soak-concurrency", type=int, default=8)
    parser.add_argument("--soak-artifact", type=Path, default=None)
    parser.add_argument("--skip-load", action="store_true", help="only the soak run (and --slo-suite)")
    parser.add_argument("--slo-suite", action="store_true", help="fixed vs adaptive ρ under overload")
    parser.add_argument("--dynamic-artifact", type=Path, default=Path("export/deit-s-dynkeep.onnx"))
    parser.add_argument("--slo-ms", type=float, default=1000.0)
    parser.add_argument("--keep-range", default="0.5,0.9")
    parser.add_argument("--slo-concurrency", type=int, default=16)
    parser.add_argument("--slo-duration", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    concurrencies = [int(c) for c in args.concurrency.split(",")]
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    record: dict = {"schema": "dvit-deploy/bench-serve/1", "machine": machine(), "loadavg_before": os.getloadavg(),
                    "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "notes": []}
    threads = ["--threads", str(args.threads)] if args.threads else []
    if not args.skip_load:
        record["direct"] = direct(args.artifact, args.backend, image, args.duration, args.threads)
        print(f"direct {record['direct']['executes']}: {record['direct']['throughput_ips']:.1f} img/s, "
              f"p50 {record['direct']['latency_ms']['p50']:.1f} ms", flush=True)
        record["served"] = []
        for batching in (True, False):
            extra = ["--max-batch", str(args.max_batch), "--max-queue-delay-us", str(args.queue_delay_us), *threads]
            if not batching:
                extra.append("--no-dynamic-batching")
            protocols = [p for p in (args.protocols if batching else args.no_batching_protocols).split(",") if p]
            if not protocols:  # e.g. --no-batching-protocols "": that half is skipped
                continue
            server = Server(args.artifact, args.backend, *extra)
            try:
                closed_loop(server, protocols[0], 2, requests=8, image=image)  # warm the server path
                for protocol in protocols:
                    for concurrency in concurrencies:
                        point = closed_loop(server, protocol, concurrency, duration_s=args.duration, image=image)
                        point["dynamic_batching"] = batching
                        record["served"].append(point)
                        lat = point["latency_ms"]
                        print(f"{'batching' if batching else 'no batching':>11} {protocol:>4} c={concurrency:<3} "
                              f"{point['throughput_ips']:6.1f} img/s  p50 {lat['p50'] or 0:7.1f}  p95 {lat['p95'] or 0:7.1f}  "
                              f"p99 {lat['p99'] or 0:7.1f} ms  failed {point['failed']}", flush=True)
            finally:
                point_exit = server.stop()
                record.setdefault("server_exit_codes", []).append(point_exit)
        c1 = {p["protocol"]: p for p in record["served"] if p["concurrency"] == 1 and p["dynamic_batching"]}
        record["overhead"] = {protocol: {"p50_ratio": p["latency_ms"]["p50"] / record["direct"]["latency_ms"]["p50"],
                                         "p50_added_ms": p["latency_ms"]["p50"] - record["direct"]["latency_ms"]["p50"],
                                         "throughput_ratio": p["throughput_ips"] / record["direct"]["throughput_ips"]}
                              for protocol, p in c1.items()}
        gains = {}
        for p in record["served"]:
            if not p["dynamic_batching"]:
                on = next(q for q in record["served"] if q["dynamic_batching"] and q["protocol"] == p["protocol"]
                          and q["concurrency"] == p["concurrency"])
                gains[f"{p['protocol']} c={p['concurrency']}"] = on["throughput_ips"] / p["throughput_ips"]
        record["batching_gain"] = gains
        print("overhead:", json.dumps(record["overhead"]), "\nbatching gain:", json.dumps(gains), flush=True)

    if args.slo_suite:
        record["slo"] = slo_suite(args, image, threads)

    if args.soak_requests:
        soak_artifact = args.soak_artifact or args.artifact
        server = Server(soak_artifact, args.backend, "--max-batch", str(args.max_batch), *threads)
        samples: list[tuple[int, float]] = []
        try:
            closed_loop(server, "grpc", args.soak_concurrency, requests=min(500, args.soak_requests // 10), image=image)
            samples.append((0, server.rss_mb()))
            step = max(args.soak_requests // 10, 1)

            def on_progress(n: int) -> None:
                if n % step == 0:
                    samples.append((n, server.rss_mb()))

            result = closed_loop(server, "grpc", args.soak_concurrency, requests=args.soak_requests, image=image,
                                 on_progress=on_progress)
            samples.append((args.soak_requests, server.rss_mb()))
        finally:
            code = server.stop()
        rss = [s[1] for s in samples]
        result.update({"artifact": str(soak_artifact), "rss_mb_samples": samples, "rss_mb_after_warmup": rss[0],
                       "rss_mb_end": rss[-1], "rss_growth_mb": rss[-1] - rss[0], "rss_max_mb": max(rss),
                       "server_exit_code": code})
        record["soak"] = result
        print(f"soak: {result['requests']} requests, {result['failed']} failed, {result['throughput_ips']:.0f} req/s, "
              f"RSS {rss[0]:.0f} -> {rss[-1]:.0f} MB (max {max(rss):.0f}), exit {code}", flush=True)
    record["loadavg_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
