"""`dvit serve` on the real Triton Inference Server that nvidia-pytriton ships ([serve] extra, part of [dev]).

Tiny DeiT exports (dim 64, depth 4). One server serves a --dynamic-keep export for the request
tests; a second one (fixed ρ) is stopped with SIGTERM while requests are in flight. Everything
listens on free loopback ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from dvit_deploy.helpers.fileio import manifest_path
from dvit_deploy.artifact.store import Artifact, open_artifact
from dvit_deploy.runtime import open_runner
from dvit_deploy.jobs.serve.handler import Request, RequestHandler
from dvit_deploy.jobs.serve.spec import ServeOptions, make_spec

pytest.importorskip("pytriton", reason='dvit serve needs nvidia-pytriton: pip install "dvit-deploy[serve]"')
http = pytest.importorskip("tritonclient.http")
grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHM = Path("/dev/shm")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 224, 224)).astype(np.float32)


# A server started by a test gets SIGTERM (drain, clean up) if the test run itself is killed: set in the
# child's own interpreter, which then becomes dvit (no preexec_fn: this process runs gRPC's threads, and
# Python code between fork and exec made a child abort in gRPC's poller, "epoll_wait error").
_DIE_WITH_PARENT = ("import ctypes, os, runpy, signal, sys; "
                    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM)); "
                    "sys.argv = ['dvit', *sys.argv[1:]]; runpy.run_module('dvit_deploy', run_name='__main__')")


def dvit(*args: str, tmpdir: Path | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if tmpdir is not None:  # a private temporary folder: what the server leaves there is its own, not a neighbour's
        env["TMPDIR"] = str(tmpdir)
    return subprocess.Popen([sys.executable, "-c", _DIE_WITH_PARENT, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


class Server:
    def __init__(self, artifact: Path, *extra: str, tmpdir: Path | None = None) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.process = dvit("serve", str(artifact), "--http-port", str(self.http_port), "--grpc-port",
                            str(self.grpc_port), "--metrics-port", str(self.metrics_port), "--drain-timeout", "20",
                            *extra, tmpdir=tmpdir)
        deadline = time.monotonic() + 240
        while not self.ready():
            if self.process.poll() is not None:
                raise AssertionError(f"dvit serve exited {self.process.returncode}: {self.process.stderr.read()}")
            assert time.monotonic() < deadline, "server not ready in 240 s"
            time.sleep(0.3)
        self.shm_prefix = f"dvit{self.process.pid}x"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def http(self):
        return http.InferenceServerClient(f"127.0.0.1:{self.http_port}", network_timeout=120)

    def grpc(self):
        return grpc.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, stderr = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        return self.process.returncode, stderr


def infer(client, module, model: str, batch: np.ndarray, keep_ratio: float | None = None,
          dtype: str = "FP32") -> dict[str, np.ndarray]:
    inputs = [module.InferInput("images", list(batch.shape), dtype)]
    inputs[0].set_data_from_numpy(batch)
    if keep_ratio is not None:
        inputs.append(module.InferInput("keep_ratio", [len(batch), 1], "FP32"))
        inputs[1].set_data_from_numpy(np.full((len(batch), 1), keep_ratio, np.float32))
    result = client.infer(model, inputs)
    names = [o["name"] for o in (result.get_response()["outputs"] if module is http else
                                 result.get_response(as_json=True)["outputs"])]
    return {n: result.as_numpy(n) for n in names}


# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    folder = tmp_path_factory.mktemp("serve")
    dynamic = export_onnx(load_model(model_name="tiny-deit", keep_ratio=0.7), folder / "tiny-dynkeep.onnx",
                          dynamic_keep=True, check_samples=2)
    fixed = {ratio: export_onnx(load_model(model_name="tiny-deit", keep_ratio=ratio), folder / f"tiny-r{ratio}.onnx",
                                token_outputs=True, check_samples=2) for ratio in (0.8, 0.6)}
    return dynamic.path, {ratio: r.path for ratio, r in fixed.items()}


@pytest.fixture(scope="module")
def dynamic_server(exports):
    server = Server(exports[0], "--keep-range", "0.6,0.9", "--max-batch", "8")
    yield server
    code, stderr = server.stop()
    assert code == 0, stderr


def direct(artifact: Path, batch: np.ndarray, counts=None):
    with open_runner("onnxruntime", open_artifact(artifact), topk_outputs=True) as runner:
        return runner.run(batch, keep_counts=None if counts is None else np.asarray(counts, np.int32))


# --------------------------------------------------------------------------------------------
def test_handler_never_mixes_keep_counts_in_one_call(exports):
    """Requests at different ρ in one Triton batch: one runner call per kept-count vector, results unchanged."""
    artifact = exports[0]
    opened = open_artifact(artifact)
    spec = make_spec(opened, ServeOptions(backend="onnxruntime", precision="fp32", max_batch=8, keep_range=(0.6, 0.9)),
                     token_outputs=True)
    with open_runner("onnxruntime", opened, topk_outputs=True) as runner:
        handler = RequestHandler(runner, spec)
        batches = [images(2, s) for s in range(4)]
        ratios = [0.8, 0.6, 0.8, None]  # None: the export's ρ (0.7)
        responses = handler.handle([Request(b, None if r is None else np.full((2, 1), r, np.float32))
                                    for b, r in zip(batches, ratios)])
        assert [(c.keep_counts, c.requests, c.rows) for c in handler.calls] == [
            ((156, 125, 100), 2, 4), ((117, 70, 42), 1, 2), ((137, 96, 67), 1, 2)]
        for batch, ratio, response in zip(batches, ratios, responses):
            alone = runner.run(batch, keep_counts=spec.counts_for(ratio or 0.7))
            np.testing.assert_allclose(response.outputs["logits"], alone.logits, atol=1e-5, rtol=1e-5)
            assert response.outputs["keep_ratio"].ravel().tolist() == pytest.approx([ratio or 0.7] * 2)
            assert [k.shape[1] for k in alone.kept] == [response.outputs[f"kept_patch_ids_stage{s}"].shape[1]
                                                       for s in (1, 2, 3)]
        bad = handler.handle([Request(batches[0], np.full((2, 1), 0.3, np.float32)),
                              Request(batches[1], np.asarray([[0.8], [0.7]], np.float32)), Request(batches[2])])
        assert bad[0].error == "keep_ratio 0.3 is outside this model's range [0.6, 0.9]"
        assert "same for every image" in bad[1].error
        nan = handler.handle([Request(batches[0], np.full((2, 1), np.nan, np.float32))])[0].error
        assert nan == "keep_ratio must be a finite number in [0.6, 0.9], got nan", nan
        assert bad[2].error is None and bad[2].outputs["logits"].shape == (2, 10)


def test_concurrent_http_and_grpc_equal_the_direct_runner(dynamic_server, exports):
    batches = [images(1 + i % 3, 100 + i) for i in range(12)]
    expected = [direct(exports[0], b) for b in batches]

    def one(i: int):  # a client per request: tritonclient's clients are not shared between threads
        module, client = (http, dynamic_server.http()) if i % 2 == 0 else (grpc, dynamic_server.grpc())
        return infer(client, module, "tiny-dynkeep", batches[i])

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(len(batches))))
    for out, want in zip(got, expected):
        np.testing.assert_allclose(out["logits"], want.logits, atol=1e-5, rtol=1e-5)
        for s, ids in enumerate(want.kept):
            # Kept tokens as sets (TopK's tie order is not specified).
            assert [set(r) for r in out[f"kept_patch_ids_stage{s + 1}"]] == [set(r) for r in ids]
        np.testing.assert_allclose(out["keep_ratio"], 0.7)


def test_dynamic_keep_requests_equal_the_fixed_exports(dynamic_server, exports):
    """Interleaved requests at ρ 0.8 and 0.6 (batched by Triton together) each equal that ρ's own export."""
    batches = {ratio: images(2, int(ratio * 10)) for ratio in exports[1]}
    expected = {ratio: direct(path, batches[ratio]) for ratio, path in exports[1].items()}
    with ThreadPoolExecutor(6) as pool:
        jobs = [(ratio, pool.submit(lambda b, r: infer(dynamic_server.grpc(), grpc, "tiny-dynkeep", b, r),
                                    batches[ratio], ratio))
                for _ in range(3) for ratio in batches]
        for ratio, job in jobs:
            out = job.result()
            np.testing.assert_allclose(out["logits"], expected[ratio].logits, atol=1e-4, rtol=1e-4)
            assert [out[f"kept_patch_ids_stage{s}"].shape[1] for s in (1, 2, 3)] == \
                [k.shape[1] for k in expected[ratio].kept]
            np.testing.assert_allclose(out["keep_ratio"], ratio)


