"""The project's TensorRT code driven through NVIDIA's real Python API surface, for TensorRT 10.3,
10.13 and 11.4 -- without TensorRT, a GPU or any skip.

What this proves: every TensorRT name the code touches (module attributes, classes, methods,
properties, enum members) exists in that version; every call binds to a recorded signature
(argument count, names, defaults, overloads, argument types as pybind11 spells them); every
property set targets a settable property with a value of the right type; and what a call returns
is used only as the recorded return type allows (chained calls are checked the same way). It also
proves the project's *control flow* around TensorRT's documented return values (None engine,
False from ``set_timing_cache``, None timing cache ...) when the test makes the fake return them.

What it cannot prove: anything about engine behaviour -- whether the parser accepts the graph,
whether a build succeeds, numerics, speed, or whether values (shapes, profiles) are *semantically*
right for TensorRT. The fake (``tests/fake_tensorrt.py``) is generated only from the snapshots in
``tests/data/tensorrt-api-*.json`` (recorded from NVIDIA's bindings wheels by
``tools/tensorrt_api_snapshot.py``); the few values it has to invent are labelled scaffolding there.
The CUDA side of the runner uses a separate small ``torch.cuda`` stand-in (``tests/fake_cuda.py``).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

from dvit_deploy.helpers.fileio import manifest_path
from dvit_deploy.artifact.store import Artifact, open_artifact
from dvit_deploy.jobs import build as build_job
from dvit_deploy.engines import build_plan as plans
from dvit_deploy.engines import trt_build
from dvit_deploy.engines.build_plan import BuildOptions, DeviceInfo
from dvit_deploy.helpers.errors import BadInput, DvitError

from . import fake_cuda
from .fake_tensorrt import FakeAPIError, install_engine, make_fake
from .quantized_onnx import make_qdq_onnx

VERSIONS = ("10.3", "10.13", "11.4")
GPU = DeviceInfo("NVIDIA A100-SXM4-80GB", (8, 0), platform.machine())
_DTYPES = {"float32": "FLOAT", "float16": "HALF", "int32": "INT32", "int64": "INT64"}


def engine_io(onnx_manifest: dict, *, token_outputs: bool = True, keep_location: str = "HOST") -> list[dict]:
    """The I/O a built engine would report for an ONNX manifest (scaffolding for the fake engine)."""
    keep = (onnx_manifest.get("keep_input") or {}).get("name")
    io = []
    for mode, tensors in (("INPUT", onnx_manifest["inputs"]), ("OUTPUT", onnx_manifest["outputs"])):
        for t in tensors:
            if mode == "OUTPUT" and not token_outputs and t["name"] != "logits":
                continue
            io.append({"name": t["name"], "mode": mode, "dtype": _DTYPES[t["dtype"]],
                       "shape": [d if isinstance(d, int) else -1 for d in t["shape"]],
                       "shape_tensor": t["name"] == keep, "location": keep_location if t["name"] == keep else "DEVICE"})
    return io


@pytest.fixture(params=VERSIONS)
def trt(request, monkeypatch):
    fake = make_fake(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_build, "cuda_device", lambda index=0: GPU)
    return fake


def major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def minor(trt) -> tuple[int, int]:
    return tuple(int(x) for x in trt.__version__.split(".")[:2])


@pytest.fixture(scope="module")
def dynamic_keep_export(tmp_path_factory):
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    folder = tmp_path_factory.mktemp("dk_export")
    export_onnx(load_model(model_name="tiny-deit", keep_ratio=0.7), folder / "dk.onnx", dynamic_keep=True)
    return folder / "dk.onnx"


@pytest.fixture(scope="module")
def qdq_export(tmp_path_factory, tiny_export):
    return make_qdq_onnx(Path(tiny_export.path), tmp_path_factory.mktemp("qdq_export") / "tiny-int8.onnx")


def onnx_of(export) -> Path:
    return Path(export.path)


def run_build(trt, onnx: Path, tmp_path: Path, *, io: list[dict] | None = None, **options):
    manifest = json.loads(manifest_path(onnx).read_text())
    install_engine(trt, io if io is not None else engine_io(manifest))
    return build_job.run_build(build_job.open_onnx(onnx), BuildOptions(output=tmp_path / "out.engine", force=True, **options))


def flags(trt, method: str) -> list[str]:
    return [call[1][0].name for call in trt.called(f"IBuilderConfig.{method}")]


def no_build_work(trt) -> bool:
    return not trt.called("Builder.__init__") and not trt.called("Builder.build_serialized_network")


# -- build_engine per precision ----------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
def test_build_each_precision(trt, tiny_export, tmp_path, precision):
    onnx = onnx_of(tiny_export)
    if precision == "bf16" and major(trt) >= 11:
        with pytest.raises(BadInput, match="bf16"):
            run_build(trt, onnx, tmp_path, precision=precision)
        assert no_build_work(trt)
        return
    result = run_build(trt, onnx, tmp_path, precision=precision)
    assert result.engine_path.is_file() and result.manifest.to_json()["precision"] == precision
    set_flags, cleared = flags(trt, "set_flag"), flags(trt, "clear_flag")
    network_flags = trt.called("Builder.create_network")[0][1]
    if major(trt) == 10:
        assert network_flags == (0,)  # weakly typed
        assert set_flags == {"fp32": [], "tf32": ["TF32"], "fp16": ["FP16"], "bf16": ["BF16"]}[precision]
    else:
        assert network_flags == ()  # always strongly typed
        assert "FP16" not in set_flags and result.manifest.to_json()["builder"]["fp16_graph"] == (precision == "fp16")
    assert cleared == ([] if precision == "tf32" else ["TF32"])
    assert trt.called("OnnxParser.parse_from_file")
    assert [c[1][0] for c in trt.called("IOptimizationProfile.set_shape")] == ["images"]
    assert result.manifest.to_json()["io"] and result.manifest.to_json()["inputs"][0]["name"] == "images"


def test_strongly_typed_on_10(trt, tiny_export, tmp_path):
    result = run_build(trt, onnx_of(tiny_export), tmp_path, precision="fp16", strongly_typed=True)
    (args,) = [c[1] for c in trt.called("Builder.create_network")]
    if major(trt) == 10:
        assert args == (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),)
    else:
        assert args == ()
    assert "FP16" not in flags(trt, "set_flag") and result.manifest.to_json()["tensorrt"]["strongly_typed"]


def test_version_compatible(trt, tiny_export, tmp_path):
    result = run_build(trt, onnx_of(tiny_export), tmp_path, version_compatible=True)
    assert "VERSION_COMPATIBLE" in flags(trt, "set_flag")
    sets = [i for i, c in enumerate(trt.calls) if c[0] == "Runtime.engine_host_code_allowed="]
    deserialize = [i for i, c in enumerate(trt.calls) if c[0] == "Runtime.deserialize_cuda_engine"]
    assert sets and deserialize and sets[0] < deserialize[0]
    assert result.manifest.to_json()["builder"]["version_compatible"] and not result.warnings


@pytest.mark.parametrize("level", ["none", "ampere+", "same-cc"])
def test_hardware_compat_levels(trt, tiny_export, tmp_path, level):
    if level == "same-cc" and minor(trt) < (10, 9):
        with pytest.raises(DvitError, match=r"same-cc needs TensorRT >= 10\.9.*10\.3"):
            run_build(trt, onnx_of(tiny_export), tmp_path, hardware_compat=level)
        assert no_build_work(trt)
        return
    run_build(trt, onnx_of(tiny_export), tmp_path, hardware_compat=level)
    (value,) = [c[1][0] for c in trt.called("IBuilderConfig.hardware_compatibility_level=")]
    assert value.name == plans.HARDWARE_COMPAT_LEVELS[level]


def test_timing_cache_round_trip(trt, tiny_export, tmp_path):
    cache = tmp_path / "timing.cache"
    result = run_build(trt, onnx_of(tiny_export), tmp_path, timing_cache=cache)
    assert [c[1][0] for c in trt.called("IBuilderConfig.create_timing_cache")] == [b""]
    assert trt.called("IBuilderConfig.set_timing_cache") and not result.warnings
    assert cache.read_bytes() == b"fake ITimingCache.serialize"  # scaffolding payload, written back


def test_dynamic_keep_shape_tensor_profile(trt, dynamic_keep_export, tmp_path):
    result = run_build(trt, dynamic_keep_export, tmp_path, keep_range=(0.5, 0.9))
    (call,) = trt.called("IOptimizationProfile.set_shape_input")
    assert call[1] == ("keep_counts", (98, 49, 24), (137, 96, 67), (176, 158, 142))
    assert [c[1][0] for c in trt.called("IOptimizationProfile.set_shape")] == ["images"]
    keep = next(t for t in result.manifest.to_json()["io"] if t["name"] == "keep_counts")
    assert keep["shape_tensor"] and keep["location"] == "host" and keep["dtype"] == "int32"


def test_int8_qdq_build(trt, qdq_export, tmp_path):
    result = run_build(trt, qdq_export, tmp_path, precision="int8")
    set_flags = flags(trt, "set_flag")
    if major(trt) == 10:
        assert set_flags == ["INT8"] and trt.called("Builder.create_network")[0][1] == (0,)
    else:
        assert set_flags == [] and trt.called("Builder.create_network")[0][1] == ()
    assert result.manifest.to_json()["precision"] == "int8" and result.manifest.to_json()["quantization"]["format"] == "QDQ"
    assert plans.make_plan(open_artifact(qdq_export), BuildOptions(precision="int8"),
                           trt_version=trt.__version__, gpu_name=GPU.name).engine_name.endswith("-a100sxm480gb-int8.engine")


def test_int8_with_fp16_fallback_is_a_tensorrt_10_option(trt, qdq_export, tmp_path):
    if major(trt) >= 11:
        with pytest.raises(BadInput, match="TensorRT 11"):
            run_build(trt, qdq_export, tmp_path, precision="int8", int8_fp16=True)
        assert no_build_work(trt)
    else:
        run_build(trt, qdq_export, tmp_path, precision="int8", int8_fp16=True)
        assert flags(trt, "set_flag") == ["INT8", "FP16"]


def test_int8_without_qdq_nodes_is_refused_before_build(trt, tiny_export, tmp_path):
    with pytest.raises(BadInput, match="QuantizeLinear/DequantizeLinear"):
        run_build(trt, onnx_of(tiny_export), tmp_path, precision="int8")
    assert no_build_work(trt)


def test_missing_builder_flag_is_one_dvit_error_before_build_work(trt, tiny_export, tmp_path):
    """A plan asking for a flag this TensorRT lacks (BuilderFlag.FP16 on 11) never reaches getattr."""
    manifest = json.loads(manifest_path(onnx_of(tiny_export)).read_text())
    plan = plans.make_plan(Artifact.of(onnx_of(tiny_export), manifest), trt_version=trt.__version__,
                           gpu_name=GPU.name)
    import dataclasses

    plan = dataclasses.replace(plan, builder_flags=("FP16", "INT8"))
    if major(trt) >= 11:
        with pytest.raises(DvitError, match=f"TensorRT {trt.__version__} has no BuilderFlag.FP16"):
            trt_build.build_engine(plan, onnx_of(tiny_export))
        assert no_build_work(trt)
    else:
        install_engine(trt, engine_io(manifest))
        trt_build.build_engine(plan, onnx_of(tiny_export))


def test_fp16_on_11_never_touches_the_removed_flag(trt, tiny_export, tmp_path):
    run_build(trt, onnx_of(tiny_export), tmp_path, precision="fp16")
    if major(trt) >= 11:
        with pytest.raises(AttributeError):
            trt.BuilderFlag.FP16  # noqa: B018 -- the fake refuses it as the real 11.x module does
        assert "FP16" not in flags(trt, "set_flag")


# -- defect 1: engine written before inspection; host code allowed; inspection failures are warnings ----------


def test_defect1_version_compatible_engine_is_written_and_inspected(trt, tiny_export, tmp_path):
    engine_path = tmp_path / "out.engine"

    def deserialize(runtime, blob):
        # Documented TensorRT behaviour the scenario needs: a version-compatible engine carries host
        # code and is refused (None) unless Runtime.engine_host_code_allowed was set.
        assert engine_path.is_file() and engine_path.read_bytes() == bytes(blob), "engine not written first"
        allowed = runtime._state.get("props", {}).get("engine_host_code_allowed", False)
        return trt.new("ICudaEngine") if allowed else None

    trt.behave("Runtime.deserialize_cuda_engine", deserialize)
    result = run_build(trt, onnx_of(tiny_export), tmp_path, version_compatible=True)
    assert result.engine_path == engine_path and engine_path.is_file()
    assert result.manifest.to_json()["io"] and not result.warnings


def test_defect1_inspection_failure_is_a_warning_and_the_engine_stays(trt, tiny_export, tmp_path):
    trt.behave("Runtime.deserialize_cuda_engine", lambda runtime, blob: None)
    result = run_build(trt, onnx_of(tiny_export), tmp_path)
    assert result.engine_path.is_file() and result.manifest_path.is_file()
    assert any("could not be inspected" in w for w in result.warnings)
    assert result.manifest.to_json()["warnings"] == result.warnings
    assert result.manifest.to_json()["inputs"][0]["name"] == "images"  # I/O from the ONNX manifest instead


def test_defect1_inspector_error_is_a_warning(trt, tiny_export, tmp_path):
    def boom(inspector, fmt):
        raise RuntimeError("inspector exploded")

    trt.behave("EngineInspector.get_engine_information", boom)
    result = run_build(trt, onnx_of(tiny_export), tmp_path)
    assert result.engine_path.is_file() and result.manifest.to_json()["inspector"] is None
    assert any("inspector" in w for w in result.warnings)


# -- defect 3: timing cache return values ----------------------------------------------------------------------


def test_defect3_corrupt_timing_cache_gives_a_warning_and_a_fresh_cache(trt, tiny_export, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"garbage")
    trt.behave("IBuilderConfig.create_timing_cache",
               lambda config, blob: None if bytes(blob) else trt.new("ITimingCache"))
    result = run_build(trt, onnx_of(tiny_export), tmp_path, timing_cache=cache)
    assert all(c[1][0] is not None for c in trt.called("IBuilderConfig.set_timing_cache")), "None cache attached"
    assert [bytes(c[1][0]) for c in trt.called("IBuilderConfig.create_timing_cache")] == [b"garbage", b""]
    assert result.engine_path.is_file()
    assert any("timing cache" in w and "fresh" in w for w in result.warnings)
    assert cache.read_bytes() == b"fake ITimingCache.serialize"


def test_defect3_foreign_timing_cache_rejected_by_set_timing_cache(trt, tiny_export, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from another GPU")
    answers = iter([False, True])
    trt.behave("IBuilderConfig.set_timing_cache", lambda config, c, ignore_mismatch: next(answers))
    result = run_build(trt, onnx_of(tiny_export), tmp_path, timing_cache=cache)
    assert len(trt.called("IBuilderConfig.set_timing_cache")) == 2, "a refused cache must be replaced by a fresh one"
    assert result.engine_path.is_file()
    assert any("timing cache" in w and "fresh" in w for w in result.warnings)


def test_defect3_no_timing_cache_after_build_keeps_the_engine(trt, tiny_export, tmp_path):
    cache = tmp_path / "timing.cache"
    trt.behave("IBuilderConfig.get_timing_cache", lambda config: None)
    result = run_build(trt, onnx_of(tiny_export), tmp_path, timing_cache=cache)
    assert result.engine_path.is_file() and result.manifest_path.is_file()
    assert any("timing cache" in w for w in result.warnings) and not cache.exists()


# -- describe-IO and the runner ---------------------------------------------------------------------------------


def test_describe_io(trt, dynamic_keep_export):
    install_engine(trt, engine_io(json.loads(manifest_path(dynamic_keep_export).read_text())))
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(b"x")
    io = trt_build.describe_io(trt, engine)
    assert [(t["name"], t["mode"], t["dtype"], t["shape"], t["shape_tensor"], t["location"]) for t in io] == [
        ("images", "input", "float", [-1, 3, 224, 224], False, "device"),
        ("keep_counts", "input", "int32", [3], True, "host"),
        ("logits", "output", "float", [-1, 10], False, "device")]


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_runner_load_bind_run(trt, tiny_export, tmp_path, monkeypatch, cuda_graph):
    from dvit_deploy.runtime.trt_runner import TensorRTRunner

    fake_cuda.install(monkeypatch, name=GPU.name, cc=GPU.compute_capability)
    onnx = onnx_of(tiny_export)
    io = engine_io(json.loads(manifest_path(onnx).read_text()), token_outputs=False)
    result = run_build(trt, onnx, tmp_path, io=io)
    trt.calls.clear()
    images = np.zeros((2, 3, 224, 224), np.float32)
    with TensorRTRunner(Artifact.of(result.engine_path, result.manifest), device="cuda", cuda_graph=cuda_graph) as runner:
        out = runner.run(images)
        assert out.logits.shape == (2, 10)
        assert [c[1] for c in trt.called("IExecutionContext.set_input_shape")] == [("images", (2, 3, 224, 224))]
        assert {c[1][0] for c in trt.called("IExecutionContext.set_tensor_address")} == {"images", "logits"}
        assert len(trt.called("IExecutionContext.execute_async_v3")) == (2 if cuda_graph else 1)
        runner.run(images)  # same shape: a captured graph is replayed, no new TensorRT call
        assert len(trt.called("IExecutionContext.execute_async_v3")) == (2 if cuda_graph else 2)
        if cuda_graph:
            assert fake_cuda.FakeGraph.instances[0].replays == 1
        assert [i.name for i in runner.inputs] == ["images"] and runner.outputs[0].shape == ("dynamic", 10)


@pytest.mark.parametrize("location", ["HOST", "DEVICE"])
def test_runner_binds_inputs_where_the_engine_says(trt, dynamic_keep_export, tmp_path, monkeypatch, location):
    """Defect 8: host vs device memory for non-image inputs comes from get_tensor_location."""
    from dvit_deploy.runtime.trt_runner import TensorRTRunner

    fake_cuda.install(monkeypatch, name=GPU.name, cc=GPU.compute_capability)
    io = engine_io(json.loads(manifest_path(dynamic_keep_export).read_text()), keep_location=location)
    result = run_build(trt, dynamic_keep_export, tmp_path, io=io)
    trt.calls.clear()
    with TensorRTRunner(Artifact.of(result.engine_path, result.manifest), device="cuda", keep_ratio=0.8) as runner:
        runner.run(np.zeros((1, 3, 224, 224), np.float32))
        assert trt.called("ICudaEngine.get_tensor_location")
        (address,) = [c[1][1] for c in trt.called("IExecutionContext.set_tensor_address") if c[1][0] == "keep_counts"]
        host = runner._host_inputs.get("keep_counts")
        device = runner._device_inputs.get("keep_counts")
        if location == "HOST":
            assert host is not None and address == host.ctypes.data and host.tolist() == [156, 125, 100]
        else:
            assert device is not None and address == device.data_ptr() and device.tolist() == [156, 125, 100]


def test_fake_refuses_unknown_names_arguments_and_read_only_sets(trt):
    """The fake is strict in the ways the conformance claim relies on."""
    config = trt.Builder(trt.Logger()).create_builder_config()
    with pytest.raises(AttributeError):
        config.no_such_method()
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_timing_cache(trt.new("ITimingCache"))  # ignore_mismatch has no default
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_flag("FP16")
    with pytest.raises(AttributeError):
        config.num_optimization_profiles = 3  # read-only
    with pytest.raises(TypeError):
        config.builder_optimization_level = "high"
    with pytest.raises(AttributeError):
        trt.HardwareCompatibilityLevel.NO_SUCH_LEVEL  # noqa: B018
    with pytest.raises(TypeError, match="No constructor"):
        trt.IBuilderConfig()
    with pytest.raises(FakeAPIError):
        trt.behave("IBuilderConfig.no_such_method", lambda self: None)
    assert (minor(trt) >= (10, 9)) == hasattr(trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY")
    assert (major(trt) == 10) == hasattr(trt.BuilderFlag, "FP16")


def test_parser_rejection_reports_the_parser_errors(trt, tiny_export, tmp_path):
    from dvit_deploy.helpers.errors import CheckFailed

    trt.behave("OnnxParser.parse_from_file", lambda parser, path: False)
    trt.behave("OnnxParser.num_errors", lambda parser: 2)
    trt.behave("ParserError.desc", lambda error: "unsupported node")
    trt.behave("ParserError.code", lambda error: trt.ErrorCode.UNSUPPORTED_NODE)
    trt.behave("ParserError.node", lambda error: 7)
    with pytest.raises(CheckFailed, match=r"rejected .*: node 7\b.*: unsupported node; node 7\b.*: unsupported node"):
        run_build(trt, onnx_of(tiny_export), tmp_path, verbose=True)
    assert [c[1] for c in trt.called("Logger.__init__")] == [(trt.Logger.VERBOSE,)]
    assert not trt.called("Builder.build_serialized_network") and not (tmp_path / "out.engine").exists()


def test_runner_refuses_a_buffer_tensorrt_rejects(trt, tiny_export, tmp_path, monkeypatch):
    from dvit_deploy.runtime.trt_runner import TensorRTRunner

    fake_cuda.install(monkeypatch, name=GPU.name, cc=GPU.compute_capability)
    onnx = onnx_of(tiny_export)
    result = run_build(trt, onnx, tmp_path, io=engine_io(json.loads(manifest_path(onnx).read_text()),
                                                         token_outputs=False))
    trt.behave("IExecutionContext.set_tensor_address", lambda context, name, address: name != "logits")
    with TensorRTRunner(Artifact.of(result.engine_path, result.manifest), device="cuda") as runner:
        with pytest.raises(DvitError, match="refused the buffer for 'logits'"):
            runner.run(np.zeros((1, 3, 224, 224), np.float32))
        assert not trt.called("IExecutionContext.execute_async_v3")


# -- TensorRT-RTX: the same builder and runner through the real tensorrt_rtx 1.7 API surface ----------------

RTX_GPU = ("NVIDIA GeForce RTX 4090", (8, 9))


@pytest.fixture
def rtx(monkeypatch):
    fake = make_fake("rtx-1.7")
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", fake)
    monkeypatch.setattr(trt_build, "cuda_device", lambda index=0: pytest.fail("a TensorRT-RTX build asked for a GPU"))
    return fake


@pytest.mark.rtx
def test_rtx_snapshot_is_the_installed_module():
    """The recorded tensorrt_rtx surface is the real module's ([dev] installs tensorrt-rtx), so the fake
    below is NVIDIA's API, and a new tensorrt-rtx release that changes it fails here first."""
    import tensorrt_rtx

    sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
    try:
        from tensorrt_api_snapshot import snapshot
    finally:
        sys.path.pop(0)
    recorded = json.loads((Path(__file__).parent / "data" / "tensorrt-api-rtx-1.7.json").read_text())
    live = json.loads(json.dumps(snapshot(tensorrt_rtx), sort_keys=True))
    assert live["version"] == recorded["version"] and live["module"] == "tensorrt_rtx"
    assert live == recorded


