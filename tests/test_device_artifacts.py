"""Device artifacts checked against their own schemas: every Triton ``config.pbtxt`` we write parses as
Triton's ``ModelConfig`` (tritonclient's ``model_config_pb2`` + protobuf ``text_format``) and obeys
Triton's batching rule; every trtexec line in ``build_on_device.sh`` uses only options that the target's
trtexec documents (``tests/data/trtexec-flags.json``, from NVIDIA's trtexec sources per release).

This checks syntax and documented options, not that Triton or trtexec then succeed with the model.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dvit_deploy.helpers.fileio import manifest_path, sha256_file
from dvit_deploy.jobs.ship import TARGETS, make_bundle

# Targets whose bundles build on the device with trtexec (and may carry Triton configs); the rtx target
# ships TensorRT-RTX engines as built (tests/test_rtx.py).
TRTEXEC_TARGETS = sorted(name for name, target in TARGETS.items() if target.flavour == "tensorrt")

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient[grpc] is in the dev extra")
from google.protobuf import text_format  # noqa: E402  (installed with tritonclient)

FLAGS = json.loads((Path(__file__).parent / "data" / "trtexec-flags.json").read_text())["targets"]
TARGET_FLAGS = {"jetson-orin": "10.3", "x86-trt10": "10", "x86-trt11": "11"}


def parse_config(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _copy(src: Path, folder: Path, stem: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, folder / f"{stem}.onnx")
    manifest = json.loads(manifest_path(src).read_text())
    manifest["artifact"] = f"{stem}.onnx"
    manifest_path(folder / f"{stem}.onnx").write_text(json.dumps(manifest))
    return folder / f"{stem}.onnx"


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_export):
    """fixed batch, dynamic batch, dynamic keep and int8 Q/DQ exports of the tiny model."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    from .quantized_onnx import make_qdq_onnx

    folder = tmp_path_factory.mktemp("device_models")
    loaded = load_model(model_name="tiny-deit", keep_ratio=0.7)
    export_onnx(loaded, folder / "fixed.onnx", batch=2)
    export_onnx(loaded, folder / "keep.onnx", dynamic_keep=True)
    dynamic = _copy(Path(tiny_export.path), folder, "dynamic")
    return {"fixed": folder / "fixed.onnx", "dynamic": dynamic, "keep": folder / "keep.onnx",
            "int8": make_qdq_onnx(dynamic, folder / "dynamic-int8.onnx")}


def check_triton_rules(config, onnx_manifest: dict) -> None:
    """Triton's rules for what we generate: with max_batch_size 0 every tensor lists its full dims
    (the ONNX rank); with batching, dims leave the batch out and every input has a batch dim."""
    ranks = {t["name"]: len(t["shape"]) for t in onnx_manifest["inputs"] + onnx_manifest["outputs"]}
    for tensor in list(config.input) + list(config.output):
        rank = ranks.get(tensor.name)
        if rank is None:
            continue
        assert len(tensor.dims) == (rank if config.max_batch_size == 0 else rank - 1), tensor
    if config.max_batch_size > 0:
        assert config.HasField("dynamic_batching")
        assert all(isinstance(t["shape"][0], str) for t in onnx_manifest["inputs"])
    else:
        assert not config.HasField("dynamic_batching")