@pytest.mark.parametrize("case, code_http, message", [
    ("keep ratio", 400, "keep_ratio 0.3 is outside this model's range [0.6, 0.9]"),
    ("shape", 400, "unexpected shape for input 'images'"),
    ("dtype", 400, "expects 'FP32'"),
    ("oversized", 400, "batch-size must be <= 8"),
])
def test_bad_requests_get_their_error_and_serving_goes_on(dynamic_server, case, code_http, message):
    good = images(1, 7)
    batch, ratio, dtype = {
        "keep ratio": (good, 0.3, "FP32"),
        "shape": (np.zeros((1, 3, 32, 32), np.float32), None, "FP32"),
        "dtype": (good.astype(np.float64), None, "FP64"),
        "oversized": (np.zeros((9, 3, 224, 224), np.float32), None, "FP32"),
    }[case]
    for module, client in ((http, dynamic_server.http()), (grpc, dynamic_server.grpc())):
        with pytest.raises(InferenceServerException) as caught:
            infer(client, module, "tiny-dynkeep", batch, ratio, dtype)
        assert message in caught.value.message() and "\n" not in caught.value.message()
        status = caught.value.status()
        assert status == (str(code_http) if module is http else "StatusCode.INVALID_ARGUMENT"), status
        assert infer(client, module, "tiny-dynkeep", good)["logits"].shape == (1, 10)  # still serving


