"""`--dynamic-keep`: one graph whose per-stage token counts are chosen at run time.

Why an integer ``keep_counts`` input and not a float ``keep_ratio``
------------------------------------------------------------------
TensorRT's TopK takes a run-time K only as a *shape tensor* (the output's size depends on
it), and network inputs that are shape tensors are declared in the optimization profile with
``IOptimizationProfile.set_shape_input(name, min, opt, max)`` — integer values only
(``setShapeValues`` int32 / ``setShapeValuesV2`` int64). A float ``keep_ratio`` input would be
an execution tensor, which TensorRT cannot turn into a TopK size. So the graph takes
``keep_counts`` (int32, shape ``[num_stages]``); the host computes it from ρ with the exact
Python expression the official code uses (``int(196 * rho ** k)`` in float64,
``KeepSchedule``), which also removes any float32 rounding risk from the graph.

How the graph is made
---------------------
The model is traced with one dummy input per stage whose *length* is K_s, so torch.export
keeps every token count symbolic (TopK's K, the Gather reshapes, attention reshapes all
follow it). Afterwards each ``Shape(dummy_s)`` node is replaced by
``Gather(Cast(keep_counts, int64), [s])`` and the dummies are removed.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from ..artifact import names
from ..artifact.names import KEEP_COUNTS_INPUT  # noqa: F401 - re-exported for callers of this module
from ..helpers.batching import RunOutput
from ..helpers.comparator import Comparator, RunBatch, gather
from ..helpers.compare import Tolerance
from ..helpers.defaults import EXPORT_CHECK_SAMPLES
from ..helpers.errors import BadInput, DvitError
from ..models import KeepSchedule, kept_patch_ids
from ..models.checkpoint import LoadedModel
from ..helpers.ort_session import cpu_session
from .check import CHECK_BATCH, CheckReport, check_file_and_structure, check_images, reference_run
from .graph import pruning_stages, with_topk_outputs
from .exporter import export_program

CHECK_RATIOS = (0.9, 0.8, 0.7)
_DUMMY_PREFIX = "dvit_keep_len_stage"


def keep_counts_for(keep_ratio: float, num_stages: int, num_patches: int) -> np.ndarray:
    """The ``keep_counts`` input for ρ: exactly the counts the fixed-ratio model uses."""
    try:
        return names.keep_counts_for(float(keep_ratio), num_stages, num_patches)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def float32_graph_counts(keep_ratio: float, num_stages: int, num_patches: int) -> list[int]:
    """What ``int(196 * rho ** k)`` gives when computed in float32, as a float graph would.

    Kept to document (and test) why the graph does not compute K from a float ratio.
    """
    rho = np.float32(keep_ratio)
    return [int(np.float32(num_patches) * rho ** np.float32(k + 1)) for k in range(num_stages)]


class _SymbolicKeep(torch.nn.Module):
    """The model's pruned forward with each stage's K read from a dummy input's length."""

    def __init__(self, model: torch.nn.Module, token_outputs: bool) -> None:
        super().__init__()
        self.model = model
        self.token_outputs = token_outputs

    def forward(self, images: torch.Tensor, *lengths: torch.Tensor):
        counts = [length.shape[0] for length in lengths]
        # Tell torch.export what the schedule guarantees: each stage keeps at most what it is given.
        for previous, k in zip([self.model.variant.num_patches, *counts], counts):
            torch._check(k <= previous)
        logits, decisions = self.model.forward_with_decisions(images, keep_counts=counts)
        return (logits, *decisions.keep_indices) if self.token_outputs else logits


def export_dynamic_keep(loaded: LoadedModel, path: Path, *, opset: int, batch: int | None, token_outputs: bool,
                        input_name: str, output_names: list[str], max_batch: int) -> None:
    """Trace with symbolic token counts and write the ``keep_counts`` graph to ``path``."""
    if loaded.dense:
        raise BadInput("--dynamic-keep needs a pruned model; a dense baseline keeps every token")
    variant = loaded.variant
    stages = variant.num_stages
    example_batch = batch or 2
    images = torch.randn(example_batch, variant.in_chans, variant.img_size, variant.img_size)
    lengths = [torch.zeros(k) for k in loaded.keep_counts]
    dummy_names = [f"{_DUMMY_PREFIX}{s + 1}" for s in range(stages)]
    image_dims = {0: torch.export.Dim("batch", min=1, max=max_batch)} if batch is None else None
    # forward(images, *lengths): the lengths arrive as one tuple, so their dims form one too.
    length_dims = tuple({0: torch.export.Dim(f"k{s + 1}", min=1, max=variant.num_patches)} for s in range(stages))
    dims = (image_dims, length_dims)
    module = _SymbolicKeep(loaded.model, token_outputs).eval()
    export_program(module, (images, *lengths), path, external_data=False,
                   failure="ONNX export (--dynamic-keep) failed", opset_version=opset,
                   input_names=[input_name, *dummy_names], output_names=output_names, dynamic_shapes=dims)
    model = onnx.load(str(path))
    replace_length_inputs(model, dummy_names)
    onnx.save(model, str(path))


