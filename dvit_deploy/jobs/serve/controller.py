"""Adaptive ρ that holds a latency objective (``dvit serve --slo-ms``): pure logic, no Triton, no sleeping.

The controller sees what the Python backend sees: each Triton batch as it starts (how many images
the dynamic batcher handed over, and when) and each runner call as it ends (its ρ, rows, seconds).
Everything else is a model:

* **service time** ``T(ρ, B) = c · (a_ρ + b_ρ·B)`` per rung of the ρ grid, measured at start
  (``measure_service``: batch 1 and a larger batch on a few rungs, the others interpolated) and
  corrected online (``c``: a per-rung, else global, running ratio of observed to predicted time);
* **arrival rate** λ: Triton's dynamic batcher hands ``execute`` *every* pending request up to
  ``max_batch``, so a batch that is not full emptied the queue and its size over the time since
  the previous batch is a rate sample. A full batch says only "λ is at least this" and that a
  backlog may be waiting: λ is raised to that bound times ``1 + full_boost``. The pause before a full
  batch is the server's own hand-over (IPC, copies: ``gap_s``, a running average), counted in every
  batch's time; only a longer pause before a batch that is not full means the instance sat idle;
* **predicted latency** of a request arriving now at rung ρ: with λ steady, batches settle at the
  fixed point ``B* = λ·T(ρ, B*)``; a new request waits out the batch in flight (≤ ``T(ρ, B*)``)
  and then runs in a batch of the arrivals meanwhile, a Poisson count whose 99th percentile is
  about ``B* + 2.33·sqrt(B*) + 1``. A rung is *feasible* when the latency predicted for the requests
  still to come is below ``margin · objective`` and this batch's oldest request (whose wait is known,
  not predicted) ends below ``own_margin · objective``.

The rule: run at the largest feasible rung. Stepping down happens at once, by as many rungs as
needed; stepping up goes one rung at a time, no faster than the whole grid in ``climb_s``, not
within ``hold_s`` of a step down nor ``settle_s`` of a full batch (the queue must be seen empty), one
rung per ``loaded_step_s`` at most while λ over ``load_tau_s`` loads even the bottom past
``up_utilisation`` (a lull near capacity is no trend), and
only to a rung feasible with a tighter margin (hysteresis), so ρ does not oscillate at the edge of a
rung. A step down that a burst caused (a stall's requests arriving as one full batch) is undone at the
next batch that is not full, within ``hold_s``, when the slow λ allows the rung it left. When no rung is
feasible the controller runs at the bottom; a batch for which even the bottom is
predicted to miss the objective counts as *out of reach* (``unreachable``). Triton's queue policy
(``ServeSpec.queue_timeout_ms``: by default the objective under --slo-ms) rejects what waited that long
instead of letting latency grow; ``queue_timeout_s`` tells the controller so (no older request waits).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

Z99 = 2.33  # one-sided 99 % point of a normal: the Poisson batch a request may land in
QUEUEING = 2.0  # weight of the queueing term in steady_latency
STABLE = 0.98  # the utilisation past which a rung is taken as unable to keep up
IDLE_GAP_S = 0.02  # a pause between batches longer than this (beyond the queue delay) means the queue was empty
IDLE_GAPS = 2.0  # ... and longer than this many times the usual hand-over between busy batches (``gap_s``)
GAP_ALPHA = 0.2  # weight of one busy gap in ``gap_s``


def rung_grid(low: float, high: float, step: float) -> tuple[float, ...]:
    """ρ values from ``low`` to ``high`` (both included) every ``step``: the rungs of a plain --keep-range."""
    if step <= 0 or high <= low:
        return (round(high, 6),)
    n = int(math.floor((high - low) / step + 1e-9))
    rungs = [round(low + i * step, 6) for i in range(n + 1)]
    if rungs[-1] < high - 1e-9:
        rungs.append(round(high, 6))
    return tuple(rungs)


@dataclass
class RungTime:
    """``seconds ≈ call_s + image_s · rows`` for one rung (as measured; ``correction`` is applied on top)."""

    call_s: float
    image_s: float

    def at(self, rows: float) -> float:
        return self.call_s + self.image_s * rows


@dataclass
class ServiceModel:
    """Service time per rung, with an online correction (observed / predicted, running average)."""

    rungs: dict[float, RungTime]
    alpha: float = 0.15  # weight of one observation in the running correction
    correction: dict[float, float] = field(default_factory=dict)
    global_correction: float = 1.0

    def seconds(self, rho: float, rows: float) -> float:
        rung = self.rungs[rho]
        return self.correction.get(rho, self.global_correction) * rung.at(rows)

    def marginal(self, rho: float) -> float:
        return self.correction.get(rho, self.global_correction) * self.rungs[rho].image_s

    def fixed(self, rho: float) -> float:
        return self.correction.get(rho, self.global_correction) * self.rungs[rho].call_s

    def observe(self, rho: float, rows: int, seconds: float) -> None:
        rung = self.rungs.get(rho)
        if rung is None or rows < 1 or seconds <= 0:
            return
        ratio = min(max(seconds / rung.at(rows), 0.5), 2.0)  # one stalled batch (GC, a neighbour) moves it little
        self.correction[rho] = self.correction.get(rho, self.global_correction) * (1 - self.alpha) + self.alpha * ratio
        self.global_correction = self.global_correction * (1 - self.alpha) + self.alpha * ratio

    def to_json(self) -> dict:
        return {f"{rho:g}": {"call_ms": 1e3 * r.call_s, "image_ms": 1e3 * r.image_s,
                             "batch1_ms": 1e3 * self.seconds(rho, 1)} for rho, r in sorted(self.rungs.items())}


def interpolate(measured: dict[float, RungTime], rungs: Sequence[float]) -> dict[float, RungTime]:
    """Every rung's time, linearly interpolated in ρ between the measured rungs (held flat outside)."""
    known = sorted(measured)
    out: dict[float, RungTime] = {}
    for rho in rungs:
        if rho in measured:
            out[rho] = measured[rho]
            continue
        lo = max([k for k in known if k <= rho], default=known[0])
        hi = min([k for k in known if k >= rho], default=known[-1])
        w = 0.0 if hi == lo else (rho - lo) / (hi - lo)
        out[rho] = RungTime(call_s=(1 - w) * measured[lo].call_s + w * measured[hi].call_s,
                            image_s=(1 - w) * measured[lo].image_s + w * measured[hi].image_s)
    return out