def test_sigterm_drains_in_flight_requests_and_leaves_nothing(exports, tmp_path):
    artifact = exports[1][0.8]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    server = Server(artifact, tmpdir=tmpdir)
    assert [p.name for p in tmpdir.glob("dvit-serve-*")], "the server's workspace is in its TMPDIR"
    pid, prefix = server.process.pid, server.shm_prefix
    assert any(p.name.startswith(prefix) for p in SHM.iterdir()), "the backend's shared memory has our prefix"
    children = subprocess.run(["pgrep", "-s", str(_session_of(server)), "-f", "tritonserver|stub"],
                              capture_output=True, text=True).stdout.split()
    assert children, "tritonserver runs in its own session"
    results: list[tuple[float, float, str]] = []
    lock = threading.Lock()
    stop_at: list[float] = []

    def worker(seed: int) -> None:
        client = server.http()
        while not stop_at or time.monotonic() < stop_at[0] + 3:
            start = time.monotonic()
            try:
                out = infer(client, http, "tiny-r0_8", images(16, seed))  # the stem, made a Triton name
                outcome = "ok" if out["logits"].shape == (16, 10) else "wrong"
            except InferenceServerException as exc:
                outcome = f"error: {exc.message()}"
            except Exception as exc:  # noqa: BLE001 - a refused connection once the server is gone
                outcome = f"connection: {type(exc).__name__}"
            with lock:
                results.append((start, time.monotonic(), outcome))
            if outcome.startswith("connection"):
                return

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while sum(r[2] == "ok" for r in results) < 4:
        assert time.monotonic() < deadline, f"no answers: {results[-3:]}"
        time.sleep(0.05)
    stop_at.append(time.monotonic())
    code, stderr = server.stop()
    elapsed = time.monotonic() - stop_at[0]
    for t in threads:
        t.join(timeout=60)
    assert code == 0, stderr
    assert elapsed < 25, "exit within the drain timeout (20 s) and the clean-up"
    assert "draining in-flight requests" in stderr and "stopped (SIGTERM" in stderr
    assert not any(r[2] == "wrong" for r in results)
    in_flight = [r for r in results if r[0] < stop_at[0] < r[1]]
    assert in_flight and all(r[2] == "ok" or r[2].startswith(("error", "connection")) for r in in_flight)
    assert any(r[2] == "ok" for r in in_flight), f"in-flight requests were answered: {in_flight}"
    for child in children:
        assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text().lower()
    assert not [p for p in SHM.iterdir() if p.name.startswith(prefix)]
    left = [p.name for p in tmpdir.glob("dvit-serve-*")]
    assert not left, f"workspace left: {left}"
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def _session_of(server: Server) -> int:
    """The session of the tritonserver that ``dvit serve`` started (its own, as a session leader)."""
    out = subprocess.run(["pgrep", "-P", str(server.process.pid), "-f", "tritonserver"], capture_output=True,
                         text=True).stdout.split()
    assert out, "dvit serve started tritonserver as its child"
    return int(out[0])


