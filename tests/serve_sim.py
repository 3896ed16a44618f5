"""A discrete-event model of Triton's dynamic batcher in front of one model instance, on a simulated clock.

Requests arrive at given times into a FIFO queue; whenever the instance is free and a request
waits, the batcher hands it every waiting request up to ``max_batch`` (queue delay 0) — which is
what ``execute`` sees. A batch at ρ of ``n`` rows takes ``service(ρ, n)`` simulated seconds. With
``queue_timeout`` a request still queued after that long is rejected, as Triton's queue policy does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np


class SimClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Outcome:
    arrival: float
    finish: float | None  # None: rejected
    rho: float | None
    start: float | None = None  # when its batch began (None: rejected)

    @property
    def latency(self) -> float:
        return np.inf if self.finish is None else self.finish - self.arrival


class DriftingService:
    """DeiT-S dynkeep under ONNX Runtime on the 2-vCPU EPYC, as a service model: per batch of ``rows`` at ρ,
    ``call(ρ) + image(ρ)·rows`` (3.0 ms + 27.7 ms per image at ρ 0.5, 4.0 + 46.0 at ρ 0.9, linear between:
    batch 1 ≈ 31 / 50 ms, batch 8 ≈ 225 / 372 ms, about 35.6 and 21.5 images/s), times a slowdown that drifts
    with the simulated time (a Gauss-Markov process, 2 s time constant, standard deviation ``drift``: a
    neighbour, the client, the clock) and independent per-call noise of ±``noise``. With ``stall`` > 0, that
    fraction of calls also stalls for a uniform ``stall_s`` (a preempted runner, a collection, the client's
    burst of sends on the same cores): what the quiet DeiT-S run showed as 400–600 ms answers at the top at
    half load."""

    CALL = (0.0030, 0.0040)
    IMAGE = (0.0277, 0.0460)

    def __init__(self, clock: SimClock, seed: int, *, noise: float = 0.1, drift: float = 0.1,
                 step_s: float = 0.1, horizon_s: float = 200.0, stall: float = 0.0,
                 stall_s: tuple[float, float] = (0.1, 0.4)) -> None:
        self.clock, self.noise, self.drift, self.step_s = clock, noise, drift, step_s
        self.stall, self.stall_s = stall, stall_s
        self.rng = np.random.default_rng(1000 + seed)
        grid = np.random.default_rng(2000 + seed)
        phi, n = np.exp(-step_s / 2.0), int(horizon_s / step_s)
        self.slow = np.zeros(n)
        for i in range(1, n):
            self.slow[i] = phi * self.slow[i - 1] + np.sqrt(1 - phi ** 2) * grid.standard_normal()

    @classmethod
    def nominal(cls, rho: float, rows: float) -> float:
        return float(np.interp(rho, [0.5, 0.9], cls.CALL) + rows * np.interp(rho, [0.5, 0.9], cls.IMAGE))

    def __call__(self, rho: float, rows: int) -> float:
        slow = 1.0 + self.drift * self.slow[min(int(self.clock.now / self.step_s), len(self.slow) - 1)]
        seconds = self.nominal(rho, rows) * slow * self.rng.uniform(1 - self.noise, 1 + self.noise)
        if self.stall and self.rng.uniform() < self.stall:
            seconds += self.rng.uniform(*self.stall_s)
        return seconds


def poisson_arrivals(phases: list[tuple[float, float]], seed: int) -> list[float]:
    """(rate/s, seconds) phases, one after another: Poisson arrival times."""
    rng = np.random.default_rng(seed)
    times, start = [], 0.0
    for rate, seconds in phases:
        t = start
        while True:
            t += rng.exponential(1.0 / rate)
            if t >= start + seconds:
                break
            times.append(t)
        start += seconds
    return times


def simulate(arrivals: list[float], service: Callable[[float, int], float], max_batch: int, *,
             choose: Callable[[int], float], observe: Callable[[float, int, float], None] = lambda r, n, s: None,
             clock: SimClock, queue_timeout: float | None = None,
             handover: Callable[[int], float] | None = None) -> list[Outcome]:
    """Run every arrival through the batcher; ``choose(rows)`` is called at each batch start (clock set).

    ``handover(rows)``: the server's own time after each runner call before the instance takes the next
    batch (Triton ↔ backend IPC, tensor copies, responses): busy, but not in the runner; the answers leave
    at the runner's end."""
    outcomes: list[Outcome] = []
    queue: deque[float] = deque()
    pending = deque(arrivals)
    free = 0.0
    while pending or queue:
        if not queue:
            queue.append(pending.popleft())
        start = max(free, queue[0])
        while pending and pending[0] <= start:
            queue.append(pending.popleft())
        if queue_timeout is not None:
            while queue and start - queue[0] > queue_timeout:
                outcomes.append(Outcome(queue.popleft(), None, None))
            if not queue:
                continue
        batch = [queue.popleft() for _ in range(min(max_batch, len(queue)))]
        clock.now = start
        rho = choose(len(batch))
        seconds = service(rho, len(batch))
        observe(rho, len(batch), seconds)
        outcomes += [Outcome(a, start + seconds, rho, start) for a in batch]
        free = start + seconds + (handover(len(batch)) if handover is not None else 0.0)
    return outcomes


def p99(outcomes: list[Outcome]) -> float:
    return float(np.percentile([o.latency for o in outcomes], 99)) if outcomes else 0.0
