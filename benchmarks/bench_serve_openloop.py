"""`dvit serve` under open-loop overload: fixed ρ against `--slo-ms` adaptive ρ, and the server's own overhead.

One run, on one ``--dynamic-keep`` artifact (default: DeiT-S, ``export/deit-s-dynkeep.onnx``, ONNX Runtime):

1. **overhead and capacity** (a server without ``--slo-ms``; requests carry ``keep_ratio`` = the top of
   the range): closed loop at concurrency 1 (served p50) and at 2×max-batch (saturation throughput =
   the capacity every rate below is a multiple of; the mean batch Triton formed, from its statistics);
   then, with no server running, the runner in this process at batch 1 (direct p50) and at the batch
   Triton formed (direct throughput). Ratios: served/direct.
2. **fixed ρ**, same server: open-loop Poisson arrivals at ``--overload``× capacity for ``--seconds``, every
   request at the top of the range, then every request at the bottom.
3. **adaptive**: a server with ``--slo-ms`` = 1.5× the p99 the bottom reached in 2; the same arrivals
   (requests name no ρ), then the step profile 0.5× → 1.5× → 0.5× capacity.

Open loop: one asyncio client (gRPC) sends each request at its scheduled time whatever the answers do,
and latency counts from the *scheduled* time (no coordinated omission). Reported per run: p50/p99,
goodput (answers within the objective per second), failures, ρ histogram, ρ and p99 per second, and
for the step profile, per phase, the requests rejected by the server's queue bound (under ``--slo-ms`` the
backend's, at the objective by default: ``--queue-timeout-ms``, ``serve.shedding``) and other failures,
the recovery time (from the step down to the first answer at the top) and how many answers fell below
the top after it. The client's
CPU time is reported; the JSON carries the CPU flags and load averages before/after; the PNG shows
latency and ρ over time.

    python benchmarks/bench_serve_openloop.py --json benchmarks/results-serve-openloop.json   # the real run
    python benchmarks/bench_serve_openloop.py --quick    # tiny model, simulated service time, ~3 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import free_ports  # noqa: E402 - the one port picker of the serving benchmarks

from dvit_deploy.jobs.serve.shedding import SHED_MESSAGE  # noqa: E402

# --quick: ms per call, ms per image at ρ 0.5 … 0.9 (simulated): the bottom serves 1.41× the top, as DeiT-S
# did on the 2-vCPU EPYC, so the step's 1.5× is beyond the whole keep range there too
QUICK_SERVICE = "5,0.5:46,0.9:65"
# the server's overload answers (UNAVAILABLE): the backend's queue bound under --slo-ms (serve.shedding), and
# Triton's queue policy (--queue-timeout-ms without --slo-ms)
REJECTED = (SHED_MESSAGE, "Request timeout expired")


def is_rejected(record: dict) -> bool:
    """Whether the server refused this request for overload (not another failure)."""
    return any(m in record.get("error", "") for m in REJECTED)


class Server:
    def __init__(self, artifact: Path, *extra: str) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.name = Path(artifact).stem.replace(".", "_")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dvit_deploy", "serve", str(artifact), "--http-port", str(self.http_port),
             "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port), *extra],
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while self._get("/v2/health/ready") is None:  # 200 with an empty body once ready
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dvit serve did not start: {self.process.stderr.read() if self.process.stderr else ''}")
            time.sleep(0.3)

    def _get(self, path: str, port: int | None = None) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port or self.http_port}{path}", timeout=5) as reply:
                return reply.read()
        except OSError:
            return None

    def batches(self) -> tuple[int, int]:
        """(inferences, executions) Triton counted for the model: their ratio is the mean batch it formed."""
        stats = json.loads(self._get(f"/v2/models/{self.name}/stats") or b"{}").get("model_stats", [{}])[0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    def rejected(self) -> int | None:
        """The server's count of requests refused for overload: the backend's queue bound
        (``dvit_shed_requests_total``) plus Triton's queue policy (``nv_inference_request_failure``, REJECTED)."""
        text = (self._get("/metrics", self.metrics_port) or b"").decode()
        counts = [int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                  if line.startswith("dvit_shed_requests_total{")
                  or (line.startswith("nv_inference_request_failure{") and 'reason="REJECTED"' in line)]
        return sum(counts) if counts else None

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        try:
            _, stderr = self.process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        return stderr