def test_startup_failures_are_one_line_and_leave_no_server(exports, tmp_path):
    artifact = exports[1][0.6]
    tampered = tmp_path / artifact.name
    tampered.write_bytes(artifact.read_bytes()[:-1] + bytes([artifact.read_bytes()[-1] ^ 1]))
    (tmp_path / manifest_path(artifact).name).write_text(manifest_path(artifact).read_text())
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    try:
        cases = {
            "tampered": ([str(tampered)], "does not match its manifest"),
            "backend": ([str(artifact), "--backend", "tensorrt"], "tensorrt backend cannot run tiny-r0.6.onnx"),
            "port": ([str(artifact), "--http-port", str(busy)], f"port {busy} on 127.0.0.1 (--http-port) is already in use"),
        }
        for case, (args, message) in cases.items():
            ports = free_ports(3)
            extra = [] if "--http-port" in args else ["--http-port", str(ports[0])]
            done = dvit("serve", *args, *extra, "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]))
            _, stderr = done.communicate(timeout=120)
            assert done.returncode == 2, (case, stderr)
            errors = [line for line in stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and message in errors[0], (case, stderr)
            assert "Traceback" not in stderr and "starting Triton" not in stderr, (case, stderr)
    finally:
        holder.close()


def test_packaged_python_backend_repository_loads_in_the_bundled_tritonserver(exports, tmp_path):
    """`dvit package --triton --triton-python`: a packaged repository loaded and answering in a real Triton."""
    from dvit_deploy.jobs.serve.server import ServeSettings, server_command
    from dvit_deploy.jobs.serve.tritonserver import find_tritonserver, prepare_backends, server_env
    from dvit_deploy.jobs.ship import make_bundle

    artifact = exports[1][0.6]
    folder = make_bundle([artifact], "x86-trt10", output=tmp_path / "bundle", triton=True, triton_python=True,
                         archive=False).folder
    model = "tiny-r0_6-python"
    repo = folder / "triton"
    assert {"tiny-r0_6-onnx", model} <= {p.name for p in repo.iterdir()}
    assert f"triton/{model}/1/tiny-r0.6.onnx" in (folder / "SHA256SUMS").read_text()
    moved = tmp_path / "elsewhere"  # the repository names its artifact relative to itself
    repo.rename(moved)
    dist = find_tritonserver()
    http_port, grpc_port, metrics_port = free_ports(3)
    settings = ServeSettings(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, drain_timeout_s=10)
    command = [c for c in server_command(dist.binary, moved, prepare_backends(dist, tmp_path / "ws"), settings,
                                         f"dvittest{os.getpid()}x")
               if not c.startswith("--model-control-mode")]
    # The bundled server has no onnxruntime backend: load only the Python-backend model.
    command += ["--model-control-mode=explicit", f"--load-model={model}"]
    log = open(tmp_path / "triton.log", "wb")
    process = subprocess.Popen(command, env=server_env(dist), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, preexec_fn=None)
    try:
        client = http.InferenceServerClient(f"127.0.0.1:{http_port}", network_timeout=120)
        deadline = time.monotonic() + 240
        while True:
            try:
                if client.is_model_ready(model):
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            assert process.poll() is None, (tmp_path / "triton.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "packaged model not ready"
            time.sleep(0.3)
        batch = images(3, 11)
        out = infer(client, http, model, batch)
        want = direct(artifact, batch)
        np.testing.assert_allclose(out["logits"], want.logits, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(out["keep_ratio"], 0.6)
        client.close()  # Triton 2.51's exit waits for open HTTP connections, idle keep-alive ones included
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        log.close()
        assert code == 0, (tmp_path / "triton.log").read_text()[-3000:]


def test_drain_outcome_reads_triton_exit_and_log(tmp_path):
    """Exit 0 is a drain; Triton's exit 1 after waiting out idle HTTP connections is one too, if no inference was left."""
    from dvit_deploy.jobs.serve.server import drain_finished

    log = tmp_path / "log"
    log.write_text('I1201 server.cc:321] "Timeout 0: Found 0 model versions that have in-flight inferences"\n'
                   'E1201 main.cc:535] "failed to stop server: Internal - Exit timeout expired. Exiting immediately."\n')
    assert drain_finished(log, 0) and drain_finished(log, 1)
    log.write_text('I1201 server.cc:321] "Timeout 0: Found 1 model versions that have in-flight inferences"\n')
    assert not drain_finished(log, 1)
    assert not drain_finished(log, -9)


def test_spec_of_an_engine_takes_batch_and_keep_range_from_its_profiles(tmp_path):
    """make_spec reads an engine's limits from its typed manifest: the ``images`` profile's max batch and the
    ρ range the keep-count profile allows; the logits width from its outputs when the config has none."""
    from dvit_deploy.helpers.errors import BadInput

    manifest = {
        "kind": "tensorrt-engine", "variant": "tiny-deit", "config": {"img_size": 224}, "dense": False,
        "keep_ratio": 0.7, "keep_counts": [137, 96, 67], "num_patches": 196, "dynamic_keep": True,
        "dynamic_batch": True, "keep_input": {"name": "keep_counts", "dtype": "int32", "shape": [3]},
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}],
        "profiles": [{"name": "images", "kind": "shape", "min": [1, 3, 224, 224], "opt": [4, 3, 224, 224],
                      "max": [16, 3, 224, 224]},
                     {"name": "keep_counts", "kind": "values", "min": [98, 49, 24], "opt": [137, 96, 67],
                      "max": [176, 158, 142]}],
    }
    spec = make_spec(Artifact.of(tmp_path / "m.engine", manifest), ServeOptions(backend="tensorrt", precision="fp16"))
    assert spec.max_batch == 16 and spec.fixed_batch is None and spec.num_classes == 10
    assert spec.keep_range == pytest.approx((98 / 196, 176 / 196)) and spec.name == "m"
    with pytest.raises(BadInput, match=r"--max-batch 32 exceeds what m.engine accepts \(16\)"):
        make_spec(Artifact.of(tmp_path / "m.engine", manifest),
                  ServeOptions(backend="tensorrt", precision="fp16", max_batch=32))


def test_slo_mode_out_of_reach_warns_serves_at_the_bottom_and_counts_it(exports):
    """--slo-ms below any batch time: a warning at start (measured service time), every batch at the range's
    bottom, counted on the metrics endpoint; each answer says its ρ, and a request's own ρ is kept."""
    server = Server(exports[0], "--keep-range", "0.6,0.9", "--slo-ms", "0.001", "--no-dynamic-batching")
    try:
        client = server.grpc()
        batch = images(1, 5)
        seen = [float(infer(client, grpc, "tiny-dynkeep", batch)["keep_ratio"][0, 0]) for _ in range(4)]
        assert seen == pytest.approx([0.6] * 4)
        out = infer(client, grpc, "tiny-dynkeep", batch)
        want = direct(exports[0], batch, counts=[117, 70, 42])  # ρ 0.6
        np.testing.assert_allclose(out["logits"], want.logits, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(infer(client, grpc, "tiny-dynkeep", batch, 0.8)["keep_ratio"], 0.8)  # asked: kept
        deadline, counted = time.monotonic() + 30, 0.0
        while counted < 5 and time.monotonic() < deadline:  # the metrics follow at most every 0.5 s, on a batch
            time.sleep(0.6)
            infer(client, grpc, "tiny-dynkeep", batch)
            with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as reply:
                metrics = reply.read().decode()
            counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                          if line.startswith('dvit_slo_unreachable_batches_total{model="tiny-dynkeep"}'))
        assert counted >= 5
        assert 'dvit_keep_ratio{model="tiny-dynkeep"} 0.6' in metrics
    finally:
        code, stderr = server.stop()
    assert code == 0, stderr
    assert "adaptive ρ" in stderr
    assert "warning: --slo-ms 0.001 is out of reach: even ρ 0.6 at batch 1 takes" in " ".join(stderr.split())


def test_fixed_batch_artifact_is_padded_and_trimmed(tmp_path):
    """A --batch 2 export: Triton may hand over 1..2 images; the handler pads to 2 and answers each request alone."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    artifact = export_onnx(load_model(model_name="tiny-deit", keep_ratio=0.7), tmp_path / "tiny-b2.onnx", batch=2,
                           token_outputs=True, check_samples=2).path
    opened = open_artifact(artifact)
    spec = make_spec(opened, ServeOptions(backend="onnxruntime", precision="fp32"))
    assert spec.max_batch == 2 and spec.fixed_batch == 2 and "max_batch_size: 2" in spec.triton_config()
    with open_runner("onnxruntime", opened) as runner:
        handler = RequestHandler(runner, spec)
        singles = [images(1, s) for s in range(3)]
        responses = handler.handle([Request(b) for b in singles])
        assert [(c.rows, c.requests) for c in handler.calls] == [(2, 2), (1, 1)]
        for batch, response in zip(singles, responses):
            want = runner.run(np.concatenate([batch, batch])).logits[:1]
            np.testing.assert_allclose(response.outputs["logits"], want, atol=1e-5, rtol=1e-5)
            assert response.outputs["kept_patch_ids_stage3"].shape == (1, 67)


def test_startup_error_names_the_model_error_not_cpu_noise(tmp_path):
    """On a machine without a GPU driver Triton logs CUDA errors first; the cause is the model's load error."""
    from dvit_deploy.jobs.serve.server import startup_error

    log = tmp_path / "triton.log"
    log.write_text(
        'E1201 18:46:59.313690 27330 server.cc:241] "CudaDriverHelper has not been initialized."\n'
        "I1201 18:46:59.364848 27338 pb_stub.cc:298]  Failed to initialize Python stub\n"
        "E1201 18:46:59.366956 27330 model_lifecycle.cc:642] \"failed to load 'tiny' version 1: Internal: "
        "ModuleNotFoundError: No module named 'dvit_deploy'\\n\\nAt:\\n  model.py(2): <module>\"\n"
        "error: creating server: Internal - failed to load all models\n")
    assert startup_error(log) == "failed to load 'tiny' version 1: Internal: ModuleNotFoundError: No module named 'dvit_deploy'"
    log.write_text('E1201 18:46:59.313690 27330 server.cc:241] "CudaDriverHelper has not been initialized."\n'
                   "error: creating server: Invalid argument - --model-repository must be specified\n")
    assert startup_error(log) == "error: creating server: Invalid argument - --model-repository must be specified"
    log.write_text('E1201 18:46:59.313690 27330 server.cc:241] "CudaDriverHelper has not been initialized."\n'
                   "E1201 18:47:02.366956 27330 model_lifecycle.cc:642] \"failed to load 'tiny' version 1: Internal: "
                   "TritonModelException: dvit: tiny.onnx is a fp32 graph; ONNX Runtime runs the graph's own precision"
                   "\\n\\nAt:\\n  /x/dvit_deploy/jobs/serve/backend.py(75): initialize\\n\"\n")
    assert startup_error(log) == "tiny.onnx is a fp32 graph; ONNX Runtime runs the graph's own precision"


# --------------------------------------------------------------------------------------------
# The HTTP front: client errors are 400 before Triton's JSON parser allocates or answers 500.

def _post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    import urllib.error

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _tensor(shape, data, datatype="FP32") -> bytes:
    return json.dumps({"inputs": [{"name": "images", "datatype": datatype, "shape": shape, "data": data}]}).encode()


@pytest.mark.parametrize("case, body, words", [
    # shape claims 60 GB, data holds 10 values: tritonserver 2.51 aborted (std::bad_alloc), dvit serve exited 2
    ("shape-claims-more-than-data", _tensor([100000, 3, 224, 224], list(range(10))),
     "'shape' [100000, 3, 224, 224] needs 15052800000 values, 'data' has 10"),
    ("malformed-json", b'{"inputs": [', "the request body is not valid JSON"),
    ("string-data", _tensor([1, 3, 224, 224], "abc"), "'data' must be a JSON array"),
    ("string-values", _tensor([1, 2], ["a", "b"]), "'data' of a FP32 tensor must hold numbers"),
    ("count-differs-from-shape", _tensor([1, 3, 224, 224], [1.0, 2.0, 3.0]),
     "'shape' [1, 3, 224, 224] needs 150528 values, 'data' has 3"),
    ("negative-dimension", _tensor([-1, 3], [1, 2, 3]), "'shape' must be an array of non-negative integers"),
    ("nan-token", b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1], "data": [NaN]}]}',
     "not valid JSON"),
    ("no-inputs", b'{"outputs": []}', "an infer request is a JSON object with an 'inputs' array"),
])
def test_http_client_errors_get_400_and_serving_goes_on(dynamic_server, exports, case, body, words):
    status, answer = _post(dynamic_server.http_port, "/v2/models/tiny-dynkeep/infer", body)
    assert status == 400, (status, answer)
    assert words in answer["error"] and "\n" not in answer["error"], answer
    assert dynamic_server.process.poll() is None, "dvit serve still runs"
    good = images(1, 3)
    out = infer(dynamic_server.http(), http, "tiny-dynkeep", good)  # binary tensors, through the front
    np.testing.assert_allclose(out["logits"], direct(exports[0], good).logits, atol=1e-5, rtol=1e-5)
    status, answer = _post(dynamic_server.http_port, "/v2/models/tiny-dynkeep/infer",
                           _tensor([1, 3, 224, 224], good.ravel().tolist()))  # JSON tensors pass the front
    assert status == 200 and answer["outputs"][0]["name"] == "logits", answer


