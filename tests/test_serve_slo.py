"""`dvit serve --slo-ms`: the controller's rule on a simulated clock, and its plumbing (spec, config, pacing).

The simulation (tests/serve_sim.py) models Triton's dynamic batcher in front of one instance whose
service time per ρ and batch is known; the controller is measured on a model 20 % too fast and must
correct itself online. The load follows the project's overload test: Poisson arrivals at 0.5×, then
1.4×, then 0.5× the capacity at the top of the keep range (figures shaped like DeiT-S on a 2-vCPU
AVX2 machine: 65 ms per image at ρ 0.9, 41 ms at 0.5). The end-to-end run through tritonserver is
in tests/test_serve_slo_e2e.py.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from dvit_deploy.helpers.errors import BadInput
from dvit_deploy.jobs.serve.controller import (ControllerConfig, RungTime, ServiceModel, SloController,
                                               interpolate, measure_service, rung_grid)
from dvit_deploy.jobs.serve.paced import PacedRunner, SimulatedService

from .serve_sim import DriftingService, SimClock, p99, poisson_arrivals, simulate

MAX_BATCH = 8
RUNGS = rung_grid(0.5, 0.9, 0.05)


def true_time(rho: float, rows: int) -> float:
    return 0.005 + rows * float(np.interp(rho, [0.5, 0.9], [0.041, 0.065]))


def flat_time(rho: float, rows: int) -> float:
    """A model that prunes less well (46 ms per image at ρ 0.5): the bottom serves only 1.41× the top, as
    DeiT-S did on the 2-vCPU machine, so a step to 1.5× the top's capacity is beyond the whole range."""
    return 0.005 + rows * float(np.interp(rho, [0.5, 0.9], [0.046, 0.065]))


def measured_model(rungs=RUNGS, bias: float = 0.8, truth=true_time) -> ServiceModel:
    """measure_service on a fake clock that advances by ``bias`` × the true time (a model 20 % too fast)."""
    clock = [0.0]

    def run(rho: float, rows: int) -> None:
        clock[0] += bias * truth(rho, rows)

    return measure_service(run, rungs, MAX_BATCH, clock=lambda: clock[0])


def run_controller(controller: SloController, clock: SimClock, arrivals, queue_timeout=None, truth=true_time,
                   handover=None):
    """The simulated batcher under ``controller``: outcomes, and (time, ρ, reachable) per batch."""
    trace: list[tuple[float, float, bool]] = []

    def choose(rows: int) -> float:
        rho = controller.on_batch(rows)
        trace.append((clock.now, rho, controller.last.reachable))
        return rho

    def observe(rho: float, rows: int, seconds: float) -> None:
        controller.observe(rho, rows, seconds)
        clock.now += seconds
        controller.on_batch_end()

    out = simulate(arrivals, truth, MAX_BATCH, choose=choose, observe=observe, clock=clock,
                   queue_timeout=queue_timeout, handover=handover)
    return out, trace


def window(outcomes, start, end):
    return [o for o in outcomes if start <= o.arrival < end]


@pytest.mark.parametrize("seed", [1, 2])
def test_controller_holds_p99_under_overload_and_recovers_without_oscillating(seed):
    capacity = MAX_BATCH / true_time(0.9, MAX_BATCH)  # images/s at the top of the range
    arrivals = poisson_arrivals([(0.5 * capacity, 20), (1.4 * capacity, 60), (0.5 * capacity, 30)], seed)
    fixed = {rho: simulate(arrivals, true_time, MAX_BATCH, choose=lambda rows, r=rho: r, clock=SimClock())
             for rho in (0.5, 0.9)}
    objective = 1.5 * p99(window(fixed[0.5], 20, 80))  # reachable: the bottom of the range does 1/1.5 of it
    clock = SimClock()
    # with Triton's queue policy at the objective, as dvit serve --slo-ms sets it by default
    controller = SloController(ControllerConfig(slo_s=objective, rungs=RUNGS, max_batch=MAX_BATCH,
                                                queue_timeout_s=objective), measured_model(), clock=clock)
    out, trace = run_controller(controller, clock, arrivals, queue_timeout=objective)

    overload = window(out, 20, 80)
    assert p99(overload) <= objective  # held
    assert p99(window(fixed[0.9], 20, 80)) > 5 * objective  # and the load was real: the top misses it badly
    assert all(o.finish is not None for o in out)  # held: nothing waited long enough to be rejected
    mean_rho = float(np.mean([o.rho for o in overload]))
    assert 0.505 < mean_rho < 0.7  # above the bottom: the objective's slack is spent on accuracy
    assert controller.model.correction[0.5] == pytest.approx(1 / 0.8, rel=0.05)  # learnt the model was fast

    after = [(t, r) for t, r, _ in trace if t >= 80]
    at_top = next(t for t, r in after if r == 0.9)
    assert at_top - 80 <= 10  # recovered within 10 s of the load falling
    rhos = [r for _, r in after]
    assert all(b >= a for a, b in zip(rhos, rhos[1:]))  # climbed, never stepped back down: no oscillation
    before = [r for t, r, _ in trace if 10 <= t < 20]
    assert before and set(before) == {0.9}  # at 0.5× load it serves at the top


