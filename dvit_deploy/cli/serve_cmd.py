"""`dvit serve`: an artifact on Triton Inference Server (HTTP, gRPC, metrics) until SIGTERM / Ctrl-C."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..helpers.errors import BadInput
from ..helpers.lazy import lazy_import
from .common import command_context, open_or_default
from .failures import Terminated, exit_code_for, handle_errors
from .options import NO_VERIFY_OPTION, finite, parse_floats
from .output import err, notes, styled

serve_lib = lazy_import("dvit_deploy.jobs.serve.server")


@handle_errors
def serve(
    artifact: Optional[Path] = typer.Argument(
        None, help="Artifact (.onnx, .engine) with its manifest \\[default: the default artifact, see README].",
        show_default=False),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime, openvino (.onnx) or tensorrt (engines) "
                                          "\\[default: the one that runs the artifact]."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32/bf16/int8 (openvino), the artifact's own "
                                            "otherwise \\[default: the artifact's]."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    http_port: int = typer.Option(8000, "--http-port", help="KServe v2 HTTP port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="KServe v2 gRPC port."),
    metrics_port: int = typer.Option(8002, "--metrics-port", help="Prometheus metrics port."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name \\[default: the artifact's stem]."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Largest batch Triton forms or accepts "
                                            "\\[default: the artifact's own limit; 32 for a dynamic-batch ONNX]."),
    max_queue_delay_us: int = typer.Option(100, "--max-queue-delay-us", help="How long Triton's dynamic batcher "
                                           "waits to fill a batch."),
    no_batching: bool = typer.Option(False, "--no-dynamic-batching", help="Run each request as it comes."),
    keep_range: Optional[str] = typer.Option(None, "--keep-range", help="low,high: the keep_ratio a request may ask "
                                             "for (--dynamic-keep artifacts) \\[default: 0.5,0.9, the engine's range, or a --keep-ladder engine's span]."),
    slo_ms: Optional[float] = typer.Option(None, "--slo-ms", callback=finite, help="Adaptive ρ (--dynamic-keep): hold this "
                                           "p99 latency objective by choosing, per batch, the largest ρ in --keep-range "
                                           "predicted to meet it at the measured load; every response reports its ρ. "
                                           "See docs/serving.md."),
    queue_timeout_ms: Optional[float] = typer.Option(None, "--queue-timeout-ms", callback=finite, help="Reject a request "
                                                     "still queued after this long (Triton's queue policy), so overload beyond "
                                                     "what the keep range serves is refused, not served ever later; 0: never "
                                                     "\\[default: --slo-ms's value under --slo-ms, else never; see docs/serving.md]."),
    simulate_service: Optional[str] = typer.Option(None, "--simulate-service-ms", hidden=True,
                                                   help="Test only: CALL_MS,RHO:MS,… pace every runner call."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Intra-op threads of the runner "
                                          "\\[default: the backend's]."),
    drain_timeout: int = typer.Option(30, "--drain-timeout", min=0, help="Seconds to finish in-flight requests "
                                      "after SIGTERM / Ctrl-C."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="Keep Triton's log here."),
    no_verify: bool = NO_VERIFY_OPTION,
    json_output: bool = typer.Option(False, "--json", help="Print one JSON line per event (ready, stopped) on stdout."),
) -> None:
    """Serve an artifact on Triton Inference Server until SIGTERM / Ctrl-C (drains in-flight requests, exit 0)."""
    context = command_context(no_verify=no_verify)
    serve_lib.find_tritonserver()  # the [serve] extra first: no artifact is read for a server that cannot start
    opened = open_or_default(artifact, backend=backend, context=context)  # manifest read, sha256 checked: once
    rng = parse_floats(keep_range, "--keep-range")
    if rng is not None and len(rng) != 2:
        raise BadInput("--keep-range takes two numbers: low,high")
    spec = serve_lib.prepare(opened, backend=backend, precision=precision, name=name, max_batch=max_batch,
                             queue_delay_us=max_queue_delay_us, dynamic_batching=not no_batching,
                             keep_range=tuple(rng) if rng else None, verify=not no_verify, slo_ms=slo_ms,
                             queue_timeout_ms=queue_timeout_ms, simulate_service=simulate_service)
    settings = serve_lib.ServeSettings(host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                                       drain_timeout_s=drain_timeout, log_file=log_file, threads=threads)
    serve_lib.check_ports(settings)  # the host resolves, the ports are free: before "serving …"
    endpoints = {"http": f"{host}:{http_port}", "grpc": f"{host}:{grpc_port}", "metrics": f"{host}:{metrics_port}"}
    err.print(styled("[cyan]serving[/] {} as model '{}' on {} ({}), max batch {}{}", Path(spec.artifact).name,
                     spec.name, spec.backend, spec.precision, spec.max_batch,
                     f", dynamic batching ≤ {spec.queue_delay_us} µs" if spec.dynamic_batching and spec.max_batch > 1
                     else ", no dynamic batching"))
    if spec.dynamic_keep:
        lo, hi = spec.keep_range
        allowed = (f"on the engine's ladder, ρ {', '.join(f'{r:g}' for r in spec.rungs)} (one optimization profile "
                   "each)" if spec.rungs else f"in [{lo:g}, {hi:g}]")
        notes([f"keep_ratio per request {allowed} (default {spec.keep_ratio:g}); requests are grouped "
               "by their kept counts, so one runner call never mixes two ρ"]
              + ([f"adaptive ρ: requests without keep_ratio run at the largest ρ predicted to hold p99 ≤ "
                  f"{spec.slo_ms:g} ms at the measured load (--slo-ms)"] if spec.slo_ms else []))
    if spec.queue_timeout_ms:
        notes([f"overload: requests queued longer than {spec.queue_timeout_ms:g} ms are rejected (UNAVAILABLE / HTTP 503, "
               "'Request timeout expired'; --queue-timeout-ms)"])

    def on_event(event: str, info: dict[str, Any]) -> None:
        if event == "starting":
            err.print(f"serve: starting Triton Inference Server (pid {info['pid']}) …")
        elif event == "ready":
            err.print(styled("[green]ready[/] in {} s: HTTP {} · gRPC {} · metrics {} · model '{}' "
                             "(SIGTERM or Ctrl-C to stop)", f"{info['seconds']:.1f}", endpoints["http"], endpoints["grpc"],
                             endpoints["metrics"], spec.name))
            if json_output:
                _json_line({"event": "ready", "model": spec.name, "endpoints": endpoints, "pid": info["pid"],
                            "spec": spec.to_json()})
        elif event == "slo":
            _slo_lines(info)
            if json_output:
                _json_line({"event": "slo", "model": spec.name, **info})
        elif event == "draining":
            err.print(f"serve: {info['signal']}: draining in-flight requests (≤ {info['timeout_s']} s) …")

    result = serve_lib.serve(spec, settings, on_event=on_event)
    notes(result.leftovers)
    if not result.ready:  # a signal during start-up: a clean stop, with that signal's exit code
        if json_output:
            _json_line({"event": "stopped", "model": spec.name, "signal": result.stopped_by, "ready": False,
                        "leftovers": result.leftovers})
        err.print(f"serve: {result.stopped_by} during start-up: stopped before serving")
        raise typer.Exit(exit_code_for(KeyboardInterrupt() if result.stopped_by == "SIGINT" else Terminated()))
    if json_output:
        _json_line({"event": "stopped", "model": spec.name, "signal": result.stopped_by, "drained": result.drained,
                    "leftovers": result.leftovers})
    if not result.drained:
        err.print(styled("[bold red]error:[/] in-flight requests did not finish within {} s; the server was killed",
                         drain_timeout))
        raise typer.Exit(1)
    err.print(styled("[green]stopped[/] ({}; in-flight requests drained)", result.stopped_by))


def _slo_lines(info: dict[str, Any]) -> None:
    """The measured service time behind --slo-ms, and the warning when the objective is out of reach."""
    service = info.get("service_ms") or {}
    if service:
        ends = [service[k] for k in (min(service, key=float), max(service, key=float))]
        notes([f"service time measured: batch 1 {ends[0]['batch1_ms']:.1f}–{ends[1]['batch1_ms']:.1f} ms over the "
               f"keep range; the bottom holds the objective up to ~{info.get('max_rate_ips_at_bottom', 0):.1f} img/s, "
               f"the top up to ~{info.get('max_rate_ips_at_top', 0):.1f} img/s"])
    if info.get("warning"):
        err.print(styled("[bold yellow]warning:[/] {}", info["warning"]))


def _json_line(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()