def test_a_json_request_of_several_mb_is_answered_not_a_crash(dynamic_server, exports):
    """Triton 2.51 died (SIGSEGV) on this 4.5 MB JSON infer body, sent as curl sends it (`curl -d @b6.json`),
    and `dvit serve` exited; the front now relays a large JSON request as binary tensors, same JSON answer."""
    batch = np.full((6, 3, 224, 224), 0.1, np.float32)
    body = json.dumps({"inputs": [{"name": "images", "shape": list(batch.shape), "datatype": "FP32",
                                   "data": [0.1] * batch.size}]}).encode()
    assert len(body) > 4_500_000
    status, answer = _post(dynamic_server.http_port, "/v2/models/tiny-dynkeep/infer", body,
                           {"Expect": "100-continue", "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, answer
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}
    np.testing.assert_allclose(outputs["logits"], direct(exports[0], batch).logits, atol=1e-4, rtol=1e-4)
    assert dynamic_server.process.poll() is None, "dvit serve still runs"
    ratio = json.dumps({"inputs": [  # a keep_ratio input beside the images, and nested data
        {"name": "images", "shape": [2, 3, 224, 224], "datatype": "FP32", "data": batch[:2].tolist()},
        {"name": "keep_ratio", "shape": [2, 1], "datatype": "FP32", "data": [[0.6], [0.6]]}]}).encode()
    status, answer = _post(dynamic_server.http_port, "/v2/models/tiny-dynkeep/infer", ratio + b" " * (1 << 20))
    assert status == 200, answer
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}
    np.testing.assert_allclose(outputs["logits"], direct(exports[0], batch[:2], counts=[117, 70, 42]).logits,
                               atol=1e-4, rtol=1e-4)  # ρ 0.6
    assert outputs["keep_ratio"].ravel().tolist() == pytest.approx([0.6, 0.6])


