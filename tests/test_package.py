"""`dvit package` bundles and Triton repositories, and `dvit verify` catching tampering.

Engines cannot be built here (no TensorRT): the engine tests use a small fake *file* with a
manifest only to exercise checksums and config generation; nothing here builds or runs one.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile

import pytest
from typer.testing import CliRunner

from dvit_deploy.helpers.fileio import manifest_path
from dvit_deploy.cli import app
from dvit_deploy.helpers.errors import BadInput
from dvit_deploy.helpers.fileio import sha256_file
from dvit_deploy.jobs.ship import make_bundle, verify_bundle

runner = CliRunner()


@pytest.fixture
def onnx_copy(tiny_export, tmp_path):
    """The shared tiny export copied into this test's folder (tests may edit the copy)."""
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy2(tiny_export.path, folder / "tiny.onnx")
    shutil.copy2(tiny_export.manifest_path, folder / "tiny.onnx.json")
    return folder / "tiny.onnx"


def edit_manifest(path, **changes):
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))
    return manifest


def fake_engine(folder, onnx_path, *, tensorrt="10.3.0.30", cc=(8, 7), payload=b"not a real engine: test bytes"):
    """A stand-in engine file + manifest in `dvit build`'s layout (checksum/config tests only; never built or run)."""
    engine = folder / "tiny-orin-fp16.engine"
    engine.write_bytes(payload)
    manifest = {
        "kind": "tensorrt-engine",
        "artifact": engine.name,
        "tensorrt": {"version": tensorrt, "major": int(tensorrt.split(".")[0])},
        "gpu": {"name": "Orin", "compute_capability": list(cc)},
        "precision": "fp16",
        "engine": {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)},
        "source_onnx": {"path": str(onnx_path), "sha256": sha256_file(onnx_path),
                        "manifest": str(manifest_path(onnx_path))},
        "profiles": [{"name": "images", "kind": "shape", "min": [1, 3, 224, 224], "opt": [4, 3, 224, 224],
                      "max": [16, 3, 224, 224]}],
        "io": [
            {"name": "images", "mode": "input", "dtype": "float", "shape": [-1, 3, 224, 224]},
            {"name": "logits", "mode": "output", "dtype": "float", "shape": [-1, 10]},
            {"name": "kept_tokens_stage1", "mode": "output", "dtype": "int32", "shape": [-1, 137]},
        ],
    }
    manifest_path(engine).write_text(json.dumps(manifest))
    return engine


def parse_sums(folder):
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    return dict(reversed(re.fullmatch(r"([0-9a-f]{64})  (.+)", line).groups()) for line in lines)


def test_bundle_files_checksums_script_and_archive(onnx_copy, tmp_path):
    result = make_bundle([onnx_copy], "jetson-orin", output=tmp_path / "out" / "bundle")
    folder = result.folder
    sums = parse_sums(folder)
    assert set(sums) == {"README.md", "build_on_device.sh", "bundle.json", "model/tiny.onnx", "model/tiny.onnx.json"}
    for rel, digest in sums.items():
        assert sha256_file(folder / rel) == digest, rel
    assert sha256_file(folder / "model/tiny.onnx") == sha256_file(onnx_copy)
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr

    script = (folder / "build_on_device.sh").read_text()
    assert subprocess.run(["bash", "-n", str(folder / "build_on_device.sh")]).returncode == 0
    assert (folder / "build_on_device.sh").stat().st_mode & 0o111
    for flag in ("--onnx=model/tiny.onnx", "--saveEngine=engines/tiny-jetson-orin-fp16.engine",
                 "--minShapes=images:1x3x224x224", "--optShapes=images:8x3x224x224",
                 "--maxShapes=images:32x3x224x224", "--fp16", "--timingCacheFile=engines/timing.cache",
                 "sha256sum --quiet -c SHA256SUMS"):
        assert flag in script, flag
    assert "/usr/src/tensorrt/bin/trtexec" in script  # JetPack's location as the fallback
    readme = (folder / "README.md").read_text()
    assert "jetson-orin" in readme and "137/96/67" in readme and "TensorRT 10.3" in readme

    bundle = json.loads((folder / "bundle.json").read_text())
    assert bundle["target"]["name"] == "jetson-orin" and bundle["models"][0]["keep_counts"] == [137, 96, 67]
    with tarfile.open(result.archive) as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
    assert names == {f"bundle/{rel}" for rel in [*sums, "SHA256SUMS"]}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_existing_bundle_needs_force_and_opset_limit(onnx_copy, tmp_path):
    out = tmp_path / "b"
    make_bundle([onnx_copy], "x86-trt10", output=out, archive=False)
    with pytest.raises(BadInput, match="already exists"):
        make_bundle([onnx_copy], "x86-trt10", output=out, archive=False)
    make_bundle([onnx_copy], "x86-trt10", output=out, archive=False, force=True)
    edit_manifest(manifest_path(onnx_copy), opset=23)
    with pytest.raises(BadInput, match="opset 23.*up to 20"):
        make_bundle([onnx_copy], "jetson-orin", output=tmp_path / "c")
    make_bundle([onnx_copy], "x86-trt11", output=tmp_path / "c", archive=False)  # TRT 11 parses opset 23


