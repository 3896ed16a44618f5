"""dvit doctor: the default export is ready for TensorRT 10 and 11; bad graphs are flagged."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from dvit_deploy.cli import app
from dvit_deploy.engines.doctor import TARGETS, diagnose

runner = CliRunner()


def _topk_model(path, *, k=5000, opset=18, extra_nodes=(), k_from_float=False, sorted_=1, domain_op=None):
    """A small graph with one TopK over 6000 scores, plus whatever a test adds."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6000])
    inputs, inits, nodes = [x], [], []
    if k_from_float:
        inputs.append(helper.make_tensor_value_info("ratio", TensorProto.FLOAT, [1]))
        inits.append(numpy_helper.from_array(np.array([6000.0], np.float32), "n"))
        nodes += [helper.make_node("Mul", ["ratio", "n"], ["kf"]),
                  helper.make_node("Cast", ["kf"], ["k"], to=TensorProto.INT64)]
    else:
        inits.append(numpy_helper.from_array(np.array([k], np.int64), "k"))
    nodes.append(helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, sorted=sorted_, name="select"))
    nodes.extend(extra_nodes)
    outputs = [helper.make_tensor_value_info("v", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("i", TensorProto.INT64, None)]
    for node in extra_nodes:
        outputs.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None))
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain_op, 1)] if domain_op else [])
    model = helper.make_model(helper.make_graph(nodes, "bad", inputs, outputs, inits), opset_imports=opsets)
    onnx.save(model, str(path))
    return path