def measure_service(run: Callable[[float, int], None], rungs: Sequence[float], max_batch: int, *,
                    repeats: int = 2, probes: int = 3, clock: Callable[[], float] = time.perf_counter) -> ServiceModel:
    """Time ``run(ρ, rows)`` at batch 1 and at ``min(max_batch, 8)`` on ``probes`` rungs (ends and middle).

    The fastest of ``repeats`` timings counts (warm-up noise only ever adds time). The other rungs are
    interpolated; the online correction refines them once they serve."""
    rungs = sorted(rungs)
    picks = sorted({rungs[round(i * (len(rungs) - 1) / max(probes - 1, 1))] for i in range(probes)}) \
        if len(rungs) > probes else rungs
    big = max(1, min(max_batch, 8))
    measured: dict[float, RungTime] = {}
    for rho in picks:
        times = {}
        for rows in sorted({1, big}):
            best = math.inf
            for _ in range(repeats):
                start = clock()
                run(rho, rows)
                best = min(best, clock() - start)
            times[rows] = best
        image_s = (times[big] - times[1]) / (big - 1) if big > 1 else times[1]
        image_s = max(image_s, 1e-6)
        measured[rho] = RungTime(call_s=max(times[1] - image_s, 0.0), image_s=image_s)
    return ServiceModel(interpolate(measured, rungs))


@dataclass(frozen=True)
class ControllerConfig:
    slo_s: float
    rungs: tuple[float, ...]  # ascending ρ grid the controller may choose from
    max_batch: int
    queue_delay_s: float = 0.0  # Triton's max_queue_delay: added to every prediction
    margin: float = 0.6  # a rung is feasible when its predicted p99 ≤ margin · objective
    up_margin: float = 0.5  # ... and worth stepping up to only below this (hysteresis band)
    own_margin: float = 0.85  # the batch's oldest request (its wait is known): its latency ≤ this · objective
    utilisation: float = 0.85  # the most of its marginal capacity a rung may be loaded to
    up_utilisation: float = 0.75
    climb_s: float = 1.5  # the whole grid, bottom to top, at the fastest allowed step-up pace
    hold_s: float = 2.0  # no step up this soon after a step down
    loaded_step_s: float = 2.0  # the step-up pace while λ loads even the bottom past up_utilisation
    settle_s: float = 0.5  # ... nor this soon after a full batch (the queue must be seen empty for a while)
    load_tau_s: float = 3.0  # time constant of the slower λ average that sets the step-up pace
    rate_tau_s: float = 0.3  # time constant of the arrival-rate average
    full_boost: float = 0.5  # a full batch: λ is at least what it shows, assume this much more
    queue_timeout_s: float | None = None  # Triton rejects a request queued longer (bounds the backlog's age)


