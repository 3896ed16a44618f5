"""fp16 graph conversion (the TensorRT 11 --fp16 path), checked in ONNX Runtime on CPU."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from typer.testing import CliRunner

from dvit_deploy.helpers.fileio import manifest_path
from dvit_deploy.cli import app
from dvit_deploy.engines.fp16 import compare_with_fp32, convert_to_mixed_precision
from dvit_deploy.export.check import seeded_images

runner = CliRunner()


@pytest.fixture(scope="module")
def converted(tiny_export):
    model = onnx.load(str(tiny_export.path))
    return model, convert_to_mixed_precision(model)


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    return types


def test_fp16_graph_is_valid_and_keeps_selection_in_fp32(converted):
    original, result = converted
    onnx.checker.check_model(result.model, full_check=True)
    types = _types(result.model)
    nodes = result.model.graph.node
    matmuls = [n for n in nodes if n.op_type == "MatMul"]
    assert sum(types.get(n.output[0]) == TensorProto.FLOAT16 for n in matmuls) >= len(matmuls) // 2
    for node in nodes:
        if node.op_type in ("TopK", "LayerNormalization", "Softmax", "LogSoftmax"):
            assert types[node.input[0]] == TensorProto.FLOAT, node.op_type
    # The predictor (everything between its LayerNorm and TopK) is fp32, so scores rank as in fp32.
    assert result.fp32_reasons["score predictor"] > 0
    assert {o.name: o.type.tensor_type.elem_type for o in result.model.graph.output}["logits"] == TensorProto.FLOAT
    assert [i.name for i in result.model.graph.input] == [i.name for i in original.graph.input]
    assert any(i.data_type == TensorProto.FLOAT16 for i in result.model.graph.initializer)
    assert result.casts_inserted == sum(n.op_type == "Cast" for n in nodes) - sum(
        n.op_type == "Cast" for n in original.graph.node)


def test_fp16_graph_matches_fp32_in_onnxruntime(converted):
    original, result = converted
    images = seeded_images(8, (3, 224, 224)).numpy()
    comparison = compare_with_fp32(original, result.model, images)
    assert comparison.passed, comparison.failures
    assert comparison.logits.within_tolerance and comparison.logits.max_abs > 0  # really ran in fp16
    assert comparison.logits.top1_agreement == 1.0
    assert len(comparison.stages) == 3
    assert comparison.unexplained_flips == 0
    assert all(s.mean_jaccard > 0.95 for s in comparison.stages)


def test_build_onnx_only_writes_checked_fp16_graph(tiny_export, workdir):
    result = runner.invoke(app, ["build", str(tiny_export.path), "--fp16", "--onnx-only", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    out = workdir / "engines" / "tiny-fp16mixed.onnx"
    assert report["fp16_onnx"] == str(out) and out.is_file()
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["precision"] == "fp16"
    assert manifest["derived_from"]["sha256"] == tiny_export.manifest.to_json()["onnx"]["sha256"]
    assert manifest["fp16_conversion"]["parity_vs_fp32_onnx"]["passed"] is True
    onnx.checker.check_model(str(out), full_check=True)
    again = runner.invoke(app, ["build", str(tiny_export.path), "--fp16", "--onnx-only"])
    assert again.exit_code == 2 and "already exists" in again.output


def test_onnx_only_needs_fp16(tiny_export, workdir):
    result = runner.invoke(app, ["build", str(tiny_export.path), "--onnx-only"])
    assert result.exit_code == 2 and "--fp16" in result.output
    assert "readiness check" not in result.output  # refused before the doctor runs
    assert "Traceback" not in result.output


def test_onnx_only_with_a_fixed_batch_export(workdir):
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    fixed = export_onnx(load_model(model_name="tiny-deit", keep_ratio=0.7), workdir / "fixed.onnx", batch=1,
                        check_samples=2)
    assert fixed.manifest.model.batch == 1
    result = runner.invoke(app, ["build", str(fixed.path), "--fp16", "--onnx-only", "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((workdir / "engines" / "fixed-fp16mixed.onnx.json").read_text())
    parity = manifest["fp16_conversion"]["parity_vs_fp32_onnx"]
    assert parity["passed"] is True and manifest["batch"] == 1
    again = runner.invoke(app, ["build", str(workdir / "engines" / "fixed-fp16mixed.onnx"), "--fp16", "--onnx-only"])
    assert again.exit_code == 2 and "already is the mixed-precision fp16 graph" in again.output


@pytest.mark.slow
def test_deit_s_fp16_graph_within_tolerance(tmp_path):
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    exported = export_onnx(load_model(model_name="deit-s"), tmp_path / "deit-s.onnx", check_samples=2)
    model = onnx.load(str(exported.path))
    result = convert_to_mixed_precision(model)
    onnx.checker.check_model(result.model, full_check=True)
    comparison = compare_with_fp32(model, result.model, seeded_images(4, (3, 224, 224)).numpy())
    assert comparison.passed, comparison.failures
    assert comparison.logits.top1_agreement == 1.0
    assert comparison.unexplained_flips == 0
    assert np.isfinite(comparison.logits.max_abs) and comparison.logits.max_abs < 0.05
