"""`dvit serve --slo-ms` end to end through the real tritonserver, under open-loop overload.

A tiny DeiT at 64 px (16 patches, 49 KB per image, so the client stays cheap) exported with
``--dynamic-keep``; the server's runner is paced by ``--simulate-service-ms`` (a test-only flag
recorded in the ServeSpec): every call takes 40 ms + 20 ms per image at ρ 0.6 … 100 ms at ρ 0.9,
whatever this machine's speed. With ``--max-batch 4`` that is ~9 img/s at the top and ~33 at
the bottom. Arrivals are Poisson, sent on schedule by one thread (gRPC ``async_infer``), and
latency counts from each request's *scheduled* time. Assertions are on ratios with wide margins.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from .test_serve import Server, free_ports  # noqa: F401 - the same server harness

grpc = pytest.importorskip("tritonclient.grpc")

SERVICE = "40,0.6:20,0.9:100"
OBJECTIVE_MS = 1500.0
TOP_CAPACITY = 4 / (0.040 + 4 * 0.100)  # images/s at ρ 0.9, batch 4


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory):
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models import VARIANTS, register_variant
    from dvit_deploy.models.checkpoint import load_model

    from .conftest import TINY_DEIT

    if "tiny-deit-64" not in VARIANTS:
        register_variant(dataclasses.replace(TINY_DEIT, name="tiny-deit-64", img_size=64))
    folder = tmp_path_factory.mktemp("slo")
    return export_onnx(load_model(model_name="tiny-deit-64", keep_ratio=0.7), folder / "tiny64.onnx",
                       dynamic_keep=True, check_samples=1).path


def open_loop(server: Server, phases: list[tuple[float, float]], *, keep_ratio: float | None = None,
              seed: int = 0) -> list[dict]:
    """Poisson arrivals per (rate/s, seconds) phase; each record: scheduled time, latency (s), ρ, error."""
    rng = np.random.default_rng(seed)
    schedule, start = [], 0.0
    for rate, seconds in phases:
        t = start + rng.exponential(1 / rate)
        while t < start + seconds:
            schedule.append(t)
            t += rng.exponential(1 / rate)
        start += seconds
    image = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    client = grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    inputs = [grpc.InferInput("images", [1, 3, 64, 64], "FP32")]
    inputs[0].set_data_from_numpy(image)
    if keep_ratio is not None:
        inputs.append(grpc.InferInput("keep_ratio", [1, 1], "FP32"))
        inputs[1].set_data_from_numpy(np.full((1, 1), keep_ratio, np.float32))
    records: list[dict] = [{} for _ in schedule]
    done = threading.Semaphore(0)
    t0 = time.perf_counter()

    def callback(index: int, result, error) -> None:
        now = time.perf_counter() - t0
        records[index].update(latency=now - schedule[index], error=None if error is None else str(error),
                              rho=None if error is not None else float(result.as_numpy("keep_ratio")[0, 0]))
        done.release()

    for index, when in enumerate(schedule):
        records[index]["scheduled"] = when
        delay = when - (time.perf_counter() - t0)
        if delay > 0:
            time.sleep(delay)
        client.async_infer("tiny64", inputs, callback=lambda result, error, i=index: callback(i, result, error),
                           client_timeout=120)
    for _ in schedule:
        assert done.acquire(timeout=180), "a request was never answered"
    client.close()
    return records


def scrape(server: Server) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def rejected_count(metrics: str) -> int:
    """Triton's ``nv_inference_request_failure{reason="REJECTED"}``: requests its queue policy refused."""
    line = next(x for x in metrics.splitlines() if x.startswith("nv_inference_request_failure{")
                and 'reason="REJECTED"' in x and 'model="tiny64"' in x)
    return int(float(line.rsplit(" ", 1)[1]))