def schedule(phases: list[tuple[float, float]], seed: int) -> list[float]:
    rng, times, start = np.random.default_rng(seed), [], 0.0
    for rate, seconds in phases:
        t = start + rng.exponential(1 / rate)
        while t < start + seconds:
            times.append(float(t))
            t += rng.exponential(1 / rate)
        start += seconds
    return times


def make_inputs(module, image: np.ndarray, keep_ratio: float | None) -> list:
    inputs = [module.InferInput("images", list(image.shape), "FP32")]
    inputs[0].set_data_from_numpy(image)
    if keep_ratio is not None:
        inputs.append(module.InferInput("keep_ratio", [1, 1], "FP32"))
        inputs[1].set_data_from_numpy(np.full((1, 1), keep_ratio, np.float32))
    return inputs


async def _open_loop(server: Server, times: list[float], image: np.ndarray, keep_ratio: float | None,
                     stamp: bool = False) -> list[dict]:
    """``stamp``: each request carries its scheduled time (time.monotonic, the loop's clock) as the ``dvit_sent``
    parameter, so the server's per-batch trace shows the oldest request's true queue delay."""
    import tritonclient.grpc.aio as module

    client = module.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    inputs = make_inputs(module, image, keep_ratio)
    records = [{"t": t} for t in times]
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def send(index: int) -> None:
        try:
            extra = {"parameters": {"dvit_sent": start + times[index]}} if stamp else {}
            result = await client.infer(server.name, inputs, client_timeout=600, **extra)
            records[index]["rho"] = float(result.as_numpy("keep_ratio")[0, 0])
        except Exception as exc:  # noqa: BLE001 - every failure is counted, with its message
            records[index]["error"] = str(exc).splitlines()[0][:200]
        records[index]["latency"] = loop.time() - start - times[index]  # from the *scheduled* time

    tasks = []
    for index, t in enumerate(times):
        delay = start + t - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(index)))
    await asyncio.gather(*tasks)
    await client.close()
    return records


async def _closed_loop(server: Server, concurrency: int, seconds: float, image: np.ndarray,
                       keep_ratio: float | None) -> dict:
    import tritonclient.grpc.aio as module

    client = module.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    inputs = make_inputs(module, image, keep_ratio)
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await client.infer(server.name, inputs, client_timeout=600)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    await client.close()
    return {"concurrency": concurrency, "requests": len(latencies), "throughput_ips": len(latencies) / wall,
            "p50_ms": 1e3 * float(np.median(latencies)), "p99_ms": 1e3 * float(np.percentile(latencies, 99))}


async def open_loop(server, times, image, keep_ratio=None, stamp=False) -> tuple[list[dict], float]:
    """(records, client CPU seconds): the client is this process, so its CPU time is process_time's."""
    cpu = time.process_time()
    records = await _open_loop(server, times, image, keep_ratio, stamp)
    return records, time.process_time() - cpu


def summarize(records: list[dict], objective_ms: float | None, client_cpu_s: float,
              step_down_at: float | None = None, top: float | None = None) -> dict:
    ok = [r for r in records if "error" not in r]
    lat = np.asarray([r["latency"] for r in ok]) * 1e3
    span = max(r["t"] for r in records) if records else 1.0
    rhos = [round(r["rho"], 3) for r in ok]
    per_second: dict[int, list[dict]] = {}
    for r in ok:
        per_second.setdefault(int(r["t"]), []).append(r)
    out = {"requests": len(records), "failed": len(records) - len(ok),
           "rejected": sum(map(is_rejected, records)),
           "failure_examples": sorted({r["error"] for r in records if "error" in r})[:3],
           "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
           "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
           "mean_rho": float(np.mean(rhos)) if rhos else None,
           "rho_histogram": {f"{r:g}": rhos.count(r) for r in sorted(set(rhos))},
           "per_second": [{"t": t, "n": len(rs), "mean_rho": float(np.mean([r["rho"] for r in rs])),
                           "p99_ms": 1e3 * float(np.percentile([r["latency"] for r in rs], 99))}
                          for t, rs in sorted(per_second.items())],
           "client_cpu_s": client_cpu_s, "client_cpu_fraction": client_cpu_s / max(span, 1e-9)}
    if objective_ms is not None:
        out["objective_ms"] = objective_ms
        out["goodput_ips"] = float((lat <= objective_ms).sum()) / span
    if step_down_at is not None and top is not None:
        after = sorted((r for r in ok if r["t"] >= step_down_at), key=lambda r: r["t"])
        first = next((i for i, r in enumerate(after) if abs(r["rho"] - top) < 1e-3), None)
        out["recovery_s"] = None if first is None else after[first]["t"] - step_down_at  # first answer at the top
        # after that: answers below the top (a step back down is an oscillation)
        out["below_top_after_recovery"] = None if first is None else sum(
            abs(r["rho"] - top) > 1e-3 for r in after[first:])
    return out


