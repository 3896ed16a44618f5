"""Graph rewrites the ONNX Runtime CPU runner applies in memory before loading a graph: the exact-erf GELU
and multi-head self-attention (below) each become one com.microsoft node.

The exact-erf GELU that torch's exporter writes, ``x * (0.5 * (1 + erf(x / √2)))``, is five
elementwise nodes (Div, Erf, Add, Mul, Mul) that ONNX Runtime's own GeluFusion does not match in this
order (it expects ``(x * (1 + erf)) * 0.5`` or ``(0.5 * x) * (1 + erf)``). Replaced by one
``com.microsoft`` Gelu node, ONNX Runtime then also folds the preceding bias Add into BiasGelu; the
math is the same exact-erf GELU. Only for ONNX Runtime's CPU provider: the file on disk (read by
TensorRT and OpenVINO) is never changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MS_DOMAIN = "com.microsoft"
_SQRT2 = float(np.sqrt(2.0))


def _scalar(name: str, constants: dict[str, Any]) -> float | None:
    value = constants.get(name)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))


def _constants(graph) -> dict[str, Any]:
    from onnx import numpy_helper

    found = {i.name: numpy_helper.to_array(i) for i in graph.initializer if not i.data_location and int(np.prod(i.dims)) <= 1}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def _other(node, name: str) -> str | None:
    """The input of a binary node that is not ``name`` (None unless exactly one input is ``name``)."""
    if len(node.input) != 2 or list(node.input).count(name) != 1:
        return None
    return node.input[1] if node.input[0] == name else node.input[0]


def _near(value: float | None, target: float, tol: float = 1e-4) -> bool:
    return value is not None and abs(value - target) <= tol * max(1.0, abs(target))


def _match(erf, producers, consumers, constants) -> tuple[str, list, str] | None:
    """(x, nodes to remove, y) for a GELU around this Erf, or None."""
    scale = producers.get(erf.input[0])
    if scale is None or scale.op_type not in ("Div", "Mul") or len(scale.input) != 2:
        return None
    x, c = scale.input
    if not (_near(_scalar(c, constants), _SQRT2) if scale.op_type == "Div"
            else _near(_scalar(c, constants), 1 / _SQRT2)):
        return None
    chain = [scale, erf]
    add = consumers.get(erf.output[0], [])
    if len(add) != 1 or add[0].op_type != "Add" or not _near(_scalar(_other(add[0], erf.output[0]) or "", constants), 1.0):
        return None
    chain.append(add[0])
    first = consumers.get(add[0].output[0], [])
    if len(first) != 1 or first[0].op_type != "Mul":
        return None
    chain.append(first[0])
    partner = _other(first[0], add[0].output[0])
    second = consumers.get(first[0].output[0], [])
    if len(second) != 1 or second[0].op_type != "Mul":
        return None
    last = _other(second[0], first[0].output[0])
    if _near(_scalar(partner or "", constants), 0.5) and last == x:     # x * (0.5 * (1 + erf))
        pass
    elif partner == x and _near(_scalar(last or "", constants), 0.5):  # (x * (1 + erf)) * 0.5
        pass
    else:
        return None
    chain.append(second[0])
    return x, chain, second[0].output[0]


def _graph_index(graph) -> tuple[dict[str, Any], dict[str, list], set[str]]:
    """Who produces each tensor, who reads it, and the graph's outputs (what a rewrite must keep)."""
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producers, consumers, {o.name for o in graph.output}


def fuse_erf_gelu(model) -> int:
    """Replace every exact-erf GELU subgraph of ``model`` (an onnx ModelProto, edited in place) by a
    ``com.microsoft`` Gelu node; returns how many were replaced."""
    from onnx import helper

    graph = model.graph
    constants = _constants(graph)
    producers, consumers, graph_outputs = _graph_index(graph)
    replaced: dict[int, Any] = {}  # id of the GELU's last node -> the Gelu node
    removed: set[int] = set()
    for erf in [n for n in graph.node if n.op_type == "Erf"]:
        found = _match(erf, producers, consumers, constants)
        if found is None:
            continue
        x, chain, y = found
        inner = [o for n in chain[:-1] for o in n.output]
        if any(o in graph_outputs for o in inner):
            continue
        # the scale node may feed only the Erf; the Add, first Mul only the next node (checked in _match)
        if len(consumers.get(chain[0].output[0], [])) != 1:
            continue
        replaced[id(chain[-1])] = helper.make_node("Gelu", [x], [y], name=f"{chain[-1].name or y}_gelu",
                                                   domain=MS_DOMAIN)
        removed.update(id(n) for n in chain[:-1])
    if not replaced:
        return 0
    kept = []
    for node in graph.node:
        if id(node) in removed:
            continue
        kept.append(replaced.get(id(node), node))
    del graph.node[:]
    graph.node.extend(kept)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(replaced)


