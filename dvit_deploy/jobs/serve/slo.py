"""The ``--slo-ms`` controller inside the server: its start-up measurement, report file and metrics.

* ``start_controller``: times the loaded runner (through the request handler, as requests run) on
  the rungs of the keep range (``controller.measure_service``) and builds the ``SloController``;
* ``write_report`` / ``read_report``: the measured service-time model, the largest rate the bottom
  rung can hold, and the start-up warning when the objective is out of reach even on an idle
  server, written beside the model's config (``dvit serve`` reads it once the server is ready and
  prints the warning);
* ``SloMetrics``: Prometheus metrics on Triton's metrics endpoint (Python-backend custom metrics):
  ``dvit_keep_ratio`` (gauge, the ρ of the last batch), ``dvit_slo_predicted_p99_ms`` (gauge) and
  ``dvit_slo_unreachable_batches_total`` (counter: batches for which no rung was predicted to meet the
  objective at the measured load) and ``dvit_shed_requests_total`` (counter: requests the queue bound
  refused unrun, ``serve.shedding``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .controller import ControllerConfig, SloController, measure_service, rung_grid
from .spec import ServeSpec

REPORT_FILE = "dvit_slo.json"


def rungs_of(spec: ServeSpec) -> tuple[float, ...]:
    """The ρ grid the controller chooses from: the spec's own rungs (ladder engines), else the range every ``slo_step``."""
    low, high = spec.keep_range or (spec.keep_ratio, spec.keep_ratio)
    if spec.rungs:  # a --keep-ladder engine: only its rungs can run
        return tuple(sorted(r for r in spec.rungs if low - 1e-9 <= r <= high + 1e-9)) or (low,)
    return rung_grid(low, high, spec.slo_step)


def start_controller(spec: ServeSpec, handler: Any) -> SloController:
    """Measure the service time of ``handler``'s runner on the grid, and the controller that uses it."""
    from .handler import Request

    def run(rho: float, rows: int) -> None:
        images = np.zeros((rows, *spec.image_shape), np.float32)
        keep = np.full((rows, 1), rho, np.float32)
        for response in handler.handle([Request(images[i:i + 1], keep[i:i + 1]) for i in range(rows)]):
            if response.error:
                raise RuntimeError(f"service-time measurement at ρ {rho:g} failed: {response.error}")

    rungs = rungs_of(spec)
    model = measure_service(run, rungs, spec.max_batch)
    config = ControllerConfig(slo_s=spec.slo_ms / 1e3, rungs=rungs, max_batch=spec.max_batch,
                              queue_delay_s=spec.queue_delay_us / 1e6 if spec.dynamic_batching else 0.0,
                              queue_timeout_s=spec.queue_timeout_ms / 1e3 if spec.queue_timeout_ms else None)
    return SloController(config, model)


def report(controller: SloController) -> dict[str, Any]:
    bottom = controller.rungs[0]
    return {"slo_ms": 1e3 * controller.config.slo_s, "rungs": list(controller.rungs),
            "service_ms": controller.model.to_json(), "warning": controller.reach_at_start(),
            "max_rate_ips_at_bottom": controller.max_rate(bottom),
            "max_rate_ips_at_top": controller.max_rate(controller.rungs[-1])}


def write_report(folder: Path, data: dict[str, Any]) -> None:
    try:
        (Path(folder) / REPORT_FILE).write_text(json.dumps(data, indent=2) + "\n")
    except OSError:  # a read-only (packaged) repository: the log line is all there is
        pass


def read_report(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(folder) / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None


class SloMetrics:
    """The controller's state on Triton's metrics endpoint; a no-op where custom metrics are unavailable."""

    EVERY_S = 0.5  # each update is a message to the server process: at most this often, not per batch

    def __init__(self, pb_utils: Any, model: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.ok = False
        self.unreachable_seen = 0
        self.clock, self.last = clock, -math.inf
        try:
            family = pb_utils.MetricFamily
            labels = {"model": model}
            self._families = [
                family(name="dvit_keep_ratio", description="rho the last batch ran at (--slo-ms)", kind=family.GAUGE),
                family(name="dvit_slo_predicted_p99_ms", description="predicted p99 latency at that rho (ms)",
                       kind=family.GAUGE),
                family(name="dvit_slo_unreachable_batches_total",
                       description="batches for which no rho in the keep range was predicted to meet --slo-ms",
                       kind=family.COUNTER),
                family(name="dvit_shed_requests_total", kind=family.COUNTER,
                       description="requests refused unrun because the queue behind them exceeded the queue bound")]
            self.rho, self.predicted, self.unreachable, self.shed = (f.Metric(labels=labels) for f in self._families)
            self.shed_seen = 0
            self.ok = True
        except Exception:  # noqa: BLE001 - an older backend without custom metrics: serving goes on
            pass

    def update(self, controller: SloController, shedder: Any = None, force: bool = False) -> None:
        now = self.clock()
        shed = shedder.shed if shedder is not None else 0
        # a refusal is shown at once (clients and their operators read it together), the rest at most every EVERY_S
        if not self.ok or (not force and now - self.last < self.EVERY_S and shed == self.shed_seen):
            return
        if shed > self.shed_seen:
            self.shed.increment(float(shed - self.shed_seen))
            self.shed_seen = shed
        self.last = now
        stats = controller.stats()
        self.rho.set(float(stats["rho"]))
        predicted = stats["predicted_p99_ms"]
        self.predicted.set(float(predicted) if np.isfinite(predicted) else -1.0)
        if controller.unreachable > self.unreachable_seen:
            self.unreachable.increment(float(controller.unreachable - self.unreachable_seen))
            self.unreachable_seen = controller.unreachable

    def close(self) -> None:  # Metric objects before their families (the stub insists)
        if self.ok:
            del self.rho, self.predicted, self.unreachable, self.shed
            self._families.clear()
            self.ok = False