def by_phase(records: list[dict], phases: list[tuple[float, float]]) -> list[dict]:
    """Per phase of the profile: offered rate, requests, rejected by the queue bound, other failures, p99 of the
    answers and their mean ρ."""
    out, start = [], 0.0
    for rate, seconds in phases:
        inside = [r for r in records if start <= r["t"] < start + seconds]
        ok = [r for r in inside if "error" not in r]
        refused = sum(map(is_rejected, inside))
        out.append({"start_s": start, "rate_ips": rate, "seconds": seconds, "requests": len(inside),
                    "rejected": refused, "other_failures": len(inside) - len(ok) - refused,
                    "p99_ms": 1e3 * float(np.percentile([r["latency"] for r in ok], 99)) if ok else None,
                    "mean_rho": float(np.mean([r["rho"] for r in ok])) if ok else None})
        start += seconds
    return out


def direct(artifact: Path, backend: str, rho: float, batches: list[int], seconds: float, service: str | None) -> dict:
    """The runner in this process at ``rho``: p50 and throughput per batch size (paced like the server in --quick)."""
    from dvit_deploy.artifact.names import keep_counts_for
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.jobs.serve.paced import PacedRunner, SimulatedService
    from dvit_deploy.runtime import open_runner

    opened = open_artifact(artifact)
    record = opened.model
    counts = np.asarray(keep_counts_for(rho, len(record.keep_counts), record.num_patches), np.int32)
    runner = open_runner(backend, opened).load()
    if service:
        runner = PacedRunner(runner, SimulatedService.parse(service), record.num_patches, rho)
    out = {}
    try:
        for batch in batches:
            images = np.random.default_rng(0).standard_normal((batch, *record.input_shape)).astype(np.float32)
            for _ in range(2):
                runner.run(images, keep_counts=counts)
            times, start = [], time.perf_counter()
            while time.perf_counter() - start < seconds or len(times) < 5:
                t0 = time.perf_counter()
                runner.run(images, keep_counts=counts)
                times.append(time.perf_counter() - t0)
            out[str(batch)] = {"p50_ms": 1e3 * float(np.median(times)), "throughput_ips": batch / float(np.mean(times))}
    finally:
        runner.close()
    return out


