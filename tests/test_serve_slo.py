"""`dvit serve --slo-ms`: the controller's rule on a simulated clock, and its plumbing (spec, config, pacing).

The simulation (tests/serve_sim.py) models Triton's dynamic batcher in front of one instance whose
service time per ρ and batch is known; the controller is measured on a model 20 % too fast and must
correct itself online. The load follows the project's overload test: Poisson arrivals at 0.5×, then
1.4×, then 0.5× the capacity at the top of the keep range (figures shaped like DeiT-S on a 2-vCPU
AVX2 machine: 65 ms per image at ρ 0.9, 41 ms at 0.5). The end-to-end run through tritonserver is
in tests/test_serve_slo_e2e.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from dvit_deploy.helpers.errors import BadInput
from dvit_deploy.jobs.serve.controller import (ControllerConfig, RungTime, ServiceModel, SloController,
                                               interpolate, measure_service, rung_grid)
from dvit_deploy.jobs.serve.paced import PacedRunner, SimulatedService

from .serve_sim import SimClock, p99, poisson_arrivals, simulate

MAX_BATCH = 8
RUNGS = rung_grid(0.5, 0.9, 0.05)


def true_time(rho: float, rows: int) -> float:
    return 0.005 + rows * float(np.interp(rho, [0.5, 0.9], [0.041, 0.065]))


def measured_model(rungs=RUNGS, bias: float = 0.8) -> ServiceModel:
    """measure_service on a fake clock that advances by ``bias`` × the true time (a model 20 % too fast)."""
    clock = [0.0]

    def run(rho: float, rows: int) -> None:
        clock[0] += bias * true_time(rho, rows)

    return measure_service(run, rungs, MAX_BATCH, clock=lambda: clock[0])


def run_controller(controller: SloController, clock: SimClock, arrivals, queue_timeout=None):
    trace: list[tuple[float, float]] = []

    def choose(rows: int) -> float:
        rho = controller.on_batch(rows)
        trace.append((clock.now, rho))
        return rho

    def observe(rho: float, rows: int, seconds: float) -> None:
        controller.observe(rho, rows, seconds)
        clock.now += seconds
        controller.on_batch_end()

    out = simulate(arrivals, true_time, MAX_BATCH, choose=choose, observe=observe, clock=clock,
                   queue_timeout=queue_timeout)
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
    controller = SloController(ControllerConfig(slo_s=objective, rungs=RUNGS, max_batch=MAX_BATCH),
                               measured_model(), clock=clock)
    out, trace = run_controller(controller, clock, arrivals)

    overload = window(out, 20, 80)
    assert p99(overload) <= objective  # held
    assert p99(window(fixed[0.9], 20, 80)) > 5 * objective  # and the load was real: the top misses it badly
    assert all(o.finish is not None for o in out)  # no rejection in the simulation either
    mean_rho = float(np.mean([o.rho for o in overload]))
    assert 0.505 < mean_rho < 0.7  # above the bottom: the objective's slack is spent on accuracy
    assert controller.model.correction[0.5] == pytest.approx(1 / 0.8, rel=0.05)  # learnt the model was fast

    after = [(t, r) for t, r in trace if t >= 80]
    at_top = next(t for t, r in after if r == 0.9)
    assert at_top - 80 <= 10  # recovered within 10 s of the load falling
    rhos = [r for _, r in after]
    assert all(b >= a for a, b in zip(rhos, rhos[1:]))  # climbed, never stepped back down: no oscillation
    before = [r for t, r in trace if 10 <= t < 20]
    assert before and set(before) == {0.9}  # at 0.5× load it serves at the top


def test_controller_reports_an_objective_out_of_reach_and_counts_it():
    model = measured_model(bias=1.0)
    idle = SloController(ControllerConfig(slo_s=0.030, rungs=RUNGS, max_batch=MAX_BATCH), model)
    assert idle.reach_at_start() == ("--slo-ms 30 is out of reach: even ρ 0.5 at batch 1 takes 46.0 ms here")
    config = ControllerConfig(slo_s=1.0, rungs=RUNGS, max_batch=MAX_BATCH)
    assert SloController(config, model).reach_at_start() is None
    bottom_capacity = MAX_BATCH / true_time(0.5, MAX_BATCH)
    assert 0.6 * bottom_capacity < SloController(config, model).max_rate() < bottom_capacity

    # 1.3× what even the bottom can serve: every batch soon runs at the bottom and counts as out of reach;
    # Triton's queue policy (simulated) rejects what waited 2× the objective instead of serving it ever later.
    clock = SimClock()
    controller = SloController(config, measured_model(bias=1.0), clock=clock)
    arrivals = poisson_arrivals([(1.3 * bottom_capacity, 30)], 3)
    out, trace = run_controller(controller, clock, arrivals, queue_timeout=2.0)
    late = [r for t, r in trace if t > 5]
    assert set(late) == {0.5}
    assert controller.unreachable > 0.8 * len(late) and controller.stats()["reachable"] is False
    served = [o for o in out if o.finish is not None]
    rejected = len(out) - len(served)
    assert 0.1 * len(out) < rejected < 0.5 * len(out)
    assert max(o.latency for o in served) < 2.0 + 2 * true_time(0.5, MAX_BATCH)  # bounded, not growing


def test_controller_moves_only_on_the_rungs_it_is_given():
    """Ladder engines serve fixed rungs: the controller takes the grid, it does not assume a 0.05 step."""
    rungs = (0.5, 0.7, 0.9)
    capacity = MAX_BATCH / true_time(0.9, MAX_BATCH)
    clock = SimClock()
    controller = SloController(ControllerConfig(slo_s=1.0, rungs=rungs, max_batch=MAX_BATCH),
                               measured_model(rungs, bias=1.0), clock=clock)
    _, trace = run_controller(controller, clock, poisson_arrivals([(1.4 * capacity, 30), (0.5 * capacity, 15)], 4))
    seen = {r for _, r in trace}
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
