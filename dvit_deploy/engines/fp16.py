"""ONNX graph -> mixed precision (fp16 compute, fp32 where token selection needs it).

TensorRT 11 builds strongly typed networks only: every tensor's type comes from the graph, so
``--fp16`` means converting the ONNX first. This module does that with plain ONNX:

* nodes run in fp16 unless they must stay fp32: LayerNormalization, Softmax, LogSoftmax,
  ReduceMean and TopK (statistics and the selection itself), the whole score-predictor
  sub-graph (every node between a TopK's score input and the predictor's LayerNorm, so the
  ranking that picks tokens is computed exactly as in fp32), and the classifier producing each
  graph output (logits stay fp32);
* float32 initializers used only by fp16 nodes are stored as fp16 (shared ones are copied);
* a Cast is inserted wherever a tensor crosses between the two regions; graph inputs and
  outputs keep their types.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
KEEP_FP32_OPS = frozenset({"LayerNormalization", "Softmax", "LogSoftmax", "ReduceMean", "TopK"})
COMPUTE_OPS = frozenset({"MatMul", "Gemm", "Conv"})
# Ops that only move data on the way from a classifier to a graph output.
PASS_THROUGH_OPS = frozenset({"Add", "Reshape", "Squeeze", "Unsqueeze", "Gather", "Slice", "Identity",
                              "Flatten", "Transpose", "Cast"})


@dataclass
class Fp16Result:
    model: onnx.ModelProto
    fp16_nodes: int
    fp32_nodes: int
    casts_inserted: int
    fp32_reasons: dict[str, int] = field(default_factory=dict)
    converted_initializers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"fp16_nodes": self.fp16_nodes, "fp32_or_integer_nodes": self.fp32_nodes, "casts_inserted": self.casts_inserted,
                "fp32_reasons": self.fp32_reasons, "converted_initializers": self.converted_initializers}


def _predictor_nodes(graph: onnx.GraphProto, producers: dict[str, onnx.NodeProto]) -> set[int]:
    """Nodes feeding each TopK's scores, back to (and including) the predictor's LayerNorm."""
    found: set[int] = set()
    index = {id(n): i for i, n in enumerate(graph.node)}
    for node in graph.node:
        if node.op_type != "TopK":
            continue
        frontier = [node.input[0]]
        while frontier:
            producer = producers.get(frontier.pop())
            if producer is None or index[id(producer)] in found:
                continue
            if producer.op_type in ("Shape", "Size"):
                continue  # shape arithmetic reads dims only, never values
            found.add(index[id(producer)])
            if producer.op_type == "LayerNormalization":
                continue  # the predictor starts here; its input is the backbone's
            frontier.extend(i for i in producer.input if i)
    return found


def _output_head_nodes(graph: onnx.GraphProto, producers: dict[str, onnx.NodeProto]) -> set[int]:
    """The classifier MatMul/Gemm (and data movement after it) producing each float output."""
    found: set[int] = set()
    index = {id(n): i for i, n in enumerate(graph.node)}
    for output in graph.output:
        frontier = [output.name]
        while frontier:
            producer = producers.get(frontier.pop())
            if producer is None or index[id(producer)] in found:
                continue
            found.add(index[id(producer)])
            if producer.op_type in COMPUTE_OPS:
                continue
            if producer.op_type in PASS_THROUGH_OPS:
                frontier.extend(i for i in producer.input if i)
    return found


def convert_to_mixed_precision(model: onnx.ModelProto, *, keep_predictor_fp32: bool = True,
                               keep_ops_fp32: frozenset[str] = KEEP_FP32_OPS) -> Fp16Result:
    """A new model computing in fp16 except where listed above; the input model is unchanged."""
    elem_type = _element_types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep32, reasons = _fp32_nodes(graph, keep_predictor_fp32, keep_ops_fp32)

    def is_float(name: str) -> bool:
        return elem_type.get(name) == FLOAT

    def touches_float(node: onnx.NodeProto) -> bool:
        if node.op_type == "Cast":
            return any(a.name == "to" and a.i == FLOAT for a in node.attribute) or is_float(node.input[0])
        return any(is_float(n) for n in list(node.input) + list(node.output) if n)

    half_nodes = {i for i, node in enumerate(graph.node) if i not in keep32 and touches_float(node)}
    rewrite = _Rewrite(graph, half_nodes, is_float)
    rewrite.nodes()
    rewrite.outputs()
    casts = len(rewrite.cast_nodes)
    rewrite.finish()
    return Fp16Result(out, len(half_nodes), len(graph.node) - len(half_nodes) - casts, casts, dict(reasons),
                      rewrite.converted)


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Every tensor's element type, after ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    elem_type: dict[str, int] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        elem_type[value.name] = value.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        elem_type[init.name] = init.data_type
    return elem_type


def _fp32_nodes(graph: onnx.GraphProto, keep_predictor: bool, keep_ops: frozenset[str]) -> tuple[set[int], Counter]:
    """Indices of the nodes that stay fp32, and how many for each reason."""
    producers = {o: n for n in graph.node for o in n.output}
    reasons: Counter[str] = Counter()
    keep32: set[int] = set()
    for i, node in enumerate(graph.node):
        if node.op_type in keep_ops:
            keep32.add(i)
            reasons[f"op {node.op_type}"] += 1
    if keep_predictor:
        predictor = _predictor_nodes(graph, producers) - keep32
        keep32 |= predictor
        reasons["score predictor"] += len(predictor)
    head = _output_head_nodes(graph, producers) - keep32
    keep32 |= head
    reasons["output head"] += len(head)
    return keep32, reasons


class _Rewrite:
    """Rewires one graph copy: fp16 nodes get fp16 initializers and Casts where tensors cross regions."""

    def __init__(self, graph: onnx.GraphProto, half_nodes: set[int], is_float) -> None:
        self.graph = graph
        self.half_nodes = half_nodes
        self.is_float = is_float
        self.initializers = {i.name: i for i in graph.initializer}
        # Which float tensors end up fp16: outputs of fp16 nodes.
        self.half_tensors = {o for i in half_nodes for o in graph.node[i].output if is_float(o)}
        self.new_initializers: dict[str, onnx.TensorProto] = {}
        self.converted = 0
        self.casts: dict[tuple[str, int], str] = {}
        self.cast_nodes: list[tuple[int, onnx.NodeProto]] = []  # (insert before node index, cast)

    def half_initializer(self, name: str) -> str:
        if name not in self.new_initializers:
            graph = self.graph
            array = numpy_helper.to_array(self.initializers[name]).astype(np.float16)
            users_fp32 = any(name in n.input for j, n in enumerate(graph.node) if j not in self.half_nodes)
            new_name = f"{name}__fp16" if users_fp32 or name in {o.name for o in graph.output} else name
            self.new_initializers[name] = numpy_helper.from_array(array, new_name)
            self.converted += 1
        return self.new_initializers[name].name

    def cast(self, name: str, to: int, before: int) -> str:
        key = (name, to)
        if key not in self.casts:
            suffix = "fp16" if to == HALF else "fp32"
            self.casts[key] = f"{name}__to_{suffix}"
            self.cast_nodes.append((before, helper.make_node("Cast", [name], [self.casts[key]], to=to,
                                                             name=f"{name}__cast_{suffix}")))
        return self.casts[key]

    def nodes(self) -> None:
        graph_inputs = {i.name for i in self.graph.input}
        for i, node in enumerate(self.graph.node):
            fp16 = i in self.half_nodes
            for slot, name in enumerate(node.input):
                if not name or not self.is_float(name):
                    continue
                if fp16:
                    if name in self.initializers and name not in graph_inputs:
                        node.input[slot] = self.half_initializer(name)
                    elif name not in self.half_tensors:
                        node.input[slot] = self.cast(name, HALF, i)
                elif name in self.half_tensors:
                    node.input[slot] = self.cast(name, FLOAT, i)
            if fp16:
                _retype_node(node)

    def outputs(self) -> None:
        """Graph outputs keep fp32: re-route through a Cast when produced in fp16."""
        graph = self.graph
        for output in graph.output:
            if output.name not in self.half_tensors:
                continue
            internal = f"{output.name}__fp16"
            for node in list(graph.node) + [c for _, c in self.cast_nodes]:
                for slot, name in enumerate(node.output):
                    if name == output.name:
                        node.output[slot] = internal
                for slot, name in enumerate(node.input):
                    if name == output.name:
                        node.input[slot] = internal
            self.cast_nodes.append((len(graph.node), helper.make_node("Cast", [internal], [output.name], to=FLOAT,
                                                                       name=f"{output.name}__cast_fp32")))

    def finish(self) -> None:
        """Node order with each Cast right before its first consumer; initializers no longer read dropped."""
        graph = self.graph
        by_position: dict[int, list[onnx.NodeProto]] = {}
        for position, node in self.cast_nodes:
            by_position.setdefault(position, []).append(node)
        ordered = []
        for i, node in enumerate(graph.node):
            ordered.extend(by_position.get(i, []))
            ordered.append(node)
        ordered.extend(by_position.get(len(graph.node), []))
        del graph.node[:]
        graph.node.extend(ordered)
        # Initializers: drop fp32 ones no longer read, add the fp16 ones (same name = replaced).
        used = {name for node in graph.node for name in node.input}
        final = {init.name: init for init in graph.initializer if init.name in used}
        final.update({t.name: t for t in self.new_initializers.values()})
        del graph.initializer[:]
        graph.initializer.extend(final.values())
        del graph.value_info[:]  # types changed; let consumers re-infer


def _retype_node(node: onnx.NodeProto) -> None:
    """Attributes that name a float32 type or hold float32 data switch to fp16."""
    if node.op_type == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute):
        # No 'value' means a float32 zero (ONNX default): spell out an fp16 zero instead (the
        # zero map the ConvNeXt/Swin write-back scatters into).
        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float16))))
        return
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
            attr.i = HALF
        elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" and attr.t.data_type == FLOAT:
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
        elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
            values = np.asarray(helper.get_attribute_value(attr), dtype=np.float16)
            node.attribute.remove(attr)
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(values)))
            return


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size of a graph exported with a fixed batch (first input's first dim), else None."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


def compare_with_fp32(fp32_model: onnx.ModelProto, fp16_model: onnx.ModelProto, images: np.ndarray, *,
                      extra_inputs: dict[str, np.ndarray] | None = None, num_patches: int = 196):
    """Run both graphs in ONNX Runtime (CPU) and compare logits and kept tokens (fp16 tolerance).

    Returns ``compare.Comparison``; kept tokens are compared as sets per stage, with near-tie
    flips (reference margin below the fp16 tie margin) counted separately. A fixed-batch graph
    runs in chunks of its batch (``len(images)`` must be a multiple of it).
    """
    from ..helpers.comparator import Comparator
    from ..helpers.compare import Tolerance

    chunk = fixed_batch(fp32_model) or len(images)
    if len(images) % chunk:
        raise ValueError(f"{len(images)} images do not split into the graph's fixed batch of {chunk}")
    reference = _graph_run(fp32_model, extra_inputs, num_patches, margins=True)
    test = _graph_run(fp16_model, extra_inputs, num_patches, margins=False)
    return Comparator(Tolerance.for_precision("fp16")).run(reference, test, images, batch=chunk)


def _graph_run(model: onnx.ModelProto, extra_inputs: dict[str, np.ndarray] | None, num_patches: int, *,
               margins: bool):
    """One batch through ``model`` in ONNX Runtime (CPU): logits, kept ids and, for the reference, the
    keep-boundary margins from the scores each TopK ranks (near-tie accounting)."""
    from ..export.check import session_run
    from ..export.graph import pruning_stages, with_topk_outputs
    from ..helpers.batching import RunOutput
    from ..helpers.comparator import margin_key
    from ..helpers.compare import boundary_margins
    from ..helpers.ort_session import cpu_session

    stages = pruning_stages(model)
    probe = with_topk_outputs(model)
    topks = {(n.name or n.output[0]): n for n in probe.graph.node if n.op_type == "TopK"}
    score_names = [topks[s.topk_node].input[0] for s in stages]
    for name in score_names:  # the TopK inputs become outputs: the scores at the keep boundary
        probe.graph.output.append(helper.make_tensor_value_info(name, FLOAT, None))
    run = session_run(cpu_session(probe, "the graph"), [s.indices_output for s in stages], num_patches,
                      compose=not any(s.split for s in stages), extra_inputs=extra_inputs)
    if not margins:
        return run

    def with_margins(batch: np.ndarray) -> RunOutput:
        out = run(batch)
        scores = [out.extra[name].reshape(len(batch), -1) for name in score_names]
        found = boundary_margins(scores, [k.shape[1] for k in out.kept or []])
        return RunOutput(out.logits, out.kept, {margin_key(s): m for s, m in enumerate(found)})

    return with_margins