def test_rtx_build_calls(rtx, tiny_export, tmp_path):
    onnx = onnx_of(tiny_export)
    result = build_job.run_build(build_job.open_onnx(onnx), BuildOptions(target="rtx", output=tmp_path / "out.engine", force=True,
                                                  compute_capabilities=["8.6", "8.9"]))
    assert [c[1] for c in rtx.called("Builder.create_network")] == [()]  # strongly typed, no flags
    assert flags(rtx, "set_flag") == [] and flags(rtx, "clear_flag") == ["TF32"]
    assert [c[1][0] for c in rtx.called("IBuilderConfig.num_compute_capabilities=")] == [2]
    assert [(c[1][0].name, c[1][1]) for c in rtx.called("IBuilderConfig.set_compute_capability")] == [
        ("SM86", 0), ("SM89", 1)]
    assert not rtx.called("IBuilderConfig.hardware_compatibility_level=")  # "unsupported in TensorRT-RTX"
    assert not rtx.called("IBuilderConfig.create_timing_cache") and not rtx.called("Runtime.deserialize_cuda_engine")
    assert result.manifest.to_json()["rtx"]["compute_capabilities"] == ["8.6", "8.9"]
    assert result.manifest.to_json()["inputs"][0]["name"] == "images"  # the fake network has no I/O: the ONNX's


