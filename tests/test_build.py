"""dvit build: plans, profiles, manifests and compatibility (no TensorRT needed), and the exit-2 path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dvit_deploy.helpers.fileio import manifest_path
from dvit_deploy.artifact.manifest import EngineManifest, OnnxManifest
from dvit_deploy.artifact.store import Artifact
from dvit_deploy.cli import app
from dvit_deploy.engines.build_plan import (
    BuildOptions,
    BuildRecord,
    DeviceInfo,
    compatibility_problem,
    engine_manifest,
    gpu_tag,
    keep_count_range,
    make_plan,
    make_profiles,
    precision_strategy,
)
from dvit_deploy.engines.build import check_timing_cache, resolve_precision
from dvit_deploy.helpers.errors import BadInput

runner = CliRunner()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
DYNAMIC = {"inputs": [{"name": "images", "shape": ["batch", 3, 224, 224]}], "dynamic_keep": True,
           "keep_input": {"name": "keep_counts", "dtype": "int32", "shape": [3]}, "keep_ratio": 0.7,
           "pruning_locations": [3, 6, 9], "num_patches": 196}


def _onnx(data: dict) -> OnnxManifest:
    return OnnxManifest.from_json(data)


def _plan(path: str, data: dict, *, trt_version: str, gpu_name: str, **options):
    return make_plan(Artifact.of(path, data), BuildOptions(**options), trt_version=trt_version, gpu_name=gpu_name)


def test_precision_strategy_per_tensorrt_major():
    s = precision_strategy("fp16", 10)
    assert (s.strongly_typed, s.set_flags, s.cleared_flags, s.fp16_graph) == (False, ("FP16",), ("TF32",), False)
    s = precision_strategy("fp16", 11)
    assert (s.strongly_typed, s.set_flags, s.fp16_graph) == (True, (), True)  # no FP16 flag on 11
    s = precision_strategy("fp16", 10, strongly_typed=True)
    assert s.strongly_typed and s.fp16_graph and s.set_flags == ()
    assert precision_strategy("bf16", 10).set_flags == ("BF16",)
    assert precision_strategy("tf32", 11).set_flags == ("TF32",)
    assert precision_strategy("fp32", 10).cleared_flags == ("TF32",)
    with pytest.raises(BadInput, match="bf16"):
        precision_strategy("bf16", 11)
    with pytest.raises(BadInput, match="TensorRT 8"):
        precision_strategy("fp16", 8)


def test_profiles_default_and_fixed_batch():
    (images,) = make_profiles(_onnx({"inputs": [{"name": "images", "shape": ["batch", 3, 224, 224]}]}))
    assert (images.min, images.opt, images.max) == ((1, 3, 224, 224), (32, 3, 224, 224), (64, 3, 224, 224))
    (images,) = make_profiles(_onnx({"inputs": [{"name": "images", "shape": ["batch", 3, 224, 224]}]}),
                              min_batch=2, opt_batch=8, max_batch=16)
    assert images.opt == (8, 3, 224, 224)
    (fixed,) = make_profiles(_onnx({"inputs": [{"name": "images", "shape": [4, 3, 224, 224]}]}))
    assert fixed.min == fixed.max == (4, 3, 224, 224)
    with pytest.raises(BadInput, match="fixed batch of 4"):
        make_profiles(_onnx({"inputs": [{"name": "images", "shape": [4, 3, 224, 224]}]}), max_batch=8)
    with pytest.raises(BadInput, match="1 <= min <= opt <= max"):
        make_profiles(_onnx({"inputs": [{"name": "images", "shape": ["batch", 3, 224, 224]}]}), min_batch=8, max_batch=4)


def test_keep_counts_profile_from_a_ratio_range():
    images, keep = make_profiles(_onnx(DYNAMIC), keep_range=(0.5, 0.9))
    assert keep.kind == "values" and keep.name == "keep_counts"
    assert keep.min == (98, 49, 24) and keep.opt == (137, 96, 67) and keep.max == (176, 158, 142)
    assert keep_count_range(None, 0.95, 3, 196)[1] == (176, 158, 142)  # opt clamped into the default range
    with pytest.raises(BadInput, match="--keep-range needs an ONNX exported with --dynamic-keep"):
        make_profiles(_onnx({"inputs": DYNAMIC["inputs"]}), keep_range=(0.5, 0.9))
    with pytest.raises(BadInput, match="0 < low <= high <= 1"):
        keep_count_range((0.9, 0.5), 0.7, 3, 196)


def test_plan_names_and_validation():
    plan = _plan("export/deit-s-r0.7.onnx", DYNAMIC, trt_version="11.0.0.12", gpu_name="NVIDIA H100 80GB HBM3",
                     precision="fp16", hardware_compat="ampere+", version_compatible=True, timing_cache="t.cache")
    assert plan.engine_name == "deit-s-r0.7-h10080gbhbm3-fp16.engine"
    assert plan.trt_major == 11 and plan.strongly_typed and plan.fp16_graph
    assert "VERSION_COMPATIBLE" in plan.builder_flags and plan.workspace_bytes == 4096 << 20
    assert [p.name for p in plan.profiles] == ["images", "keep_counts"]
    assert gpu_tag("Orin (nvgpu)") == "orin" and gpu_tag("NVIDIA GeForce RTX 4090") == "rtx4090"
    with pytest.raises(BadInput, match="--hardware-compat"):
        _plan("a.onnx", DYNAMIC, trt_version="10.3.0", gpu_name="x", hardware_compat="turing+")
    with pytest.raises(BadInput, match="--opt-level"):
        _plan("a.onnx", DYNAMIC, trt_version="10.3.0", gpu_name="x", optimization_level=9)


def _manifest(trt="10.3.0", cc=(8, 7), compat="none", version_compatible=False, gpu="Orin", platform="aarch64"):
    """A typed engine manifest, as dvit build makes it (no TensorRT needed)."""
    plan = _plan("m.onnx", DYNAMIC, trt_version=trt, gpu_name=gpu, precision="fp16",
                 hardware_compat=compat, version_compatible=version_compatible)
    source = Artifact.of("m.onnx", {**DYNAMIC, "variant": "deit-s", "keep_counts": [137, 96, 67]})
    return engine_manifest(plan, source, BuildRecord(engine_path=Path("engines/m.engine"), engine_sha256="ab", engine_bytes=3,
                           onnx_sha256="cd", built_from=Path("m.onnx"), trt_version=trt,
                           device=DeviceInfo(gpu, cc, platform), io_tensors=[], build_seconds=1.0, inspector_file=None,
                           doctor=None))


def test_engine_manifest_records_what_was_built():
    typed = _manifest()
    assert isinstance(typed, EngineManifest)
    m = typed.to_json()
    assert m["tensorrt"] == {"version": "10.3.0", "major": 10, "strongly_typed": False, "flavour": "tensorrt",
                             "product": "TensorRT", "module": "tensorrt"}
    assert "rtx" not in m
    assert m["gpu"] == {"name": "Orin", "compute_capability": [8, 7], "platform": "aarch64"}
    assert m["builder"]["flags"] == ["FP16"] and m["builder"]["profiling_verbosity"] == "DETAILED"
    assert m["engine"]["sha256"] == "ab" and m["source_onnx"]["sha256"] == "cd"
    assert m["source_onnx"]["manifest"].endswith("m.onnx.json")
    assert m["keep_counts"] == [137, 96, 67] and m["dynamic_keep"] is True
    assert m["schema"] == EngineManifest.SCHEMA and m["kind"] == "tensorrt-engine" and m["artifact"] == "m.engine"
    # The typed fields read back what the JSON says.
    back = EngineManifest.from_json(json.loads(json.dumps(m)))
    assert (back.tensorrt, back.trt_major, back.flavour, back.gpu, back.compute_capability, back.platform) == \
        ("10.3.0", 10, "tensorrt", "Orin", "8.7", "aarch64")
    assert back.product == "TensorRT" and not back.strongly_typed and back.bytes == 3 and back.sha256 == "ab"
    assert [p.name for p in back.profiles] == ["images", "keep_counts"] and back.model == typed.model


def test_engine_manifest_keeps_the_export_batch():
    plan = _plan("m.onnx", {"inputs": [{"name": "images", "shape": [1, 3, 224, 224]}]}, trt_version="10.3.0",
                 gpu_name="Orin")
    source = Artifact.of("m.onnx", {"variant": "deit-s", "batch": 1, "dynamic_batch": False})
    m = engine_manifest(plan, source, BuildRecord(engine_path=Path("engines/m.engine"), engine_sha256="ab", engine_bytes=3,
                        onnx_sha256="cd", built_from=Path("m.onnx"), trt_version="10.3.0",
                        device=DeviceInfo("Orin", (8, 7)), io_tensors=[], build_seconds=1.0, inspector_file=None,
                        doctor=None)).to_json()
    assert m["batch"] == 1 and m["dynamic_batch"] is False


def test_engine_manifest_keeps_a_linear_keep_schedule():
    """A ConvNeXt/Swin export's linear keep schedule reaches the engine (it used to read back as geometric)."""
    record = {"variant": "convnext-t", "config": {"family": "convnext"}, "keep_schedule": "linear",
              "keep_ratio": 0.7, "keep_counts": [40, 30, 20], "num_patches": 49, "stage_ratios": [0.9, 0.8, 0.7],
              "inputs": [{"name": "images", "shape": ["batch", 3, 224, 224]}], "dynamic_keep": False}
    source = Artifact.of("convnext-t-r0.7.onnx", record)
    assert source.model.keep_schedule == "linear"
    plan = make_plan(source, BuildOptions(), trt_version="10.13.3.9", gpu_name="NVIDIA A10")
    engine = engine_manifest(plan, source, BuildRecord(engine_path=Path("engines/c.engine"), engine_sha256="ab", engine_bytes=3,
                             onnx_sha256="cd", built_from=source.path, trt_version="10.13.3.9",
                             device=DeviceInfo("NVIDIA A10", (8, 6), "x86_64"), io_tensors=[], build_seconds=1.0,
                             inspector_file=None, doctor=None))
    written = engine.to_json()
    assert written["keep_schedule"] == "linear" and written["keep_counts"] == [40, 30, 20]
    back = Artifact.of("engines/c.engine", json.loads(json.dumps(written)))
    assert back.model.keep_schedule == "linear" and back.model == source.model
    assert [t.name for t in back.manifest.inputs] == ["images"]  # not inspected: the ONNX's I/O