# ------------------------------------------------------------------------------------------------
# Multi-head self-attention -> one com.microsoft Attention
#
# torch's exporter writes a timm Attention block as: MatMul(x, W_qkv) + b -> Reshape [B, N, 3, H, D]
# -> Transpose (2, 0, 3, 1, 4) -> three Slice+Squeeze (q, k, v) -> k: Reshape/Transpose/Reshape ->
# q·√s and k·√s (two Muls) -> MatMul -> Softmax -> MatMul(·, v) -> Transpose (0, 2, 1, 3) -> Reshape
# [B, N, H·D]. ORT's AttentionFusion does not match this (it expects BERT's masked pattern), so every
# block runs a 5-D Transpose, three strided copies, a K transpose, two scalings and a head Transpose
# around its GEMMs. ORT's CPU Attention kernel computes Q, K and V straight into the per-head layout
# from the packed weight (the same [in, 3·H·D] initializer), then softmax(q·kᵀ·s)·v, and writes
# [B, N, H·D]: the same math. Window attention (Swin: a bias Add before Softmax) does not match.


def _perm(node) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


def _single(consumers, name: str, op_type: str):
    """The one reader of ``name`` besides Shape nodes, when it is an ``op_type``."""
    found = [c for c in consumers.get(name, []) if c.op_type != "Shape"]
    return found[0] if len(found) == 1 and found[0].op_type == op_type else None


def _unbind_index(node, constants) -> int | None:
    """Which slot of axis 0 a Slice(+Squeeze) or Gather of the packed [3, B, H, N, D] tensor takes."""
    if node.op_type == "Gather" and next((a.i for a in node.attribute if a.name == "axis"), 0) == 0:
        return None if (v := _scalar(node.input[1], constants)) is None else int(v)
    if node.op_type == "Slice" and len(node.input) >= 4:
        start, end, axis = (_scalar(node.input[i], constants) for i in (1, 2, 3))
        if axis == 0 and start is not None and end == start + 1:
            return int(start)
    return None


def _head_tensor(node, consumers):
    """The q/k/v tensor a Slice+Squeeze or Gather yields, and the nodes that make it."""
    if node.op_type == "Gather":
        return node.output[0], [node]
    squeeze = _single(consumers, node.output[0], "Squeeze")
    return (None, []) if squeeze is None else (squeeze.output[0], [node, squeeze])


def _scaled(consumers, name: str, constants) -> tuple[str | None, float | None, list]:
    """A tensor optionally multiplied by a scalar: (the tensor fed on, the scalar, the Mul)."""
    mul = _single(consumers, name, "Mul")
    if mul is None:
        return name, 1.0, []
    return mul.output[0], _scalar(_other(mul, name) or "", constants), [mul]


def _k_transposed(consumers, name: str) -> tuple[str | None, list]:
    """k -> Reshape -> Transpose (last two axes) -> Reshape: kᵀ, as the exporter writes it for SDPA."""
    chain, current = [], name
    for op in ("Reshape", "Transpose", "Reshape"):
        node = _single(consumers, current, op)
        if node is None or node.input[0] != current:
            return None, []
        if op == "Transpose" and (_perm(node) or [])[-2:] != [len(_perm(node)) - 1, len(_perm(node)) - 2]:
            return None, []
        chain.append(node)
        current = node.output[0]
    return current, chain