def test_http_front_relays_triton_answers_unchanged(dynamic_server):
    """What the front does not refuse reaches Triton, and Triton's own status and error come back."""
    status, answer = _post(dynamic_server.http_port, "/v2/models/nope/infer", _tensor([1, 2], [1.0, 2.0]))
    assert status == 404 and "unknown model" in answer["error"], answer
    with urllib.request.urlopen(f"http://127.0.0.1:{dynamic_server.http_port}/v2/models/tiny-dynkeep") as reply:
        assert json.loads(reply.read())["inputs"][0]["shape"] == [-1, 3, 224, 224]
    import http.client as httplib

    connection = httplib.HTTPConnection("127.0.0.1", dynamic_server.http_port, timeout=60)
    connection.putrequest("POST", "/v2/models/tiny-dynkeep/infer")
    connection.putheader("Content-Length", str(1 << 40))  # claimed, never sent: refused before it is read
    connection.endheaders()
    reply = connection.getresponse()
    assert reply.status == 413 and "exceeds this server's limit" in json.loads(reply.read())["error"]
    connection.close()


def test_a_json_request_becomes_the_same_binary_request():
    from dvit_deploy.jobs.serve.front import as_binary_request, check_infer_request

    text = json.dumps({"id": "7", "outputs": [{"name": "logits"}], "inputs": [
        {"name": "images", "datatype": "FP32", "shape": [2, 3], "data": [[1, 2.5, -3], [4e-3, 5, 6]]},
        {"name": "ragged", "datatype": "INT64", "shape": [3], "data": [[1], [2, 3]]},
        {"name": "image_bytes", "datatype": "BYTES", "shape": [2], "data": ["ab", "héllo"],
         "parameters": {"x": 1}}]}).encode()
    body, size = as_binary_request(check_infer_request(text))
    header = json.loads(body[:size])
    assert header["id"] == "7" and header["outputs"] == [{"name": "logits"}]
    assert [t["parameters"]["binary_data_size"] for t in header["inputs"]] == [24, 24, 4 + 2 + 4 + 6]
    assert header["inputs"][2]["parameters"]["x"] == 1 and all("data" not in t for t in header["inputs"])
    raw = body[size:]
    np.testing.assert_array_equal(np.frombuffer(raw[:24], "<f4"), np.float32([1, 2.5, -3, 4e-3, 5, 6]))
    assert np.frombuffer(raw[24:48], "<i8").tolist() == [1, 2, 3]
    assert raw[48:] == b"\x02\x00\x00\x00ab\x06\x00\x00\x00h\xc3\xa9llo"


