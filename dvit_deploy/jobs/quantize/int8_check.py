"""The checks every quantized graph passes before it is written: structure, Q/DQ rules, agreement.

onnx.checker and one TopK per stage with the constant K feeding one Gather (the export's own
checks); the Q/DQ rules TensorRT's explicit quantization needs (zero points 0, per-channel weights,
opset ≥ 13, no excluded node computing on int8 data); and ONNX Runtime int8 vs PyTorch fp32 judged
by agreement (``compare.TOLERANCES['int8']``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from ...artifact.manifest import ModelRecord
from ...helpers.batching import RunOutput, run_batched
from ...helpers.compare import Comparison, Tolerance, compare
from ...helpers.defaults import QUANTIZE_CHECK_SAMPLES
from .calibration import SCENES_SEED, mixed_inputs

if TYPE_CHECKING:
    from ...artifact.context import RunContext
    from ...artifact.manifest import OnnxManifest

EXCLUDED_OP_TYPES = ("TopK", "Softmax", "LayerNormalization")
COMPUTE_OP_TYPES = ("MatMul", "Gemm", "Conv")  # the ops whose int8 inputs make int8 compute
DEFAULT_CHECK_SAMPLES = QUANTIZE_CHECK_SAMPLES
CHECK_SCENES_SEED = SCENES_SEED + 1  # check inputs differ from the calibration pictures
CHECK_NOISE_SEED = 20211206


@dataclass
class QuantizeCheck:
    checker: str = "not run"
    stages: list[dict[str, Any]] = field(default_factory=list)
    structure_problems: list[str] = field(default_factory=list)
    qdq: dict[str, Any] = field(default_factory=dict)
    inputs: str = ""
    comparison: Comparison | None = None
    failures: list[str] = field(default_factory=list)
    execution: dict[str, Any] = field(default_factory=dict)  # CPU class, session config, kernels ORT ran
    warnings: list[str] = field(default_factory=list)  # passed, but the user must know (e.g. no int8 kernel ran)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "onnx_checker": self.checker,
            "stages": self.stages,
            "structure_problems": self.structure_problems,
            "qdq": self.qdq,
            "onnxruntime_provider": "CPUExecutionProvider",
            "execution": self.execution,
            "inputs": self.inputs,
            "parity": None if self.comparison is None else self.comparison.to_dict(),
            "failures": self.failures,
            "warnings": self.warnings,
        }


def _int8_session(model, config: dict[str, str]):
    """A CPU session on the int8 graph with ``config``, and what it executes (read from ORT's optimized graph)."""
    import shutil
    import tempfile

    import onnxruntime as ort

    from ...helpers.cpu import cpu_info
    from ...helpers.errors import CheckFailed
    from ...runtime.ort_runner import describe_kernels, executed_op_types

    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    folder = Path(tempfile.mkdtemp(prefix="dvit-ort-"))
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    try:
        try:
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types
            raise CheckFailed(f"ONNX Runtime cannot load the int8 graph: {str(exc).splitlines()[0][:200]}") from None
        ops = executed_op_types(folder / "optimized.onnx") if (folder / "optimized.onnx").is_file() else {}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    cpu = cpu_info()
    return session, {"provider": session.get_providers()[0], "onnxruntime": ort.__version__,
                     "cpu": cpu.to_dict(), "session_config": config, "executed_op_types": ops,
                     "kernels": describe_kernels(ops)}


def _keep_feed(model: ModelRecord) -> dict[str, np.ndarray]:
    """The keep-count input a dynamic-keep graph takes besides the images (the counts it was exported with)."""
    keep_input = model.keep_input or {}
    if model.dynamic_keep and keep_input.get("name"):
        return {keep_input["name"]: np.asarray(model.keep_counts, dtype=keep_input.get("dtype", "int32"))}
    return {}


def qdq_facts(model) -> tuple[dict[str, Any], list[str]]:
    """Counts of Q/DQ nodes and the rules TensorRT's explicit quantization needs, with problems found."""
    from onnx import numpy_helper

    from ...export.graph import constant_values

    consts = constant_values(model.graph)
    problems: list[str] = []
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    initializers = {i.name for i in model.graph.initializer}
    per_channel = 0
    weights = 0
    max_weight = 0
    for node in dq:
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is not None and zp.dtype != np.int32 and (zp.dtype != np.int8 or np.any(zp != 0)):
            problems.append(f"{node.name}: zero point is not int8 0 ({zp.dtype}, max |zp| {int(np.abs(zp).max())})")
        if node.input[0] in initializers:
            weights += 1
            codes = consts.get(node.input[0])
            if codes is not None and np.asarray(codes).dtype in (np.int8, np.uint8) and np.asarray(codes).size:
                max_weight = max(max_weight, int(np.abs(np.asarray(codes).astype(np.int32)).max()))
            scale = consts.get(node.input[1])
            if scale is not None and np.asarray(scale).size > 1:
                per_channel += 1
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        problems.append(f"opset {opset}: per-channel Q/DQ needs opset ≥ 13")
    facts = {"quantize_linear": len(q), "dequantize_linear": len(dq), "quantized_weights": weights,
             "per_channel_weights": per_channel, "zero_points_all_zero": not any("zero point" in p for p in problems),
             "opset": opset, "max_abs_weight_code": max_weight}
    del numpy_helper
    return facts, problems


def _qdq_inputs(model) -> set[str]:
    """Names of nodes that consume a DequantizeLinear output (the ones that now compute on int8 data)."""
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(i in dq_outputs for i in n.input)}