@pytest.mark.parametrize("seed,objective", [(1, 1.0), (2, 1.0), (3, 2.0)])
def test_overload_beyond_the_bottom_is_rejected_and_the_top_comes_back_within_10_s(seed, objective):
    """0.5× → 1.5× → 0.5× the top's capacity, where 1.5× is beyond even the bottom's: with Triton's queue
    policy at the objective (dvit serve's default under --slo-ms) the backlog stays bounded, so requests
    are rejected in the peak, the answered ones stay within the bound, and once the load falls ρ climbs
    back to the top within 10 s without a step down. Without the bound the backlog grows instead."""
    top, bottom = (MAX_BATCH / flat_time(rho, MAX_BATCH) for rho in (0.9, 0.5))
    assert 1.5 * top > 1.05 * bottom  # the peak is beyond what any ρ in the range can serve
    fall = 50.0
    arrivals = poisson_arrivals([(0.5 * top, 20), (1.5 * top, 30), (0.5 * top, 15)], seed)

    def run(bound):
        clock = SimClock()
        config = ControllerConfig(slo_s=objective, rungs=RUNGS, max_batch=MAX_BATCH, queue_timeout_s=bound)
        controller = SloController(config, measured_model(truth=flat_time), clock=clock)
        return run_controller(controller, clock, arrivals, queue_timeout=bound, truth=flat_time)

    unbounded, _ = run(None)
    assert max(o.latency for o in window(unbounded, 20, fall)) > 2 * objective  # the backlog grows without a bound

    out, trace = run(objective)
    rejected = [o.arrival for o in out if o.finish is None]
    assert rejected and all(20 <= t < fall for t in rejected)  # only the peak is refused
    answered = [o for o in window(out, 20, fall) if o.finish is not None]
    bound = objective + flat_time(0.5, MAX_BATCH)  # waited at most the timeout, then one batch at the bottom
    assert p99(answered) <= bound and max(o.latency for o in answered) <= objective + flat_time(0.9, MAX_BATCH)
    assert np.mean([o.rho == 0.5 for o in answered]) > 0.8  # the peak runs at the bottom

    after = [(t, r) for t, r, _ in trace if t >= fall]
    back = next(t for t, r in after if r == 0.9)
    assert back - fall <= 10  # back at the top within 10 s of the fall
    rhos = [r for _, r in after]
    assert all(b >= a for a, b in zip(rhos, rhos[1:]))  # and no step down on the way or after, to the end
    assert [r for t, r, _ in trace if 10 <= t < 20] and {r for t, r, _ in trace if 10 <= t < 20} == {0.9}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tight_objective_on_a_drifting_deit_s_model(seed):
    """The regime of the quiet DeiT-S run (2-vCPU EPYC, ORT): ρ 0.5 near 85 % busy at 1.4× the top's
    capacity, an objective of only 1.5× the bottom's own p99 there, a service 18 % slower than measured at
    start, drifting ±10 % over seconds and ±10 % per call. The 1.4× run must hold p99 ≤ X with nothing
    rejected (T at its default) and ρ above the bottom; the step profile must reach the top within 10 s of
    the fall and stay there."""
    top = MAX_BATCH / DriftingService.nominal(0.9, MAX_BATCH)
    clock = SimClock()
    arrivals = poisson_arrivals([(1.4 * top, 60)], seed)
    bottom = simulate(arrivals, DriftingService(clock, seed), MAX_BATCH, choose=lambda rows: 0.5, clock=clock)
    objective = 1.5 * p99(bottom)

    def adaptive(arrivals):
        clock = SimClock()
        config = ControllerConfig(slo_s=objective, rungs=RUNGS, max_batch=MAX_BATCH, queue_timeout_s=objective)
        controller = SloController(config, measured_model(bias=0.85, truth=DriftingService.nominal), clock=clock)
        return run_controller(controller, clock, arrivals, queue_timeout=objective,
                              truth=DriftingService(clock, seed))

    out, _ = adaptive(arrivals)
    assert p99(out) <= objective and all(o.finish is not None for o in out)
    assert np.mean([o.rho for o in out]) > 0.505

    fall = 50.0
    out, trace = adaptive(poisson_arrivals([(0.5 * top, 20), (1.5 * top, 30), (0.5 * top, 30)], seed))
    after = [(t, r) for t, r, _ in trace if t >= fall]
    back = next(t for t, r in after if r == 0.9)
    assert back - fall <= 10
    assert all(r == 0.9 for t, r in after if t >= back)  # no step below the top once back