@dataclass
class Decision:
    rho: float
    rate: float  # images/s, the estimate the choice used
    predicted_s: float  # predicted p99 latency at the chosen rung
    reachable: bool
    wait_s: float = 0.0  # how long this batch's oldest request is estimated to have waited
    bound: str = ""  # what set ρ: "top", "ahead" / "own" (the largest feasible rung), "bottom" (none), "pace" (a
    # step up held back), "dip" (back at once to the rung a burst's step down left)


class SloController:
    """Chooses ρ per Triton batch (``on_batch``) and learns from every runner call (``observe``)."""

    def __init__(self, config: ControllerConfig, model: ServiceModel, *,
                 clock: Callable[[], float] = time.monotonic, start_rho: float | None = None) -> None:
        if not config.rungs:
            raise ValueError("the controller needs at least one rung")
        self.config, self.model, self.clock = config, model, clock
        self.rungs = tuple(sorted(config.rungs))
        self.index = len(self.rungs) - 1 if start_rho is None else min(
            range(len(self.rungs)), key=lambda i: abs(self.rungs[i] - start_rho))
        self.rate = 0.0  # λ as the rule uses it: ``arrivals``, raised during a run of full batches
        self.load_rate = 0.0  # λ averaged over load_tau_s: what a lull does not hide
        self.arrivals = 0.0  # λ from the batch sizes alone (a full batch's size only bounds it)
        self.prev_start: float | None = None
        self.prev_end: float | None = None
        self.prev_rows = 0
        self.gap_s = 0.0  # the server's time between busy batches (IPC, tensor copies): running average
        self.t_empty = 0.0
        self.served_since = 0
        self.full_run = 0  # consecutive full batches
        self.last_down = -math.inf
        self.last_up = -math.inf
        self.last_full = -math.inf
        self.dip_from: int | None = None  # the rung left by the last step down, while a quick return may undo it
        self.unreachable = 0  # batches for which even the bottom rung was predicted to miss the objective
        self.batches = 0
        self.last = Decision(self.rho, 0.0, 0.0, True)

    @property
    def rho(self) -> float:
        return self.rungs[self.index]

    # -- signals --------------------------------------------------------------------------------
    def _update_queue(self, rows: int, now: float) -> None:
        """λ, and when the queue was last known empty (``t_empty``) with the rows served since."""
        cfg = self.config
        if self.prev_start is None:
            self.t_empty, self.served_since = now, 0
        else:
            dt = max(now - self.prev_start, 1e-4)
            sample = rows / dt
            weight = 1.0 if self.batches <= 2 else 1.0 - math.exp(-dt / cfg.rate_tau_s)  # the first sample as is
            # a burst of a few requests close together is not a rate: short gaps count as the time constant
            self.arrivals += weight * (rows / max(dt, cfg.rate_tau_s) - self.arrivals)
            slow = 1.0 if self.batches <= 2 else 1.0 - math.exp(-dt / cfg.load_tau_s)
            self.load_rate += slow * (rows / dt - self.load_rate)
            self.full_run = self.full_run + 1 if rows >= cfg.max_batch else 0
            if self.full_run:  # the queue may hold more: λ is at least this, and likelier more the longer it lasts
                self.rate = max(self.rate, self.arrivals, sample * (1.0 + cfg.full_boost * self.full_run))
            else:  # the queue is empty: what the batches show is λ (the run's guess is dropped, not decayed)
                self.rate = self.arrivals
            gap = None if self.prev_end is None else now - self.prev_end
            if gap is not None and rows >= cfg.max_batch:  # requests waited throughout: the server's own time
                self.gap_s += GAP_ALPHA * min(max(gap - self.gap_s, -IDLE_GAP_S), IDLE_GAP_S)  # a stall moves it little
            # a pause beyond the server's usual hand-over time, before a batch that took every waiting request
            idle = (gap is not None and rows < cfg.max_batch
                    and gap > cfg.queue_delay_s + IDLE_GAP_S + IDLE_GAPS * self.gap_s)
            if idle:  # the instance waited for this batch: its first request came at most a queue delay ago
                self.t_empty, self.served_since = max(self.prev_end, now - cfg.queue_delay_s - IDLE_GAP_S), 0
            elif self.prev_rows < cfg.max_batch:  # the previous batch took every waiting request
                self.t_empty, self.served_since = self.prev_start, 0
            else:  # a run of full batches: what waits now arrived since t_empty, minus what was served
                self.served_since += self.prev_rows
        self.prev_start, self.prev_rows, self.prev_end = now, rows, None

    def _waiting(self, rows: int, now: float) -> tuple[float, float]:
        """(how long the oldest request of this batch has waited, requests queued behind this batch)."""
        since = now - self.t_empty
        if self.rate <= 0:
            return since, 0.0
        wait = min(max(since - self.served_since / self.rate, 0.0), since)
        behind = max(self.rate * since - self.served_since - rows, 0.0) if rows >= self.config.max_batch else 0.0
        bound = self.config.queue_timeout_s
        if bound:  # Triton rejected whatever waited longer: no older request, no more than one bound's arrivals
            wait, behind = min(wait, bound), min(behind, self.rate * bound)
        return wait, behind

    def drain(self, requests: float) -> float:
        """Time to serve ``requests`` queued requests at the bottom rung, in batches of max_batch (FIFO)."""
        cfg, bottom = self.config, self.rungs[0]
        full, rest = divmod(max(requests, 0.0), cfg.max_batch)
        return (full * (self.model.seconds(bottom, cfg.max_batch) + self.gap_s)
                + (self.model.seconds(bottom, rest) + self.gap_s if rest > 1e-9 else 0.0))

    def batch_latency(self, rho: float, rows: int, wait: float, behind: float) -> float:
        """Predicted worst latency if this batch runs at ``rho`` and what follows at the bottom rung: this
        batch's oldest request; a request arriving now (behind this batch and the ``behind`` queue); and
        the last to arrive while this batch runs (behind everything queued by then, a Poisson count taken
        at its 99th percentile)."""
        now_batch = self.model.seconds(rho, rows) + self.gap_s  # the runner, then the hand-over to the next batch
        arrivals = self.rate * now_batch
        queued = behind + arrivals + Z99 * math.sqrt(arrivals)
        # after the backlog, the bottom rung at this rate still queues (its own steady p99)
        newcomer = now_batch + self.drain(behind) + self.steady_latency(self.rungs[0], self.rate, STABLE)
        return max(wait + now_batch, newcomer, self.drain(queued + 1.0)) + self.config.queue_delay_s

    # -- per batch ------------------------------------------------------------------------------
    def on_batch(self, rows: int) -> float:
        """A Triton batch of ``rows`` images starts now: update the queue estimate, choose and return ρ."""
        cfg, now = self.config, self.clock()
        self.batches += 1
        if rows >= cfg.max_batch:  # a backlog may wait behind this batch
            self.last_full = now
        self._update_queue(rows, now)
        wait, behind = self._waiting(rows, now)
        latency = [self.batch_latency(r, rows, wait, behind) for r in self.rungs]
        ahead = [self.batch_latency(r, rows, 0.0, behind) for r in self.rungs]  # what is still to come
        own = [wait + self.model.seconds(r, rows) + cfg.queue_delay_s for r in self.rungs]  # this batch's oldest

        def fits(i: int, margin: float) -> bool:  # the oldest's wait is known, not predicted: a wider margin
            return ahead[i] <= margin * cfg.slo_s and own[i] <= cfg.own_margin * cfg.slo_s

        target = next((i for i in range(len(self.rungs) - 1, -1, -1) if fits(i, cfg.margin)), None)
        reachable = latency[0] <= cfg.slo_s  # the bottom rung, without the margin
        if not reachable:
            self.unreachable += 1
        bound = "bottom" if target is None else ("top" if target == len(self.rungs) - 1 else
                                                  ("own" if ahead[target + 1] <= cfg.margin * cfg.slo_s else "ahead"))
        if target is None:
            target = 0
        if target < self.index:
            if self.dip_from is None or now - self.last_down >= cfg.hold_s:
                self.dip_from = self.index  # where it stood before this step down (a burst may be all it was)
            self.index, self.last_down = target, now
        elif target > self.index and self._back_from_dip(rows, now, fits):
            bound = "dip"
        elif target > self.index:
            bound = "pace"
            step_s = cfg.climb_s / max(len(self.rungs) - 1, 1)
            per_image = self.model.marginal(self.rungs[0]) + self.gap_s / cfg.max_batch  # at full batches
            if max(self.rate, self.load_rate) * per_image > cfg.up_utilisation:
                step_s = max(step_s, cfg.loaded_step_s)  # near the bottom's capacity a lull is no trend: climb slowly
            if (now - self.last_full >= cfg.settle_s and now - self.last_down >= cfg.hold_s and now - self.last_up >= step_s
                    and fits(self.index + 1, cfg.up_margin)):
                self.index, self.last_up = self.index + 1, now
        self.last = Decision(self.rho, self.rate, latency[self.index], reachable, wait, bound)
        return self.rho

    def _back_from_dip(self, rows: int, now: float, fits: Callable[[int, float], bool]) -> bool:
        """A step down that a burst or a stall caused is no trend: return at once to the rung it left (no hold,
        no climbing pace) when, within ``hold_s`` of it, the queue is seen empty again (this batch is not full) and
        the slow λ (``load_rate``, what a burst does not hide) is one that rung holds on its own with the tighter
        margin, and the rung fits this batch with that margin too."""
        cfg, back = self.config, self.dip_from
        if back is None or back <= self.index or now - self.last_down >= cfg.hold_s or rows >= cfg.max_batch:
            return False
        load = max(self.rate, self.load_rate)
        if self.steady_latency(self.rungs[back], load) > cfg.up_margin * cfg.slo_s or not fits(back, cfg.up_margin):
            return False
        self.index, self.last_up, self.dip_from = back, now, None
        return True

    def on_batch_end(self) -> None:
        """The batch begun by the last ``on_batch`` has been answered (idle time after it is seen)."""
        self.prev_end = self.clock()

    def observe(self, rho: float, rows: int, seconds: float) -> None:
        """A runner call at ``rho`` of ``rows`` images took ``seconds``: refine the service-time model."""
        self.model.observe(rho, rows, seconds)

    # -- reports --------------------------------------------------------------------------------
    def reach_at_start(self) -> str | None:
        """Why the objective is out of reach even on an idle server (bottom rung, batch 1), else None."""
        bottom = self.rungs[0]
        idle = self.model.seconds(bottom, 1) + self.config.queue_delay_s
        if idle > self.config.slo_s:
            return (f"--slo-ms {1e3 * self.config.slo_s:g} is out of reach: even ρ {bottom:g} at batch 1 takes "
                    f"{1e3 * idle:.1f} ms here")
        return None

    def steady_latency(self, rho: float, rate: float, utilisation: float | None = None) -> float:
        """Predicted p99 latency at ``rho`` under a steady Poisson ``rate``: batches settle at the fixed
        point B = rate·T(ρ, B); a request waits out one batch, then runs in a batch of the arrivals
        meanwhile (Poisson, 99th percentile), plus a queueing term ``QUEUEING·u/(1-u)·T(B)`` for the
        bursts a fluid model misses (u = rate × time per image). Infinite beyond ``utilisation``."""
        a, b = self.model.fixed(rho) + self.gap_s, self.model.marginal(rho)  # the hand-over is per batch
        load = rate * b
        if load >= (self.config.utilisation if utilisation is None else utilisation):
            return math.inf
        arrivals = rate * a / (1.0 - load)  # mean arrivals during one batch at the fixed point
        if arrivals > self.config.max_batch:
            return math.inf
        tail = min(arrivals + Z99 * math.sqrt(arrivals) + 1.0, float(self.config.max_batch))
        settled = self.model.seconds(rho, max(1.0, arrivals)) + self.gap_s
        return (settled * (1.0 + QUEUEING * load / (1.0 - load)) + self.model.seconds(rho, tail) + self.gap_s
                + self.config.queue_delay_s)

    def max_rate(self, rho: float | None = None) -> float:
        """The highest steady rate (images/s) at which ``rho`` (default: the bottom rung) is predicted to hold
        the objective (with the margin): beyond the bottom's, the objective is out of reach at that load."""
        rho = self.rungs[0] if rho is None else rho
        lo, hi = 0.0, 1.0 / max(self.model.marginal(rho), 1e-9)
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.steady_latency(rho, mid) <= self.config.margin * self.config.slo_s else (lo, mid)
        return lo

    def stats(self) -> dict:
        return {"rho": self.rho, "rate_ips": self.last.rate, "predicted_p99_ms": 1e3 * self.last.predicted_s,
                "reachable": self.last.reachable, "unreachable_batches": self.unreachable, "batches": self.batches}
