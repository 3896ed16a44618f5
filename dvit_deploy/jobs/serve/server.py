"""``dvit serve``: one artifact on a real Triton Inference Server, from start-up to a drained exit.

Lifecycle:

1. the artifact's manifest is read and its sha256 checked, the backend's package asked for, the
   three ports tried (in use: one line, exit 2) — all before any server process exists;
2. a private workspace (``dvit-serve-*`` in the temp folder) gets a model repository (our
   Python-backend model, ``config.pbtxt`` with dynamic batching, the ``ServeSpec``) and a backend
   directory; ``tritonserver`` starts in its own session with the environment of
   ``serve.tritonserver.server_env``;
3. ready = ``/v2/health/ready`` answers 200, which Triton gives only once the model's
   ``initialize`` (runner loaded, warm-up inference done) has returned;
4. SIGTERM / Ctrl-C: ``tritonserver`` gets SIGTERM, stops taking new requests and finishes the
   in-flight ones (``--exit-timeout-secs`` = the drain timeout); after that anything left of its
   process group is killed, the backend's shared-memory regions (our unique prefix) are removed
   and the workspace deleted. A clean drain exits 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...helpers.errors import BadInput, DvitError
from .spec import ServeSpec, make_spec
from .tritonserver import find_tritonserver, prepare_backends, server_env

SHM_DIR = Path("/dev/shm")
MODEL_PY = ('# Written by `dvit serve`: the model is dvit_deploy.jobs.serve.backend, versioned with the package.\n'
            'from dvit_deploy.jobs.serve.backend import TritonPythonModel  # noqa: F401\n')
_CPU_NOISE = ("CudaDriverHelper has not been initialized", "failed to get CUDA device count",
              "Unable to allocate pinned system memory")
_GLOG_ERROR = re.compile(r"^E\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] (.*)$")


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    drain_timeout_s: int = 30
    startup_timeout_s: float = 600.0
    log_file: Path | None = None  # keep Triton's log here (default: inside the workspace, removed)
    threads: int | None = None  # intra-op threads of the runner


@dataclass
class ServeResult:
    name: str
    stopped_by: str | None  # "SIGTERM", "SIGINT", or None when the server ended by itself
    drained: bool
    seconds: float
    leftovers: list[str] = field(default_factory=list)  # anything that had to be killed or removed by force


def write_model(spec: ServeSpec, folder: Path, files: list[Path] | None = None, *,
                package_root: Path | None = None) -> Path:
    """One Triton model folder: ``config.pbtxt``, ``dvit_serve.json``, ``1/model.py`` (+ ``files`` copied into ``1/``).

    ``package_root``: the folder holding the ``dvit_deploy`` that wrote the spec, put first on the stub's
    ``sys.path`` (the stub does not honour PYTHONPATH before an editable install's finder: measured, it
    imported another checkout's package and could not read this spec)."""
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(spec.triton_config())
    spec.write(folder)
    pin = f"import sys\nsys.path.insert(0, {str(package_root)!r})\n" if package_root is not None else ""
    (folder / "1" / "model.py").write_text(MODEL_PY.replace("from dvit_deploy", pin + "from dvit_deploy", 1))
    for f in files or []:
        shutil.copy2(f, folder / "1" / Path(f).name)
    return folder


def model_repository(spec: ServeSpec, root: Path) -> Path:
    """Write the model repository Triton loads: ``<root>/<name>/...`` (``write_model``)."""
    import dvit_deploy

    write_model(spec, root / spec.name, package_root=Path(dvit_deploy.__file__).resolve().parent.parent)
    return root


def check_ports(settings: ServeSettings) -> None:
    """Each port free on the host (BadInput otherwise), and the three distinct."""
    ports = {"--http-port": settings.http_port, "--grpc-port": settings.grpc_port, "--metrics-port": settings.metrics_port}
    for option, port in ports.items():
        if not 1 <= port <= 65535:
            raise BadInput(f"{option} must be 1..65535, got {port}")
    if len(set(ports.values())) < len(ports):
        raise BadInput(f"the HTTP, gRPC and metrics ports must differ, got {settings.http_port}, {settings.grpc_port}, "
                       f"{settings.metrics_port}")
    for option, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton binds: TIME_WAIT is not "in use"
            try:
                probe.bind((settings.host, port))
            except OSError as exc:
                reason = "already in use" if exc.errno in (98, 48) else (exc.strerror or str(exc))
                raise BadInput(f"port {port} on {settings.host} ({option}) is {reason}: stop what holds it or pick "
                               f"another {option}") from None


def server_command(binary: Path, repository: Path, backends: Path, settings: ServeSettings, shm_prefix: str) -> list[str]:
    return [
        str(binary), f"--model-repository={repository}", f"--backend-directory={backends}",
        f"--http-address={settings.host}", f"--http-port={settings.http_port}",
        f"--grpc-address={settings.host}", f"--grpc-port={settings.grpc_port}",
        f"--metrics-address={settings.host}", f"--metrics-port={settings.metrics_port}",
        "--allow-gpu-metrics=false", "--model-control-mode=none", "--strict-readiness=true",
        f"--exit-timeout-secs={settings.drain_timeout_s}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        "--log-verbose=0",
    ]


def startup_error(log: Path, limit: int = 400) -> str:
    """The one line that says why ``tritonserver`` stopped: our model's error, else Triton's first error."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [m.group(1).strip().strip('"') for m in map(_GLOG_ERROR.match, lines) if m]
    # Triton logs these as errors on a machine without a GPU driver, then serves on CPU: never the cause.
    errors = [e for e in errors if not any(noise in e for noise in _CPU_NOISE)]
    ours = [e for e in errors if "dvit:" in e]
    if ours:
        return ours[0].split("dvit:", 1)[1].strip()[:limit]
    bind = next((e for e in errors if "address already in use" in e.lower() or "failed to start" in e.lower()), None)
    load = next((e for e in errors if "failed to load" in e.lower()), None)
    line = bind or load or (errors[0] if errors else next((l for l in reversed(lines) if l.strip()), "no output"))
    return line.split("\\n", 1)[0][:limit]  # a Python traceback follows the message, escaped


def _ready(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    url = f"http://{'[' + target + ']' if ':' in target else target}:{port}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def serve(spec: ServeSpec, settings: ServeSettings, *,
          on_event: Callable[[str, dict[str, Any]], None] = lambda event, info: None) -> ServeResult:
    """Run ``spec`` until SIGTERM/SIGINT (drain, clean up) or until the server ends by itself."""
    dist = find_tritonserver()
    check_ports(settings)
    started = time.monotonic()
    workspace = Path(tempfile.mkdtemp(prefix="dvit-serve-"))
    shm_prefix = f"dvit{os.getpid()}x{secrets.token_hex(3)}_"
    stop: list[int] = []
    wake = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.append(signum)
        wake.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    process: subprocess.Popen | None = None
    log_path = Path(settings.log_file) if settings.log_file else workspace / "tritonserver.log"
    leftovers: list[str] = []
    drained = True
    try:
        repository = model_repository(spec, workspace / "models")
        backends = prepare_backends(dist, workspace)
        command = server_command(dist.binary, repository, backends, settings, shm_prefix)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=server_env(dist, threads=settings.threads), cwd=workspace,
                                       start_new_session=True)  # Ctrl-C on the terminal reaches us, not it
        on_event("starting", {"pid": process.pid, "workspace": str(workspace), "log": str(log_path),
                              "command": command})
        deadline = started + settings.startup_timeout_s
        while not stop:
            if process.poll() is not None:
                raise DvitError(f"Triton Inference Server did not start: {startup_error(log_path)}")
            if _ready(settings.host, settings.http_port):
                break
            if time.monotonic() > deadline:
                raise DvitError(f"Triton Inference Server was not ready after {settings.startup_timeout_s:.0f} s "
                                f"({startup_error(log_path)})")
            wake.wait(0.25)
        if not stop:
            on_event("ready", {"seconds": time.monotonic() - started, "pid": process.pid})
            if spec.slo_ms:
                from .slo import read_report

                on_event("slo", read_report(repository / spec.name) or {})
        while not stop and process.poll() is None:
            wake.wait(0.5)
        if not stop:
            raise DvitError(f"Triton Inference Server stopped by itself (exit {process.returncode}): "
                            f"{startup_error(log_path)}")
        on_event("draining", {"signal": signal.Signals(stop[0]).name, "timeout_s": settings.drain_timeout_s})
        _stop_server(process, settings.drain_timeout_s)
        drained = drain_finished(log_path, process.returncode)
        return ServeResult(spec.name, signal.Signals(stop[0]).name, drained, time.monotonic() - started, leftovers)
    finally:
        if process is not None:
            if process.poll() is None:  # an error path: the server must not outlive us
                _stop_server(process, min(settings.drain_timeout_s, 10))
            for _ in range(20):  # the backend stubs exit just after the server
                if not _group_alive(process.pid):
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                leftovers.append("killed processes left in the server's group")
        for region in SHM_DIR.glob(f"{shm_prefix}*") if SHM_DIR.is_dir() else []:
            with contextlib.suppress(OSError):
                region.unlink()
                leftovers.append(f"removed shared memory {region.name}")
        shutil.rmtree(workspace, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def prepare(artifact: Path, *, backend: str | None, precision: str | None, name: str | None = None,
            max_batch: int | None = None, queue_delay_us: int = 100, dynamic_batching: bool = True,
            keep_range: tuple[float, float] | None = None, verify: bool = True,
            slo_ms: float | None = None, queue_timeout_ms: float | None = None,
            simulate_service: str | None = None) -> ServeSpec:
    """The artifact opened once (manifest read, sha256 checked), the backend asked for: its ServeSpec."""
    from ...artifact.store import open_artifact
    from ...helpers.lazy import available
    from ...helpers.errors import MissingDependency
    from ...runtime import BACKEND_PACKAGES, FILE_BACKENDS, default_backend, runner_class
    from .paced import SimulatedService

    find_tritonserver()  # the [serve] extra first: no "serving …" line for a server that cannot start
    opened = open_artifact(Path(artifact))  # BadInput on a missing/foreign/tampered artifact (unless --no-verify)
    artifact = opened.path
    backend = backend or default_backend(artifact)
    if backend == "torch":
        raise BadInput("dvit serve runs an artifact file: use --backend onnxruntime or openvino (.onnx) or tensorrt")
    runner_class(backend)  # BadInput for an unknown backend
    suffixes = FILE_BACKENDS.get(backend, ())
    if artifact.suffix not in suffixes:
        raise BadInput(f"the {backend} backend cannot run {artifact.name} (expects {', '.join(suffixes)})")
    package, extra = BACKEND_PACKAGES[backend]
    if not available(package):
        raise MissingDependency(package, extra, f"the {backend} backend")
    if backend == "tensorrt":
        from ...runtime import available_backends

        status = next(s for s in available_backends() if s.name == "tensorrt")
        if not status.available:
            raise BadInput(f"the tensorrt backend cannot run here: {status.detail}")
    precision = precision or opened.precision
    declared_tokens = bool(opened.manifest.token_output_names)
    return make_spec(opened, backend=backend, precision=precision, name=name, max_batch=max_batch,
                     queue_delay_us=queue_delay_us, dynamic_batching=dynamic_batching, keep_range=keep_range,
                     token_outputs=declared_tokens or backend in ("onnxruntime", "openvino"), verify=verify,
                     slo_ms=slo_ms, queue_timeout_ms=queue_timeout_ms,
                     simulated_service=SimulatedService.parse(simulate_service).to_json() if simulate_service else None)


def drain_finished(log: Path, returncode: int | None) -> bool:
    """Whether every in-flight inference finished before ``tritonserver`` exited.

    Exit 0 says so. Triton 2.51 also waits out the timeout for open HTTP connections, idle keep-alive
    ones included, then exits 1 ("Exit timeout expired"); its log still says whether inferences were
    left ("Found N model versions that have in-flight inferences"), which is what a drain is about.
    """
    if returncode == 0:
        return True
    try:
        counts = re.findall(r"Found (\d+) model versions that have in-flight inferences", log.read_text(errors="replace"))
    except OSError:
        return False
    return bool(counts) and counts[-1] == "0" and returncode is not None and returncode > 0


def _stop_server(process: subprocess.Popen, drain_timeout_s: int) -> bool:
    """SIGTERM (Triton drains in-flight requests, then exits); SIGKILL the group past the drain timeout."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=drain_timeout_s + 5)
        return True
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False
