"""Graph rewrites the ONNX Runtime CPU runner applies in memory before loading a graph.

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


def fuse_erf_gelu(model) -> int:
    """Replace every exact-erf GELU subgraph of ``model`` (an onnx ModelProto, edited in place) by a
    ``com.microsoft`` Gelu node; returns how many were replaced."""
    from onnx import helper

    graph = model.graph
    constants = _constants(graph)
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
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
