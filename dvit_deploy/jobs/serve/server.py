"""``dvit serve``: one artifact on a real Triton Inference Server, from start-up to a drained exit.

Lifecycle (docs/serving.md):

1. the artifact's manifest is read and its sha256 checked, the runtime asked what the runner would
   refuse (``Runner.check``), the host resolved and the three ports tried (one line, exit 2) — all
   before any server process exists;
2. what a ``dvit serve`` that is no longer running left is removed (``tritonserver.clean_stale``); a
   private workspace (``dvit-serve-<pid>-*`` in the temp folder, with its owner record) gets a model
   repository (our Python-backend model, ``config.pbtxt``, the ``ServeSpec``) and a backend directory;
   ``tritonserver`` starts in its own session, killed by the kernel if we die (``PR_SET_PDEATHSIG``),
   its HTTP endpoint on a private loopback port behind our front (``front.HttpFront``: 400 for bad JSON
   before Triton allocates);
3. ready = ``/v2/health/ready`` answers 200, which Triton gives only once the model's
   ``initialize`` (runner loaded, warm-up inference done) has returned;
4. SIGTERM / Ctrl-C: ``tritonserver`` gets SIGTERM, stops taking new requests and finishes the
   in-flight ones (``--exit-timeout-secs`` = the drain timeout); after that anything left of its
   process group is killed, the backend's shared-memory regions (our unique prefix) and env folder
   are removed and the workspace deleted. A clean drain exits 0; a signal during start-up is a clean
   stop (``ServeResult.ready`` False).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ...helpers.errors import BadInput, DvitError
from .front import HttpFront, body_limit, private_port
from .shedding import loopback_address
from .spec import ServeOptions, ServeSpec, make_spec
from .tritonserver import (clean_stale, dies_with_parent, find_tritonserver, new_python_env, new_workspace,
                           prepare_backends, python_envs, record_owner, remove_python_env, remove_shm, server_env)

if TYPE_CHECKING:
    from ...artifact.context import RunContext
    from ...artifact.store import Artifact

MODEL_PY = ('# Written by `dvit serve`: the model is dvit_deploy.jobs.serve.backend, versioned with the package.\n'
            'import os, sys  # noqa: E401\n'
            '# The backend stub builds its own sys.path (PYTHONPATH is not on it): put the copy of dvit_deploy\n'
            '# that started the server first, not whichever one site-packages holds.\n'
            'if os.environ.get("DVIT_SERVE_PACKAGE_ROOT"):\n'
            '    sys.path.insert(0, os.environ["DVIT_SERVE_PACKAGE_ROOT"])\n'
            'from dvit_deploy.jobs.serve.backend import TritonPythonModel  # noqa: E402,F401\n')
_CPU_NOISE = ("CudaDriverHelper has not been initialized", "failed to get CUDA device count",
              "Unable to allocate pinned system memory")
_GLOG_ERROR = re.compile(r"^E\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] (.*)$")


@dataclass(frozen=True)
class ServeSettings:
    """``dvit serve``'s server flags: where it listens, how long it drains, where Triton's log goes."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    drain_timeout_s: int = 30
    startup_timeout_s: float = 600.0
    log_file: Path | None = None  # keep Triton's log here (default: inside the workspace, removed)


@dataclass
class ServeResult:
    name: str
    stopped_by: str | None  # "SIGTERM", "SIGINT", or None when the server ended by itself
    drained: bool
    seconds: float
    leftovers: list[str] = field(default_factory=list)  # anything that had to be killed or removed by force
    ready: bool = True  # False: stopped by a signal during start-up, before serving anything


def write_model(spec: ServeSpec, folder: Path, files: list[Path] | None = None) -> Path:
    """One Triton model folder: ``config.pbtxt``, ``dvit_serve.json``, ``1/model.py`` (+ ``files`` copied into ``1/``).

    ``model.py`` puts ``DVIT_SERVE_PACKAGE_ROOT`` (set by ``server_env``) first on the stub's ``sys.path``: the
    stub does not honour PYTHONPATH before an editable install's finder."""
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(spec.triton_config())
    spec.write(folder)
    (folder / "1" / "model.py").write_text(MODEL_PY)
    for f in files or []:
        shutil.copy2(f, folder / "1" / Path(f).name)
    return folder