def test_a_batch_whose_oldest_request_waited_does_not_step_down_while_it_still_fits():
    """The margin is for what is predicted; the wait of the batch's oldest request is known. A batch at
    the top right behind a long one (its oldest waited the whole previous batch) that still ends well
    inside the objective keeps ρ; the step down (and the hold_s pause after it) came at 0.5× load with a
    tight objective, as oscillation below the top."""
    clock = SimClock()
    config = ControllerConfig(slo_s=1.2, rungs=RUNGS, max_batch=MAX_BATCH, queue_timeout_s=1.2)
    controller = SloController(config, measured_model(bias=1.0), clock=clock)
    for _ in range(5):  # a quiet server: one request every 0.5 s, at the top
        clock.now += 0.5
        assert controller.on_batch(1) == 0.9
        clock.now += true_time(0.9, 1)
        controller.on_batch_end()
    clock.now += 0.5
    assert controller.on_batch(7) == 0.9  # a burst of 7
    clock.now += true_time(0.9, 7)  # and 5 more came meanwhile: the oldest of them waited a whole batch
    controller.on_batch_end()
    assert controller.on_batch(5) == 0.9
    wait = true_time(0.9, 7)
    assert config.margin * config.slo_s < wait + true_time(0.9, 5) < config.own_margin * config.slo_s


def test_a_lull_in_a_load_near_the_bottoms_capacity_climbs_at_the_loaded_pace():
    """At a λ that loads even the bottom past ``up_utilisation`` a short lull is no trend: λ's slow average
    (``load_tau_s``) still shows the load, so ρ climbs one rung per ``loaded_step_s``, not per climb_s/(n−1);
    the higher rungs' extra time would otherwise queue behind the next burst, which the bottom cannot drain."""
    clock = SimClock()
    config = ControllerConfig(slo_s=1.0, rungs=RUNGS, max_batch=MAX_BATCH, queue_timeout_s=1.0)
    controller = SloController(config, measured_model(bias=1.0), clock=clock)

    def batch(rows: int, gap: float) -> float:
        rho = controller.on_batch(rows)
        clock.now += max(gap, true_time(rho, rows))
        controller.on_batch_end()
        return rho

    for _ in range(100):  # 6 images per batch, back to back: ~24 images/s, the bottom ~98 % busy
        batch(6, 0.2)
    assert controller.rho == 0.5 and controller.load_rate * true_time(0.5, 8) / 8 > config.up_utilisation
    lull = [batch(1, 0.3) for _ in range(3)]  # then a lull: one request every 0.3 s
    assert lull == [0.55] * 3  # one rung up in its first second (at climb_s / 8 per rung: 0.55, 0.6, 0.65)