@pytest.mark.parametrize("target", TRTEXEC_TARGETS)
@pytest.mark.parametrize("kind", ["fixed", "dynamic", "keep", "int8"])
def test_every_triton_config_parses_as_model_config(models, tmp_path, target, kind):
    onnx = models[kind]
    manifest = json.loads(manifest_path(onnx).read_text())
    result = make_bundle([onnx], target, output=tmp_path / "b", triton=True, archive=False)
    configs = sorted(result.folder.glob("triton/*/config.pbtxt")) + sorted(result.folder.glob("device/triton/*.pbtxt"))
    assert {c.parent.name for c in configs if c.name == "config.pbtxt"} == set(result.triton_models)
    platforms = set()
    for path in configs:
        config = parse_config(path)
        platforms.add(config.platform)
        check_triton_rules(config, manifest)
        inputs = {t.name: t for t in config.input}
        if kind == "keep":
            assert config.max_batch_size == 0
            assert list(inputs["images"].dims) == [-1, 3, 224, 224]
            assert list(inputs["keep_counts"].dims) == [3]
            assert inputs["keep_counts"].is_shape_tensor == (config.platform == "tensorrt_plan")
        elif kind == "fixed":
            assert config.max_batch_size == 0 and list(inputs["images"].dims) == [2, 3, 224, 224]
        else:
            assert config.max_batch_size > 0 and list(inputs["images"].dims) == [3, 224, 224]
            assert not any(t.is_shape_tensor for t in config.input)
    assert platforms == {"onnxruntime_onnx", "tensorrt_plan"}


def _engine_for(onnx: Path, folder: Path, *, tensorrt: str, io: list[dict], profiles: list[dict]) -> Path:
    """An engine file + manifest in dvit build's layout (config tests only; nothing is built or run)."""
    payload = b"engine bytes for config tests"
    engine = folder / f"{onnx.stem}-gpu-fp32.engine"
    engine.write_bytes(payload)
    onnx_manifest = json.loads(manifest_path(onnx).read_text())
    manifest = {"kind": "tensorrt-engine", "artifact": engine.name, "precision": "fp32",
                "tensorrt": {"version": tensorrt, "major": int(tensorrt.split(".")[0])},
                "gpu": {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": [8, 0], "platform": "x86_64"},
                "engine": {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)},
                "source_onnx": {"path": str(onnx), "sha256": sha256_file(onnx), "manifest": str(manifest_path(onnx))},
                "profiles": profiles, "io": io,
                **{k: onnx_manifest.get(k) for k in ("dynamic_keep", "keep_input", "keep_counts", "batch", "dynamic_batch")}}
    manifest_path(engine).write_text(json.dumps(manifest))
    return engine


@pytest.mark.parametrize("target,tensorrt", [("x86-trt10", "10.13.3.9"), ("x86-trt11", "11.4.0.106")])
def test_engine_triton_configs_parse_including_dynamic_keep(models, tmp_path, target, tensorrt):
    keep = _copy(models["keep"], tmp_path / "k", "keep")
    io = [{"name": "images", "mode": "input", "dtype": "float", "shape": [-1, 3, 224, 224], "shape_tensor": False},
          {"name": "keep_counts", "mode": "input", "dtype": "int32", "shape": [3], "shape_tensor": True},
          {"name": "logits", "mode": "output", "dtype": "float", "shape": [-1, 10], "shape_tensor": False}]
    profiles = [{"name": "images", "kind": "shape", "min": [1, 3, 224, 224], "opt": [8, 3, 224, 224],
                 "max": [32, 3, 224, 224]},
                {"name": "keep_counts", "kind": "values", "min": [98, 49, 24], "opt": [137, 96, 67],
                 "max": [176, 158, 142]}]
    engine = _engine_for(keep, keep.parent, tensorrt=tensorrt, io=io, profiles=profiles)
    result = make_bundle([engine], target, output=tmp_path / "b", triton=True, archive=False)
    config = parse_config(result.folder / "triton" / f"{engine.stem}-trt" / "config.pbtxt")
    inputs = {t.name: t for t in config.input}
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 0
    assert list(inputs["images"].dims) == [-1, 3, 224, 224] and inputs["keep_counts"].is_shape_tensor
    assert list(config.output[0].dims) == [-1, 10]
    dynamic = _copy(models["dynamic"], tmp_path / "d", "dyn")
    io = [{"name": "images", "mode": "input", "dtype": "float", "shape": [-1, 3, 224, 224]},
          {"name": "logits", "mode": "output", "dtype": "float", "shape": [-1, 10]}]
    engine = _engine_for(dynamic, dynamic.parent, tensorrt=tensorrt, io=io, profiles=profiles[:1])
    result = make_bundle([engine], target, output=tmp_path / "b2", triton=True, archive=False)
    config = parse_config(result.folder / "triton" / f"{engine.stem}-trt" / "config.pbtxt")
    assert config.max_batch_size == 32 and list(config.input[0].dims) == [3, 224, 224]


