"""The tensorrt backend: registry wiring, keep-count feeds and refusal paths without TensorRT."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dvit_deploy.artifact.manifest import EngineManifest
from dvit_deploy.artifact.store import Artifact
from dvit_deploy.helpers.errors import BadInput, MissingDependency
from dvit_deploy.runtime.trt_runner import TensorRTRunner, keep_counts_feed, torch_dtype_name

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
DYNAMIC = {"dynamic_keep": True, "keep_counts": [137, 96, 67], "num_patches": 196,
           "keep_input": {"name": "keep_counts", "dtype": "int32", "shape": [3]},
           "profiles": [{"name": "images", "min": [1, 3, 224, 224], "max": [8, 3, 224, 224]},
                        {"name": "keep_counts", "min": [98, 49, 24], "max": [176, 158, 142]}]}


def test_registry_resolves_the_tensorrt_backend():
    from dvit_deploy.runtime import runner_class

    assert runner_class("tensorrt") is TensorRTRunner
    assert TensorRTRunner.backend == "tensorrt"


def test_keep_counts_feed():
    dynamic, static = EngineManifest.from_json(DYNAMIC), EngineManifest.from_json({"dynamic_keep": False})
    assert keep_counts_feed(dynamic, None).tolist() == [137, 96, 67]
    assert keep_counts_feed(dynamic, 0.9).tolist() == [176, 158, 142]
    with pytest.raises(BadInput, match="outside the engine's range"):
        keep_counts_feed(dynamic, 0.3)
    assert keep_counts_feed(static, None) is None
    with pytest.raises(BadInput, match="--dynamic-keep"):
        keep_counts_feed(static, 0.8)


def test_keep_range_check_reads_the_typed_profile():
    from dvit_deploy.runtime.trt_runner import check_keep_range

    dynamic = EngineManifest.from_json(DYNAMIC)
    check_keep_range(dynamic, np.asarray([98, 158, 24]))  # the profile's bounds are inclusive
    with pytest.raises(BadInput, match=r"keep counts \[97, 96, 67\] are outside the engine's range "
                                       r"\[98, 49, 24\]..\[176, 158, 142\]"):
        check_keep_range(dynamic, np.asarray([97, 96, 67]))
    no_profile = EngineManifest.from_json({k: v for k, v in DYNAMIC.items() if k != "profiles"})
    check_keep_range(no_profile, np.asarray([1, 1, 1]))  # nothing recorded: nothing to refuse
    low = keep_counts_feed(no_profile, 0.3)  # ρ 0.3 is refused above only by the profile
    assert len(low) == 3 and (low < np.asarray([98, 49, 24])).all()


def test_dtype_names():
    assert torch_dtype_name("DataType.FLOAT") == "float32"
    assert torch_dtype_name("DataType.HALF") == "float16"
    assert torch_dtype_name("DataType.INT64") == "int64"


def test_needs_an_engine_path():
    with pytest.raises(BadInput, match="needs an .engine"):
        TensorRTRunner(None)
    with pytest.raises(TypeError, match="takes an opened Artifact"):
        TensorRTRunner(Path("m.engine"))
    with pytest.raises(BadInput, match="needs an .engine artifact, not m.onnx"):
        TensorRTRunner(Artifact.of("m.onnx", {}))


def test_refuses_a_malformed_device(tmp_path):
    for bad in ("cuda:x", "cuda:", "cuda:-1"):
        with pytest.raises(BadInput, match="device must be cpu, cuda or cuda:N"):
            TensorRTRunner(Artifact.of(tmp_path / "m.engine", {}), device=bad)
    assert TensorRTRunner(Artifact.of(tmp_path / "m.engine", {}), device="cuda:1").device == "cuda:1"


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown when TensorRT is not installed")
def test_without_tensorrt_load_names_the_extra(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(MissingDependency) as info:
        TensorRTRunner(Artifact.of(engine, {"precision": "fp16"}), device="cuda", precision="fp16").load()
    assert info.value.exit_code == 2
    assert 'pip install "dvit-deploy[tensorrt]"' in str(info.value)
    from dvit_deploy.runtime import open_runner

    with pytest.raises(MissingDependency, match=r"dvit-deploy\[tensorrt\]"):
        open_runner("tensorrt", Artifact.of(engine, {"precision": "fp16"}), device="cuda", precision=None)


@pytest.mark.tensorrt
def test_refuses_an_engine_from_another_gpu(tmp_path):
    pytest.importorskip("tensorrt", reason="needs TensorRT and a GPU")
    import tensorrt as trt
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    manifest = {"precision": "fp32", "tensorrt": {"version": trt.__version__},
                "gpu": {"name": "Imaginary", "compute_capability": [1, 0]}, "builder": {"hardware_compat": "none"}}
    with pytest.raises(BadInput, match="rebuild it here"):
        TensorRTRunner(Artifact.of(engine, manifest), device="cuda").load()


def test_buffers_live_on_the_requested_torch_device():
    import torch

    from dvit_deploy.runtime.trt_runner import torch_device

    assert torch_device(torch, "cuda:1") == torch.device("cuda:1")


RTX_ENGINE = {"precision": "fp16", "tensorrt": {"flavour": "rtx", "module": "tensorrt_rtx", "version": "1.7.1.116"},
              "rtx": {"compute_capabilities": ["8.6", "12.0"]}}


def test_an_rtx_engine_without_a_gpu_asks_for_an_rtx_gpu_not_for_tensorrt(tmp_path, monkeypatch):
    """tensorrt_rtx installed, no GPU, TensorRT itself absent (as on this CI machine): what is missing is an
    RTX-class GPU with its CUDA driver, not 'pip install dvit-deploy[tensorrt]'."""
    import types

    import torch

    import dvit_deploy.runtime as runtime
    import dvit_deploy.runtime.trt_runner as trt_runner

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    monkeypatch.setattr(runtime, "available", lambda module: module == "tensorrt_rtx")
    monkeypatch.setattr(trt_runner, "require", lambda module, extra, purpose: types.SimpleNamespace(__version__="1.7.1.116"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runner = runtime.open_runner("tensorrt", Artifact.of(engine, RTX_ENGINE), device="cuda", precision=None)
    with pytest.raises(Exception) as info:
        runner.load()
    message = str(info.value)
    assert "dvit-deploy[tensorrt]" not in message and "pip install" not in message
    assert "TensorRT-RTX engine" in message and "RTX GPU" in message and "CUDA driver" in message
    # tensorrt_rtx missing too: the extra that installs it, not TensorRT's.
    monkeypatch.setattr(runtime, "available", lambda module: False)
    with pytest.raises(MissingDependency, match=r'needs \'tensorrt_rtx\'.*dvit-deploy\[rtx\]'):
        runtime.open_runner("tensorrt", Artifact.of(engine, RTX_ENGINE), device="cuda", precision=None)
