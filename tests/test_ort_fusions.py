"""The ONNX Runtime CPU runner runs the exporter's exact-erf GELU as one fused Gelu (runtime.ort_fusions)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dvit_deploy.runtime.ort_fusions import fuse_erf_gelu


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