def test_default_export_is_ready_for_trt10_and_trt11(tiny_export):
    for target in ("trt-10", "trt-11", "trt-10.3"):
        result = runner.invoke(app, ["doctor", str(tiny_export.path), "--target", target, "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["passed"] is True and report["blockers"] == 0
        assert report["op_counts"]["TopK"] == 3
        topk = [f for f in report["findings"] if f["check"] == "TopK"]
        assert len(topk) == 3 and all("constant K=" in f["message"] for f in topk)
        assert report["profile_needs"][0]["input"] == "images"
        assert report["profile_needs"][0]["dynamic_axes"] == {"0": "batch"}


def test_table_output_names_the_target(tiny_export):
    result = runner.invoke(app, ["doctor", str(tiny_export.path), "-t", "trt-11"])
    assert result.exit_code == 0
    assert "ready for trt-11" in result.stdout


def test_bad_graph_is_flagged_with_exit_1(tmp_path):
    unique = helper.make_node("Unique", ["x"], ["u"])
    path = _topk_model(tmp_path / "bad.onnx", k=5000, opset=21, extra_nodes=[unique], sorted_=0)
    result = runner.invoke(app, ["doctor", str(path), "--target", "trt-10.3", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    messages = [f["message"] for f in report["findings"] if f["severity"] == "blocker"]
    assert any("opset 21 is above" in m and "(20)" in m for m in messages)
    assert any("K=5000 exceeds" in m for m in messages)
    assert any(m.startswith("Unique") and "not supported" in m for m in messages)
    assert any("sorted=0" in m for m in messages)
    assert report["blockers"] == 4
    assert result.stderr.strip() == "check failed: not ready for trt-10.3: 4 blocker(s)"  # stdout holds only JSON
    result = runner.invoke(app, ["doctor", str(path), "--target", "trt-10.3"])
    assert result.exit_code == 1 and result.stderr.strip() == "check failed: not ready for trt-10.3: 4 blocker(s)"


def test_opset_limits_differ_per_target(tmp_path):
    path = _topk_model(tmp_path / "opset22.onnx", k=10, opset=22)
    assert not diagnose(path, "trt-10.3").passed
    assert diagnose(path, "trt-10").passed
    assert diagnose(path, "trt-11").passed
    assert TARGETS["trt-11"].max_opset == 25


def test_attention_needs_a_recent_parser(tmp_path):
    attention = helper.make_node("Attention", ["x", "x", "x"], ["att"])
    path = _topk_model(tmp_path / "att.onnx", k=10, opset=20, extra_nodes=[attention])
    blockers = [f.message for f in diagnose(path, "trt-10.3").blockers]
    assert any("Attention" in m and "10.14" in m for m in blockers)
    assert diagnose(path, "trt-11").passed


def test_k_from_a_float_input_is_a_blocker(tmp_path):
    path = _topk_model(tmp_path / "floatk.onnx", k_from_float=True)
    blockers = [f.message for f in diagnose(path, "trt-11").blockers]
    assert len(blockers) == 1 and "float input(s) ['ratio']" in blockers[0]


def test_custom_domain_op_and_missing_external_data(tmp_path):
    custom = helper.make_node("FancyOp", ["x"], ["fancy"], domain="com.example")
    path = _topk_model(tmp_path / "custom.onnx", k=10, extra_nodes=[custom], domain_op="com.example")
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
              size_threshold=0)
    report = diagnose(path, "trt-10")
    assert any("com.example::FancyOp" in f.message and "plugin" in f.message for f in report.blockers)
    assert any(f.check == "external data" and f.severity == "info" for f in report.findings)
    (tmp_path / "w.bin").unlink()
    missing = diagnose(path, "trt-10")
    assert any("'w.bin' is missing" in f.message for f in missing.blockers)


def test_unknown_target_and_missing_file_exit_2(tmp_path, tiny_export):
    result = runner.invoke(app, ["doctor", str(tiny_export.path), "--target", "trt-7"])
    assert result.exit_code == 2 and "unknown --target 'trt-7'" in result.output
    result = runner.invoke(app, ["doctor", str(tmp_path / "nope.onnx")])
    assert result.exit_code == 2 and "not found" in result.output


def _qdq_model(path, *, opset=18, zero=0, zero_type=np.int8, axis=True, per_channel=True):
    """x -> Q -> DQ -> MatMul(w -> Q -> DQ): a minimal explicitly quantized graph."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    w = np.ones((4, 3), np.float32)
    wscale = np.full(3, 0.1, np.float32) if per_channel else np.array(0.1, np.float32)
    wzero = np.zeros(wscale.shape, zero_type)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(wscale, "ws"), numpy_helper.from_array(wzero, "wz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.array(zero, zero_type), "xz")]
    waxis = {"axis": 1} if axis and per_channel else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
             helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], name="qw", **waxis),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dqw", **waxis),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "qdq", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def test_qdq_rules(tmp_path):
    good = diagnose(_qdq_model(tmp_path / "good.onnx"), "trt-10.3")
    assert good.passed and any(f.check == "Q/DQ" and "--int8" in f.message for f in good.findings)
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(good.op_counts)
    old = diagnose(_qdq_model(tmp_path / "old.onnx", opset=12), "trt-10")
    assert any(f.check == "Q/DQ" and "opset >= 13" in f.message for f in old.blockers)
    asym = diagnose(_qdq_model(tmp_path / "asym.onnx", zero=3), "trt-11")
    assert any("zero point 0" in f.message for f in asym.blockers)
    unsigned = diagnose(_qdq_model(tmp_path / "u8.onnx", zero_type=np.uint8, zero=128), "trt-10")
    assert any("uint8" in f.message for f in unsigned.blockers)
    no_axis = diagnose(_qdq_model(tmp_path / "noaxis.onnx", axis=False), "trt-10")
    assert no_axis.passed and any(f.severity == "warning" and "axis" in f.message for f in no_axis.findings)


def test_doctor_and_package_agree_on_opsets_for_every_device(tmp_path):
    """One table (engines/targets.py): `doctor --target <device>` blocks exactly the opsets `package --target
    <device>` refuses, and `doctor --target trt-10` warns when an opset cannot go into an x86-trt10 bundle."""
    from pathlib import Path

    from dvit_deploy.engines.targets import DEVICE_TARGETS
    from dvit_deploy.helpers.errors import BadInput
    from dvit_deploy.jobs.ship.bundle import check_target
    from dvit_deploy.artifact.store import Artifact
    from dvit_deploy.jobs.ship.layout import OnnxItem

    for opset in range(17, 26):
        path = _topk_model(tmp_path / f"o{opset}.onnx", opset=opset)
        for name, device in DEVICE_TARGETS.items():
            blocked = any(f.check == "opset" for f in diagnose(path, name).blockers)
            try:
                check_target(device, [OnnxItem(Artifact.of(Path(path), {"opset": opset}))], [])
                refused = False
            except BadInput:
                refused = True
            assert blocked == refused, (name, opset, blocked, refused)
    report = diagnose(_topk_model(tmp_path / "o21.onnx", opset=21), "trt-10")
    assert not [f for f in report.blockers if f.check == "opset"]
    warning = next(f.message for f in report.findings if f.severity == "warning" and f.check == "opset")
    assert "dvit package refuses it for" in warning and "x86-trt10" in warning and "--opset 18" in warning
