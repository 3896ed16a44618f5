"""OpenVINO runs dvit's int8 ConvNeXt graphs as ONNX Runtime does.

OpenVINO 2026.4's CPU plugin, on a graph with a dynamic batch, applies the dequantization scale
twice to an int8 Convolution that has no bias (or an all-zero one, which it drops) when the Conv's
output is read by an Add and another consumer: ConvNeXt's downsampling Conv feeds both the
depthwise Conv and the residual Add. The runner gives such Convs a negligible non-zero bias
(``runtime.openvino_graph``); these tests hold the runner to ONNX Runtime on the same int8 file.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")

from dvit_deploy.runtime import runner_for_artifact  # noqa: E402


@pytest.fixture(scope="module")
def convnext_int8(tmp_path_factory):
    """A tiny ConvNeXt (pruned, ρ 0.7) export and its ``dvit quantize`` int8 graph."""
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.export import export_onnx
    from dvit_deploy.jobs.quantize import QuantizeOptions, quantize_onnx
    from dvit_deploy.models.checkpoint import load_model

    root = tmp_path_factory.mktemp("ovconv") / "export"
    loaded = load_model(model_name="tiny-convnext", keep_ratio=0.7)
    fp32 = export_onnx(loaded, root / "convnext.onnx", check_samples=2).path
    int8 = quantize_onnx(open_artifact(fp32), options=QuantizeOptions(
        method="minmax", calib_samples=8, check_samples=8, recipe="s8s8-reduce-range")).path
    return int8


def _images(n=8, seed=5):
    return np.random.default_rng(seed).standard_normal((n, 3, 64, 64), dtype=np.float32)


def test_int8_convnext_openvino_matches_onnxruntime(convnext_int8):
    x = _images()
    with runner_for_artifact(convnext_int8, "onnxruntime", precision=None) as r:
        ort_logits = r.run(x).logits
    with runner_for_artifact(convnext_int8, "openvino", precision=None) as r:
        ov_logits = r.run(x).logits
        info = r.describe()
    assert info["int8_kernels"] and set(info["gemm_precisions"]) & {"i8", "u8"}  # still int8 kernels
    assert info["int8_convs_biased"] == 3  # the three downsampling Convs (stem: read once, left alone)
    scale = float(np.abs(ort_logits).max())
    assert scale > 0
    # Unfixed, OpenVINO's logits are ORT's scaled by ~1e-5 (relative error ~1); int8 rounding alone
    # stays at a few percent.
    assert float(np.abs(ov_logits - ort_logits).max()) < 0.1 * scale
    top2 = np.sort(ort_logits, axis=1)[:, -2:]
    confident = (top2[:, 1] - top2[:, 0]) >= 0.1 * scale
    assert confident.any()
    assert (ov_logits.argmax(1)[confident] == ort_logits.argmax(1)[confident]).all()


def _qdq_conv_graph(bias: str, reads: int = 2):
    """x (dynamic batch) -> Q/DQ -> int8 Conv (per-channel weights) -> Add(conv, conv); ``bias``: none/zero/one.
    The zero bias is shared with a float Add, as the export's deduplicated initializers are."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4, 2, 2)).astype(np.float32) * 0.1
    scale = (np.abs(w).reshape(8, -1).max(1) / 127).astype(np.float32)
    inits = [numpy_helper.from_array(np.round(w / scale[:, None, None, None]).astype(np.int8), "w_q"),
             numpy_helper.from_array(scale, "w_s"), numpy_helper.from_array(np.zeros(8, np.int8), "w_z"),
             numpy_helper.from_array(np.array(0.03, np.float32), "x_s"), numpy_helper.from_array(np.array(0, np.int8), "x_z"),
             numpy_helper.from_array(np.zeros((8, 1, 1), np.float32) if bias != "one" else np.ones((8, 1, 1), np.float32),
                                     "shared")]
    if bias == "one":
        inits.append(numpy_helper.from_array(np.ones(8, np.float32), "b"))
    conv_inputs = ["x_dq", "w_dq"] + ({"none": [], "zero": ["b0"], "one": ["b"]}[bias])
    if bias == "zero":
        inits.append(numpy_helper.from_array(np.zeros(8, np.float32), "b0"))
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], axis=0),
             helper.make_node("Conv", conv_inputs, ["c"], name="conv", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Add", ["c", "c"], ["c2"]) if reads == 2 else helper.make_node("Relu", ["c"], ["c2"]),
             helper.make_node("Add", ["c2", "shared"], ["y"]),
             helper.make_node("Conv", ["y", "y_w"], ["z"], name="float_conv", kernel_shape=[1, 1])]
    inits.append(numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "y_w"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 8, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize("bias, reads, changed", [("none", 2, 1), ("zero", 2, 1), ("one", 2, 0), ("zero", 1, 0)])
def test_rewrite_biases_only_int8_convs_without_bias(bias, reads, changed):
    from onnx import checker, numpy_helper

    from dvit_deploy.runtime.openvino_graph import NEGLIGIBLE_BIAS, bias_int8_convs

    model = _qdq_conv_graph(bias, reads)
    before = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    assert bias_int8_convs(model) == changed
    checker.check_model(model)
    after = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name, value in before.items():  # nothing existing is modified, shared zeros included
        np.testing.assert_array_equal(after[name], value)
    conv = next(n for n in model.graph.node if n.name == "conv")
    float_conv = next(n for n in model.graph.node if n.name == "float_conv")
    assert len(float_conv.input) == 2  # a float Conv is not an int8 Conv
    if changed:
        added = after[conv.input[2]]
        assert conv.input[2] not in before and added.shape == (8,) and (added == np.float32(NEGLIGIBLE_BIAS)).all()
    else:
        assert conv.input[2:] == {"none": [], "zero": ["b0"], "one": ["b"]}[bias]


@pytest.mark.parametrize("bias", ["none", "zero"])
def test_rewritten_graph_runs_on_openvino_as_on_onnxruntime(bias):
    """The smallest graph with the fault: OpenVINO on the rewritten graph gives ONNX Runtime's output of the
    original to float rounding (unrewritten, OpenVINO 2026.4.1 was off by the dequantization scale, ~1e-3 here)."""
    import onnxruntime as ort
    import openvino as ov

    from dvit_deploy.runtime.openvino_graph import bias_int8_convs

    x = np.random.default_rng(1).standard_normal((3, 4, 8, 8)).astype(np.float32)
    original = _qdq_conv_graph(bias)
    expected = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    bias_int8_convs(original)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(original.SerializeToString(), b""), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled.create_infer_request().infer({0: x})[compiled.outputs[0]]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


@pytest.fixture(scope="module")
def convnext_int8_predictor(tmp_path_factory):
    """The tiny ConvNeXt quantized with ``--quantize-predictor`` (its predictors' Convs int8 too)."""
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.export import export_onnx
    from dvit_deploy.jobs.quantize import QuantizeOptions, quantize_onnx
    from dvit_deploy.models.checkpoint import load_model

    root = tmp_path_factory.mktemp("ovpred") / "export"
    loaded = load_model(model_name="tiny-convnext", keep_ratio=0.7)
    fp32 = export_onnx(loaded, root / "convnext.onnx", check_samples=2).path
    return fp32, quantize_onnx(open_artifact(fp32), options=QuantizeOptions(
        method="minmax", calib_samples=8, check_samples=8, recipe="s8s8-reduce-range", include_predictor=True)).path


def test_quantized_predictor_concat_convs_get_float_inputs(convnext_int8, convnext_int8_predictor):
    import onnx

    from dvit_deploy.runtime.openvino_graph import float_predictor_concat_inputs, predictor_convs_after_concat

    fp32, int8 = convnext_int8_predictor
    model = onnx.load(str(int8))
    found = predictor_convs_after_concat(model)
    convs = [conv for conv, _ in found]
    assert len(convs) == 3  # one per predictor: the out_conv's first Conv, after the local/global Concat
    producer = {o: n for n in model.graph.node for o in n.output}
    before = [producer[c.input[0]].op_type for c in convs]
    assert before == ["DequantizeLinear"] * 3
    assert float_predictor_concat_inputs(model) == 3
    assert [producer[c.input[0]].op_type for c in convs] == ["Concat"] * 3
    assert [c.input[0] for c in convs] == [concat for _, concat in found]
    assert all(producer[c.input[1]].op_type == "DequantizeLinear" for c in convs)  # weights stay int8 values
    onnx.checker.check_model(model)
    # nothing to change where the predictors stay float (the default), nor in the fp32 file
    assert predictor_convs_after_concat(onnx.load(str(convnext_int8))) == []
    assert predictor_convs_after_concat(onnx.load(str(fp32))) == []


def test_quantized_predictor_runs_on_openvino_as_on_onnxruntime(convnext_int8_predictor):
    _, int8 = convnext_int8_predictor
    x = _images()
    with runner_for_artifact(int8, "onnxruntime", precision=None, topk_outputs=True) as r:
        ort_out = r.run(x)
    with runner_for_artifact(int8, "openvino", precision=None, topk_outputs=True) as r:
        ov_out = r.run(x)
        info = r.describe()
    assert info["predictor_convs_float_input"] == 3 and info["int8_convs_biased"] >= 3
    scale = float(np.abs(ort_out.logits).max())
    assert float(np.abs(ov_out.logits - ort_out.logits).max()) < 0.1 * scale
    assert ov_out.kept is not None and ort_out.kept is not None and len(ov_out.kept) == len(ort_out.kept) == 3