def test_version_compatible_engines_run_on_the_same_or_later_minor_only():
    here = DeviceInfo("Orin", (8, 7))
    built_10_7 = _manifest(trt="10.7.0", version_compatible=True)
    assert compatibility_problem(built_10_7, trt_version="10.7.0", device=here) is None
    assert compatibility_problem(built_10_7, trt_version="10.9.1", device=here) is None
    msg = compatibility_problem(built_10_7, trt_version="10.3.0", device=here)
    assert "built with TensorRT 10.7.0" in msg and "10.3.0" in msg and "\n" not in msg
    assert compatibility_problem(built_10_7, trt_version="10.7.0.23", device=here) is None


def test_converted_fp16_onnx_builds_as_fp16_without_reconverting():
    assert resolve_precision(_onnx({"precision": "fp32"}), "fp32") == ("fp32", False)
    assert resolve_precision(_onnx({}), "tf32") == ("tf32", False)
    assert resolve_precision(_onnx({"precision": "fp16"}), "fp32") == ("fp16", True)
    assert resolve_precision(_onnx({"precision": "fp16"}), "fp16") == ("fp16", True)
    with pytest.raises(BadInput, match="already an fp16 mixed-precision graph"):
        resolve_precision(_onnx({"precision": "fp16"}), "bf16")