def test_step_up_waits_for_an_empty_queue_then_climbs_the_range_in_climb_s():
    """The rule behind the recovery, batch by batch on a simulated clock: no step up while batches are
    full (a backlog may wait) nor within ``settle_s`` of the last full one; the run's inflated λ is
    dropped once the queue is seen empty; then one rung per ``climb_s / (rungs - 1)``, none skipped."""
    clock = SimClock()
    config = ControllerConfig(slo_s=1.0, rungs=RUNGS, max_batch=MAX_BATCH, queue_timeout_s=1.0)
    controller = SloController(config, measured_model(bias=1.0), clock=clock, start_rho=0.5)

    def batch(rows: int) -> float:
        rho = controller.on_batch(rows)
        clock.now += true_time(rho, rows)
        controller.on_batch_end()
        return rho

    for _ in range(40):  # 40 full batches back to back: a backlog drained at the bottom
        assert batch(MAX_BATCH) == 0.5
    assert controller.rate > 100  # a long run of full batches: λ assumed far above what they show
    last_full = clock.now - true_time(0.5, MAX_BATCH)
    steps = [(last_full, 0.5)]  # (when a batch began at a new ρ, that ρ)
    while clock.now < last_full + 5:  # then one request every 0.2 s (5/s, a third of the top's capacity)
        clock.now += 0.2
        rho = batch(1)
        assert controller.rate == controller.arrivals < 10  # the queue is empty: λ is what the batches show
        if rho != steps[-1][1]:
            steps.append((clock.now - true_time(rho, 1), rho))
    assert steps[1][0] - last_full >= config.settle_s
    assert [r for _, r in steps] == list(RUNGS)  # one rung at a time, never down
    gaps = [b[0] - a[0] for a, b in zip(steps[1:], steps[2:])]
    assert min(gaps) >= config.climb_s / (len(RUNGS) - 1) - 1e-9
    interval = 0.2 + true_time(0.9, 1)  # a decision per batch: here the batches are the slower pace
    assert steps[-1][0] - last_full <= config.settle_s + len(RUNGS) * interval  # the top within 3 s


def test_controller_reports_an_objective_out_of_reach_and_counts_it():
    model = measured_model(bias=1.0)
    idle = SloController(ControllerConfig(slo_s=0.030, rungs=RUNGS, max_batch=MAX_BATCH), model)
    assert idle.reach_at_start() == ("--slo-ms 30 is out of reach: even ρ 0.5 at batch 1 takes 46.0 ms here")
    config = ControllerConfig(slo_s=1.0, rungs=RUNGS, max_batch=MAX_BATCH)
    assert SloController(config, model).reach_at_start() is None
    bottom_capacity = MAX_BATCH / true_time(0.5, MAX_BATCH)
    assert 0.6 * bottom_capacity < SloController(config, model).max_rate() < bottom_capacity

    # 1.3× what even the bottom can serve: every batch soon runs at the bottom and counts as out of reach;
    # Triton's queue policy (simulated, at the objective: dvit serve's default) rejects what waited that
    # long instead of serving it ever later.
    clock = SimClock()
    controller = SloController(dataclasses.replace(config, queue_timeout_s=1.0), measured_model(bias=1.0), clock=clock)
    arrivals = poisson_arrivals([(1.3 * bottom_capacity, 30)], 3)
    out, trace = run_controller(controller, clock, arrivals, queue_timeout=1.0)
    late = [(r, reachable) for t, r, reachable in trace if 5 < t < 30]
    assert {r for r, _ in late} == {0.5}
    assert controller.unreachable > 0.8 * len(late) and not any(reachable for _, reachable in late)
    served = [o for o in out if o.finish is not None]
    rejected = len(out) - len(served)
    assert 0.1 * len(out) < rejected < 0.5 * len(out)
    assert max(o.latency for o in served) < 1.0 + true_time(0.5, MAX_BATCH) + 1e-9  # bounded, not growing


def test_controller_moves_only_on_the_rungs_it_is_given():
    """Ladder engines serve fixed rungs: the controller takes the grid, it does not assume a 0.05 step."""
    rungs = (0.5, 0.7, 0.9)
    capacity = MAX_BATCH / true_time(0.9, MAX_BATCH)
    clock = SimClock()
    controller = SloController(ControllerConfig(slo_s=1.0, rungs=rungs, max_batch=MAX_BATCH),
                               measured_model(rungs, bias=1.0), clock=clock)
    _, trace = run_controller(controller, clock, poisson_arrivals([(1.4 * capacity, 30), (0.5 * capacity, 15)], 4))
    seen = {r for _, r, _ in trace}
    assert seen <= set(rungs) and 0.5 in seen and 0.9 in seen