def quick_artifact(folder: Path) -> Path:
    """A tiny DeiT at 64 px (16 patches), exported with --dynamic-keep: seconds to build, 49 KB per image."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models import VARIANTS, VariantConfig, register_variant
    from dvit_deploy.models.checkpoint import load_model

    if "bench-tiny-64" not in VARIANTS:
        register_variant(VariantConfig(name="bench-tiny-64", family="deit", embed_dim=64, depth=4, num_heads=2,
                                       mlp_ratio=2.0, pruning_loc=(1, 2, 3), qkv_bias=True, norm_eps=1e-6,
                                       num_classes=10, img_size=64))
    return export_onnx(load_model(model_name="bench-tiny-64", keep_ratio=0.7), folder / "bench_tiny64.onnx",
                       dynamic_keep=True, check_samples=1).path


def plot(runs: dict[str, list[dict]], objective_ms: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=False)
    for label, records in runs.items():
        ok = [r for r in records if "error" not in r]
        axes[0].scatter([r["t"] for r in ok], [1e3 * r["latency"] for r in ok], s=4, label=label)
    axes[0].axhline(objective_ms, color="k", ls="--", lw=1, label=f"objective {objective_ms:.0f} ms")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("latency from scheduled arrival (ms)")
    axes[0].set_xlabel("scheduled arrival (s)")
    axes[0].legend(fontsize=8)
    for label, records in runs.items():
        if label.startswith("adaptive"):
            ok = sorted((r for r in records if "error" not in r), key=lambda r: r["t"])
            axes[1].step([r["t"] for r in ok], [r["rho"] for r in ok], where="post", lw=1, label=label)
    axes[1].set_ylabel("ρ of each answer")
    axes[1].set_xlabel("scheduled arrival (s)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> dict:
    import platform

    from dvit_deploy.helpers.cpu import cpu_info

    info = cpu_info()
    return {"platform": platform.platform(), "cpu": info.model, "cpu_class": info.cpu_class,
            "cpu_flags": sorted(f for f in info.flags if f.startswith(("avx", "amx", "fma", "sse4")) or "vnni" in f),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=None,
                        help="a --dynamic-keep artifact [default: export/deit-s-dynkeep.onnx; --quick: a tiny one it exports]")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--keep-range", default="0.5,0.9")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--overload", type=float, default=1.4, help="offered rate of the fixed-rate runs, × capacity")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each fixed-rate run")
    parser.add_argument("--step", default="0.5:20,1.5:40,0.5:30", help="the step profile: ×capacity:seconds,…")
    parser.add_argument("--measure-seconds", type=float, default=10.0, help="each closed-loop / direct point")
    parser.add_argument("--slo-factor", type=float, default=1.5, help="objective = this × the bottom's p99")
    parser.add_argument("--queue-timeout-ms", type=float, default=None,
                        help="the adaptive server's queue bound [default: dvit serve's, the objective; 0: none]")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny model, simulated service time, short phases")
    parser.add_argument("--trace", action="store_true", help="record the adaptive server's per-batch trace "
                        "(dvit serve --trace-batches) in the JSON: ρ, predicted and actual service time, queue delay")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.step, args.measure_seconds = 15.0, "0.5:5,1.5:15,0.5:12", 3.0
    return args


def main() -> None:
    asyncio.run(run(parse_args()))  # one event loop for every client (grpc.aio binds to the first loop)


async def settled(measure, key: str, tries: int = 3, agree: float = 0.05) -> dict:
    """``measure()`` again until two points in a row agree on ``key`` within ``agree`` (at most ``tries``): a slow
    start must not set the load; the last point counts."""
    point = await measure()
    for _ in range(tries - 1):
        previous, point = point, await measure()
        if abs(point[key] / previous[key] - 1) <= agree:
            break
    return point


async def fixed_runs(artifact: Path, common: list[str], args, image: np.ndarray, low: float, high: float) -> dict:
    """Capacity and overhead points at the top, then the fixed-rate arrivals at the top and at the bottom."""
    server = Server(artifact, *common)
    try:
        # warm the path at saturation: a cold first start (files, allocator) once read 40 % low
        await _closed_loop(server, 2 * args.max_batch, max(1.0, args.measure_seconds / 2), image, high)
        single = await settled(lambda: _closed_loop(server, 1, args.measure_seconds, image, high), "p50_ms")

        async def saturation() -> dict:
            before = server.batches()
            point = await _closed_loop(server, 2 * args.max_batch, args.measure_seconds, image, high)
            after = server.batches()
            return {**point, "formed": (after[0] - before[0]) / max(after[1] - before[1], 1)}

        saturated = await settled(saturation, "throughput_ips")
        formed = saturated["formed"]
        capacity = saturated["throughput_ips"]
        print(f"capacity at ρ {high:g}: {capacity:.1f} img/s (mean batch {formed:.1f}); c=1 p50 {single['p50_ms']:.1f} ms",
              flush=True)
        times = schedule([(args.overload * capacity, args.seconds)], args.seed)
        runs = {}
        for label, rho in ((f"fixed ρ={high:g}", high), (f"fixed ρ={low:g}", low)):
            runs[label] = await open_loop(server, times, image, rho)
            print(f"{label}: p99 {summarize(runs[label][0], None, runs[label][1])['p99_ms']:.0f} ms", flush=True)
    finally:
        server.stop()
    return {"single": single, "formed": formed, "capacity": capacity, "times": times, "runs": runs}


def read_trace(path: Path, marks: list[float]) -> dict:
    """The server's per-batch trace, split into the fixed-rate adaptive run and the step profile (times from
    each run's start, seconds)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    rows = [r for r in rows if "rho" in r and r["t"] >= marks[0]]  # not the start-up measurement
    out: dict = {"adaptive": [], "step": []}
    for r in rows:
        key, base = ("adaptive", marks[0]) if r["t"] < marks[1] else ("step", marks[1])
        out[key].append({**r, "t": r["t"] - base})
    return out