def test_timing_cache_path_checked_before_anything_runs(tiny_export, workdir):
    (workdir / "caches").mkdir()
    with pytest.raises(BadInput, match="is a directory"):
        check_timing_cache(workdir / "caches")
    assert check_timing_cache(workdir / "caches" / "t.cache") == workdir / "caches" / "t.cache"
    result = runner.invoke(app, ["build", str(tiny_export.path), "--timing-cache", "missing/t.cache"])
    assert result.exit_code == 2
    assert "--timing-cache missing/t.cache: folder missing does not exist" in result.output
    assert "readiness check" not in result.output and "Traceback" not in result.output
    assert not (workdir / "engines").exists()


def test_compatibility_decisions():
    here = DeviceInfo("Orin", (8, 7))
    assert compatibility_problem(_manifest(), trt_version="10.3.0", device=here) is None
    msg = compatibility_problem(_manifest(), trt_version="10.7.0", device=here)
    assert "built with TensorRT 10.3.0" in msg and "10.7.0" in msg and "\n" not in msg
    assert compatibility_problem(_manifest(version_compatible=True), trt_version="10.7.0", device=here) is None
    assert "11.0" in compatibility_problem(_manifest(version_compatible=True), trt_version="11.0.0", device=here)
    other = DeviceInfo("NVIDIA A100", (8, 0))
    assert "rebuild it here" in compatibility_problem(_manifest(), trt_version="10.3.0", device=other)
    assert compatibility_problem(_manifest(compat="ampere+"), trt_version="10.3.0", device=other) is None
    turing = DeviceInfo("Tesla T4", (7, 5))
    assert "Ampere or newer" in compatibility_problem(_manifest(compat="ampere+"), trt_version="10.3.0", device=turing)


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown when TensorRT is not installed")
def test_build_without_tensorrt_runs_doctor_then_exits_2(tiny_export, workdir):
    result = runner.invoke(app, ["build", str(tiny_export.path), "--fp16"])
    assert result.exit_code == 2
    assert 'tensorrt\', which is not installed: pip install "dvit-deploy[tensorrt]"' in result.output
    assert "readiness check" in result.output  # doctor ran first
    assert "Traceback" not in result.output
    assert not (workdir / "engines").exists()