def test_trt11_script_is_strongly_typed_and_fixed_batch_has_no_profile(onnx_copy, tmp_path):
    script = (make_bundle([onnx_copy], "x86-trt11", output=tmp_path / "a", archive=False).folder
              / "build_on_device.sh").read_text()
    assert not re.search(r"^\s+--fp16", script, re.M)  # TRT 11 removed the flag (mentioned in a comment only)
    assert "--stronglyTyped" in script and "strongly typed" in script
    assert "tiny-x86-trt11-fp32.engine" in script
    manifest = json.loads(manifest_path(onnx_copy).read_text())
    inputs = [{**manifest["inputs"][0], "shape": [2, 3, 224, 224]}]
    edit_manifest(manifest_path(onnx_copy), batch=2, dynamic_batch=False, inputs=inputs)
    folder = make_bundle([onnx_copy], "x86-trt10", output=tmp_path / "b", archive=False, triton=True).folder
    script = (folder / "build_on_device.sh").read_text()
    assert "--minShapes" not in script and re.search(r"^\s+--fp16", script, re.M)
    config = (folder / "triton/tiny-onnx/config.pbtxt").read_text()
    assert "max_batch_size: 0" in config and "dims: [ 2, 3, 224, 224 ]" in config
    assert "dynamic_batching" not in config