def model_repository(spec: ServeSpec, root: Path) -> Path:
    """Write the model repository Triton loads: ``<root>/<name>/...`` (``write_model``)."""
    write_model(spec, root / spec.name)
    return root


def host_family(host: str) -> int:
    """The address family ``--host`` binds with; BadInput when it does not resolve to an address."""
    try:
        found = socket.getaddrinfo(host or None, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise BadInput(f"--host {host} does not resolve to an address ({reason}): give an address of this "
                       "machine, e.g. 127.0.0.1 or 0.0.0.0") from None
    return found[0][0]


def _bind_refusal(settings: ServeSettings, option: str, port: int, exc: OSError) -> BadInput:
    if exc.errno in (98, 48):  # EADDRINUSE (Linux, macOS)
        return BadInput(f"port {port} on {settings.host} ({option}) is already in use: stop what holds it or pick "
                        f"another {option}")
    if exc.errno in (99, 49):  # EADDRNOTAVAIL: a name or address that is not this machine's
        return BadInput(f"--host {settings.host} is not an address of this machine: give one of its addresses, "
                        "e.g. 127.0.0.1 or 0.0.0.0")
    return BadInput(f"cannot listen on port {port} of {settings.host} ({option}): {exc.strerror or exc}")


def check_ports(settings: ServeSettings, family: int | None = None) -> None:
    """The host resolves, each port is free on it (BadInput otherwise), and the three are distinct."""
    ports = {"--http-port": settings.http_port, "--grpc-port": settings.grpc_port, "--metrics-port": settings.metrics_port}
    for option, port in ports.items():
        if not 1 <= port <= 65535:
            raise BadInput(f"{option} must be 1..65535, got {port}")
    if len(set(ports.values())) < len(ports):
        raise BadInput(f"the HTTP, gRPC and metrics ports must differ, got {settings.http_port}, {settings.grpc_port}, "
                       f"{settings.metrics_port}")
    family = family or host_family(settings.host)
    for option, port in ports.items():
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton binds: TIME_WAIT is not "in use"
            try:
                probe.bind((settings.host, port))
            except OSError as exc:
                raise _bind_refusal(settings, option, port, exc) from None


def open_front(spec: ServeSpec, settings: ServeSettings, family: int) -> HttpFront:
    """The HTTP front, bound to the user's HTTP port now (before any server process exists)."""
    values = 1
    for d in spec.image_shape:
        values *= int(d)
    try:
        return HttpFront(settings.host, settings.http_port, family, max_body=body_limit(spec.max_batch, values))
    except OSError as exc:
        raise _bind_refusal(settings, "--http-port", settings.http_port, exc) from None


def server_command(binary: Path, repository: Path, backends: Path, settings: ServeSettings, shm_prefix: str,
                   http: tuple[str, int] | None = None) -> list[str]:
    """``tritonserver``'s arguments; ``http``: where its own HTTP endpoint listens (default: the settings')."""
    http_host, http_port = http or (settings.host, settings.http_port)
    return [
        str(binary), f"--model-repository={repository}", f"--backend-directory={backends}",
        f"--http-address={http_host}", f"--http-port={http_port}",
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
        line = ours[0].split("dvit:", 1)[1]
    else:
        bind = next((e for e in errors if "address already in use" in e.lower() or "failed to start" in e.lower()), None)
        load = next((e for e in errors if "failed to load" in e.lower()), None)
        line = bind or load or (errors[0] if errors else next((l for l in reversed(lines) if l.strip()), "no output"))
    # The Python frames ("\\n\\nAt:\\n  …/backend.py(75): initialize") follow the message, escaped.
    return re.split(r"\\n|\n", line, maxsplit=1)[0].strip()[:limit]


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


@dataclass
class _Run:
    """One server process and what it owns, for ``serve`` and its clean-up."""

    workspace: Path
    shm_prefix: str
    log_path: Path
    process: subprocess.Popen | None = None
    command: list[str] = field(default_factory=list)
    python_env: Path | None = None
    python_env_decided: bool = False
    envs_before: set[str] = field(default_factory=set)
    started_wall: float = 0.0
    ready: bool = False

    def watch_python_env(self) -> None:
        """Note the Python backend's env folder once it appears (a killed server cannot remove it)."""
        if not self.python_env_decided:
            self.python_env, self.python_env_decided = new_python_env(self.envs_before, self.started_wall)
            if self.python_env is not None:
                record_owner(self.workspace, python_env=str(self.python_env))


def _start(run: _Run, spec: ServeSpec, settings: ServeSettings, dist: Any, upstream: int) -> subprocess.Popen:
    repository = model_repository(spec, run.workspace / "models")
    backends = prepare_backends(dist, run.workspace)
    command = server_command(dist.binary, repository, backends, settings, run.shm_prefix, http=("127.0.0.1", upstream))
    run.command, run.envs_before, run.started_wall = command, python_envs(), time.time()
    with open(run.log_path, "wb") as log:
        # Its own session (Ctrl-C on the terminal reaches us, not it), and SIGKILL from the kernel if we die.
        run.process = subprocess.Popen(dies_with_parent(command), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=server_env(dist),
                                       cwd=run.workspace, start_new_session=True)
    return run.process


def _wait_ready(run: _Run, settings: ServeSettings, upstream: int, stop: list[int], wake: threading.Event,
                started: float) -> bool:
    """True once Triton is ready; False when a signal came first; DvitError when it failed or took too long."""
    process, deadline = run.process, started + settings.startup_timeout_s
    while not stop:
        run.watch_python_env()
        if process.poll() is not None:
            raise DvitError(f"Triton Inference Server did not start: {startup_error(run.log_path)}")
        if _ready("127.0.0.1", upstream):
            run.watch_python_env()
            run.ready = True
            return True
        if time.monotonic() > deadline:
            raise DvitError(f"Triton Inference Server was not ready after {settings.startup_timeout_s:.0f} s "
                            f"({startup_error(run.log_path)})")
        wake.wait(0.25)
    return False


def serve(spec: ServeSpec, settings: ServeSettings, *,
          on_event: Callable[[str, dict[str, Any]], None] = lambda event, info: None) -> ServeResult:
    """Run ``spec`` until SIGTERM/SIGINT (drain, clean up) or until the server ends by itself."""
    dist = find_tritonserver()
    family = host_family(settings.host)
    check_ports(settings, family)
    front = open_front(spec, settings, family)
    try:
        return _serve(spec, settings, dist, front, on_event)
    finally:
        front.close()


def _serve(spec: ServeSpec, settings: ServeSettings, dist: Any, front: HttpFront,
           on_event: Callable[[str, dict[str, Any]], None]) -> ServeResult:
    leftovers: list[str] = clean_stale()
    started = time.monotonic()
    shm_prefix = f"dvit{os.getpid()}x{secrets.token_hex(3)}_"
    workspace = new_workspace(shm_prefix)
    run = _Run(workspace, shm_prefix, Path(settings.log_file) if settings.log_file else workspace / "tritonserver.log")
    stop: list[int] = []
    wake = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.append(signum)
        wake.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    upstream = private_port()
    try:
        process = _start(run, spec, settings, dist, upstream)
        front.start(upstream)
        on_event("starting", {"pid": process.pid, "workspace": str(workspace), "log": str(run.log_path),
                              "command": process.args[-len(run.command):]})
        if not _wait_ready(run, settings, upstream, stop, wake, started):
            # A signal during start-up: nothing can be in flight, so this is a clean stop, not a drain.
            front.drain()
            _stop_server(process, min(settings.drain_timeout_s, 5))
            return ServeResult(spec.name, signal.Signals(stop[0]).name, True, time.monotonic() - started,
                               leftovers, ready=False)
        front.open()
        on_event("ready", {"seconds": time.monotonic() - started, "pid": process.pid})
        if spec.slo_ms:
            from .slo import read_report

            on_event("slo", read_report(run.workspace / "models" / spec.name) or {})
        while not stop and process.poll() is None:
            wake.wait(0.5)
        if not stop:
            raise DvitError(f"Triton Inference Server stopped by itself (exit {process.returncode}): "
                            f"{startup_error(run.log_path)}")
        on_event("draining", {"signal": signal.Signals(stop[0]).name, "timeout_s": settings.drain_timeout_s})
        front.drain()  # its kept-alive connections to Triton would hold up Triton's shutdown
        _stop_server(process, settings.drain_timeout_s)
        drained = drain_finished(run.log_path, process.returncode)
        return ServeResult(spec.name, signal.Signals(stop[0]).name, drained, time.monotonic() - started, leftovers)
    finally:
        front.drain()  # an error path stops Triton too: no idle connection of ours may hold it up
        _clean_up(run, settings, leftovers)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _clean_up(run: _Run, settings: ServeSettings, leftovers: list[str]) -> None:
    """Nothing of the server outlives ``serve``: its process group, shared memory, env folder, workspace."""
    process = run.process
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
        if not run.ready:  # made just before a stop in start-up? (later, a new folder is another server's)
            run.watch_python_env()
        remove_python_env(run.python_env)  # a server that did not exit cleanly leaves it
    leftovers += [f"removed shared memory {name}" for name in remove_shm(run.shm_prefix)]
    shutil.rmtree(run.workspace, ignore_errors=True)


def prepare(artifact: "Artifact", options: ServeOptions, context: "RunContext") -> ServeSpec:
    """The opened artifact (manifest read, sha256 checked) and the backend asked for: its ServeSpec.

    Everything the runner inside Triton would refuse at load time (backend, file kind, package,
    precision, device) is asked of the runtime here, in its own words, before a server process exists.
    ``context.threads``: the runner's intra-op threads (ONNX Runtime, OpenVINO), carried in the spec."""
    from ...runtime import default_backend, runner_for_artifact

    find_tritonserver()  # the [serve] extra first: no "serving …" line for a server that cannot start
    backend = options.backend or default_backend(artifact.path)
    if backend == "torch":
        raise BadInput("dvit serve runs an artifact file: use --backend onnxruntime or openvino (.onnx) or tensorrt")
    precision = options.precision or artifact.precision
    runner_for_artifact(artifact, backend, precision=precision).check()  # not loaded: nothing is read or compiled
    declared_tokens = bool(artifact.manifest.token_output_names)
    threads = context.threads if backend in ("onnxruntime", "openvino") else None
    return make_spec(artifact, dataclasses.replace(options, backend=backend, precision=precision),
                     token_outputs=declared_tokens or backend in ("onnxruntime", "openvino"), verify=context.verify,
                     runner_options={"intra_op_threads": int(threads)} if threads else None)


def run_serve(options: ServeOptions, context: "RunContext", artifact: "Artifact",
              settings: ServeSettings = ServeSettings(), *,
              on_event: Callable[[str, dict[str, Any]], None] = lambda event, info: None) -> ServeResult:
    """``dvit serve``: the spec decided (``prepare``), the host and ports checked, then the server run
    until SIGTERM/SIGINT (drained, cleaned up) or until it ends by itself (``serve``).

    ``on_event(name, info)``: ``prepared`` (``info["spec"]``, before any server process exists), then
    ``serve``'s events (``starting``, ``ready``, ``slo``, ``draining``)."""
    spec = prepare(artifact.in_context(context), options, context)
    check_ports(settings)  # the host resolves, the ports are free: before "serving …"
    # the backend reads Triton's queue length there: under --slo-ms it enforces the queue bound (serve.shedding)
    spec = dataclasses.replace(spec, metrics_address=loopback_address(settings.host, settings.metrics_port))
    on_event("prepared", {"spec": spec})
    return serve(spec, settings, on_event=on_event)


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


run = run_serve  # the command's one seam: jobs.serve.run(options, context, artifact, settings)
