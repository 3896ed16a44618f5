"""The benchmarks' shared pieces: per-round ratios and their spread, the loaded verdict, interleaving,
and bench_zoo's runtime estimate (no timing is asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_common  # noqa: E402


def test_ratio_spread_uses_same_round_pairs():
    spread = bench_common.ratio_spread([12.0, 10.0, 11.0, 9.0], [10.0, 10.0, 10.0, 10.0])
    assert spread["rounds"] == [1.2, 1.0, 1.1, 0.9]
    assert spread["median"] == pytest.approx(1.05) and spread["min"] == 0.9 and spread["max"] == 1.2
    low, high = spread["ci95"]
    assert 0.9 <= low <= 1.05 <= high <= 1.2
    two = bench_common.ratio_spread([2.0, 3.0], [1.0, 1.0])
    assert two["ci95"] is None and two["median"] == 2.5  # no interval from two rounds
    assert bench_common.ratio_spread([1.0], [0.0])["median"] is None


def test_loaded_verdict_needs_both_ends_quiet():
    quiet = {"loaded": False}
    loaded = {"loaded": True}
    assert bench_common.verdict(quiet, quiet) == "quiet"
    assert bench_common.verdict(loaded, quiet) == bench_common.verdict(quiet, loaded) == "loaded"
    snap = bench_common.load_snapshot()
    assert snap["cores"] >= 1
    if snap["load_average"] is not None:
        assert snap["loaded"] == (snap["load_average"][0] / snap["cores"] > bench_common.LOADED_PER_CORE)


def test_measure_rounds_alternates_and_keeps_rounds_apart():
    order: list[str] = []
    calls = {"dense": lambda: order.append("dense"), "sparse": lambda: order.append("sparse")}
    out = bench_common.measure_rounds(calls, rounds=3, round_s=0.0, warmup_s=0.0, min_iterations=2)
    assert [len(out[k]) for k in ("dense", "sparse")] == [3, 3]
    assert all(len(m.samples_ms) == 2 for ms in out.values() for m in ms)
    # round 1: dense then sparse; round 2 reversed; round 3 as round 1 (one warm-up call each round)
    firsts = [order[0], order[6], order[12]]
    assert firsts == ["dense", "sparse", "dense"]
    assert len(bench_common.round_throughputs(out["dense"], batch=4)) == 3


def test_zoo_estimate_and_options():
    import bench_zoo

    full = bench_zoo.estimate(bench_zoo.parse_args([]))
    lead = bench_zoo.estimate(bench_zoo.parse_args(["--models", bench_zoo.LEAD_SUBSET, "--batches", "1,16"]))
    assert set(full["per_model"]) == set(bench_zoo.ZOO)
    assert 0 < lead["measure_s"] < full["measure_s"]
    assert full["per_model"]["deit-b"]["measure_s"] > full["per_model"]["deit-256"]["measure_s"]
    with pytest.raises(SystemExit):
        bench_zoo.parse_args(["--models", "resnet-50"])
    # FLOPs bound: dense GMACs over sparse GMACs, > 1 for every zoo model at ρ = 0.7
    assert all(bench_zoo.flops_bound(m, 0.7) > 1.0 for m in bench_zoo.ZOO)


def test_others_counts_only_what_other_processes_used():
    """A benchmark's own threads load the machine; `others` subtracts them, so a quiet machine stays quiet."""
    start = {"cpu_busy_s": 100.0, "own_cpu_s": 10.0, "monotonic": 0.0, "cores": 2}
    own_only = {"cpu_busy_s": 120.0, "own_cpu_s": 30.0, "monotonic": 10.0, "cores": 2}  # 2 cores busy, all ours
    assert bench_common.others(start, own_only) == {"per_core": 0.0, "loaded": False}
    shared = {"cpu_busy_s": 120.0, "own_cpu_s": 18.0, "monotonic": 10.0, "cores": 2}  # others used 12 s of 20
    assert bench_common.others(start, shared) == {"per_core": 0.6, "loaded": True}
    assert bench_common.others(start, {**shared, "cpu_busy_s": None})["loaded"] is True  # unknown is not quiet
    snap = bench_common.load_snapshot()
    assert snap["own_cpu_s"] >= 0 and snap["monotonic"] > 0