def _match_attention(permute, producers, consumers, constants, initializers) -> dict[str, Any] | None:
    if _perm(permute) != [2, 0, 3, 1, 4]:
        return None
    reshape = producers.get(permute.input[0])
    add = producers.get(reshape.input[0]) if reshape is not None and reshape.op_type == "Reshape" else None
    if add is not None and add.op_type == "MatMul":  # qkv without bias (LV-ViT)
        matmul, add = add, None
    else:
        matmul = producers.get(add.input[0]) if add is not None and add.op_type == "Add" else None
    if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in initializers \
            or (add is not None and add.input[1] not in initializers):
        return None
    weight = initializers[matmul.input[1]]
    bias_dims = [weight.dims[-1]] if add is None else list(initializers[add.input[1]].dims)
    shape = producers.get(reshape.input[1])
    if shape is None or shape.op_type != "Concat" or len(shape.input) != 5:
        return None
    three, heads, head = (_scalar(shape.input[i], constants) for i in (2, 3, 4))
    if three != 3 or not heads or not head or len(weight.dims) != 2 or bias_dims != [weight.dims[1]] \
            or weight.dims[1] != 3 * heads * head:
        return None
    heads_of = {}
    for node in consumers.get(permute.output[0], []):
        index = _unbind_index(node, constants)
        tensor, nodes = _head_tensor(node, consumers)
        if index is None or tensor is None or index in heads_of:
            return None
        heads_of[index] = (tensor, nodes)
    if sorted(heads_of) != [0, 1, 2]:
        return None
    (q, q_nodes), (k, k_nodes), (v, v_nodes) = heads_of[0], heads_of[1], heads_of[2]
    kt, kt_nodes = _k_transposed(consumers, k)
    if kt is None:
        return None
    q_fed, q_scale, q_mul = _scaled(consumers, q, constants)
    k_fed, k_scale, k_mul = _scaled(consumers, kt, constants)
    scores = _single(consumers, q_fed, "MatMul")
    if scores is None or list(scores.input) != [q_fed, k_fed] or q_scale is None or k_scale is None:
        return None
    softmax = _single(consumers, scores.output[0], "Softmax")
    if softmax is None or next((a.i for a in softmax.attribute if a.name == "axis"), -1) not in (-1, 3):
        return None
    context = _single(consumers, softmax.output[0], "MatMul")
    if context is None or list(context.input) != [softmax.output[0], v]:
        return None
    heads_back = _single(consumers, context.output[0], "Transpose")
    if heads_back is None or _perm(heads_back) != [0, 2, 1, 3]:
        return None
    merged = _single(consumers, heads_back.output[0], "Reshape")
    if merged is None:
        return None
    chain = [matmul, *([add] if add is not None else []), reshape, permute, *q_nodes, *k_nodes, *v_nodes, *kt_nodes, *q_mul, *k_mul, scores,
             softmax, context, heads_back, merged]
    return {"x": matmul.input[0], "weight": matmul.input[1], "bias": None if add is None else add.input[1],
            "width": int(weight.dims[1]), "y": merged.output[0],
            "heads": int(heads), "scale": float(q_scale * k_scale), "chain": chain}


def _dead_code(graph) -> None:
    """Drop nodes none of whose outputs is read (the shape arithmetic a fused block leaves)."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        kept = [n for n in graph.node if any(o in read for o in n.output if o)]
        if len(kept) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(kept)


def fuse_attention(model) -> int:
    """Replace every multi-head self-attention block the exporter wrote (above) by one ``com.microsoft``
    Attention node reading the block's own packed qkv weight; returns how many were replaced.

    A block is only replaced when nothing outside it reads its intermediate tensors (apart from shape
    arithmetic that dies with it)."""
    from onnx import helper

    graph = model.graph
    constants = _constants(graph)
    initializers = {i.name: i for i in graph.initializer}
    producers, consumers, graph_outputs = _graph_index(graph)
    replaced: dict[int, Any] = {}
    removed: set[int] = set()
    for permute in [n for n in graph.node if n.op_type == "Transpose"]:
        found = _match_attention(permute, producers, consumers, constants, initializers)
        if found is None:
            continue
        chain = found["chain"]
        inside = {id(n) for n in chain}
        escaped = [o for n in chain[:-1] for o in n.output
                   if o in graph_outputs or any(id(c) not in inside and c.op_type not in ("Shape",)
                                                for c in consumers.get(o, []))]
        if escaped:
            continue
        bias = found["bias"]
        if bias is None:  # the kernel takes a bias; a zero one adds nothing
            from onnx import numpy_helper

            bias = f"{found['weight']}_zero_bias"
            if bias not in initializers:
                initializers[bias] = numpy_helper.from_array(np.zeros(found["width"], np.float32), bias)
                graph.initializer.append(initializers[bias])
        replaced[id(chain[-1])] = helper.make_node(
            "Attention", [found["x"], found["weight"], bias], [found["y"]],
            name=f"{chain[-1].name or found['y']}_attention", domain=MS_DOMAIN,
            num_heads=found["heads"], scale=found["scale"])
        removed.update(id(n) for n in chain[:-1])
    if not replaced:
        return 0
    kept = [replaced.get(id(n), n) for n in graph.node if id(n) not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    _dead_code(graph)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(replaced)


def fuse_for_cpu(model) -> dict[str, int]:
    """Every rewrite dvit's ONNX Runtime CPU runner applies, in order; how many subgraphs each replaced."""
    return {"gelu": fuse_erf_gelu(model), "attention": fuse_attention(model)}