def test_rung_grid_and_service_model():
    assert rung_grid(0.5, 0.9, 0.05) == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
    assert rung_grid(0.6, 0.9, 0.25) == (0.6, 0.85, 0.9)  # the top is always a rung
    assert rung_grid(0.7, 0.7, 0.05) == (0.7,)
    model = measured_model(bias=1.0)  # measured on 3 of 9 rungs, the rest interpolated: exact for a linear truth
    assert sorted(model.rungs) == list(RUNGS)
    for rho in RUNGS:
        assert model.seconds(rho, 1) == pytest.approx(true_time(rho, 1))
        assert model.seconds(rho, 8) == pytest.approx(true_time(rho, 8))
    edges = interpolate({0.6: RungTime(0.01, 0.02), 0.8: RungTime(0.03, 0.04)}, (0.5, 0.7, 0.9))
    assert edges[0.5] == RungTime(0.01, 0.02) and edges[0.9] == RungTime(0.03, 0.04)  # held flat outside
    assert edges[0.7].image_s == pytest.approx(0.03)
    model.observe(0.7, 4, 2 * true_time(0.7, 4))  # twice as slow once: the correction moves by alpha (0.15)
    assert model.correction[0.7] == pytest.approx(1.15) and model.global_correction == pytest.approx(1.15)
    assert model.seconds(0.5, 1) == pytest.approx(1.15 * true_time(0.5, 1))  # unobserved rungs follow the global one


def test_simulated_service_parses_and_paces_runner_calls():
    service = SimulatedService.parse("40, 0.6:20, 0.9:100")
    assert service == SimulatedService(40.0, ((0.6, 20.0), (0.9, 100.0)))
    assert SimulatedService.from_json(service.to_json()) == service
    assert service.seconds(0.75, 2) == pytest.approx(0.040 + 2 * 0.060)
    for bad in ("", "40", "x,0.6:20", "40,1.5:20", "40,0.6:-1"):
        with pytest.raises(BadInput, match="--simulate-service-ms takes CALL_MS,RHO:MS"):
            SimulatedService.parse(bad)

    class Inner:
        has_token_info = True

        def run(self, batch, keep_counts=None):
            return ("ran", len(batch), None if keep_counts is None else list(keep_counts))

    slept: list[float] = []
    paced = PacedRunner(Inner(), service, num_patches=196, default_rho=0.7, sleep=slept.append, clock=lambda: 0.0)
    assert paced.run(np.zeros((3, 1)), keep_counts=np.array([147, 110, 82])) == ("ran", 3, [147, 110, 82])
    assert slept[-1] == pytest.approx(service.seconds(147 / 196, 3))  # ρ from the first stage's count
    paced.run(np.zeros((1, 1)))
    assert slept[-1] == pytest.approx(service.seconds(0.7, 1)) and paced.has_token_info


def test_handler_asks_the_controller_per_batch_and_keeps_a_requested_rho():
    """The hook: one decision per Triton batch for requests without ρ, every runner call observed;
    a request that names its own keep_ratio is served at it."""
    from types import SimpleNamespace

    from dvit_deploy.jobs.serve.handler import Request, RequestHandler
    from dvit_deploy.jobs.serve.spec import ServeSpec

    spec = ServeSpec(artifact="m.onnx", backend="onnxruntime", precision="fp32", name="m", max_batch=4,
                     queue_delay_us=100, dynamic_batching=True, image_shape=(3, 8, 8), num_classes=10,
                     fixed_batch=None, num_stages=3, num_patches=196, dense=False, keep_ratio=0.7, dynamic_keep=True,
                     keep_range=(0.5, 0.9), token_outputs=False, slo_ms=500.0)
    calls: list[tuple[int, tuple[int, ...]]] = []

    class Runner:
        def run(self, batch, keep_counts=None):
            calls.append((len(batch), tuple(int(c) for c in keep_counts)))
            return SimpleNamespace(logits=np.zeros((len(batch), 10), np.float32), kept=[])

    clock = SimClock()
    controller = SloController(ControllerConfig(slo_s=0.5, rungs=RUNGS, max_batch=4),
                               measured_model(bias=1.0), clock=clock)
    handler = RequestHandler(Runner(), spec, controller)
    image = np.zeros((1, 3, 8, 8), np.float32)
    out = handler.handle([Request(image), Request(image), Request(image, np.full((1, 1), 0.83, np.float32))])
    assert [float(r.outputs["keep_ratio"][0, 0]) for r in out] == pytest.approx([0.9, 0.9, 0.83])
    assert sorted(calls) == sorted([(2, spec.counts_for(0.9)), (1, spec.counts_for(0.83))])
    assert controller.batches == 1 and controller.prev_end is not None  # on_batch, then on_batch_end
    assert 0.9 in controller.model.correction and 0.83 not in controller.model.correction  # off-grid ρ: not a rung