def test_build_target_rtx_without_tensorrt_rtx_exits_2(tiny_export, workdir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)  # import raises ImportError, as when not installed
    result = runner.invoke(app, ["build", str(tiny_export.path), "--target", "rtx"])
    assert result.exit_code == 2, result.output
    assert 'pip install "dvit-deploy[rtx]"' in result.output and "readiness check" in result.output
    assert "Traceback" not in result.output and not (workdir / "engines").exists()


def test_build_uses_newest_export_and_stops_on_blockers(workdir):
    result = runner.invoke(app, ["build", "--fp16"])
    assert result.exit_code == 2 and "run 'dvit export' first" in result.output
    import onnx
    from onnx import TensorProto, helper

    (workdir / "export").mkdir()
    bad = helper.make_model(helper.make_graph([helper.make_node("Unique", ["x"], ["y"])], "g",
                                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
                            opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(bad, str(workdir / "export" / "bad.onnx"))
    manifest_path(workdir / "export" / "bad.onnx").write_text(json.dumps({"inputs": [{"name": "x", "shape": [4]}]}))
    result = runner.invoke(app, ["build", "--fp16", "--json"])
    assert result.exit_code == 1
    assert "Unique" in result.output and "blocker" in result.output


def test_conflicting_precisions_exit_2(tiny_export, workdir):
    result = runner.invoke(app, ["build", str(tiny_export.path), "--fp16", "--bf16"])
    assert result.exit_code == 2 and "choose one of" in result.output


@pytest.mark.tensorrt
def test_real_build_and_run(tiny_export, workdir):
    pytest.importorskip("tensorrt", reason="needs TensorRT (pip install \"dvit-deploy[tensorrt]\") and a GPU")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    result = runner.invoke(app, ["build", str(tiny_export.path), "--fp16", "--max-batch", "8", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    engine = Path(report["engine"])
    assert engine.is_file() and manifest_path(engine).is_file()
    from dvit_deploy.artifact.store import Artifact
    from dvit_deploy.runtime.trt_runner import TensorRTRunner
    from dvit_deploy.helpers.compare import Tolerance, compare
    from dvit_deploy.export.check import reference_outputs, seeded_images
    from dvit_deploy.models.checkpoint import load_model_from_record

    manifest = json.loads(manifest_path(engine).read_text())
    loaded = load_model_from_record(manifest)
    images = seeded_images(4, loaded)
    ref = reference_outputs(loaded, images, 2)
    with TensorRTRunner(Artifact.of(engine, manifest), device="cuda", precision="fp16") as trt_runner:
        out = trt_runner.run(images.numpy())
    cmp = compare(ref.logits, out.logits, Tolerance.for_precision("fp16"), ref_kept=ref.kept,
                  test_kept=out.kept, ref_margins=ref.margins)
    assert cmp.passed, cmp.failures


def test_defect7_doctor_target_from_major_minor():
    """An installed TensorRT 10.3 (JetPack 6) is checked as trt-10.3 (opset <= 20, no Attention), not trt-10."""
    from dvit_deploy.engines.build import doctor_target_for

    assert doctor_target_for("10.3.0", None) == "trt-10.3"
    assert doctor_target_for("10.3.0.30", None) == "trt-10.3"
    assert doctor_target_for("10.13.3.9", None) == "trt-10"
    assert doctor_target_for("10.15.1", None) == "trt-10"
    assert doctor_target_for("11.4.0.106", None) == "trt-11"
    assert doctor_target_for(None, None) == "trt-10"
    assert doctor_target_for("10.3.0", "trt-11") == "trt-11"


def test_defect2_same_cc_refused_up_front_before_10_9():
    """HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY appeared in 10.9: the plan refuses it, naming the version."""
    for version in ("10.3.0", "10.8.3"):
        with pytest.raises(BadInput, match=rf"same-cc needs TensorRT >= 10\.9.*TensorRT {version}"):
            _plan("m.onnx", DYNAMIC, trt_version=version, gpu_name="Orin", hardware_compat="same-cc")
    for version in ("10.9.0", "10.13.3.9", "11.4.0.106"):
        plan = _plan("m.onnx", DYNAMIC, trt_version=version, gpu_name="x", hardware_compat="same-cc")
        assert plan.hardware_compat == "same-cc"
    assert _plan("m.onnx", DYNAMIC, trt_version="10.3.0", gpu_name="x", hardware_compat="ampere+")


def test_defect9_compatibility_needs_same_platform_and_same_gpu_model():
    orin = DeviceInfo("Orin (nvgpu)", (8, 7), "aarch64")
    # ampere+ relaxes the GPU, not the platform: an x86 engine does not load on a Jetson.
    x86_ampere = _manifest(compat="ampere+", gpu="NVIDIA A100-SXM4-80GB", cc=(8, 0), platform="x86_64")
    msg = compatibility_problem(x86_ampere, trt_version="10.3.0", device=orin)
    assert msg and "x86_64" in msg and "aarch64" in msg and "\n" not in msg
    assert compatibility_problem(x86_ampere, trt_version="10.3.0",
                                 device=DeviceInfo("NVIDIA L4", (8, 9), "x86_64")) is None
    # none: the same GPU model, not merely the same compute capability (A10 and RTX 3090 are both sm 8.6).
    a10 = _manifest(gpu="NVIDIA A10", cc=(8, 6), platform="x86_64", trt="10.13.3.9")
    rtx = DeviceInfo("NVIDIA GeForce RTX 3090", (8, 6), "x86_64")
    assert "specific to the GPU model" in compatibility_problem(a10, trt_version="10.13.3.9", device=rtx)
    assert compatibility_problem(a10, trt_version="10.13.3.9", device=DeviceInfo("NVIDIA A10", (8, 6), "x86_64")) is None
    # same-cc: any model with that compute capability (TensorRT >= 10.9), same platform.
    a10_same_cc = _manifest(gpu="NVIDIA A10", cc=(8, 6), platform="x86_64", trt="10.13.3.9", compat="same-cc")
    assert compatibility_problem(a10_same_cc, trt_version="10.13.3.9", device=rtx) is None
    # Manifests from before the platform was recorded are judged on the GPU alone.
    old = _manifest(platform=None)
    assert compatibility_problem(old, trt_version="10.3.0", device=DeviceInfo("Orin", (8, 7), "aarch64")) is None


def test_int8_precision_strategy():
    s = precision_strategy("int8", 10)
    assert (s.strongly_typed, s.set_flags, s.fp16_graph) == (False, ("INT8",), False)  # explicit Q/DQ, weakly typed
    assert precision_strategy("int8", 10, fp16_fallback=True).set_flags == ("INT8", "FP16")
    s = precision_strategy("int8", 11)
    assert (s.strongly_typed, s.set_flags) == (True, ())  # the Q/DQ graph is the type information
    assert precision_strategy("int8", 10, strongly_typed=True).set_flags == ()
    with pytest.raises(BadInput, match="TensorRT 10 weakly typed"):
        precision_strategy("int8", 11, fp16_fallback=True)
    with pytest.raises(BadInput, match="int8"):
        precision_strategy("fp16", 10, fp16_fallback=True)


def test_int8_onnx_builds_as_int8():
    assert resolve_precision(_onnx({"precision": "int8"}), "fp32") == ("int8", False)
    assert resolve_precision(_onnx({"precision": "int8"}), "int8") == ("int8", False)
    with pytest.raises(BadInput, match="explicitly quantized"):
        resolve_precision(_onnx({"precision": "int8"}), "fp16")


def test_int8_without_qdq_is_bad_input_before_anything_runs(tiny_export, workdir):
    result = runner.invoke(app, ["build", str(tiny_export.path), "--int8"])
    assert result.exit_code == 2
    assert "QuantizeLinear/DequantizeLinear" in result.output and "readiness check" not in result.output


def test_device_precision_knows_the_rtx_flavour():
    """A device target's engine precision, one rule for TensorRT and TensorRT-RTX targets (bundles' labels)."""
    from dvit_deploy.engines.targets import DEVICE_TARGETS, device_precision

    orin, trt11, rtx = DEVICE_TARGETS["jetson-orin"], DEVICE_TARGETS["x86-trt11"], DEVICE_TARGETS["rtx"]
    fp16 = device_precision(orin, "fp16", quantized=False)
    assert (fp16.built, fp16.strategy.set_flags, fp16.builds_on_device, fp16.label) == ("fp16", ("FP16",), True, "fp16")
    int8 = device_precision(orin, "fp16", quantized=True)
    assert int8.strategy.set_flags == ("INT8", "FP16") and int8.label == "int8 (fp16 outside the Q/DQ pairs)"
    assert device_precision(orin, "fp32", quantized=True).label == "int8"
    strong = device_precision(trt11, "fp16", quantized=False)  # strongly typed: the graph's own precision
    assert strong.built == "fp32" and strong.strategy.strongly_typed and strong.label == "fp32"
    # TensorRT-RTX 1.7 is typed like TensorRT 11 (precision_strategy alone refuses "TensorRT 1.x").
    shipped = device_precision(rtx, "fp16", quantized=False)
    assert shipped.strategy.strongly_typed and not shipped.builds_on_device
    assert shipped.label == "fp32 (no device build: TensorRT-RTX engines ship as built)"
    assert device_precision(rtx, "fp32", quantized=True).label == "int8 (no device build: TensorRT-RTX engines ship as built)"
