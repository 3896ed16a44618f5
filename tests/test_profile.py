"""`dvit profile`: statistics, dense twins, speed-up fields, JSON schema, plot. No speed asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dvit_deploy.cli import app
from dvit_deploy.helpers.fileio import manifest_path, read_json
from dvit_deploy.export.graph import pruning_nodes
from dvit_deploy.jobs.profile import (CV_WARN_PERCENT, ProfileSettings, is_dense_twin, latency_stats, measure,
                                 nearest_rank, pruning_overhead)

LATENCY_KEYS = {"min", "mean", "median", "p90", "p95", "p99", "max"}
FAST = ["--warmup", "0.05", "--iterations", "3"]


def test_latency_stats_known_values():
    stats = latency_stats(list(range(100, 0, -1)))  # 1..100 ms, unsorted
    assert (stats.min, stats.max, stats.median, stats.mean) == (1, 100, 50.5, 50.5)
    assert (stats.p90, stats.p95, stats.p99) == (90, 95, 99)  # nearest rank, like trtexec
    assert stats.count == 100
    assert stats.cv_percent == pytest.approx(100 * np.std(np.arange(1, 101)) / 50.5)
    steady = latency_stats([10.0, 10.0, 10.0, 10.1])
    assert steady.cv_percent < CV_WARN_PERCENT < latency_stats([10, 12, 8, 10]).cv_percent
    assert nearest_rank(np.array([5.0]), 99) == 5.0
    with pytest.raises(ValueError):
        latency_stats([])


def test_measure_counts_iterations_and_uses_device_time():
    calls = []
    m = measure(lambda: calls.append(1) or 2.5, ProfileSettings(warmup_s=0.0, iterations=7))
    assert len(m.samples_ms) == 7 and set(m.samples_ms) == {2.5}  # the call's own (CUDA-event) time
    assert len(calls) == 7 + m.warmup_iterations and m.warmup_iterations == 1
    timed = measure(lambda: None, ProfileSettings(warmup_s=0.0, duration_s=0.02, min_iterations=5))
    assert len(timed.samples_ms) >= 5 and timed.wall_s >= 0.02


@pytest.fixture
def sparse_export(workdir):
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    loaded = load_model(model_name="tiny-deit", keep_ratio=0.7)
    return export_onnx(loaded, workdir / "export" / "tiny-deit-r0.7.onnx", check_samples=2)


def profile(*args):
    return CliRunner().invoke(app, ["profile", *map(str, args)])


def test_profile_exports_dense_twin_and_reports_speedup(sparse_export, workdir):
    result = profile("--batch", "1,2", "--dense-baseline", "--json", *FAST)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == "dvit-deploy/profile/1" and data["machine"]["cpu_count"] >= 1
    twin = workdir / "export" / "tiny-deit-dense.onnx"
    assert twin.exists() and is_dense_twin(read_json(sparse_export.manifest_path), read_json(manifest_path(twin)))
    results = data["results"]
    assert [(r["role"], r["batch"]) for r in results] == [("sparse", 1), ("sparse", 2), ("dense", 1), ("dense", 2)]
    for r in results:
        assert set(r["latency_ms"]) == LATENCY_KEYS
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert lat["min"] <= lat["mean"] <= lat["max"]
        assert r["backend"] == "onnxruntime" and r["device"] == "cpu" and r["precision"] == "fp32"
        assert r["iterations"] == 3 and r["throughput_ips"] > 0
        assert r["unstable"] == (r["cv_percent"] > CV_WARN_PERCENT)
    dense = {r["batch"]: r for r in results if r["role"] == "dense"}
    for r in (r for r in results if r["role"] == "sparse"):
        base = dense[r["batch"]]
        assert r["baseline"].endswith("tiny-deit-dense.onnx")
        assert r["speedup"] == pytest.approx(r["throughput_ips"] / base["throughput_ips"], rel=1e-3)
        assert r["flops_ratio"] == pytest.approx(base["gmacs"] / r["gmacs"], rel=1e-3)
        assert r["flops_ratio"] > 1
    assert all(r["speedup"] is None for r in dense.values())

    # A second run finds the twin beside the artifact without --dense-baseline.
    again = profile("--batch", "1", "--json", *FAST)
    assert again.exit_code == 0, again.output
    assert [r["role"] for r in json.loads(again.stdout)["results"]] == ["sparse", "dense"]


def test_profile_torch_backend_table_and_plot(sparse_export, workdir):
    pytest.importorskip("matplotlib")
    plot = workdir / "out" / "plot.png"
    result = profile(sparse_export.path, "--backend", "torch", "--batch", "1,2", "--no-baseline",
                     "--threads", "1", "--plot", plot, *FAST)
    assert result.exit_code == 0, result.output
    assert "p99" in result.stdout and "tiny-deit-r0.7" in result.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_profile_without_twin_notes_it(sparse_export):
    result = profile("--batch", "1", "--json", *FAST)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["role"] for r in data["results"]] == ["sparse"] and data["results"][0]["speedup"] is None
    assert any("--dense-baseline" in n for n in data["notes"])


def test_profile_bad_inputs(sparse_export, workdir):
    assert profile("--batch", "0", *FAST).exit_code == 2
    assert profile("--batch", "1", "--backend", "tflite", *FAST).exit_code == 2
    result = profile("--batch", "1", "--backend", "torch", "--precision", "fp16", "--no-baseline", *FAST)
    assert result.exit_code == 2 and "CUDA" in result.output
    assert profile(workdir / "missing.onnx", *FAST).exit_code == 2


def test_pruning_overhead_attributes_predictor_nodes(tiny_export):
    import onnx

    model = onnx.load(str(tiny_export.path))
    stages = pruning_nodes(model)
    assert len(stages) == 3
    ops = {n.name: n.op_type for n in model.graph.node}
    for nodes in stages:
        kinds = {ops[n] for n in nodes}
        assert {"TopK", "Gather", "LogSoftmax", "MatMul"} <= kinds
        # The trunk's attention (Softmax) is not attributed to pruning.
        assert "Softmax" not in kinds
    from dvit_deploy.artifact.store import open_artifact

    breakdown = pruning_overhead(open_artifact(tiny_export.path), 2, runs=2, warmup=1)
    assert 0 < breakdown.pruning_ms < breakdown.total_node_ms
    assert len(breakdown.per_stage_ms) == 3 and "TopK" in breakdown.by_op


def test_interleaved_rounds_cancel_machine_drift():
    """Two identical workloads on a machine that halves its speed midway: measured one after
    the other, the second looks 2x slower; in alternating rounds both see the same machine."""
    from dvit_deploy.jobs.profile import ProfileSettings, measure_interleaved

    def run(rounds):
        calls_made = []

        def workload(name):
            def call():
                calls_made.append(name)
                slow = len(calls_made) > 22  # 2 warm-up calls, then the machine slows down
                return 20.0 if slow else 10.0  # device-timed milliseconds, as CUDA events report them

            return call

        settings = ProfileSettings(warmup_s=0.0, iterations=20, rounds=rounds)
        measured = measure_interleaved({"a": workload("a"), "b": workload("b")}, settings)
        mean = {k: sum(m.samples_ms) / len(m.samples_ms) for k, m in measured.items()}
        return mean["b"] / mean["a"], calls_made, measured

    ratio, order, measured = run(rounds=1)
    assert ratio == 2.0 and order[2:] == ["a"] * 20 + ["b"] * 20
    ratio, order, measured = run(rounds=4)
    assert ratio == pytest.approx(1.0)
    assert order[2:12] == ["a"] * 5 + ["b"] * 5  # rounds of 20/4 calls each, alternating
    assert all(len(m.samples_ms) == 20 and m.warmup_iterations == 1 for m in measured.values())


def test_rounds_must_be_positive():
    from dvit_deploy.helpers.errors import BadInput
    from dvit_deploy.jobs.profile import ProfileSettings

    with pytest.raises(BadInput, match="--rounds must be ≥ 1"):
        ProfileSettings(rounds=0).validate()


def test_profile_reports_the_time_each_model_really_ran(sparse_export):
    """'2 s' asked is not what the table may claim when each model ran 9-14 s (slow calls, minimum calls)."""
    from types import SimpleNamespace

    from dvit_deploy.cli.profile_table import measured_time

    assert measured_time([SimpleNamespace(measured_s=9.13), SimpleNamespace(measured_s=14.2)]) == "9.1–14.2 s"
    assert measured_time([SimpleNamespace(measured_s=2.04)]) == "2.0 s"
    # Asked for 1 ms: the 10-call minimum makes it longer, and the title gives both.
    result = profile("--batch", "1", "--no-baseline", "--warmup", "0", "--duration", "0.001", "--rounds", "1")
    assert result.exit_code == 0, result.output
    assert "0.001 s asked, " in result.stdout and " s measured per artifact and batch" in result.stdout


def test_memory_estimate_refuses_what_the_oom_killer_would_end(monkeypatch):
    """DeiT-S at batch 4000 needs tens of GB (killed without a message on a 24 GB machine); batch 64 does not."""
    from dvit_deploy.artifact.manifest import ModelRecord
    from dvit_deploy.helpers.errors import BadInput
    from dvit_deploy.models.config import VARIANTS
    from dvit_deploy.runtime import memory

    manifest = {"config": VARIANTS["deit-s"].to_dict(), "num_patches": 196}
    per_image = memory.per_image_bytes(ModelRecord.from_json(manifest))
    assert 4 << 20 < per_image < 16 << 20  # a few MB per 224² image through a DeiT-S block
    assert memory.MemoryNeed(0, per_image, 4000).total > 24 << 30
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 << 30)
    memory.check_fits([("deit-s.onnx", memory.MemoryNeed(88 << 20, per_image, 64))], what="profile", option="--batch")
    with pytest.raises(BadInput, match=r"needs about .* use --batch \d+ or less"):
        memory.check_fits([("deit-s.onnx", memory.MemoryNeed(88 << 20, per_image, 4000))], what="profile",
                          option="--batch")
    # A GPU run is the device's memory, not checked here.
    memory.check_fits([("deit-s.onnx", memory.MemoryNeed(0, per_image, 4000))], what="profile", option="--batch",
                      device="cuda")


def test_profile_command_reads_each_manifest_once(sparse_export, workdir, file_reads):
    """`dvit profile` with no path: picking the default, finding its dense twin, opening both, planning and
    measuring read each manifest once (the CLI opens the Artifact and hands it on)."""
    assert profile("--batch", "1", "--dense-baseline", *FAST).exit_code == 0  # exports the twin
    twin = workdir / "export" / "tiny-deit-dense.onnx"
    reads = file_reads({manifest_path(sparse_export.path): "sparse", manifest_path(twin): "dense"})
    result = profile("--batch", "1", "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert [r["role"] for r in json.loads(result.stdout)["results"]] == ["sparse", "dense"]
    assert sorted(reads) == ["dense", "sparse"], reads


def test_profile_options_hold_the_defaults_once_and_give_each_backend_its_own():
    from dataclasses import FrozenInstanceError

    from dvit_deploy.helpers import defaults
    from dvit_deploy.jobs.profile import ProfileOptions

    options = ProfileOptions()
    assert options.batches == (defaults.PROFILE_BATCH,) and options.device == defaults.PROFILE_DEVICE
    assert (options.settings.warmup_s, options.settings.duration_s, options.settings.rounds,
            options.settings.min_iterations) == (defaults.PROFILE_WARMUP_S, defaults.PROFILE_DURATION_S,
                                                 defaults.PROFILE_ROUNDS, defaults.PROFILE_MIN_ITERATIONS)
    with pytest.raises(FrozenInstanceError):
        options.device = "cuda"  # type: ignore[misc]
    asked = ProfileOptions(graph_optimization="basic", compile=True, providers="cuda,cpu")
    assert asked.runner_options("onnxruntime") == {"graph_optimization": "basic", "providers": "cuda,cpu"}
    assert asked.runner_options("torch") == {"compile": True}
    assert asked.runner_options("tensorrt") == {}
    with pytest.raises(Exception, match="--rounds"):
        ProfileOptions(settings=ProfileSettings(rounds=0)).validate()


def test_cuda_graph_on_a_cpu_backend_is_said_to_be_ignored(tiny_export):
    result = CliRunner().invoke(app, ["profile", str(tiny_export.path), "--cuda-graph", "--no-baseline", "--batch", "1",
                                      "--warmup", "0", "--iterations", "2", "--rounds", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "--cuda-graph ignored: onnxruntime runs on the CPU here (--device cuda to use it)" in report["notes"]