def trtexec_lines(script: str) -> list[str]:
    """Every command line invoking trtexec, continuation lines joined (echoed benchmark hints included)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [line for line in joined.splitlines() if "$TRTEXEC" in line and "--" in line]


def flags_of(line: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"(?:^|[\s'\"])(--[A-Za-z0-9]+)", line)}


@pytest.mark.parametrize("target", TRTEXEC_TARGETS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_trtexec_lines_use_only_documented_flags(models, tmp_path, target, precision):
    allowed = set(FLAGS[TARGET_FLAGS[target]]["flags"])
    deprecated = set(FLAGS[TARGET_FLAGS[target]]["deprecated"]) - {"--stronglyTyped"}
    strongly_typed = TARGETS[target].strongly_typed
    for kind, onnx in models.items():
        result = make_bundle([onnx], target, output=tmp_path / kind, precision=precision, archive=False)
        script = (result.folder / "build_on_device.sh").read_text()
        if shutil.which("bash"):
            subprocess.run(["bash", "-n", str(result.folder / "build_on_device.sh")], check=True)
        lines = trtexec_lines(script)
        builds = [line for line in lines if "--saveEngine" in line]
        assert builds and len(lines) == 2 * len(builds)  # one build + one benchmark hint per model
        for line in lines:
            used = flags_of(line)
            assert used <= allowed, (target, sorted(used - allowed), line)
            assert not used & deprecated, (target, line)
        for line in builds:
            used = flags_of(line)
            assert "--noTF32" in used  # dvit build clears TF32 for every precision: "fp32" is exact fp32
            if strongly_typed:
                assert not used & {"--fp16", "--bf16", "--int8"} and "--stronglyTyped" in used
            elif kind == "int8":
                assert "--int8" in used and ("--fp16" in used) == (precision == "fp16") and "--bf16" not in used
            else:
                assert ({"fp16": "--fp16", "bf16": "--bf16"}.get(precision) in used) or precision == "fp32"
                assert "--int8" not in used


def test_benchmark_hint_carries_keep_counts_and_image_size_from_the_manifest(models, tmp_path):
    keep = _copy(models["keep"], tmp_path / "m", "keep384")
    manifest = json.loads(manifest_path(keep).read_text())
    manifest["inputs"][0]["shape"] = ["batch", 3, 384, 384]  # as a 384-px export would record it
    manifest_path(keep).write_text(json.dumps(manifest))
    from dvit_deploy.artifact.manifest import OnnxManifest
    from dvit_deploy.jobs.ship import trtexec_benchmark

    assert trtexec_benchmark(OnnxManifest.from_json(manifest), "engines/x.engine", (1, 8, 32))[-1] == \
        "--shapes=images:8x3x384x384,keep_counts:137x96x67"
    result = make_bundle([models["keep"]], "jetson-orin", output=tmp_path / "b", archive=False)
    script = (result.folder / "build_on_device.sh").read_text()
    (hint,) = [line for line in trtexec_lines(script) if "--loadEngine" in line]
    assert "--shapes=images:8x3x224x224,keep_counts:137x96x67" in hint
    readme = (result.folder / "README.md").read_text()
    assert "keep_counts:137x96x67" in readme and "images:1x3x224x224" not in readme
    fixed = make_bundle([models["fixed"]], "x86-trt11", output=tmp_path / "f", archive=False)
    (hint,) = [line for line in trtexec_lines((fixed.folder / "build_on_device.sh").read_text()) if "--loadEngine" in line]
    assert "--shapes" not in hint  # a fixed-shape model needs no shapes
