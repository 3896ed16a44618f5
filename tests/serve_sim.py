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

    @property
    def latency(self) -> float:
        return np.inf if self.finish is None else self.finish - self.arrival


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
             clock: SimClock, queue_timeout: float | None = None) -> list[Outcome]:
    """Run every arrival through the batcher; ``choose(rows)`` is called at each batch start (clock set)."""
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
        free = start + seconds
        outcomes += [Outcome(a, free, rho) for a in batch]
    return outcomes


def p99(outcomes: list[Outcome]) -> float:
    return float(np.percentile([o.latency for o in outcomes], 99)) if outcomes else 0.0