@pytest.mark.parametrize("seed", [4, 5])
def test_a_stall_at_half_load_costs_one_batch_below_the_top_not_seconds(seed):
    """The quiet DeiT-S run's oscillation after recovery (X = 614 ms, 25 answers below the top at 0.5× load):
    one runner call stalls (2 % of calls, 0.1–0.4 s), the requests that came meanwhile arrive as one full
    batch, λ read off it looks like overload and ρ drops to the bottom; with ``hold_s`` and the climbing pace
    that cost 2–4 s below the top (26–45 answers in these seeds on the previous rules). The burst is no
    trend: the slow λ still shows half load, so the next batch that is not full goes straight back to the top."""
    top = MAX_BATCH / DriftingService.nominal(0.9, MAX_BATCH)
    clock = SimClock()
    bottom = simulate(poisson_arrivals([(1.4 * top, 60)], seed), DriftingService(clock, seed, stall=0.02), MAX_BATCH,
                      choose=lambda rows: 0.5, clock=clock)
    objective = 1.5 * p99(bottom)
    clock = SimClock()
    config = ControllerConfig(slo_s=objective, rungs=RUNGS, max_batch=MAX_BATCH, queue_timeout_s=objective)
    controller = SloController(config, measured_model(bias=0.85, truth=DriftingService.nominal), clock=clock)
    fall = 50.0
    arrivals = poisson_arrivals([(0.5 * top, 20), (1.5 * top, 30), (0.5 * top, 30)], seed)
    out, trace = run_controller(controller, clock, arrivals, queue_timeout=objective,
                                truth=DriftingService(clock, seed, stall=0.02))
    back = next(t for t, r, _ in trace if t >= fall and r == 0.9)
    assert back - fall <= 10
    settled = [r for t, r, _ in trace if t >= back]
    assert not any(a < 0.9 and b < 0.9 for a, b in zip(settled, settled[1:]))  # never two batches in a row below
    assert sum(o.rho < 0.9 for o in out if o.finish is not None and o.arrival >= back) <= MAX_BATCH
    assert p99(window(out, fall + 10, fall + 30)) <= objective


def test_a_burst_at_low_load_is_undone_by_the_next_batch_but_not_under_sustained_load():
    """Batch by batch: at a quiet top, one full batch (a stall's arrivals) drops ρ; the next batch that is
    not full returns to the top at once, since the slow λ is one the top holds. Under a load near the bottom's
    capacity the same full batch's step down stays, and ρ climbs back only at the loaded pace."""
    def server(gap: float, rows: int, n: int) -> tuple[SloController, SimClock]:
        clock = SimClock()
        config = ControllerConfig(slo_s=1.0, rungs=RUNGS, max_batch=MAX_BATCH, queue_timeout_s=1.0)
        controller = SloController(config, measured_model(bias=1.0), clock=clock)
        for _ in range(n):
            controller.on_batch(rows)
            clock.now += max(gap, true_time(controller.rho, rows))
            controller.on_batch_end()
        return controller, clock

    quiet, clock = server(0.2, 1, 30)  # 5 images/s, batches of one: the top
    assert quiet.rho == 0.9
    clock.now += 0.3  # a stall: eight came meanwhile
    assert quiet.on_batch(MAX_BATCH) < 0.9
    clock.now += true_time(quiet.rho, MAX_BATCH)
    quiet.on_batch_end()
    assert quiet.on_batch(2) == 0.9 and quiet.last.bound == "dip"

    busy, clock = server(0.0, 6, 100)  # 6 per batch back to back: the bottom ~98 % busy
    assert busy.rho == 0.5
    busy.index = 2  # as if a lull had let it climb two rungs
    assert busy.on_batch(MAX_BATCH) == 0.5
    clock.now += true_time(0.5, MAX_BATCH)
    busy.on_batch_end()
    assert busy.on_batch(3) == 0.5 and busy.last.bound != "dip"