def replace_length_inputs(model: onnx.ModelProto, dummy_names: Sequence[str]) -> None:
    """Swap each ``Shape(dummy_s)`` for ``Gather(keep_counts, [s])`` and drop the dummies."""
    graph = model.graph
    index_of = {name: s for s, name in enumerate(dummy_names)}
    cast_out = f"{KEEP_COUNTS_INPUT}_int64"
    new_nodes = [helper.make_node("Cast", [KEEP_COUNTS_INPUT], [cast_out], to=TensorProto.INT64,
                                  name="keep_counts_to_int64")]
    replaced = set()
    for node in graph.node:
        users = [name for name in node.input if name in index_of]
        if not users:
            new_nodes.append(node)
            continue
        if node.op_type != "Shape" or len(node.input) != 1:
            raise DvitError(f"--dynamic-keep: unexpected use of a token-count input by {node.op_type} "
                            f"node '{node.name}'; the exporter changed how it lowers sizes")
        stage = index_of[node.input[0]]
        start = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "start"), 0)
        end = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "end"), None)
        if start != 0 or end not in (1, None):
            raise DvitError(f"--dynamic-keep: unexpected Shape slice [{start}:{end}] of a token-count input")
        index_name = f"keep_counts_index_stage{stage + 1}"
        graph.initializer.append(helper.make_tensor(index_name, TensorProto.INT64, [1], [stage]))
        new_nodes.append(helper.make_node("Gather", [cast_out, index_name], list(node.output), axis=0,
                                          name=f"keep_count_stage{stage + 1}"))
        replaced.add(stage)
    if replaced != set(range(len(dummy_names))):
        raise DvitError("--dynamic-keep: some stages' token counts were specialised to constants by the exporter")
    del graph.node[:]
    graph.node.extend(new_nodes)
    kept_inputs = [i for i in graph.input if i.name not in index_of]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    graph.input.append(helper.make_tensor_value_info(KEEP_COUNTS_INPUT, TensorProto.INT32, [len(dummy_names)]))
    # Output shapes named after the dummies' dims stay symbolic; rename them for readers.
    for value in list(graph.output) + list(graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param.startswith("k") and dim.dim_param[1:].isdigit():
                dim.dim_param = f"keep_count_stage{dim.dim_param[1:]}"


def with_ratio(loaded: LoadedModel, keep_ratio: float) -> LoadedModel:
    """The same weights with a fixed keep ratio ρ (the fixed-ratio PyTorch reference)."""
    schedule = KeepSchedule.from_ratio(keep_ratio, loaded.variant.num_stages, loaded.variant.num_patches)
    model = copy.copy(loaded.model)  # shares every parameter; only the schedule differs
    model.schedule = schedule
    return dataclasses.replace(loaded, model=model, stage_ratios=schedule.ratios, notes=[])


@dataclass
class DynamicKeepReport(CheckReport):
    per_ratio: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "dynamic_keep": self.per_ratio}


def check_ratios(export_ratio: float) -> list[float]:
    ratios = list(CHECK_RATIOS)
    if not any(abs(export_ratio - r) < 1e-12 for r in ratios):
        ratios.append(export_ratio)
    return ratios


def check_dynamic_keep(path: Path, loaded: LoadedModel, *, batch: int | None, samples: int = EXPORT_CHECK_SAMPLES,
                       ratios: Sequence[float] | None = None,
                       on_phase: Callable[[str], None] | None = None) -> DynamicKeepReport:
    """ONNX checker, structure, and ORT at several ρ against fixed-ratio PyTorch models."""
    phase = on_phase or (lambda name: None)
    report = DynamicKeepReport()
    model = check_file_and_structure(path, report, loaded.keep_counts, dynamic_keep=True, on_phase=phase)

    phase("onnxruntime parity across keep ratios")
    session = cpu_session(with_topk_outputs(model), "the --dynamic-keep graph")
    report.provider = session.get_providers()[0]
    run_batch = batch or CHECK_BATCH
    images = check_images(loaded, samples, run_batch).numpy()
    export_ratio = loaded.stage_ratios[0]
    comparator = Comparator(Tolerance.for_precision("fp32"))
    for ratio in ratios or check_ratios(export_ratio):
        counts = keep_counts_for(ratio, loaded.variant.num_stages, loaded.variant.num_patches)
        tested = gather(keep_counts_run(session, model, counts, loaded.variant.num_patches), images, run_batch)
        got_k = [int(k.shape[1]) for k in tested.kept or []]
        comparison = comparator.run(reference_run(with_ratio(loaded, ratio)), tested, images, batch=run_batch)
        report.per_ratio.append({"keep_ratio": ratio, "expected_k": [int(c) for c in counts], "graph_k": got_k,
                                 "parity": comparison.to_dict()})
        if got_k != [int(c) for c in counts]:
            report.failures.append(f"ρ={ratio:g}: graph kept {got_k} tokens, fixed-ratio model keeps {list(counts)}")
        report.failures.extend(f"ρ={ratio:g}: {f}" for f in comparison.failures)
        if abs(ratio - export_ratio) < 1e-12:
            report.comparison, report.tolerance = comparison, comparator.tolerance
    return report


def keep_counts_run(session: Any, model: onnx.ModelProto, counts: np.ndarray, num_patches: int) -> RunBatch:
    """One batch through a ``keep_counts`` graph at ``counts``: logits and kept original patch ids."""
    names = [o.name for o in session.get_outputs()]
    image_input = next(i.name for i in session.get_inputs() if i.name != KEEP_COUNTS_INPUT)
    topk_outputs = [s.indices_output for s in pruning_stages(model)]

    def run(chunk: np.ndarray) -> RunOutput:
        outs = dict(zip(names, session.run(names, {image_input: chunk, KEEP_COUNTS_INPUT: counts.astype(np.int32)})))
        return RunOutput(outs[names[0]], kept_patch_ids([outs[n] for n in topk_outputs], num_patches))

    return run


def run_keep_counts(session: Any, model: onnx.ModelProto, images: np.ndarray, counts: np.ndarray, batch: int,
                    num_patches: int) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Run a ``keep_counts`` graph batch by batch: logits, kept original patch ids, K per stage."""
    tested = gather(keep_counts_run(session, model, counts, num_patches), images, batch)
    kept = tested.kept or []
    return tested.logits, kept, [int(k.shape[1]) for k in kept]