def int8_compute(model) -> tuple[list[str], int]:
    """(the MatMul/Gemm/Conv nodes whose data and weight inputs both come from a DequantizeLinear, i.e. that
    compute in int8 where Q/DQ is fused; how many MatMul/Gemm/Conv the graph has in all)."""
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    gemms = [n for n in model.graph.node if n.op_type in COMPUTE_OP_TYPES]
    return [n.name for n in gemms if len(n.input) > 1 and n.input[0] in dq_outputs and n.input[1] in dq_outputs], len(gemms)


def int8_compute_problems(model, execution: Mapping[str, Any], check: QuantizeCheck) -> None:
    """Refuse a graph in which nothing computes in int8; warn when ONNX Runtime runs no int8 kernel in it."""
    from ...runtime.ort_runner import INT8_OP_TYPES

    nodes, total = int8_compute(model)
    check.qdq["int8_compute_nodes"] = len(nodes)
    check.qdq["float_compute_nodes"] = total - len(nodes)
    if not nodes:
        check.failures.append(f"no MatMul, Gemm or Conv computes on int8 inputs ({total} kept in float): the file "
                              "would be a float graph with int8 storage, not an int8 model; keep the fp32 export "
                              "or build fp16")
        return
    ran = execution.get("executed_op_types")
    if ran is not None and not any(op in INT8_OP_TYPES for op in ran):
        kinds = ", ".join(sorted(set(_op_types(model, nodes))))
        check.warnings.append(f"ONNX Runtime runs no int8 kernel in this graph ({execution.get('kernels', '?')}): "
                              f"only {len(nodes)} of {total} MatMul/Gemm/Conv take int8 inputs ({kinds}), and it "
                              "runs them in float; only TensorRT computes them in int8")


def _op_types(model, names: Sequence[str]) -> list[str]:
    wanted = set(names)
    return [n.op_type for n in model.graph.node if n.name in wanted]


