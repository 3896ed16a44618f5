"""An in-memory rewrite of int8 Q/DQ graphs before OpenVINO reads them (the file is never changed).

OpenVINO 2026.4.1's CPU plugin computes a wrong int8 Convolution when three things meet:

* the Conv has no bias, or an all-zero one (which OpenVINO drops as a no-op);
* the graph's batch dimension is dynamic (every dvit export);
* the Conv's output is read by an Add and by another consumer (or twice by one Add).

(Measured on the smallest such graph: with a static batch, a non-zero bias, or a single consumer the
result is right; a MatMul in the same position is right too.)

Its low-precision transformations then give each consumer its own copy of the dequantization
Multiply (activation scale × per-channel weight scale), and the plugin fuses *both* copies into the
Convolution: the output is scaled twice, i.e. off by a factor of ~1e-5. ConvNeXt's downsampling Convs
meet all three (seeded and freshly initialised weights have zero biases; the output feeds the
depthwise Conv and the residual Add), so OpenVINO's int8 ConvNeXt logits came out ~0 (top-1 0 %),
while ONNX Runtime ran the same file correctly. A static batch, or any non-zero bias, avoids it: the
bias Add then sits between the Conv and its consumers and one Multiply is fused.

The rewrite gives each int8 Conv without a bias whose output is read more than once a bias of
2**-100 per channel (Convs read once, e.g. LV-ViT's stem, are left alone). OpenVINO fuses it into the Conv like
any bias (no extra op), and fp32 addition of 2**-100 leaves every value of magnitude ≥ 2**-76
unchanged, so the results are those of the zero-bias graph computed correctly.

A second fault, only in files made with ``dvit quantize --quantize-predictor``: in DynamicCNN's predictor
(``ConvPredictorLG``) the Conv that reads the quantized Concat of the local half and the broadcast global
mean comes out wrong on OpenVINO (ConvNeXt-T, seeded: that Conv's output off by 0.26 where it spans 0.31;
the keep log-probabilities off by up to 0.10 where they spread by 0.03; mean kept-set Jaccard against
PyTorch 0.52 in ``dvit validate``, 32 inputs, where ONNX Runtime runs the same file at 0.96; DeiT's and
Swin's Linear predictors are right on both).
``float_predictor_concat_inputs`` feeds such a Conv the float Concat instead of its Q/DQ pair: its weights
stay int8 values, the activation is not rounded, and the scores then match ONNX Runtime's within 0.012
(mean Jaccard 0.97).
"""

from __future__ import annotations

from typing import Any

import numpy as np

NEGLIGIBLE_BIAS = float(np.float32(2.0 ** -100))
BIAS_SUFFIX = "__ov_int8_bias"


def int8_convs_without_bias(model: Any) -> list[tuple[Any, int]]:
    """(Conv node, output channels) for each Conv OpenVINO 2026.4 gets wrong: weights from a DequantizeLinear
    of an initializer, bias absent or an all-zero initializer, output read more than once (by several
    nodes, or twice by one). A Conv read once runs correctly and is left as it is."""
    import collections

    from onnx import numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    reads = collections.Counter(name for node in graph.node for name in node.input)
    reads.update(o.name for o in graph.output)
    found = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or reads[node.output[0]] < 2:
            continue
        weights = producer.get(node.input[1])
        if weights is None or weights.op_type != "DequantizeLinear":
            continue
        quantized = initializers.get(weights.input[0])
        if quantized is None or not quantized.dims:
            continue
        bias = node.input[2] if len(node.input) > 2 else ""
        if bias and (bias not in initializers or np.any(numpy_helper.to_array(initializers[bias]) != 0)):
            continue
        found.append((node, int(quantized.dims[0])))
    return found


def bias_int8_convs(model: Any) -> int:
    """Give every int8 Conv without a (non-zero) bias its own 2**-100 bias, in place; how many were changed.

    A zero bias initializer is often shared with other nodes (LayerNorm, depthwise Conv, Add): it is
    left alone and the Conv gets a new initializer.
    """
    from onnx import numpy_helper

    graph = model.graph
    convs = int8_convs_without_bias(model)
    for k, (node, channels) in enumerate(convs):
        name = f"{node.name or node.output[0]}{BIAS_SUFFIX}{k}"
        graph.initializer.append(numpy_helper.from_array(np.full(channels, NEGLIGIBLE_BIAS, np.float32), name))
        if len(node.input) > 2:
            node.input[2] = name
        else:
            node.input.append(name)
    return len(convs)


def predictor_convs_after_concat(model: Any) -> list[tuple[Any, str]]:
    """(Conv, the Concat's float output) for each score-predictor Conv (``export.graph.pruning_nodes``) whose
    input is a QuantizeLinear -> DequantizeLinear pair of a Concat's output: the Convs OpenVINO 2026.4
    computes wrong (module docstring)."""
    from ..export.graph import pruning_nodes

    producer = {out: node for node in model.graph.node for out in node.output}
    predictor = set().union(*pruning_nodes(model))
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name not in predictor:
            continue
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        source = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if source is not None and source.op_type == "Concat":
            found.append((node, q.input[0]))
    return found


def float_predictor_concat_inputs(model: Any) -> int:
    """Feed each Conv of ``predictor_convs_after_concat`` the float Concat (its Q/DQ pair bypassed), in place;
    how many Convs were changed. The pair is left in the graph for any other reader (OpenVINO drops it if none)."""
    convs = predictor_convs_after_concat(model)
    for node, concat_output in convs:
        node.input[0] = concat_output
    return len(convs)


__all__ = ("NEGLIGIBLE_BIAS", "bias_int8_convs", "float_predictor_concat_inputs", "int8_convs_without_bias",
           "predictor_convs_after_concat")
