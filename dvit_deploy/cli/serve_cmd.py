"""`dvit serve`: an artifact on Triton Inference Server (HTTP, gRPC, metrics) until SIGTERM / Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..helpers.errors import BadInput
from ..helpers.lazy import lazy_import
from .common import command_context, open_or_default
from .failures import handle_errors
from .options import NO_VERIFY_OPTION, finite, parse_floats
from .serve_view import ServeView

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
    queue_timeout_ms: Optional[float] = typer.Option(None, "--queue-timeout-ms", callback=finite, help="Bound the queue "
                                                     "at this wait, so overload beyond what the keep range serves is refused, "
                                                     "not served ever later (under --slo-ms the backend refuses a full batch "
                                                     "when the queue behind it would take longer at the bottom of the range; "
                                                     "otherwise Triton's queue policy); 0: never \\[default: --slo-ms's value "
                                                     "under --slo-ms, else never; see docs/serving.md]."),
    simulate_service: Optional[str] = typer.Option(None, "--simulate-service-ms", hidden=True,
                                                   help="Test only: CALL_MS,RHO:MS,… pace every runner call."),
    trace_batches: Optional[Path] = typer.Option(None, "--trace-batches", hidden=True,
                                                 help="Diagnostics: append one JSON line per Triton batch to this file."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Intra-op threads of the runner "
                                          "\\[default: the backend's]."),
    drain_timeout: int = typer.Option(30, "--drain-timeout", min=0, help="Seconds to finish in-flight requests "
                                      "after SIGTERM / Ctrl-C."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="Keep Triton's log here."),
    no_verify: bool = NO_VERIFY_OPTION,
    json_output: bool = typer.Option(False, "--json", help="Print one JSON line per event (ready, stopped) on stdout."),
) -> None:
    """Serve an artifact on Triton Inference Server until SIGTERM / Ctrl-C (drains in-flight requests, exit 0)."""

    settings = serve_lib.ServeSettings(host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                                       drain_timeout_s=drain_timeout, log_file=log_file)
    view = ServeView(settings, json_output)
    context = command_context(no_verify=no_verify).with_changes(threads=threads)
    serve_lib.find_tritonserver()  # the [serve] extra first: no artifact is read for a server that cannot start
    opened = open_or_default(artifact, backend=backend, context=context)  # manifest read, sha256 checked: once
    options = serve_lib.ServeOptions(backend=backend, precision=precision, name=name, max_batch=max_batch,
                                     queue_delay_us=max_queue_delay_us, dynamic_batching=not no_batching,
                                     keep_range=_keep_range(keep_range), slo_ms=slo_ms,
                                     queue_timeout_ms=queue_timeout_ms, simulate_service=simulate_service,
                                     trace_batches=None if trace_batches is None else str(trace_batches))
    result = serve_lib.run(options, context, opened, settings, on_event=view.on_event)
    view.finish(result)


def _keep_range(text: Optional[str]) -> Optional[tuple[float, float]]:
    rng = parse_floats(text, "--keep-range")
    if rng is not None and len(rng) != 2:
        raise BadInput("--keep-range takes two numbers: low,high")
    return None if rng is None else (rng[0], rng[1])
