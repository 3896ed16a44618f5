"""The queue bound under ``--slo-ms``, enforced in the backend (drop-front shedding), not by Triton.

Why not Triton's queue policy: any ``default_queue_policy`` (a timeout, ``max_queue_size``) turns off
the dynamic batcher's prefetching (triton core ``PriorityQueue``: ``support_prefetching_``), so the next
batch is formed only once the instance is free. Measured on DeiT-S (2-vCPU EPYC, traces of the open-loop
benchmark): the hand-over between two busy batches took 23–30 ms on average (p90 56–80 ms) with the
policy, 3.3–3.9 ms without, about 10 % of the bottom rung's capacity, which doubles queueing near it.

What replaces it: when a batch is full (a queue may wait behind it), the backend reads Triton's own
count of queued requests (``nv_inference_pending_request_count`` on the metrics endpoint, updated per
request) and, when serving this batch and that queue at the bottom rung would take longer than the bound
(the last queued request would wait longer), refuses the batch in hand (UNAVAILABLE, at no runner cost).
The oldest requests go first (drop-front): those behind them are then answered within the bound, and a
client learns of the overload as early as possible.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable
from dataclasses import dataclass

PENDING_METRIC = "nv_inference_pending_request_count"
SHED_MESSAGE = "server overloaded"  # the start of every shed request's error (clients and benchmarks match it)


def loopback_address(host: str, port: int) -> str:
    """``host:port`` a process on this machine reaches the metrics endpoint at (a wildcard means loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PendingProbe:
    """Triton's count of the model's queued requests, read from its metrics endpoint (None when unreadable).

    ``warn`` is called once, at the first read that finds no count (endpoint unreachable, or the model not
    listed): nothing is refused while the count cannot be read, and the server log should say so.
    """

    def __init__(self, address: str, model: str, timeout_s: float = 0.2,
                 warn: Callable[[str], None] | None = None) -> None:
        self.address, self.timeout_s, self.model, self.warn = address, timeout_s, model, warn
        self.pattern = re.compile(rf'^{PENDING_METRIC}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} ([0-9.eE+-]+)$',
                                  re.MULTILINE)
        self.connection: http.client.HTTPConnection | None = None
        self.failures = 0
        self.warned = False

    def _unread(self, why: str) -> None:
        if self.warn is not None and not self.warned:
            self.warned = True
            self.warn(f"cannot read Triton's queued-request count for {self.model} from http://{self.address}/metrics "
                      f"({why}): the queue bound is not enforced while it cannot be read")

    def pending(self) -> int | None:
        for _ in range(2):  # a kept-alive connection the server closed: once more on a fresh one
            try:
                if self.connection is None:
                    host, _, port = self.address.rpartition(":")
                    self.connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=self.timeout_s)
                self.connection.request("GET", "/metrics")
                body = self.connection.getresponse().read().decode("utf-8", "replace")
                found = self.pattern.search(body)
                if found is None:
                    self._unread(f"no {PENDING_METRIC} for this model")
                    return None
                return int(float(found.group(1)))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.close()
                error = exc
        self.failures += 1
        self._unread(f"{type(error).__name__}: {error}".strip().rstrip(":"))
        return None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@dataclass
class Shedder:
    """Decides, per full batch, whether to refuse it: ``drain(n)`` (seconds to serve ``n`` requests at the
    bottom rung, the controller's model) of this batch and the queue behind it, against ``bound_s``."""

    bound_s: float
    queued: Callable[[], int | None]  # Triton's queued requests behind this batch (PendingProbe.pending)
    drain: Callable[[float], float]
    shed: int = 0  # requests refused so far

    def refuse(self, rows: int, max_batch: int, requests: int = 1) -> str | None:
        """The error for this batch's ``requests`` when it must be refused (counted in ``shed``), else None."""
        if rows < max_batch:  # not full: Triton handed over every queued request, nothing waits behind it
            return None
        queued = self.queued()
        if queued is None:
            return None
        seconds = self.drain(queued + rows)  # when the last queued request would be answered, this batch first
        if seconds <= self.bound_s:
            return None
        self.shed += requests
        return (f"{SHED_MESSAGE}: this batch and the {queued} requests queued behind it take {1e3 * seconds:.0f} ms "
                f"at the bottom of the keep range, over the queue bound of {1e3 * self.bound_s:g} ms; retry later")