def test_rtx_refused_compute_capability_is_one_error(rtx, tiny_export, tmp_path):
    rtx.behave("IBuilderConfig.set_compute_capability", lambda config, cc, index: False)
    with pytest.raises(DvitError, match="refused compute capability 8.6"):
        build_job.run_build(build_job.open_onnx(onnx_of(tiny_export)), BuildOptions(target="rtx", output=tmp_path / "out.engine",
                                                           compute_capabilities=["8.6"]))
    assert not rtx.called("Builder.build_serialized_network")


def _rtx_engine(rtx, onnx, tmp_path):
    result = build_job.run_build(build_job.open_onnx(onnx), BuildOptions(target="rtx", output=tmp_path / "out.engine", force=True))
    install_engine(rtx, engine_io(json.loads(manifest_path(onnx).read_text()), token_outputs=False))
    rtx.calls.clear()
    return result


def test_rtx_runner_jit_with_runtime_cache(rtx, tiny_export, tmp_path, monkeypatch):
    from dvit_deploy.runtime.trt_runner import TensorRTRunner

    fake_cuda.install(monkeypatch, name=RTX_GPU[0], cc=RTX_GPU[1])
    result = _rtx_engine(rtx, onnx_of(tiny_export), tmp_path)
    cache_file = result.engine_path.with_suffix(".runtime-cache")
    with TensorRTRunner(Artifact.of(result.engine_path, result.manifest), device="cuda") as runner:
        assert runner.run(np.zeros((2, 3, 224, 224), np.float32)).logits.shape == (2, 10)
        assert rtx.called("ICudaEngine.create_runtime_config") and rtx.called("IRuntimeConfig.set_runtime_cache")
        (context_args,) = [c[1] for c in rtx.called("ICudaEngine.create_execution_context")]
        assert type(context_args[0]).__name__ == "IRuntimeConfig"
        assert not rtx.called("IRuntimeCache.deserialize")  # no cache file yet
    assert cache_file.read_bytes() == b"fake IRuntimeCache.serialize"  # saved on close
    rtx.calls.clear()
    with TensorRTRunner(Artifact.of(result.engine_path, result.manifest), device="cuda"):
        assert [bytes(c[1][0]) for c in rtx.called("IRuntimeCache.deserialize")] == [b"fake IRuntimeCache.serialize"]


@pytest.mark.parametrize("cc, match", [((9, 0), "no target for it"), ((8, 6), "rebuild with --compute-capability 8.6")])
def test_rtx_runner_refuses_a_gpu_the_engine_was_not_built_for(rtx, tiny_export, tmp_path, monkeypatch, cc, match):
    from dvit_deploy.runtime.trt_runner import TensorRTRunner

    fake_cuda.install(monkeypatch, name="NVIDIA H100", cc=cc)
    result = build_job.run_build(build_job.open_onnx(onnx_of(tiny_export)), BuildOptions(target="rtx", output=tmp_path / "o.engine", force=True,
                                                                compute_capabilities=["8.9", "12.0"]))
    with pytest.raises(BadInput, match=match):
        TensorRTRunner(Artifact.of(result.engine_path, result.manifest), device="cuda").load()
    assert not rtx.called("Runtime.deserialize_cuda_engine")
