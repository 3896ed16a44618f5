"""The queue bound under --slo-ms, enforced in the backend (serve.shedding): the rule, the probe of Triton's
queue length, and the handler refusing a batch unrun. The real server's behaviour is in test_serve_slo_e2e."""

from __future__ import annotations

import http.server
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from dvit_deploy.jobs.serve.handler import Request, RequestHandler
from dvit_deploy.jobs.serve.shedding import (
    SHED_MESSAGE,
    PendingProbe,
    Shedder,
    loopback_address,
)
from dvit_deploy.jobs.serve.spec import ServeSpec

from .test_serve_images import spec_for

METRICS = """# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting execution
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="other",version="1"} 99
nv_inference_pending_request_count{model="deit_s",version="1"} 37
dvit_keep_ratio{model="deit_s"} 0.5
"""


def drain_at(per_request_s: float):
    return lambda queued: per_request_s * queued


def test_a_full_batch_is_refused_only_when_the_queue_behind_it_outlasts_the_bound():
    queued = [12]
    shedder = Shedder(bound_s=1.0, queued=lambda: queued[0], drain=drain_at(0.05))
    assert shedder.refuse(rows=8, max_batch=8) is None  # (8 + 12) × 50 ms = 1.0 s ≤ 1 s
    queued[0] = 13  # (8 + 13) × 50 ms = 1.05 s: the last queued request would be answered after the bound
    message = shedder.refuse(rows=8, max_batch=8, requests=3)
    assert message == (f"{SHED_MESSAGE}: this batch and the 13 requests queued behind it take 1050 ms at the bottom "
                       "of the keep range, over the queue bound of 1000 ms; retry later")
    assert shedder.refuse(rows=7, max_batch=8, requests=7) is None  # not full: Triton handed over every queued request
    assert shedder.shed == 3  # only the refused batch's requests are counted


def test_an_unreadable_queue_length_refuses_nothing():
    shedder = Shedder(bound_s=0.001, queued=lambda: None, drain=drain_at(1.0))
    assert shedder.refuse(rows=8, max_batch=8) is None


def test_loopback_address_of_wildcards_and_ipv6():
    assert loopback_address("0.0.0.0", 8002) == "127.0.0.1:8002"
    assert loopback_address("::", 8002) == "[::1]:8002"
    assert loopback_address("10.1.2.3", 9000) == "10.1.2.3:9000"
    assert loopback_address("fe80::1", 9000) == "[fe80::1]:9000"


@pytest.fixture
def metrics_endpoint():
    """A local HTTP server answering /metrics with ``METRICS`` (its count of requests in ``hits``)."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the probe reuses its connection

        def do_GET(self):
            hits.append(self.path)
            body = METRICS.encode() if self.path == "/metrics" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def test_probe_reads_its_own_models_pending_count(metrics_endpoint):
    address, hits = metrics_endpoint
    probe = PendingProbe(address, "deit_s")
    assert [probe.pending(), probe.pending()] == [37, 37]
    assert hits == ["/metrics", "/metrics"]
    warnings = []
    absent = PendingProbe(address, "absent", warn=warnings.append)
    assert [absent.pending(), absent.pending()] == [None, None]  # a model Triton does not list
    assert len(warnings) == 1 and "no nv_inference_pending_request_count for this model" in warnings[0]
    assert "not enforced" in warnings[0] and f"http://{address}/metrics" in warnings[0]
    probe.close()


def test_probe_of_a_closed_port_answers_none_and_counts_the_failure():
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    warnings = []
    probe = PendingProbe(f"127.0.0.1:{port}", "deit_s", timeout_s=0.2, warn=warnings.append)
    assert probe.pending() is None and probe.failures == 1
    assert probe.pending() is None and probe.failures == 2
    assert len(warnings) == 1 and "ConnectionRefusedError" in warnings[0]  # said once, not per batch


class CountingRunner:
    def __init__(self) -> None:
        self.calls = 0

    def run(self, batch: np.ndarray, keep_counts=None):
        self.calls += 1
        return SimpleNamespace(logits=np.zeros((len(batch), 3), np.float32), kept=None)


def spec(**changes) -> ServeSpec:
    """A tiny spec (test_serve_images' builder): batches of up to 4 images of 3×8×8, FP32 input only."""
    return spec_for(data_config=None, **{"max_batch": 4, "image_shape": (3, 8, 8), "num_patches": 16, **changes})


def test_handler_refuses_a_batch_unrun_and_serves_the_next(tmp_path):
    runner, queued = CountingRunner(), [50]
    handler = RequestHandler(runner, spec(trace_path=str(tmp_path / "trace.jsonl")))
    handler.shedder = Shedder(bound_s=1.0, queued=lambda: queued[0], drain=drain_at(0.05))
    batch = [Request(np.zeros((1, 3, 8, 8), np.float32)) for _ in range(4)]
    refused = handler.handle(batch)
    assert runner.calls == 0 and handler.shedder.shed == 4
    assert all(r.overloaded and r.error.startswith(f"{SHED_MESSAGE}: this batch and the 50 requests") and not r.outputs
               for r in refused)
    queued[0] = 16  # (4 + 16) × 50 ms = 1.0 s
    served = handler.handle(batch)
    assert runner.calls == 1 and all(r.error is None and r.outputs["logits"].shape == (1, 3) for r in served)
    handler.close()
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"shed": 4' in lines[0] and '"shed"' not in lines[1]


def test_spec_sheds_only_with_an_objective_a_bound_and_the_metrics_address():
    adaptive = spec(dynamic_keep=True, dense=False, keep_ratio=0.7, keep_range=(0.5, 0.9), slo_ms=300.0,
                    queue_timeout_ms=300.0, metrics_address="127.0.0.1:8002")
    assert adaptive.sheds and not adaptive.triton_queue_policy
    assert "default_queue_policy" not in adaptive.triton_config()
    for changes in ({"metrics_address": None}, {"slo_ms": None}):
        other = ServeSpec.from_json({**adaptive.to_json(), **changes})
        assert not other.sheds and other.triton_queue_policy
        assert "default_timeout_microseconds: 300000" in other.triton_config()
    unbounded = ServeSpec.from_json({**adaptive.to_json(), "queue_timeout_ms": None})
    assert not unbounded.sheds and not unbounded.triton_queue_policy