def check_quantized(path: Path, source: "OnnxManifest", *, samples: int = DEFAULT_CHECK_SAMPLES,
                    excluded: Sequence[str] = (), on_phase: Callable[[str], None] | None = None,
                    session_config: Mapping[str, str] | None = None,
                    context: "RunContext | None" = None) -> QuantizeCheck:
    """onnx.checker, pruning structure, Q/DQ rules, and ONNX Runtime vs PyTorch fp32 by agreement.

    ``source``: the typed manifest of the fp32 export the int8 graph at ``path`` was made from
    (the model, its keep counts and preprocessing; the reference is rebuilt from it).

    ``session_config``: ONNX Runtime session entries the graph is run with, as dvit's ORT runner
    will run it on this CPU (``cpu.ort_int8_session_config``). ``context``: the run the source was opened
    in (its moved checkpoint rebuilds the reference).
    """
    import torch

    from ...artifact.names import kept_patch_ids
    from ..data import data_config_of
    from ...export.check import CheckReport, check_file_and_structure, reference_outputs
    from ...export.graph import pruning_stages, split_blocks_of, with_topk_outputs
    from ...models.checkpoint import load_model_from_record

    phase = on_phase or (lambda name: None)
    result = QuantizeCheck()
    record = source.model
    keep_counts = list(record.keep_counts)
    report = CheckReport()
    model = check_file_and_structure(path, report, keep_counts, dynamic_keep=record.dynamic_keep,
                                     on_phase=phase, split_blocks=None if record.dense else
                                     split_blocks_of(record.config))
    result.checker = report.checker
    result.stages = [s.to_dict() for s in report.stages]
    result.structure_problems = list(report.structure_problems)
    result.failures.extend(report.failures)

    phase("Q/DQ rules")
    result.qdq, problems = qdq_facts(model)
    result.failures.extend(problems)
    if result.qdq["dequantize_linear"] == 0:
        result.failures.append("the graph has no DequantizeLinear node: nothing was quantized")
    int8_nodes = _qdq_inputs(model)
    by_name = {n.name: n for n in model.graph.node}
    excluded_set = set(excluded)
    leaked = sorted(n for n in int8_nodes if by_name[n].op_type in EXCLUDED_OP_TYPES or n in excluded_set)
    if leaked:
        result.failures.append(f"{len(leaked)} excluded node(s) take quantized inputs: {', '.join(leaked[:5])}")
    result.qdq["int8_consumers"] = len(int8_nodes)

    phase("onnxruntime int8 vs PyTorch fp32")
    images = mixed_inputs(data_config_of(source.model), samples, scenes_seed=CHECK_SCENES_SEED, noise_seed=CHECK_NOISE_SEED)
    result.inputs = (f"{samples - samples // 2} generated scenes (seed {CHECK_SCENES_SEED}) + {samples // 2} "
                     f"seeded noise (seed {CHECK_NOISE_SEED})")
    fixed = record.batch
    batch = fixed if fixed else 8
    loaded = load_model_from_record(record, context=context)
    ref = reference_outputs(loaded, torch.from_numpy(np.ascontiguousarray(images)), batch)
    session, result.execution = _int8_session(with_topk_outputs(model), dict(session_config or {}))
    int8_compute_problems(model, result.execution, result)
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    stage_outputs = [s.indices_output for s in pruning_stages(model)]
    feed_extra = _keep_feed(record)

    def run(chunk: np.ndarray) -> RunOutput:
        outs = dict(zip(names, session.run(names, {input_name: chunk, **feed_extra})))
        kept = (kept_patch_ids([outs[n].astype(np.int64) for n in stage_outputs], loaded.variant.num_patches,
                               compose=not loaded.variant.splits_tokens) if stage_outputs else None)
        return RunOutput(outs[names[0]], kept)

    tested = run_batched(run, np.ascontiguousarray(images), batch, fixed=bool(fixed))
    result.comparison = compare(
        ref["logits"], tested.logits, Tolerance.for_precision("int8"),
        ref_kept=ref["kept"] if tested.kept else None,
        test_kept=tested.kept,
        ref_margins=ref["margins"],
    )
    result.failures.extend(result.comparison.failures)
    return result