def trace_summary(trace: dict) -> str:
    """Where prediction and reality part: runner time ÷ the model's prediction by batch size, and how much of
    the oldest request's queue delay the controller did not see."""
    lines = []
    for key, rows in trace.items():
        ok = [r for r in rows if r["pred_s"] > 0]
        by = {}
        for r in ok:
            by.setdefault(r["rows"], []).append(r["runner_s"] / r["pred_s"])
        ratio = ", ".join(f"b{b}: {np.median(v):.2f} ({len(v)})" for b, v in sorted(by.items()))
        seen = [(r["oldest_wait_s"], r["est_wait_s"]) for r in rows if r.get("oldest_wait_s") is not None]
        unseen = np.asarray([a - e for a, e in seen]) * 1e3 if seen else np.zeros(1)
        bounds = {b: sum(r.get("bound") == b for r in rows) for b in ("top", "ahead", "own", "bottom", "pace", "dip")}
        # the hand-over between two batches while requests wait (a full batch whose oldest waited > 0.1 s)
        gaps = [1e3 * (b["t"] - a["t"] - a["handle_s"]) for a, b in zip(rows, rows[1:])
                if b["rows"] >= max(r["rows"] for r in rows) and (b.get("oldest_wait_s") or 0) > 0.1]
        handover = (f"hand-over while requests wait: mean {np.mean(gaps):.1f} ms, p90 {np.percentile(gaps, 90):.1f} ms "
                    f"({len(gaps)}); " if gaps else "")
        lines.append(f"trace {key}: {len(rows)} batches; runner/predicted by batch: {ratio}; oldest's queue delay "
                     f"unseen by the controller p50 {np.median(unseen):.0f} ms, p99 {np.percentile(unseen, 99):.0f} ms; "
                     f"{handover}ρ set by {bounds}; shed batches {sum(1 for r in rows if r.get('shed'))}")
    return "\n".join(lines)


def overhead(single: dict, capacity: float, formed: float, direct_points: dict) -> dict:
    batch = max(1, int(round(formed)))
    return {"served_c1_p50_ms": single["p50_ms"], "direct_b1_p50_ms": direct_points["1"]["p50_ms"],
            "p50_ratio": single["p50_ms"] / direct_points["1"]["p50_ms"],
            "served_saturation_ips": capacity, "triton_mean_batch": formed, "direct_batch": batch,
            "direct_ips_at_that_batch": direct_points[str(batch)]["throughput_ips"],
            "throughput_ratio": capacity / direct_points[str(batch)]["throughput_ips"]}


def print_summary(record: dict, slo_factor: float) -> None:
    for label, s in record["fixed_rate"].items():
        print(f"{label:>12}: p50 {s['p50_ms']:.0f}  p99 {s['p99_ms']:.0f} ms  goodput {s['goodput_ips']:.1f}/s  "
              f"failed {s['failed']}  mean ρ {s['mean_rho']:.3f}  client CPU {100 * s['client_cpu_fraction']:.0f}%")
    st = record["step"]
    print(f"objective {record['objective_ms']:.0f} ms (= {slo_factor:g} × the bottom's p99); step profile: p99 "
          f"{st['p99_ms']:.0f} ms, failed {st['failed']} (rejected {st['rejected']}), recovery {st['recovery_s']} s "
          f"(then {st['below_top_after_recovery']} answers below the top), ρ histogram {st['rho_histogram']}")
    for phase in st["by_phase"]:
        p99 = "-" if phase["p99_ms"] is None else f"{phase['p99_ms']:.0f} ms"
        rho = "-" if phase["mean_rho"] is None else f"{phase['mean_rho']:.3f}"
        print(f"  phase from {phase['start_s']:g} s at {phase['rate_ips']:.1f}/s: {phase['requests']} requests, "
              f"{phase['rejected']} rejected, {phase['other_failures']} other failures, p99 {p99}, mean ρ {rho}")
    print("overhead:", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in record["overhead"].items()}))