def shed_count(metrics: str) -> int:
    """dvit's ``dvit_shed_requests_total``: requests the backend's queue bound refused unrun (0 before any)."""
    lines = [x for x in metrics.splitlines() if x.startswith("dvit_shed_requests_total{") and 'model="tiny64"' in x]
    return int(float(lines[0].rsplit(" ", 1)[1])) if lines else 0


def http_burst(server: Server, count: int, answers: list[tuple[int, str]]) -> None:
    """``count`` JSON infer requests at once over HTTP (through dvit serve's front): (status, body) each."""
    body = json.dumps({"inputs": [{"name": "images", "shape": [1, 3, 64, 64], "datatype": "FP32",
                                   "data": [0.0] * (3 * 64 * 64)}]}).encode()

    def post() -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/v2/models/tiny64/infer", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                answers.append((reply.status, ""))
        except urllib.error.HTTPError as error:
            answers.append((error.code, error.read().decode()))

    threads = [threading.Thread(target=post) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def p99_ms(records: list[dict]) -> float:
    return 1e3 * float(np.percentile([r["latency"] for r in records], 99))


def test_adaptive_rho_meets_an_objective_fixed_rho_misses_then_recovers(tiny64):
    overload, low = 1.5 * TOP_CAPACITY, 0.3 * TOP_CAPACITY
    common = ("--keep-range", "0.6,0.9", "--max-batch", "4", "--simulate-service-ms", SERVICE)

    fixed = Server(tiny64, *common)
    try:
        at_top = open_loop(fixed, [(overload, 10)], keep_ratio=0.9)
    finally:
        code, stderr = fixed.stop()
    assert code == 0, stderr

    adaptive = Server(tiny64, *common, "--slo-ms", str(OBJECTIVE_MS))  # the queue bound at its default
    try:
        served = open_loop(adaptive, [(low, 4), (overload, 10), (low, 12)], seed=1)
        metrics = scrape(adaptive)
        # Beyond what even ρ 0.6 serves (~33 img/s), for 4 s: what waited the objective in the queue is rejected,
        # over gRPC and over HTTP (a few JSON requests sent meanwhile, 2 s in).
        http_answers: list[tuple[int, str]] = []
        prober = threading.Timer(2.0, http_burst, (adaptive, 8, http_answers))
        prober.start()
        beyond = open_loop(adaptive, [(3.0 * 33, 4)], seed=2)
        prober.join()
        after = scrape(adaptive)
    finally:
        code, stderr = adaptive.stop()
    assert code == 0, stderr
    assert "service time measured" in stderr
    assert (f"when the requests queued behind a full batch would take longer than {OBJECTIVE_MS:g} ms at the bottom "
            "of the keep range, that batch is refused unrun (UNAVAILABLE / HTTP 503") in stderr

    assert all(r["error"] is None for r in at_top + served)
    heavy = [r for r in served if 4 <= r["scheduled"] < 14]
    fixed_p99, adaptive_p99 = p99_ms(at_top), p99_ms(heavy)
    assert fixed_p99 > 2 * OBJECTIVE_MS, fixed_p99  # the load was real: ρ 0.9 falls behind
    assert adaptive_p99 < OBJECTIVE_MS, adaptive_p99  # adaptive ρ holds the objective at the same load
    rhos = [r["rho"] for r in heavy]
    assert min(rhos) < 0.75 and all(0.6 - 1e-6 <= r <= 0.9 + 1e-6 for r in rhos)

    recovered = [r for r in served if r["scheduled"] >= 14]
    first_top = min(r["scheduled"] for r in recovered if r["rho"] == pytest.approx(0.9))
    assert first_top - 14 < 10  # back at the top within 10 s of the load falling
    tail = [r["rho"] for r in recovered if r["scheduled"] > first_top]
    assert tail and all(r == pytest.approx(0.9) for r in tail)  # and it stays there: no oscillation
    assert 'dvit_keep_ratio{model="tiny64"} 0.9' in metrics

    assert shed_count(metrics) == 0  # holding the objective refused nothing
    rejected = [r for r in beyond if r["error"] is not None]
    answered = [r for r in beyond if r["error"] is None]
    assert rejected and answered
    assert all("StatusCode.UNAVAILABLE" in r["error"] and "server overloaded: this batch and the " in r["error"]
               for r in rejected), rejected[0]["error"]
    # answered within the bound: the queue ahead served in at most the objective at ρ 0.6, then one batch
    # (0.12 s), with slack for a loaded machine; not the ever-growing latency of an unbounded queue (4 s at 3×
    # would reach ~3 s)
    assert max(r["latency"] for r in answered) < OBJECTIVE_MS / 1e3 + 1.0
    refused = [(code, body) for code, body in http_answers if code != 200]
    assert refused and all(code == 503 and "server overloaded" in body for code, body in refused), http_answers
    # dvit's counter; Triton's queue policy (which would stop its batch prefetching) is not in the config at all
    assert shed_count(after) == len(rejected) + len(refused)
    assert rejected_count(after) == 0


def test_slo_spec_bounds_the_queue_in_the_backend_or_by_triton_policy(tiny64):
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.helpers.errors import BadInput
    from dvit_deploy.jobs.serve.spec import ServeOptions, ServeSpec, make_spec
    from dvit_deploy.jobs.serve.slo import rungs_of

    opened = open_artifact(tiny64)

    def spec(**kw):
        return make_spec(opened, ServeOptions(backend="onnxruntime", precision="fp32", max_batch=8,
                                              keep_range=(0.6, 0.9), **kw))

    plain = spec()
    assert plain.queue_timeout_ms is None and "default_queue_policy" not in plain.triton_config()
    bounded = spec(slo_ms=250.0)  # under --slo-ms the queue is bounded by default, at the objective
    assert bounded.queue_timeout_ms == 250.0 and "default_timeout_microseconds: 250000" in bounded.triton_config()
    assert make_spec(opened, ServeOptions(backend="onnxruntime", precision="fp32", max_batch=8, queue_delay_us=100,
                                          dynamic_batching=False, slo_ms=250.0)).queue_timeout_ms is None  # no batcher
    # under dvit serve (which says where the metrics endpoint is) the backend enforces the bound, not Triton
    served = dataclasses.replace(bounded, metrics_address="127.0.0.1:8002")
    assert served.sheds and not served.triton_queue_policy and "default_queue_policy" not in served.triton_config()
    assert not dataclasses.replace(plain, metrics_address="127.0.0.1:8002").triton_queue_policy
    fixed = dataclasses.replace(spec(queue_timeout_ms=300.0), metrics_address="127.0.0.1:8002")
    assert not fixed.sheds and "default_timeout_microseconds: 300000" in fixed.triton_config()  # no --slo-ms: Triton's
    adaptive = spec(slo_ms=250.0, queue_timeout_ms=500.0)
    assert adaptive.queue_timeout_ms == 500.0
    config = adaptive.triton_config()
    assert ("  default_queue_policy {\n    timeout_action: REJECT\n    default_timeout_microseconds: 500000\n"
            "    allow_timeout_override: false\n  }\n}") in config
    assert spec(slo_ms=250.0, queue_timeout_ms=0).queue_timeout_ms is None  # 0: never reject
    with pytest.raises(BadInput, match="--queue-timeout-ms needs dynamic batching"):
        make_spec(opened, ServeOptions(backend="onnxruntime", precision="fp32", max_batch=8,
                                       dynamic_batching=False, queue_timeout_ms=100))
    assert spec(queue_timeout_ms=75).queue_timeout_ms == 75.0
    with pytest.raises(BadInput, match="--queue-timeout-ms must be ≥ 0"):
        spec(queue_timeout_ms=-1)
    assert rungs_of(adaptive) == (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
    ladder = ServeSpec.from_json({**adaptive.to_json(), "rungs": [0.5, 0.7, 0.9]})
    assert ladder.rungs == (0.5, 0.7, 0.9) and rungs_of(ladder) == (0.7, 0.9)  # only rungs inside the range
