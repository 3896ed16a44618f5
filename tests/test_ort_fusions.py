"""The ONNX Runtime CPU runner runs the exporter's exact-erf GELU as one fused Gelu and its self-attention blocks as
one fused Attention (runtime.ort_fusions)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dvit_deploy.runtime.ort_fusions import fuse_attention, fuse_erf_gelu


def gelu_graph(order: str = "exporter", half: float = 0.5) -> onnx.ModelProto:
    """x + bias, then GELU written in one of the node orders seen in exported graphs."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias"),
             numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sqrt2"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(half, np.float32), "half")]
    nodes = [helper.make_node("Add", ["x", "bias"], ["h"]),
             helper.make_node("Div", ["h", "sqrt2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"])]
    if order == "exporter":  # h * (0.5 * (1 + erf(h / √2)))
        nodes += [helper.make_node("Mul", ["half", "a"], ["m"]), helper.make_node("Mul", ["h", "m"], ["y"])]
    else:  # (h * (1 + erf)) * 0.5
        nodes += [helper.make_node("Mul", ["h", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]


@pytest.mark.parametrize("order", ["exporter", "ort"])
def test_gelu_subgraph_becomes_one_gelu_with_the_same_values(order):
    x = np.linspace(-4, 4, 16, dtype=np.float32).reshape(2, 8)
    model = gelu_graph(order)
    expected = run(model, x)
    assert fuse_erf_gelu(model) == 1
    ops = [(n.op_type, n.domain) for n in model.graph.node]
    assert ops == [("Add", ""), ("Gelu", "com.microsoft")]
    assert any(o.domain == "com.microsoft" for o in model.opset_import)
    np.testing.assert_allclose(run(model, x), expected, rtol=1e-5, atol=1e-6)


def test_other_constants_are_not_gelu():
    model = gelu_graph(half=0.6)
    assert fuse_erf_gelu(model) == 0
    assert [n.op_type for n in model.graph.node].count("Erf") == 1


def test_cpu_runner_fuses_the_exported_gelus(tiny_export):
    from dvit_deploy.runtime import runner_for_artifact

    erfs = sum(n.op_type == "Erf" for n in onnx.load(str(tiny_export.path)).graph.node)
    assert erfs > 0
    images = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with runner_for_artifact(tiny_export.path, "onnxruntime") as fused:
        assert fused.gelu_fused == erfs
        assert fused.describe()["gelu_fused"] == erfs
        got = fused.run(images)
    with runner_for_artifact(tiny_export.path, "onnxruntime", graph_optimization="disable") as plain:
        assert plain.gelu_fused == 0
        want = plain.run(images)
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-4, atol=1e-4)
    for a, b in zip(got.kept, want.kept):
        np.testing.assert_array_equal(a, b)


def _session_outputs(model: onnx.ModelProto, images: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"images": images})


def test_exported_attention_blocks_become_one_attention_with_the_same_values(tiny_export):
    model = onnx.load(str(tiny_export.path))
    from dvit_deploy.artifact.store import open_artifact

    blocks = open_artifact(tiny_export.path).model.config["depth"]
    softmaxes = sum(n.op_type == "Softmax" for n in model.graph.node)
    images = np.random.default_rng(2).standard_normal((3, 3, 224, 224)).astype(np.float32)
    want = _session_outputs(model, images)
    assert fuse_attention(model) == softmaxes == blocks
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Attention") == softmaxes and "Softmax" not in ops
    assert not any(n.op_type == "Transpose" and list(n.attribute[0].ints) == [2, 0, 3, 1, 4] for n in model.graph.node)
    got = _session_outputs(model, images)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(got[1:], want[1:]):  # the token outputs: the same kept patches, in any order
        np.testing.assert_array_equal(np.sort(a, axis=-1), np.sort(b, axis=-1))


def test_attention_with_a_bias_before_softmax_is_not_fused(tiny_export):
    """Swin's window attention adds a bias to the scores: not plain self-attention, left as it is."""
    model = onnx.load(str(tiny_export.path))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "score_bias"))
    index = list(model.graph.node).index(softmax)
    model.graph.node.insert(index, helper.make_node("Add", [softmax.input[0], "score_bias"], ["biased_scores"]))
    softmax.input[0] = "biased_scores"
    total = sum(n.op_type == "Softmax" for n in model.graph.node)
    assert fuse_attention(model) == total - 1
    assert [n.op_type for n in model.graph.node].count("Softmax") == 1


def test_cpu_runner_fuses_the_attention_blocks(tiny_export):
    from dvit_deploy.runtime import runner_for_artifact

    softmaxes = sum(n.op_type == "Softmax" for n in onnx.load(str(tiny_export.path)).graph.node)
    images = np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with runner_for_artifact(tiny_export.path, "onnxruntime") as fused:
        assert fused.attention_fused == softmaxes > 0
        assert "attention_fused" not in fused.describe()  # the --json shape (tests/golden) stays as it was
        got = fused.run(images)
    with runner_for_artifact(tiny_export.path, "onnxruntime", graph_optimization="disable") as plain:
        assert plain.attention_fused == 0
        want = plain.run(images)
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-4, atol=1e-4)
    for a, b in zip(got.kept, want.kept):
        np.testing.assert_array_equal(a, b)
