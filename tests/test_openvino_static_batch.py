"""The OpenVINO runner compiles a dynamic-batch file once more for the batch size it is run at (faster:
benchmarks/README.md), keeps the last two, and falls back to the dynamic compile when sizes vary."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")

def test_static_compile_per_batch_size_matches_the_dynamic_one_and_gives_way_when_sizes_vary(tiny_export):
    from dvit_deploy.runtime import runner_for_artifact

    with runner_for_artifact(tiny_export.path, "openvino", device="cpu") as static, \
            runner_for_artifact(tiny_export.path, "openvino", device="cpu", static_batch=False) as dynamic:
        assert static.describe()["compiled_for_batches"] == []  # nothing run yet (the warm-up uses the dynamic one)
        shape = static.inputs[0].shape
        x = np.random.default_rng(0).standard_normal((4, *shape[1:])).astype(np.float32)
        for batch, compiled in ((4, [4]), (4, [4]), (1, [1, 4]), (4, [1, 4])):  # a full and a last partial batch
            a, b = static.run(x[:batch]), dynamic.run(x[:batch])
            np.testing.assert_allclose(a.logits, b.logits, rtol=1e-4, atol=1e-5)
            assert [k.tolist() for k in a.kept] == [k.tolist() for k in b.kept]
            assert static.describe()["compiled_for_batches"] == compiled
        assert dynamic.describe()["compiled_for_batches"] == []
        a, b = static.run(x[:3]), dynamic.run(x[:3])  # a third size: the least recently used (1) is let go
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-4, atol=1e-5)
        assert static.describe()["compiled_for_batches"] == [3, 4]
        static.run(x[:2])  # a fourth compile: the last the runner allows
        assert static.describe()["compiled_for_batches"] == [2, 3]
        a, b = static.run(x[:4]), dynamic.run(x[:4])  # the sizes vary: the dynamic compile from now on
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-4, atol=1e-5)
        assert static.describe()["compiled_for_batches"] == []
        static.run(x[:2])
        static.timed_call(x[:1])()
        assert static.describe()["compiled_for_batches"] == []  # and no compile after that


def test_served_openvino_runner_keeps_one_dynamic_compile(tiny_export, tmp_path):
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.jobs.serve.backend import open_spec_runner
    from dvit_deploy.jobs.serve.spec import ServeOptions, make_spec

    spec = make_spec(open_artifact(tiny_export.path), ServeOptions(backend="openvino", precision="fp32", max_batch=4))
    runner = open_spec_runner(spec)
    try:
        assert runner.static_batch is False
        shape = runner.inputs[0].shape
        runner.run(np.zeros((3, *shape[1:]), np.float32))
        assert runner.describe()["compiled_for_batches"] == []
    finally:
        runner.close()


def test_compiled_for_names_what_a_call_runs_and_properties_reach_every_compile(tiny_export):
    from dvit_deploy.runtime import runner_for_artifact

    with runner_for_artifact(tiny_export.path, "openvino", device="cpu", properties={"PERF_COUNT": True}) as runner:
        shape = runner.inputs[0].shape
        x = np.zeros((2, *shape[1:]), np.float32)
        runner.timed_call(x)()
        compiled, request = runner.compiled_for(2)
        assert compiled is not runner.compiled and compiled.inputs[0].get_partial_shape()[0].get_length() == 2
        assert str(compiled.get_property("PERF_COUNT")) == str(runner.compiled.get_property("PERF_COUNT")) == "YES"
        assert request.get_profiling_info()  # the fixed-batch request did run, with PERF_COUNT on
    with runner_for_artifact(tiny_export.path, "openvino", device="cpu", static_batch=False) as runner:
        assert runner.compiled_for(2)[0] is runner.compiled  # no per-batch compiles: the dynamic one runs
        assert str(runner.compiled.get_property("PERF_COUNT")) == "NO"
