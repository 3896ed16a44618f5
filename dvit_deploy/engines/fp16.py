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
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    elem_type: dict[str, int] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        elem_type[value.name] = value.type.tensor_type.elem_type
    for init in inferred.graph.initializer:
        elem_type[init.name] = init.data_type

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    producers = {o: n for n in graph.node for o in n.output}
    initializers = {i.name: i for i in graph.initializer}

    reasons: Counter[str] = Counter()
    keep32: set[int] = set()
    for i, node in enumerate(graph.node):
        if node.op_type in keep_ops_fp32:
            keep32.add(i)
            reasons[f"op {node.op_type}"] += 1
    if keep_predictor_fp32:
        predictor = _predictor_nodes(graph, producers) - keep32
        keep32 |= predictor
        reasons["score predictor"] += len(predictor)
    head = _output_head_nodes(graph, producers) - keep32
    keep32 |= head
    reasons["output head"] += len(head)

    def is_float(name: str) -> bool:
        return elem_type.get(name) == FLOAT

    def touches_float(node: onnx.NodeProto) -> bool:
        if node.op_type == "Cast":
            return any(a.name == "to" and a.i == FLOAT for a in node.attribute) or is_float(node.input[0])
        return any(is_float(n) for n in list(node.input) + list(node.output) if n)

    half_nodes = {i for i, node in enumerate(graph.node) if i not in keep32 and touches_float(node)}

    # Which float tensors end up fp16: outputs of fp16 nodes.
    half_tensors = {o for i in half_nodes for o in graph.node[i].output if is_float(o)}

    new_initializers: dict[str, onnx.TensorProto] = {}
    converted = 0

    def half_initializer(name: str) -> str:
        nonlocal converted
        if name not in new_initializers:
            array = numpy_helper.to_array(initializers[name]).astype(np.float16)
            users_fp32 = any(name in n.input for j, n in enumerate(graph.node) if j not in half_nodes)
            new_name = f"{name}__fp16" if users_fp32 or name in {o.name for o in graph.output} else name
            new_initializers[name] = numpy_helper.from_array(array, new_name)
            converted += 1
        return new_initializers[name].name

    casts: dict[tuple[str, int], str] = {}
    cast_nodes: list[tuple[int, onnx.NodeProto]] = []  # (insert before node index, cast)

    def cast(name: str, to: int, before: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp16" if to == HALF else "fp32"
            casts[key] = f"{name}__to_{suffix}"
            cast_nodes.append((before, helper.make_node("Cast", [name], [casts[key]], to=to,
                                                        name=f"{name}__cast_{suffix}")))
        return casts[key]

    graph_inputs = {i.name for i in graph.input}
    for i, node in enumerate(graph.node):
        fp16 = i in half_nodes
        for slot, name in enumerate(node.input):
            if not name or not is_float(name):
                continue
            if fp16:
                if name in initializers and name not in graph_inputs:
                    node.input[slot] = half_initializer(name)
                elif name not in half_tensors:
                    node.input[slot] = cast(name, HALF, i)
            elif name in half_tensors:
                node.input[slot] = cast(name, FLOAT, i)
        if fp16:
            _retype_node(node)

    # Graph outputs keep fp32: re-route through a Cast when produced in fp16.
    for output in graph.output:
        if output.name in half_tensors:
            internal = f"{output.name}__fp16"
            for node in list(graph.node) + [c for _, c in cast_nodes]:
                for slot, name in enumerate(node.output):
                    if name == output.name:
                        node.output[slot] = internal
                for slot, name in enumerate(node.input):
                    if name == output.name:
                        node.input[slot] = internal
            cast_nodes.append((len(graph.node), helper.make_node("Cast", [internal], [output.name], to=FLOAT,
                                                                  name=f"{output.name}__cast_fp32")))

    # Rebuild node order: each Cast right before its first consumer keeps topological order.
    by_position: dict[int, list[onnx.NodeProto]] = {}
    for position, node in cast_nodes:
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
    final.update({t.name: t for t in new_initializers.values()})
    del graph.initializer[:]
    graph.initializer.extend(final.values())
    del graph.value_info[:]  # types changed; let consumers re-infer
    return Fp16Result(out, len(half_nodes), len(graph.node) - len(half_nodes) - len(cast_nodes),
                      len(cast_nodes), dict(reasons), converted)


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
    from ..helpers.compare import Tolerance, boundary_margins, compare
    from ..export.check import cpu_session
    from ..export.graph import pruning_stages, with_topk_outputs
    from ..artifact.names import kept_patch_ids
    from ..helpers.batching import RunOutput, run_batched

    def run(model: onnx.ModelProto):
        stages = pruning_stages(model)
        probe = with_topk_outputs(model)
        # TopK values (the scores at the boundary) give the margins for near-tie accounting.
        for stage in stages:
            topk = next(n for n in probe.graph.node if (n.name or n.output[0]) == stage.topk_node)
            probe.graph.output.append(helper.make_tensor_value_info(topk.input[0], FLOAT, None))
        session = cpu_session(probe, "the graph")
        names = [o.name for o in session.get_outputs()]
        chunk = fixed_batch(model) or len(images)
        if len(images) % chunk:
            raise ValueError(f"{len(images)} images do not split into the graph's fixed batch of {chunk}")
        score_names = [n.input[0] for s in stages for n in probe.graph.node if (n.name or n.output[0]) == s.topk_node]

        def run_chunk(batch: np.ndarray) -> RunOutput:
            outs = dict(zip(names, session.run(names, {session.get_inputs()[0].name: batch, **(extra_inputs or {})})))
            kept = kept_patch_ids([outs[s.indices_output] for s in stages], num_patches,
                                  compose=not any(s.split for s in stages)) if stages else []
            return RunOutput(outs[names[0]], kept, {name: outs[name] for name in score_names})

        gathered = run_batched(run_chunk, images, chunk)
        return gathered.logits, gathered.kept or [], [gathered.extra(name) for name in score_names]

    ref_logits, ref_kept, ref_scores = run(fp32_model)
    test_logits, test_kept, _ = run(fp16_model)
    margins = boundary_margins([s.reshape(len(images), -1) for s in ref_scores], [k.shape[1] for k in ref_kept])
    return compare(ref_logits, test_logits, Tolerance.for_precision("fp16"), ref_kept=ref_kept or None,
                   test_kept=test_kept or None, ref_margins=margins)