async def run(args: argparse.Namespace) -> None:
    from dvit_deploy.artifact.store import open_artifact

    low, high = (float(x) for x in args.keep_range.split(","))
    record: dict = {"schema": "dvit-deploy/bench-serve-openloop/1", "machine": machine(),
                    "loadavg_before": os.getloadavg(), "settings": {k: str(v) for k, v in vars(args).items()}}
    service = QUICK_SERVICE if args.quick else None
    workdir = Path(tempfile.mkdtemp(prefix="bench-openloop-"))
    artifact = args.artifact or (quick_artifact(workdir) if args.quick else Path("export/deit-s-dynkeep.onnx"))
    shape = open_artifact(artifact).model.input_shape
    image = np.random.default_rng(args.seed).standard_normal((1, *shape)).astype(np.float32)
    common = ["--backend", args.backend, "--keep-range", args.keep_range, "--max-batch", str(args.max_batch)]
    common += ["--threads", str(args.threads)] if args.threads else []
    common += ["--simulate-service-ms", service] if service else []

    fixed = await fixed_runs(artifact, common, args, image, low, high)
    runs, capacity = fixed["runs"], fixed["capacity"]
    objective = args.slo_factor * summarize(runs[f"fixed ρ={low:g}"][0], None, 0.0)["p99_ms"]
    bound = [] if args.queue_timeout_ms is None else ["--queue-timeout-ms", f"{args.queue_timeout_ms:g}"]
    trace = workdir / "trace.jsonl" if args.trace else None
    server = Server(artifact, *common, "--slo-ms", f"{objective:.1f}", *bound,
                    *(["--trace-batches", str(trace)] if trace else []))
    marks = [time.monotonic()]  # when each adaptive run began (the trace's clock): splits the trace per run
    try:
        runs["adaptive"] = await open_loop(server, fixed["times"], image, stamp=bool(trace))
        marks.append(time.monotonic())
        steps = [(float(m) * capacity, float(s)) for m, s in (p.split(":") for p in args.step.split(","))]
        step_records, step_cpu = await open_loop(server, schedule(steps, args.seed + 1), image, stamp=bool(trace))
        record["adaptive_rejected_by_server"] = server.rejected()  # both adaptive runs: a check on the client's count
    finally:
        stderr = server.stop()
    step_down = sum(s for _, s in steps[:-1])

    batches = sorted({1, max(1, int(round(fixed["formed"])))})
    record["direct"] = direct(artifact, args.backend, high, batches, args.measure_seconds, service)
    record["overhead"] = overhead(fixed["single"], capacity, fixed["formed"], record["direct"])
    record.update(capacity_ips=capacity, offered_ips=args.overload * capacity, objective_ms=objective)
    record["fixed_rate"] = {label: summarize(recs, objective, cpu) for label, (recs, cpu) in runs.items()}
    record["step"] = {"phases": [{"rate_ips": r, "seconds": s} for r, s in steps], "step_down_at_s": step_down,
                      **summarize(step_records, objective, step_cpu, step_down, high),
                      "by_phase": by_phase(step_records, steps)}
    record["adaptive_server_log"] = [line for line in stderr.splitlines() 
                                    if "service time" in line or "warning" in line or "queued longer" in line]
    if trace:
        record["trace"] = read_trace(trace, marks)
        print(trace_summary(record["trace"]))
    record["loadavg_after"] = os.getloadavg()
    print_summary(record, args.slo_factor)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    png = args.png or (args.json.with_suffix(".png") if args.json else None)
    if png:
        plot({**{k: v[0] for k, v in runs.items()}, "adaptive (step)": step_records}, objective, png)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