def test_triton_repository_from_onnx(onnx_copy, tmp_path):
    folder = make_bundle([onnx_copy], "x86-trt10", output=tmp_path / "t", triton=True, archive=False).folder
    model_dir = folder / "triton" / "tiny-onnx"
    assert sha256_file(model_dir / "1" / "model.onnx") == sha256_file(onnx_copy)
    config = (model_dir / "config.pbtxt").read_text()
    assert 'name: "tiny-onnx"' in config and 'platform: "onnxruntime_onnx"' in config
    assert "max_batch_size: 32" in config
    blocks = re.findall(r'name: "(\w+)"\s+data_type: (\w+)\s+dims: \[ ([^\]]*) \]', config)
    assert blocks == [("images", "TYPE_FP32", "3, 224, 224"), ("logits", "TYPE_FP32", "10"),
                      ("kept_tokens_stage1", "TYPE_INT64", "137"), ("kept_tokens_stage2", "TYPE_INT64", "96"),
                      ("kept_tokens_stage3", "TYPE_INT64", "67")]
    assert re.search(r"dynamic_batching \{\s+preferred_batch_size: \[ 8, 32 \]\s+max_queue_delay_microseconds: 100",
                     config)
    # The device build installs its engine into the repository with a prepared tensorrt_plan config.
    prepared = (folder / "device/triton/tiny-trt.config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in prepared and "KIND_GPU" in prepared
    assert "triton/tiny-trt/1/model.plan" in (folder / "build_on_device.sh").read_text()
    assert "device/triton/tiny-trt.config.pbtxt" in parse_sums(folder)


def test_fake_engine_bundle_checksums_and_triton_plan_config(onnx_copy, tmp_path):
    engine = fake_engine(onnx_copy.parent, onnx_copy)
    result = make_bundle([engine], "jetson-orin", output=tmp_path / "e", triton=True, archive=False)
    folder = result.folder
    sums = parse_sums(folder)
    # The engine brings the ONNX it was built from (found through its manifest link).
    assert {"engines/tiny-orin-fp16.engine", "engines/tiny-orin-fp16.engine.json", "model/tiny.onnx"} <= set(sums)
    config = (folder / "triton/tiny-orin-fp16-trt/config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config and "max_batch_size: 16" in config  # from the engine profile
    assert "TYPE_INT32" in config  # I/O dtypes from the engine manifest, not the ONNX
    assert sha256_file(folder / "triton/tiny-orin-fp16-trt/1/model.plan") == sha256_file(engine)
    report = verify_bundle(folder)
    assert report.passed, report.to_dict()
    compat = [c for c in report.checks if c.name == "engine compatibility"]
    if compat:  # without TensorRT the report says so instead of claiming anything
        assert compat[0].status == "skipped" and "tensorrt not installed" in compat[0].detail
    (folder / "engines/tiny-orin-fp16.engine").write_bytes(b"tampered")
    report = verify_bundle(folder)
    assert not report.passed
    assert any("engines/tiny-orin-fp16.engine" in c.detail for c in report.failures)


def test_engine_for_other_tensorrt_or_gpu_is_refused(onnx_copy, tmp_path):
    engine = fake_engine(onnx_copy.parent, onnx_copy, tensorrt="10.8.0")
    with pytest.raises(BadInput, match="built with TensorRT 10.8.0.*runs TensorRT 10.3"):
        make_bundle([engine], "jetson-orin", output=tmp_path / "a")
    engine = fake_engine(onnx_copy.parent, onnx_copy, cc=(8, 9))
    with pytest.raises(BadInput, match="compute capability 8.9"):
        make_bundle([engine], "jetson-orin", output=tmp_path / "b")


def test_engine_built_on_another_platform_is_refused(onnx_copy, tmp_path):
    """An x86-64 engine does not load on an aarch64 Jetson, whatever its TensorRT and compute capability."""
    engine = fake_engine(onnx_copy.parent, onnx_copy)
    manifest = json.loads(manifest_path(engine).read_text())
    manifest["gpu"]["platform"] = "x86_64"
    manifest_path(engine).write_text(json.dumps(manifest))
    with pytest.raises(BadInput, match="built on x86_64, but jetson-orin is aarch64"):
        make_bundle([engine], "jetson-orin", output=tmp_path / "a")
    manifest["gpu"]["platform"] = "aarch64"
    manifest_path(engine).write_text(json.dumps(manifest))
    assert make_bundle([engine], "jetson-orin", output=tmp_path / "b", archive=False).folder.is_dir()


def test_cli_package_reads_the_default_artifacts_manifest_once(onnx_copy, workdir, file_reads):
    """`dvit package` with no path: the default is picked inside the command's artifact policy, so picking it
    and opening it for the bundle share one read of its manifest."""
    reads = file_reads({manifest_path(onnx_copy): "tiny.onnx.json"})
    result = runner.invoke(app, ["package", "--target", "x86-trt10", "--no-archive", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["folder"] == str(workdir / "bundles" / "tiny-x86-trt10")
    assert reads == ["tiny.onnx.json"], reads


def test_cli_package_verify_and_tamper(onnx_copy, workdir):
    assert onnx_copy.parent == workdir / "export"  # the default artifact folder
    result = runner.invoke(app, ["package", "--target", "jetson-orin", "--triton", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    folder = workdir / "bundles" / "tiny-jetson-orin"
    assert doc["folder"] == str(folder) and doc["triton_models"] == ["tiny-onnx"]
    assert (workdir / "bundles" / "tiny-jetson-orin.tar.gz").is_file()

    ok = runner.invoke(app, ["verify", str(folder)])
    assert ok.exit_code == 0, ok.output
    ok = runner.invoke(app, ["verify", str(folder) + ".tar.gz", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["passed"] is True

    # Tamper with the model: checksum and manifest checks fail, naming the file; exit 1.
    with open(folder / "model" / "tiny.onnx", "ab") as f:
        f.write(b"\0")
    bad = runner.invoke(app, ["verify", str(folder)])
    assert bad.exit_code == 1
    assert "model/tiny.onnx" in bad.output and "Traceback" not in bad.output
    (folder / "SHA256SUMS").unlink()
    malformed = runner.invoke(app, ["verify", str(folder)])
    assert malformed.exit_code == 2 and "SHA256SUMS is missing" in malformed.output

    # A manifest edited to match a tampered file is still caught by SHA256SUMS.
    again = runner.invoke(app, ["package", "--target", "x86-trt10", "--output", str(workdir / "b2"), "--no-archive"])
    assert again.exit_code == 0, again.output
    manifest = workdir / "b2" / "model" / "tiny.onnx.json"
    edit_manifest(manifest, keep_counts=[1, 1, 1])
    bad = runner.invoke(app, ["verify", str(workdir / "b2"), "--json"])
    assert bad.exit_code == 1
    failed = {c["name"]: c["detail"] for c in json.loads(bad.stdout)["checks"] if c["status"] == "failed"}
    assert "model/tiny.onnx.json" in failed["checksums"]
    assert "keep counts differ" in failed["manifest model/tiny.onnx.json"]


def test_cli_package_bad_inputs(workdir, onnx_copy, monkeypatch):
    empty = workdir / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for args, message in [
        (["package", "--target", "jetson-orin"], "no .onnx/.engine/.plan artifact"),
        (["package", str(onnx_copy), "--target", "pi-zero"], "unknown target 'pi-zero'"),
        (["package", str(workdir / "nope.onnx"), "--target", "x86-trt10"], "not found"),
        (["package", str(onnx_copy), "--target", "x86-trt10", "--batch-profile", "8,4,2"], "1 <= min <= opt <= max"),
        (["verify", str(workdir / "missing")], "not found"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_trtexec_profile_for_dynamic_keep_uses_keep_count_values():
    from dvit_deploy.artifact.manifest import OnnxManifest
    from dvit_deploy.jobs.ship.trtexec import _profile_args

    manifest = {
        "inputs": [{"name": "images", "shape": ["batch", 3, 224, 224]}, {"name": "keep_counts", "shape": [3]}],
        "dynamic_batch": True, "batch": None, "dynamic_keep": True, "keep_input": {"name": "keep_counts", "shape": [3]},
        "keep_ratio": 0.7, "pruning_locations": [3, 6, 9], "num_patches": 196,
    }
    # Shape-tensor inputs take min/opt/max *values*: the counts at ρ 0.5 / 0.7 / 0.9 (build's default range).
    assert _profile_args(OnnxManifest.from_json(manifest), (1, 32, 64)) == [
        "--minShapes=images:1x3x224x224,keep_counts:98x49x24",
        "--optShapes=images:32x3x224x224,keep_counts:137x96x67",
        "--maxShapes=images:64x3x224x224,keep_counts:176x158x142",
    ]
    fixed = {"inputs": [{"name": "images", "shape": [8, 3, 224, 224]}], "dynamic_batch": False, "batch": 8}
    assert _profile_args(OnnxManifest.from_json(fixed), (1, 32, 64)) == []


def test_int8_bundle_says_int8_not_fp16(onnx_copy, tmp_path):
    """An int8 (Q/DQ) model's bundle: bundle.json and README give the precision the device build produces."""
    manifest = json.loads(manifest_path(onnx_copy).read_text())
    manifest.update(precision="int8", quantization={"format": "QDQ", "activations": "int8 symmetric"})
    manifest_path(onnx_copy).write_text(json.dumps(manifest))
    result = make_bundle([onnx_copy], "x86-trt10", output=tmp_path / "b", archive=False)  # --precision fp16
    bundle = json.loads((result.folder / "bundle.json").read_text())
    assert bundle["precision"] == "int8" and bundle["requested_precision"] == "fp16"
    assert bundle["models"][0]["precision"] == "int8"
    readme = (result.folder / "README.md").read_text()
    assert "precision fp16" not in readme and "int8 (fp16 outside the Q/DQ pairs)" in readme
    assert "--int8" in (result.folder / "build_on_device.sh").read_text()
    # An fp32 model asked for fp16 on TensorRT 10 is fp16; on strongly typed TensorRT 11 it is the graph's fp32.
    plain = tmp_path / "plain.onnx"
    for src in (onnx_copy, manifest_path(onnx_copy)):
        shutil.copy2(src, plain.with_suffix(src.suffix))
    manifest.pop("quantization")
    manifest.update(precision="fp32", artifact="plain.onnx")
    manifest_path(plain).write_text(json.dumps(manifest))
    for target, expected in (("x86-trt10", "fp16"), ("x86-trt11", "fp32")):
        made = make_bundle([plain], target, output=tmp_path / target, archive=False)
        assert json.loads((made.folder / "bundle.json").read_text())["precision"] == expected


def test_collected_items_hold_their_artifact_opened_once(onnx_copy, file_reads):
    """open_artifacts opens each given artifact once (read, checked, typed), collect_artifacts opens the
    engine's source ONNX once and hands the Artifacts on; an Artifact already opened is not read again."""
    from dvit_deploy.artifact.manifest import EngineManifest, OnnxManifest
    from dvit_deploy.artifact.store import Artifact, open_artifact
    from dvit_deploy.jobs.ship import collect_artifacts, open_artifacts

    engine = fake_engine(onnx_copy.parent, onnx_copy)
    reads = file_reads({p: p.name for p in (manifest_path(engine), manifest_path(onnx_copy))})
    onnx_items, engines = collect_artifacts(open_artifacts([engine]))
    assert sorted(reads) == ["tiny-orin-fp16.engine.json", "tiny.onnx.json"]  # the engine's manifest and its source's, once each
    (item,), (built,) = onnx_items, engines
    assert isinstance(item.artifact, Artifact) and isinstance(item.manifest, OnnxManifest)
    assert isinstance(built.manifest, EngineManifest) and built.source is item
    assert item.sha256_checked and built.sha256_checked  # both digests were checked against their manifests
    assert item.model.keep_counts == (137, 96, 67) and built.manifest.tensorrt == "10.3.0.30"
    assert [f.name for f in item.files] == ["tiny.onnx", "tiny.onnx.json"]

    opened = open_artifact(onnx_copy)
    reads.clear()
    (again,), _ = collect_artifacts([opened])
    assert reads == [] and again.artifact is opened


def test_engine_io_shape_tensor_and_direction_come_from_the_typed_record(onnx_copy, tmp_path):
    """An engine's io entries (mode, shape_tensor) are read through TensorRecord: the Triton config marks the
    shape-tensor input and takes the batch limit from the ``images`` profile only."""
    from dvit_deploy.artifact.manifest import EngineManifest

    engine = fake_engine(onnx_copy.parent, onnx_copy)
    manifest = json.loads(manifest_path(engine).read_text())
    manifest["io"].insert(1, {"name": "keep_counts", "mode": "TensorIOMode.INPUT", "dtype": "int32", "shape": [3],
                              "shape_tensor": True})
    manifest["profiles"].append({"name": "keep_counts", "kind": "values", "min": [98, 49, 24], "opt": [137, 96, 67],
                                 "max": [176, 158, 142]})
    manifest_path(engine).write_text(json.dumps(manifest))
    typed = EngineManifest.from_json(manifest)
    assert [(t.name, t.mode, t.is_shape_tensor) for t in typed.io[:2]] == [
        ("images", "input", False), ("keep_counts", "TensorIOMode.INPUT", True)]
    folder = make_bundle([engine], "jetson-orin", output=tmp_path / "e", triton=True, archive=False).folder
    config = (folder / "triton/tiny-orin-fp16-trt/config.pbtxt").read_text()
    # keep_counts has no batch dim, so Triton does not batch: max_batch_size 0, full dims, a shape tensor.
    assert "max_batch_size: 0" in config
    assert re.search(r'name: "keep_counts"\s+data_type: TYPE_INT32\s+dims: \[ 3 \]\s+is_shape_tensor: true', config)
    assert re.search(r'name: "images"\s+data_type: TYPE_FP32\s+dims: \[ -1, 3, 224, 224 \]', config)


def test_a_shipped_manifest_with_a_wrong_field_type_is_a_failed_check(onnx_copy, tmp_path):
    """verify reads a shipped manifest as every command does: a field of the wrong type fails the check
    with the field's name (the checksums catch the edit too), never a traceback."""
    folder = make_bundle([onnx_copy], "x86-trt10", output=tmp_path / "b", archive=False).folder
    edit_manifest(folder / "model" / "tiny.onnx.json", keep_counts="abc")
    report = verify_bundle(folder)
    failed = {c.name: c.detail for c in report.failures}
    assert "model/tiny.onnx.json" in failed["checksums"]
    assert "field 'keep_counts' must be a list" in failed["manifest model/tiny.onnx.json"]