def test_the_servers_hand_over_between_busy_batches_is_not_read_as_an_idle_instance():
    """What the per-batch trace of the loaded --quick benchmark showed: between two full batches the backend
    waited 2–62 ms (median 25) for its next one: Triton's IPC and tensor copies, not an empty queue. The rule
    "a pause over 20 ms means the instance sat idle" then put the oldest request's wait at 20 ms where it had
    waited 0.4–1.1 s (median unseen 0.6 s), and forgot the backlog. Here: 1.4× the top's capacity with a
    hand-over of 20–60 ms after each call; the controller's estimate of the oldest's wait must not fall
    below the truth by more than the hand-over itself, at full batches."""
    seed = 3
    top = MAX_BATCH / DriftingService.nominal(0.9, MAX_BATCH)
    rng = np.random.default_rng(seed)
    clock = SimClock()
    config = ControllerConfig(slo_s=1.0, rungs=RUNGS, max_batch=MAX_BATCH, queue_timeout_s=1.0)
    controller = SloController(config, measured_model(bias=1.0, truth=DriftingService.nominal), clock=clock)
    waits: dict[float, float] = {}

    def choose(rows: int) -> float:
        rho = controller.on_batch(rows)
        waits[clock.now] = controller.last.wait_s
        return rho

    def observe(rho: float, rows: int, seconds: float) -> None:
        controller.observe(rho, rows, seconds)
        clock.now += seconds
        controller.on_batch_end()

    out = simulate(poisson_arrivals([(1.4 * top, 40)], seed), DriftingService(clock, seed), MAX_BATCH,
                   choose=choose, observe=observe, clock=clock, queue_timeout=1.0,
                   handover=lambda rows: float(rng.uniform(0.02, 0.06)))
    oldest: dict[float, float] = {}
    rows: dict[float, int] = {}
    for o in out:
        if o.start is not None:
            oldest[o.start] = max(oldest.get(o.start, 0.0), o.start - o.arrival)
            rows[o.start] = rows.get(o.start, 0) + 1
    full = [start for start in oldest if rows[start] == MAX_BATCH and start > 5]
    assert len(full) > 50
    unseen = [oldest[start] - waits[start] for start in full]
    assert max(unseen) < 0.1  # the old rule: up to ~0.6 s unseen, for most full batches after a hand-over
    assert controller.gap_s == pytest.approx(0.04, abs=0.01)  # it learnt the hand-over time


def test_the_per_batch_trace_records_prediction_and_reality(tmp_path):
    """``ServeSpec.trace_path`` (dvit serve --trace-batches): one JSON line per Triton batch with the ρ chosen,
    the model's predicted and the measured runner time, the controller's and the true wait of the oldest."""
    from types import SimpleNamespace

    from dvit_deploy.jobs.serve.handler import Request, RequestHandler
    from dvit_deploy.jobs.serve.spec import ServeSpec

    path = tmp_path / "trace.jsonl"
    spec = ServeSpec(artifact="m.onnx", backend="onnxruntime", precision="fp32", name="m", max_batch=4,
                     queue_delay_us=100, dynamic_batching=True, image_shape=(3, 8, 8), num_classes=10,
                     fixed_batch=None, num_stages=3, num_patches=196, dense=False, keep_ratio=0.7, dynamic_keep=True,
                     keep_range=(0.5, 0.9), token_outputs=False, slo_ms=500.0, trace_path=str(path))
    assert ServeSpec.from_json(spec.to_json()).trace_path == str(path)

    class Runner:
        def run(self, batch, keep_counts=None):
            return SimpleNamespace(logits=np.zeros((len(batch), 10), np.float32), kept=[])

    controller = SloController(ControllerConfig(slo_s=0.5, rungs=RUNGS, max_batch=4), measured_model(bias=1.0))
    handler = RequestHandler(Runner(), spec, controller)
    image = np.zeros((1, 3, 8, 8), np.float32)
    sent = time.monotonic() - 0.25  # scheduled a quarter second ago
    handler.handle([Request(image, sent=sent), Request(image, sent=sent + 0.1)])
    handler.handle([Request(image)])
    handler.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["rows"] for r in rows] == [2, 1] and [r["rho"] for r in rows] == [0.9, 0.9]
    assert rows[0]["pred_s"] == pytest.approx(true_time(0.9, 2)) and rows[0]["runner_s"] < rows[0]["pred_s"]
    assert 0.25 <= rows[0]["oldest_wait_s"] < 5 and rows[1]["oldest_wait_s"] is None
    assert rows[0]["bound"] == "top" and rows[0]["est_wait_s"] == 0.0 and rows[1]["handle_s"] >= rows[1]["runner_s"]