@pytest.mark.parametrize("tensor, words", [
    ({"datatype": "INT32", "data": [1.7, -2.9]}, "must hold integers in [-2147483648, 2147483647], got 1.7"),
    ({"datatype": "INT32", "data": [2 ** 40]}, "must hold integers"),
    ({"datatype": "UINT8", "data": [-1]}, "must hold integers in [0, 255], got -1"),
    ({"datatype": "FP32", "data": [1e400]}, "beyond its range"),
    ({"datatype": "BF16", "data": [1.0]}, "cannot be sent as JSON data"),
    ({"datatype": "BYTES", "data": ["\ud800"]}, "input 'x':"),
    ({"datatype": "FP32", "data": [1.0], "parameters": "p"}, "'parameters' must be a JSON object"),
])
def test_a_large_json_request_it_cannot_convert_faithfully_is_refused(tensor, words):
    """Values Triton's JSON parser refuses are refused, not truncated or wrapped into binary."""
    from dvit_deploy.jobs.serve.front import Refused, as_binary_request

    with pytest.raises(Refused, match=None) as refused:
        as_binary_request({"inputs": [{"name": "x", "shape": [len(tensor["data"])], **tensor}]})
    assert words in str(refused.value) and refused.value.status == 400


def test_infer_request_checks_and_body_limit():
    from dvit_deploy.jobs.serve.front import MIN_BODY_LIMIT, Refused, body_limit, check_infer_request

    check_infer_request(_tensor([2, 2], [[1, 2], [3.5, -4e-3]]))
    check_infer_request(b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 224, 224], '
                        b'"parameters": {"binary_data_size": 602112}}]}')  # binary: Triton checks the bytes
    check_infer_request(_tensor([2], ["a", "b"], "BYTES"))
    check_infer_request(_tensor([2], [True, False], "BOOL"))
    for body, words in [(_tensor([3], [1, True, 2]), "must hold numbers, got true"),
                        (_tensor([2], [1, 2], "BYTES"), "must hold strings"),
                        (_tensor([2, 2], [[1, 2], [3]]), "needs 4 values, 'data' has 3"),
                        (_tensor([1.5], [1]), "non-negative integers"),
                        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
                        (b'{"inputs": ["x"]}', "inputs[0] must be a JSON object")]:
        with pytest.raises(Refused, match=re.escape(words)):
            check_infer_request(body)
    assert body_limit(1, 10) == MIN_BODY_LIMIT and body_limit(32, 3 * 224 * 224) > 32 * 3 * 224 * 224 * 20


# --------------------------------------------------------------------------------------------
# The server's lifetime: nothing outlives dvit serve, and a restart cleans up after a killed one.

