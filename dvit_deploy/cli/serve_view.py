"""What ``dvit serve`` says: its lines on stderr and, with ``--json``, one JSON line per event on stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from .failures import Terminated, exit_code_for
from .output import err, notes, styled


class ServeView:
    """Renders ``jobs.serve.server.run_serve``'s events (``on_event``) and its result (``finish``)."""

    def __init__(self, settings: Any, json_output: bool) -> None:
        self.settings, self.json_output = settings, json_output
        self.endpoints = {"http": f"{settings.host}:{settings.http_port}", "grpc": f"{settings.host}:{settings.grpc_port}",
                          "metrics": f"{settings.host}:{settings.metrics_port}"}
        self.spec: Any = None

    def on_event(self, event: str, info: dict[str, Any]) -> None:
        if event == "prepared":
            self.spec = info["spec"]
            _serving_lines(self.spec)
        elif event == "starting":
            err.print(f"serve: starting Triton Inference Server (pid {info['pid']}) …")
        elif event == "ready":
            err.print(styled("[green]ready[/] in {} s: HTTP {} · gRPC {} · metrics {} · model '{}' "
                             "(SIGTERM or Ctrl-C to stop)", f"{info['seconds']:.1f}", self.endpoints["http"],
                             self.endpoints["grpc"], self.endpoints["metrics"], self.spec.name))
            if self.json_output:
                _json_line({"event": "ready", "model": self.spec.name, "endpoints": self.endpoints, "pid": info["pid"],
                            "spec": self.spec.to_json()})
        elif event == "slo":
            _slo_lines(info)
            if self.json_output:
                _json_line({"event": "slo", "model": self.spec.name, **info})
        elif event == "draining":
            err.print(f"serve: {info['signal']}: draining in-flight requests (≤ {info['timeout_s']} s) …")

    def finish(self, result: Any) -> None:
        """The stop: a clean drain returns; a signal in start-up or an undrained stop exits with its code."""
        notes(result.leftovers)
        if not result.ready:  # a signal during start-up: a clean stop, with that signal's exit code
            if self.json_output:
                _json_line({"event": "stopped", "model": self.spec.name, "signal": result.stopped_by, "ready": False,
                            "leftovers": result.leftovers})
            err.print(f"serve: {result.stopped_by} during start-up: stopped before serving")
            raise typer.Exit(exit_code_for(KeyboardInterrupt() if result.stopped_by == "SIGINT" else Terminated()))
        if self.json_output:
            _json_line({"event": "stopped", "model": self.spec.name, "signal": result.stopped_by,
                        "drained": result.drained, "leftovers": result.leftovers})
        if not result.drained:
            err.print(styled("[bold red]error:[/] in-flight requests did not finish within {} s; the server was killed",
                             self.settings.drain_timeout_s))
            raise typer.Exit(1)
        err.print(styled("[green]stopped[/] ({}; in-flight requests drained)", result.stopped_by))


def _serving_lines(spec: Any) -> None:
    """What is about to be served: the model, backend and batching; the keep policy and queue timeout."""
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
    if spec.sheds:
        notes([f"overload: when the requests queued behind a full batch would take longer than {spec.queue_timeout_ms:g} ms "
               "at the bottom of the keep range, that batch is refused unrun (UNAVAILABLE / HTTP 503, 'server "
               "overloaded'; --queue-timeout-ms)"])
    elif spec.queue_timeout_ms:
        notes([f"overload: requests queued longer than {spec.queue_timeout_ms:g} ms are rejected (UNAVAILABLE / HTTP 503, "
               "'Request timeout expired'; --queue-timeout-ms)"])


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
