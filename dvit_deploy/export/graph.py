"""Reading the pruning structure out of an ONNX graph.

Each pruning stage must appear as one ``TopK`` over the token scores and one Gather-family node
that selects token rows with the TopK indices. ``pruning_stages`` finds them by following each
TopK's index output through pure index arithmetic (offsets, reshapes, casts) to the Gather that
consumes it, so the check does not depend on node names the exporter happens to choose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

GATHER_OPS = frozenset({"Gather", "GatherElements", "GatherND"})
SCATTER_OPS = frozenset({"ScatterND", "ScatterElements"})
# Ops that only reshape, offset, split or convert an index tensor on its way to a Gather (Slice:
# the ConvNeXt/Swin graphs cut one full TopK order into the kept and the other positions).
INDEX_OPS = frozenset({"Add", "Sub", "Mul", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Cast", "Expand", "Concat",
                       "Identity", "Slice"})


@dataclass
class StageGraph:
    topk_node: str
    k: int | None  # None when K is computed in the graph (dynamic keep ratio)
    k_source: str  # "constant" or the name of the tensor that computes it
    axis: int
    largest: bool
    sorted: bool
    indices_output: str  # the kept indices (ConvNeXt/Swin: the kept slice of the full order)
    gathers: list[str] = field(default_factory=list)
    # ConvNeXt/Swin ("split") graphs: the TopK sorts all N positions (K = N), a Slice keeps the
    # first ``k``; each Ada block gathers both sets and writes them back with one Scatter.
    split: bool = False
    sort_k: int | None = None
    scatters: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of initializers (stored in the file; external data is not loaded) and Constant nodes."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer
              if init.data_location != onnx.TensorProto.EXTERNAL}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
                elif attr.name in ("value_int", "value_ints"):
                    values[node.output[0]] = np.array(onnx.helper.get_attribute_value(attr))
    return values


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def pruning_stages(model: onnx.ModelProto) -> list[StageGraph]:
    graph = model.graph
    constants = constant_values(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    stages = []
    for node in graph.node:  # ONNX nodes are stored in topological order
        if node.op_type != "TopK":
            continue
        k_value = constants.get(node.input[1])
        stage = StageGraph(
            topk_node=node.name or node.output[0],
            k=int(np.asarray(k_value).reshape(-1)[0]) if k_value is not None else None,
            k_source="constant" if k_value is not None else node.input[1],
            axis=int(_attr(node, "axis", -1)),
            largest=bool(_attr(node, "largest", 1)),
            sorted=bool(_attr(node, "sorted", 1)),
            indices_output=node.output[1],
        )
        kept_slice = _kept_slice(node.output[1], consumers, constants)
        if kept_slice is not None:
            stage.split, stage.sort_k = True, stage.k
            stage.k, stage.indices_output = kept_slice
        stage.gathers = _gathers_fed_by(node.output[1], consumers)
        stage.scatters = _gathers_fed_by(node.output[1], consumers, SCATTER_OPS)
        stages.append(stage)
    return stages


def _kept_slice(tensor: str, consumers: dict[str, list[onnx.NodeProto]], constants: dict[str, np.ndarray]
                ) -> tuple[int | None, str] | None:
    """(K, output) of the Slice taking the first K entries of a TopK order, if the graph splits."""
    for node in consumers.get(tensor, []):
        if node.op_type != "Slice" or node.input[0] != tensor:
            continue
        starts, ends = constants.get(node.input[1]), constants.get(node.input[2])
        if starts is not None and int(np.asarray(starts).reshape(-1)[0]) == 0:
            k = int(np.asarray(ends).reshape(-1)[0]) if ends is not None else None
            return k, node.output[0]
    return None


def _gathers_fed_by(tensor: str, consumers: dict[str, list[onnx.NodeProto]], ops: frozenset[str] = GATHER_OPS
                    ) -> list[str]:
    found, seen, frontier = [], set(), [tensor]
    while frontier:
        name = frontier.pop()
        for node in consumers.get(name, []):
            key = node.name or node.output[0]
            if key in seen:
                continue
            seen.add(key)
            if node.op_type in ops and len(node.input) > 1 and node.input[1] == name:
                found.append(key)
            elif node.op_type in INDEX_OPS:
                frontier.extend(node.output)
    return found


def check_pruning_structure(model: onnx.ModelProto, keep_counts: list[int] | tuple[int, ...],
                            *, dynamic_keep: bool = False, split_blocks: tuple[int, ...] | None = None
                            ) -> tuple[list[StageGraph], list[str]]:
    """Stages found, and problems: wrong TopK count, wrong or non-constant K, gathers != 1.

    ``split_blocks`` (ConvNeXt/Swin): how many Ada blocks use each position's decision; each must
    gather the two sets (2 Gathers) and write them back with 1 Scatter.
    """
    stages = pruning_stages(model)
    problems = []
    if len(stages) != len(keep_counts):
        problems.append(f"expected {len(keep_counts)} TopK nodes (one per pruning stage), found {len(stages)}")
    for i, (stage, k) in enumerate(zip(stages, keep_counts), start=1):
        if dynamic_keep:
            if stage.k is not None:
                problems.append(f"stage {i}: TopK K is the constant {stage.k}, expected one computed from keep_ratio")
        elif stage.k != k:
            got = "computed in the graph" if stage.k is None else stage.k
            problems.append(f"stage {i}: TopK K is {got}, expected the constant {k}")
        if not stage.largest:
            problems.append(f"stage {i}: TopK selects the smallest scores (largest=0)")
        if split_blocks is not None or stage.split:
            problems.extend(_split_problems(i, stage, None if split_blocks is None else split_blocks[i - 1]))
            continue
        if len(stage.gathers) != 1:
            problems.append(f"stage {i}: TopK indices feed {len(stage.gathers)} Gather-family nodes, expected 1")
    return stages, problems


def record_problems(path: Any, record: Any) -> list[str]:
    """Where an ONNX graph does not do what its manifest's model record (``ModelRecord``) says: the export's own
    structure check (``check_pruning_structure``: one TopK per stage with K = the recorded keep count, or
    computed for --dynamic-keep; the gathers and scatters of each stage), run on the file as it is now.
    ``dvit package`` and ``dvit verify`` run it, so a hand-edited ``keep_counts`` never ships."""
    model = onnx.load(str(path), load_external_data=False)  # the structure only; weights are not needed
    config = dict(record.config or {})
    split_blocks = None if record.dense or not config else split_blocks_of(config)
    _, problems = check_pruning_structure(model, list(record.keep_counts), dynamic_keep=record.dynamic_keep,
                                          split_blocks=split_blocks)
    return problems


def _split_problems(i: int, stage: StageGraph, blocks: int | None) -> list[str]:
    if not stage.split:
        return [f"position {i}: TopK indices are not sliced into kept and other positions"]
    problems = [] if stage.sort_k is not None else [f"position {i}: the TopK order's K is not a constant"]
    expected = blocks if blocks is not None else max(len(stage.scatters), 1)
    if len(stage.scatters) != expected:
        problems.append(f"position {i}: {len(stage.scatters)} Scatter nodes write the two sets back, "
                        f"expected {expected} (one per Ada block)")
    if len(stage.gathers) != 2 * expected:
        problems.append(f"position {i}: TopK order feeds {len(stage.gathers)} Gather nodes, expected {2 * expected} "
                        "(kept and other positions in each Ada block)")
    return problems


def split_blocks_of(config: Any) -> tuple[int, ...] | None:
    """Ada blocks per predictor position of a ConvNeXt/Swin config (dict or VariantConfig), else None."""
    get = config.get if isinstance(config, dict) else (lambda key, default=None: getattr(config, key, default))
    if get("family") not in ("convnext", "swin"):
        return None
    locs, depth = list(get("pruning_loc") or []), int(get("depth") or 0)
    return tuple(b - a for a, b in zip(locs, locs[1:] + [depth]))


def with_topk_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph also outputs every TopK's indices (for checking kept tokens)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    for stage in pruning_stages(copy):
        if stage.indices_output not in existing:
            copy.graph.output.append(
                onnx.helper.make_tensor_value_info(stage.indices_output, onnx.TensorProto.INT64, None)
            )
    return copy


def io_description(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """Names, dtypes and shapes (symbolic dims as names) of graph inputs and outputs."""

    def describe(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            tensor = v.type.tensor_type
            shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in tensor.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else None
            out.append({"name": v.name, "dtype": dtype, "shape": shape})
        return out

    initializers = {i.name for i in model.graph.initializer}
    return {
        "inputs": describe(v for v in model.graph.input if v.name not in initializers),
        "outputs": describe(model.graph.output),
    }


def pruning_nodes(model: Any) -> list[set[str]]:
    """Per pruning stage, the nodes that exist only for pruning, found structurally.

    The predictor is every ancestor of the TopK's score input that is not also an ancestor of
    the token tensor the stage gathers from (the trunk); then the TopK, the index arithmetic
    and the Gather it feeds (ConvNeXt/Swin: both Gathers and the Scatter of every Ada block). Works on the exporter's graph and on ORT's optimized graph alike.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    position = {node.name: i for i, node in enumerate(graph.node)}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def ancestors(tensor: str) -> set[str]:
        seen: set[str] = set()
        frontier = [tensor]
        while frontier:
            node = producer.get(frontier.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            frontier.extend(node.input)
        return seen

    stages = []
    for topk in (n for n in graph.node if n.op_type == "TopK"):
        nodes = {topk.name}
        gather_data, first_gather = None, None
        frontier = [topk.output[1]]
        while frontier:  # index arithmetic down to the Gather
            name = frontier.pop()
            for node in consumers.get(name, []):
                if node.name in nodes:
                    continue
                if node.op_type in GATHER_OPS and len(node.input) > 1 and node.input[1] == name:
                    nodes.add(node.name)
                    # The earliest Gather reads the trunk as the predictor saw it; later ones (Ada
                    # blocks reusing the decision) read maps that already depend on this TopK.
                    if first_gather is None or position[node.name] < first_gather:
                        gather_data, first_gather = node.input[0], position[node.name]
                elif node.op_type in SCATTER_OPS and len(node.input) > 1 and node.input[1] == name:
                    nodes.add(node.name)  # ConvNeXt/Swin write-back: pruning overhead too
                elif node.op_type in INDEX_OPS:
                    nodes.add(node.name)
                    frontier.extend(node.output)
        trunk = ancestors(gather_data) if gather_data else set()
        nodes |= ancestors(topk.input[0]) - trunk
        stages.append(nodes)
    return stages


def set_dvit_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    """Replace the graph's metadata with ``entries`` and mark dvit-deploy as its producer."""
    from .. import __version__

    del model.metadata_props[:]
    for key, value in entries.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    model.producer_name = "dvit-deploy"
    model.producer_version = __version__