def _server_processes(dvit_pid: int) -> list[int]:
    """tritonserver (a child of dvit serve) and everything in its session (the backend stubs)."""
    triton = subprocess.run(["pgrep", "-P", str(dvit_pid), "-f", "tritonserver"], capture_output=True,
                            text=True).stdout.split()
    if not triton:
        return []
    return [int(p) for p in subprocess.run(["pgrep", "-s", triton[0]], capture_output=True, text=True).stdout.split()]


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_sigkill_of_dvit_serve_takes_the_server_with_it_and_a_restart_cleans_up(exports, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    server = Server(exports[1][0.8], tmpdir=tmpdir)
    pid, prefix = server.process.pid, server.shm_prefix
    processes = _server_processes(pid)
    assert len(processes) >= 2, "tritonserver and its backend stub"
    server.process.kill()  # SIGKILL: no handler of ours runs
    server.process.wait(timeout=10)
    deadline = time.monotonic() + 5
    while not all(map(_gone, processes)) or not all(map(_port_free, (server.http_port, server.grpc_port,
                                                                      server.metrics_port))):
        assert time.monotonic() < deadline, (f"alive: {[p for p in processes if not _gone(p)]}, ports "
                                             f"{[_port_free(p) for p in (server.http_port, server.grpc_port)]}")
        time.sleep(0.1)
    workspace = next(tmpdir.glob(f"dvit-serve-{pid}-*"))  # a SIGKILLed dvit serve cannot remove it: the next one does
    owner = json.loads((workspace / "owner.json").read_text())
    assert owner["pid"] == pid and owner["shm_prefix"].startswith(prefix)
    stale_regions = [p.name for p in SHM.iterdir() if p.name.startswith(prefix)]
    again = Server(exports[1][0.8], tmpdir=tmpdir)  # the same ports are free again
    try:
        assert not workspace.exists(), "the dead server's workspace was removed"
        assert not [p for p in SHM.iterdir() if p.name in stale_regions], "and its shared memory"
        if owner.get("python_env"):
            assert not Path(owner["python_env"]).exists(), "and the Python backend's env folder it recorded"
        foreign = tmpdir / "dvit-serve-123-not-ours"  # no owner record: never touched
        foreign.mkdir()
        assert infer(again.http(), http, "tiny-r0_8", images(1, 1))["logits"].shape == (1, 10)
    finally:
        code, stderr = again.stop()
    assert code == 0, stderr
    assert f"left by a dvit serve (pid {pid}) that is no longer running" in stderr, stderr
    assert foreign.is_dir()


def test_sigterm_during_start_up_is_a_clean_stop_without_leftovers(exports, tmp_path):
    """SIGTERM once tritonserver runs but before it is ready: exit 143, no drain message, nothing left."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    envs_before = {p.name for p in Path("/tmp").glob("python_env_*")}
    ports = free_ports(3)
    process = dvit("serve", str(exports[1][0.6]), "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                   "--metrics-port", str(ports[2]), tmpdir=tmpdir)
    stderr = ""
    while "starting Triton Inference Server" not in stderr:  # the line is printed just after the server starts
        line = process.stderr.readline()
        assert line, f"dvit serve ended before starting the server: {stderr}"
        stderr += line
    time.sleep(0.5)  # inside the server's start-up (a few seconds here), where the report came from
    processes = _server_processes(process.pid)
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=60)
    stderr += rest
    assert process.returncode == 143, stderr
    assert "terminated" in stderr and "during start-up" in stderr and "in-flight" not in stderr, stderr
    assert all(map(_gone, processes)), processes
    assert not list(tmpdir.glob("dvit-serve-*")), "workspace removed"
    left = {p.name for p in Path("/tmp").glob("python_env_*")} - envs_before
    # Another Triton started on this machine meanwhile may own a new env folder: count only what is not theirs.
    others = int(subprocess.run(["pgrep", "-c", "-x", "tritonserver"], capture_output=True, text=True).stdout or 0)
    assert len(left) <= others, f"the Python backend's env folder was left: {left}"


def test_serve_shows_the_runtimes_own_refusal_for_an_engine_it_cannot_run(tmp_path, monkeypatch, tiny_export):
    """An RTX engine on a machine without a GPU: serve says what the runtime says, not its own copy."""
    import hashlib

    from typer.testing import CliRunner

    import dvit_deploy.runtime as runtime
    from dvit_deploy.cli import app
    from dvit_deploy.helpers.errors import DvitError

    if runtime._cuda_device()[0]:
        pytest.skip("this machine has a CUDA GPU")
    onnx = Path(tiny_export.path)
    payload = b"an engine that is never deserialized"
    engine = tmp_path / "m-rtx.engine"
    engine.write_bytes(payload)
    source = json.loads(manifest_path(onnx).read_text())
    manifest = {"kind": "tensorrt-engine", "artifact": engine.name, "precision": "fp32",
                "tensorrt": {"version": "1.1.1.26", "major": 1, "flavour": "rtx", "module": "tensorrt_rtx"},
                "rtx": {"compute_capabilities": ["8.6", "8.9"]},
                "engine": {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)},
                "source_onnx": {"path": str(onnx), "sha256": hashlib.sha256(onnx.read_bytes()).hexdigest(),
                                "manifest": str(manifest_path(onnx))},
                "profiles": [{"name": "images", "kind": "shape", "min": [1, 3, 224, 224], "opt": [4, 3, 224, 224],
                              "max": [8, 3, 224, 224]}],
                **{k: source.get(k) for k in ("variant", "config", "keep_ratio", "keep_counts", "num_patches", "dense",
                                              "dynamic_keep", "keep_input", "batch", "dynamic_batch")}}
    manifest_path(engine).write_text(json.dumps(manifest))
    # As where the runtime asks for the package an RTX engine needs (tensorrt_rtx, installed here).
    monkeypatch.setattr(runtime, "BACKEND_PACKAGES", {**runtime.BACKEND_PACKAGES, "tensorrt": ("tensorrt_rtx", "rtx")})
    with pytest.raises(DvitError) as refused:
        runtime.runner_for_artifact(open_artifact(engine), "tensorrt", precision=None).load()
    result = CliRunner().invoke(app, ["serve", str(engine), "--http-port", "1", "--grpc-port", "2",
                                      "--metrics-port", "3"])
    assert result.exit_code == refused.value.exit_code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {refused.value}"], (errors, str(refused.value))


def test_a_keep_range_without_the_exports_rho_serves_its_nearer_end_by_default(exports):
    """--keep-range 0.8,0.9 on a ρ=0.7 export: requests without a keep_ratio run at 0.8 (was: the warm-up at 0.7
    failed after Triton had started)."""
    opened = open_artifact(exports[0])
    for keep_range, default in (((0.8, 0.9), 0.8), ((0.5, 0.6), 0.6), ((0.6, 0.9), 0.7)):
        spec = make_spec(opened, ServeOptions(backend="onnxruntime", precision="fp32", max_batch=4, keep_range=keep_range))
        assert spec.keep_ratio == pytest.approx(default)
        assert spec.counts_for(spec.keep_ratio)  # inside the range: the warm-up's ρ is served
    low = opened.at_keep_ratio(0.3)  # an export at ρ 0.3, below the default range 0.5–0.9
    spec = make_spec(low, ServeOptions(backend="onnxruntime", precision="fp32", max_batch=4))
    assert spec.keep_range == (0.3, 0.9) and spec.keep_ratio == pytest.approx(0.3)  # its own ρ by default
