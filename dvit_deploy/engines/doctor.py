"""`dvit doctor`: will TensorRT's ONNX parser take this graph? A static check, no TensorRT needed.

The operator tables are data transcribed from NVIDIA's "Supported ONNX Operators" list
(onnx-tensorrt ``docs/operators.md``): the TensorRT 10.15 edition (opset 9-24) for the
operators and restrictions, the 10.0 edition for the opset range of older 10.x parsers, and the
TensorRT 11 "ONNX Opset Guide" (maximum opset 25). ``trt-10.3`` (JetPack 6) is checked against
the 10.x table with the 10.0 opset limit (20), which also keeps out the opset-23 ``Attention``
op that needs parser >= 10.14. The targets themselves (opset limits, Attention, what TensorRT-RTX's
parser lacks) are rows of the TensorRT target table, ``engines/targets.py``.

Where ``tensorrt_rtx`` is installed the static verdict is joined by NVIDIA's real parser
(``_check_with_nvidia_parser``): tests/test_rtx.py holds the two to agreement on our graphs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..helpers.defaults import DEFAULT_OPSET
from ..helpers.errors import BadInput
from ..helpers.lazy import available
from ..export.graph import constant_values
from .targets import DEFAULT_PARSER_TARGET, PARSER_TARGETS, ParserTarget, devices_refusing_opset, parser_target_named

TOPK_MAX_K = 3840  # "k <= 3840" (TensorRT operator reference, TopK)

# Operators the 10.x/11.x parser imports (Supported = Y in operators.md, TensorRT 10.15).
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN
RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Listed as not supported (Supported = N) in the same table: named in the report as such.
UNSUPPORTED_OPS = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool
MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement
OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty
SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence
StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split())


# The parser targets (names, opset limits, Attention support) are the TensorRT target table's.
Target = ParserTarget
TARGETS = PARSER_TARGETS
DEFAULT_TARGET = DEFAULT_PARSER_TARGET


@dataclass
class Finding:
    severity: str  # "blocker" | "warning" | "info"
    check: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class DoctorReport:
    model: str
    target: Target
    opset: int | None
    op_counts: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    profile_needs: list[dict[str, Any]] = field(default_factory=list)  # dynamic dims / shape inputs
    real_parser: dict[str, Any] | None = None  # NVIDIA's parser's verdict, when it ran
    # Where the TopK keep counts come from and, per way of building, whether each optimization profile
    # sees them static (None: no TopK, a dense graph). See _check_keep_counts.
    keep_counts: dict[str, Any] | None = None

    @property
    def blockers(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "blocker"]

    @property
    def passed(self) -> bool:
        return not self.blockers

    def add(self, severity: str, check: str, message: str) -> None:
        self.findings.append(Finding(severity, check, message))

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "model": self.model,
            "target": {k: sorted(v) if isinstance(v, frozenset) else v for k, v in self.target.__dict__.items()},
            "opset": self.opset,
            "op_counts": self.op_counts,
            "blockers": len(self.blockers),
            "findings": [f.to_dict() for f in self.findings],
            "profile_needs": self.profile_needs,
            "real_parser": self.real_parser,
            "keep_counts": self.keep_counts,
        }


def diagnose(path: str | Path, target: str = DEFAULT_TARGET, *, real_parser: bool | None = None) -> DoctorReport:
    """Check an ONNX file (weights may live in external data files) against a TensorRT parser target, or
    against the parser of a device target (``x86-trt10``, ``jetson-orin``: what ``dvit package`` checks).

    ``real_parser``: also parse with NVIDIA's TensorRT-RTX parser (``tensorrt_rtx``, no GPU
    needed) and report each parser error with its node; None: when ``tensorrt_rtx`` is installed.
    """
    parser = parser_target_named(target)
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"ONNX file {path} not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise BadInput(f"{path} is not an ONNX model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    report = diagnose_model(model, parser, folder=path.parent, name=str(path))
    if real_parser is None:
        real_parser = available("tensorrt_rtx")
    if real_parser:
        _check_with_nvidia_parser(report, path)
    return report


REAL_PARSER_CHECK = "NVIDIA parser"


def _check_with_nvidia_parser(report: DoctorReport, path: Path) -> None:
    """Parse with TensorRT-RTX's real ONNX parser. Its errors are blockers for the ``rtx`` target and
    warnings for TensorRT 10/11 (the same onnx-tensorrt importer, but TensorRT ships the plugins
    TensorRT-RTX lacks, see ``targets.RTX_LACKS_OPS``)."""
    from .trt_build import format_parser_error, parse_onnx

    result = parse_onnx(path, "rtx")
    report.real_parser = {"product": result.product, "version": result.version, "parsed": result.parsed,
                          "errors": result.errors,
                          "topk_layers": None if result.network is None else len(result.network["topk"]),
                          "layers": None if result.network is None else result.network["layers"]}
    label = f"{result.product} {result.version}"
    if result.parsed:
        net = result.network or {}
        report.add("info", REAL_PARSER_CHECK, f"{label}'s ONNX parser parsed it: {net.get('layers', 0)} layers, "
                                              f"{len(net.get('topk', []))} TopK, "
                                              f"{(net.get('layer_counts') or {}).get('GATHER', 0)} Gather")
        return
    severity = "blocker" if report.target.name == "rtx" else "warning"
    for error in result.errors or [{"desc": "parse failed without an error message", "node": -1}]:
        report.add(severity, REAL_PARSER_CHECK, f"{label}'s parser refused {format_parser_error(error)}")


def diagnose_model(model: onnx.ModelProto, target: Target, *, folder: Path | None = None,
                   name: str = "<model>") -> DoctorReport:
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    report = DoctorReport(name, target, opset)
    _check_opset(report, opset)
    _check_ops(report, graph)
    _check_topk(report, model)
    _check_scatter(report, graph)
    _check_qdq(report, model, opset)
    _check_int64(report, graph)
    _check_external_data(report, graph, folder)
    _check_dynamic_inputs(report, model)
    _check_keep_counts(report, model)
    return report


def _check_opset(report: DoctorReport, opset: int | None) -> None:
    t = report.target
    if opset is None:
        report.add("blocker", "opset", "the model imports no default-domain opset")
    elif opset > t.max_opset:
        report.add("blocker", "opset", f"opset {opset} is above what the {t.name} parser reads ({t.max_opset}); "
                                       f"re-export with --opset {min(t.max_opset, DEFAULT_OPSET)}")
    elif opset < t.min_opset:
        report.add("blocker", "opset", f"opset {opset} is below the parser's minimum ({t.min_opset})")
    else:
        report.add("info", "opset", f"opset {opset} within {t.min_opset}-{t.max_opset}")
    refusing = devices_refusing_opset(opset) if opset is not None and opset <= t.max_opset else []
    if refusing:  # the same table as `dvit package`: say which bundles this opset cannot go into
        limit = max(d.max_opset for d in refusing)
        report.add("warning", "opset", f"opset {opset} needs a newer parser than some {t.name} releases have: "
                                       f"dvit package refuses it for {', '.join(d.name for d in refusing)} (TensorRT "
                                       f"{', '.join(d.tensorrt for d in refusing)}: opset <= {limit}); re-export with "
                                       f"--opset {min(limit, DEFAULT_OPSET)} to ship there")


def _check_ops(report: DoctorReport, graph: onnx.GraphProto) -> None:
    counts: Counter[str] = Counter()
    for node in _all_nodes(graph):
        domain = node.domain or ""
        key = node.op_type if domain in ("", "ai.onnx") else f"{domain}::{node.op_type}"
        counts[key] += 1
    report.op_counts = dict(sorted(counts.items()))
    for op, count in sorted(counts.items()):
        if "::" in op:
            report.add("blocker", "operators", f"{op} ({count}×) is a custom-domain op: TensorRT needs a plugin for it")
        elif op == "Attention" and not report.target.attention_op:
            report.add("blocker", "operators", f"Attention ({count}×) needs TensorRT >= 10.14; "
                                               f"export with opset <= 22 for {report.target.name}")
        elif op in report.target.lacks_ops:
            report.add("blocker", "operators", f"{op} ({count}×) is not imported by the {report.target.name} parser "
                                               "(TensorRT imports it through a plugin or not at all, and TensorRT-RTX "
                                               "ships no plugins)")
        elif op in UNSUPPORTED_OPS:
            report.add("blocker", "operators", f"{op} ({count}×) is not supported by the TensorRT ONNX parser")
        elif op not in SUPPORTED_OPS:
            report.add("blocker", "operators", f"{op} ({count}×) is not in the parser's operator list")
        elif op == "Attention":
            report.add("info", "operators", f"Attention ({count}×) needs parser >= 10.14 (fine for {report.target.name})")
    supported = sum(c for op, c in counts.items() if op in SUPPORTED_OPS)
    report.add("info", "operators", f"{supported}/{sum(counts.values())} nodes use operators the parser supports "
                                    f"({len(counts)} distinct)")


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:  # If/Loop/Scan bodies
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def _check_topk(report: DoctorReport, model: onnx.ModelProto) -> None:
    graph = model.graph
    constants = constant_values(graph)
    producers = {out: node for node in graph.node for out in node.output}
    inputs = {i.name: i for i in graph.input}
    for node in graph.node:
        if node.op_type != "TopK":
            continue
        label = node.name or node.output[0]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("sorted", 1) != 1:
            report.add("blocker", "TopK", f"{label}: sorted=0 is not supported (operators.md: `sorted` must be 1)")
        if attrs.get("largest", 1) != 1:
            report.add("warning", "TopK", f"{label}: largest=0 selects the lowest scores; DynamicViT keeps the highest")
        k_name = node.input[1] if len(node.input) > 1 else None
        if k_name is None:
            k_attr = attrs.get("k")
            if k_attr is not None and k_attr > TOPK_MAX_K:
                report.add("blocker", "TopK", f"{label}: K={k_attr} exceeds TensorRT's limit of {TOPK_MAX_K}")
            continue
        if k_name in constants:
            k = int(np.asarray(constants[k_name]).reshape(-1)[0])
            if k > TOPK_MAX_K:
                report.add("blocker", "TopK", f"{label}: K={k} exceeds TensorRT's limit of {TOPK_MAX_K}")
            else:
                report.add("info", "TopK", f"{label}: constant K={k} (<= {TOPK_MAX_K}, largest=1)")
            continue
        sources = _graph_inputs_upstream(k_name, producers, inputs)
        float_sources = [s for s in sources if inputs[s].type.tensor_type.elem_type in _FLOAT_TYPES]
        if float_sources:
            report.add("blocker", "TopK", f"{label}: K is computed from the float input(s) {float_sources}; TensorRT "
                                          "needs K as a shape tensor, computable from integer shape inputs only")
        elif sources:
            report.add("info", "TopK", f"{label}: K comes from the shape-tensor input(s) {sources} "
                                       f"(TensorRT >= 8.6; values must stay <= {TOPK_MAX_K})")
        else:
            report.add("info", "TopK", f"{label}: K is computed from tensor shapes (a shape tensor; TensorRT >= 8.6)")


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QDQ_MIN_OPSET = 13  # per-channel scales (the ``axis`` attribute) arrived with opset 13


def _check_scatter(report: DoctorReport, graph: onnx.GraphProto) -> None:
    """The ConvNeXt/Swin write-back. onnx-tensorrt lowers ScatterND (and ScatterElements without a
    reduction) to the core IScatterLayer (ND / ELEMENT modes, TensorRT >= 8.2; every target here is
    10.x or newer). IScatterLayer has no reduction: a ScatterND 'reduction' is silently ignored
    (onnx/onnx-tensorrt#957) and ScatterElements reductions need the scatterElements plugin. With
    reduction 'none', ONNX leaves repeated indices undefined: dvit's graphs write a permutation."""
    for node in _all_nodes(graph):
        if node.op_type not in ("ScatterND", "ScatterElements"):
            continue
        label = node.name or node.output[0]
        reduction = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "reduction"), b"none")
        reduction = reduction.decode() if isinstance(reduction, bytes) else str(reduction)
        if reduction != "none" and node.op_type == "ScatterND":
            report.add("blocker", "Scatter", f"{label}: ScatterND reduction='{reduction}' is ignored by TensorRT's "
                                             "IScatterLayer (onnx-tensorrt #957): results would be wrong")
        elif reduction != "none":
            report.add("warning", "Scatter", f"{label}: ScatterElements reduction='{reduction}' needs TensorRT's "
                                             "scatterElements plugin (not the core layer)")
        else:
            report.add("info", "Scatter", f"{label}: {node.op_type} without reduction -> IScatterLayer "
                                          f"({'ND' if node.op_type == 'ScatterND' else 'ELEMENT'} mode, TensorRT >= 8.2)")


def _check_qdq(report: DoctorReport, model: onnx.ModelProto, opset: int | None) -> None:
    """Explicit quantization (Q/DQ) as TensorRT reads it: symmetric, signed int8, opset >= 13.

    TensorRT's quantization is symmetric (zero points must be 0) in signed int8 (uint8/asymmetric
    tensors are not representable); per-channel scales need opset 13's ``axis`` attribute and
    should name the axis rather than rely on ONNX's default of 1. ``dvit build --int8`` builds such
    a graph (TensorRT 10: BuilderFlag.INT8; TensorRT 11: strongly typed, no flag).
    """
    graph = model.graph
    nodes = [n for n in graph.node if n.op_type in QDQ_OPS and (n.domain or "") in ("", "ai.onnx")]
    if not nodes:
        return
    constants = constant_values(graph)
    init_types = {i.name: i.data_type for i in graph.initializer}
    counts = Counter(n.op_type for n in nodes)
    if opset is not None and opset < QDQ_MIN_OPSET:
        report.add("blocker", "Q/DQ", f"QuantizeLinear/DequantizeLinear at opset {opset}: TensorRT's explicit "
                                      f"quantization needs opset >= {QDQ_MIN_OPSET} (per-channel axis); re-export")
    nonzero, unsigned, no_axis, wide = [], [], [], []
    for node in nodes:
        label = node.name or node.output[0]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        scale = constants.get(node.input[1]) if len(node.input) > 1 else None
        if scale is not None and np.asarray(scale).size > 1 and "axis" not in attrs:
            no_axis.append(label)
        zero_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        zero = constants.get(zero_name) if zero_name else None
        zero_type = init_types.get(zero_name) if zero_name else None
        if zero is not None:
            if zero.dtype == np.uint8 or zero_type == onnx.TensorProto.UINT8:
                unsigned.append(label)
            elif zero.dtype == np.int8 and np.any(zero != 0):
                nonzero.append(label)
            elif zero.dtype == np.int32:
                wide.append(label)
    if unsigned:
        report.add("blocker", "Q/DQ", f"{len(unsigned)} Q/DQ node(s) use uint8 (asymmetric) quantization, e.g. "
                                      f"{unsigned[0]}: TensorRT quantizes to signed int8 only (quantize with int8 "
                                      "activations and weights)")
    if nonzero:
        report.add("blocker", "Q/DQ", f"{len(nonzero)} Q/DQ node(s) have non-zero int8 zero points, e.g. {nonzero[0]}: "
                                      "TensorRT's quantization is symmetric (zero point 0)")
    if no_axis:
        report.add("warning", "Q/DQ", f"{len(no_axis)} per-channel Q/DQ node(s) do not name their axis, e.g. "
                                      f"{no_axis[0]} (ONNX then uses axis 1): give it explicitly")
    if wide and not report.target.int32_dequantize:
        report.add("blocker", "Q/DQ", f"{len(wide)} DequantizeLinear node(s) read int32 data (a quantized bias), e.g. "
                                      f"{wide[0]}: the {report.target.name} parser dequantizes FP8/FP4/Int4/Int8/UInt8 "
                                      "only; quantize without the bias (ORT QuantizeBias=False; dvit quantize does)")
    elif wide:
        report.add("warning", "Q/DQ", f"{len(wide)} DequantizeLinear node(s) read int32 data (a quantized bias), e.g. "
                                      f"{wide[0]}: TensorRT quantizes activations and weights only; quantize "
                                      "without the bias")
    weight_codes = [np.asarray(constants[n.input[0]]) for n in nodes
                    if n.op_type == "DequantizeLinear" and n.input[0] in init_types and n.input[0] in constants]
    weight_codes = [w for w in weight_codes if w.dtype == np.int8 and w.size]
    if weight_codes and max(int(np.abs(w.astype(np.int32)).max()) for w in weight_codes) <= 64:
        # per-channel symmetric quantization maps each channel's largest weight to ±127; ≤ 64 everywhere
        # means reduce_range (dvit quantize's recipe for CPUs whose int8 kernels saturate without VNNI)
        report.add("warning", "Q/DQ", f"all {len(weight_codes)} int8 weight tensors use 7 bits ([-64, 64]: a CPU "
                                      "recipe for CPUs without VNNI): TensorRT builds it but loses a bit of weight "
                                      "precision it does not need; for a GPU, re-quantize with "
                                      "'dvit quantize --for tensorrt'")
    report.add("info", "Q/DQ", f"explicitly quantized graph: {counts.get('QuantizeLinear', 0)} QuantizeLinear, "
                               f"{counts.get('DequantizeLinear', 0)} DequantizeLinear: build with dvit build --int8")


_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                          onnx.TensorProto.BFLOAT16})


def _graph_inputs_upstream(tensor: str, producers: dict[str, onnx.NodeProto], inputs: dict[str, Any]) -> list[str]:
    """Graph inputs whose *values* reach ``tensor`` (stops at Shape/Size, which read only dims)."""
    found, seen, frontier = [], set(), [tensor]
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.append(name)
            continue
        node = producers.get(name)
        if node is None or node.op_type in ("Shape", "Size"):
            continue
        frontier.extend(i for i in node.input if i)
    return sorted(found)


def _check_int64(report: DoctorReport, graph: onnx.GraphProto) -> None:
    int64_io = [v.name for v in list(graph.input) + list(graph.output)
                if v.type.tensor_type.elem_type == onnx.TensorProto.INT64]
    int64_inits = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT64]
    if int64_io:
        report.add("info", "int64", f"int64 I/O tensors {int64_io}: TensorRT 10+ binds them as INT64; TopK "
                                    "computes int32 indices that the parser casts back to int64 (exact below 2^31)")
    if int64_inits:
        report.add("info", "int64", f"{len(int64_inits)} int64 constants (shapes, axes, indices): TensorRT keeps "
                                    "shape arithmetic in int64/int32; values beyond int32 range would be clamped")


def _check_external_data(report: DoctorReport, graph: onnx.GraphProto, folder: Path | None) -> None:
    files: set[str] = set()
    for init in graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in init.external_data if e.key == "location"), None)
            if location:
                files.add(location)
    for name in sorted(files):
        if folder is not None and not (folder / name).is_file():
            report.add("blocker", "external data", f"weights file '{name}' is missing next to the model")
        else:
            report.add("info", "external data", f"weights in '{name}': build with OnnxParser.parse_from_file "
                                                 "(dvit build does), keep the file beside the .onnx")


def _check_dynamic_inputs(report: DoctorReport, model: onnx.ModelProto) -> None:
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    topk_k = {node.input[1] for node in graph.node if node.op_type == "TopK" and len(node.input) > 1}
    producers = {out: node for node in graph.node for out in node.output}
    inputs = {i.name: i for i in graph.input}
    shape_inputs = set()
    for k_name in topk_k:
        shape_inputs.update(_graph_inputs_upstream(k_name, producers, inputs))
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in dims]
        if value.name in shape_inputs:
            elem = value.type.tensor_type.elem_type
            if elem in _FLOAT_TYPES:
                continue  # already a TopK blocker
            report.profile_needs.append({"input": value.name, "kind": "shape tensor values", "shape": shape})
            report.add("info", "profile", f"input '{value.name}' {shape} feeds TopK's K: declare min/opt/max values "
                                          "with IOptimizationProfile.set_shape_input (dvit build --keep-range)")
            continue
        dynamic = [(i, d) for i, d in enumerate(shape) if not isinstance(d, int) or d <= 0]
        if dynamic:
            report.profile_needs.append({"input": value.name, "kind": "dimensions", "shape": shape,
                                         "dynamic_axes": {str(i): str(d) for i, d in dynamic}})
            names = ", ".join(f"axis {i} '{d}'" for i, d in dynamic)
            report.add("info", "profile", f"input '{value.name}' {shape} has dynamic {names}: needs an optimization "
                                          "profile (dvit build --min-batch/--opt-batch/--max-batch)")


def summary_rows(report: DoctorReport) -> list[tuple[str, str, str]]:
    order = {"blocker": 0, "warning": 1, "info": 2}
    return [(f.severity, f.check, f.message) for f in sorted(report.findings, key=lambda f: order[f.severity])]


KEEP_COUNTS_CHECK = "keep counts"
FUSION_NOTE = ("TensorRT fuses attention (IAttention / MatMul-Softmax-MatMul) on static shapes; with data-dependent "
               "token counts it may not (NVIDIA/TensorRT #4410, #2850), and unfused attention ran ~2x slower (#3665)")


def _check_keep_counts(report: DoctorReport, model: onnx.ModelProto) -> None:
    """Whether the kept-token counts are static in each optimization profile, for each way the graph can be
    built: a fixed export's TopK K are constants (static everywhere); a --dynamic-keep graph's come from a
    shape-tensor input, runtime shapes under one --keep-range profile and pinned per profile (min = opt =
    max) under --keep-ladder. Static counts keep every shape after a TopK static, which attention fusion needs."""
    graph = model.graph
    ks = [node.input[1] for node in graph.node if node.op_type == "TopK" and len(node.input) > 1]
    if not ks:
        return
    producers = {out: node for node in graph.node for out in node.output}
    inputs = {i.name: i for i in graph.input if i.name not in {t.name for t in graph.initializer}}
    sources = sorted({name for k in ks for name in _graph_inputs_upstream(k, producers, inputs)})
    if not sources:
        report.keep_counts = {"flavour": "fixed", "source": "constants", "static_per_profile": {"build": True}}
        report.add("info", KEEP_COUNTS_CHECK, f"static: the {len(ks)} TopK K are constants (a fixed export), so "
                                              "every shape after a token gather is static in any engine; " + FUSION_NOTE)
        return
    report.keep_counts = {"flavour": "dynamic-keep", "source": sources,
                          "static_per_profile": {"--keep-range": False, "--keep-ladder": True}}
    names = ", ".join(f"'{n}'" for n in sources)
    report.add("info", KEEP_COUNTS_CHECK, f"runtime shape tensor {names} (--dynamic-keep). Built with --keep-range: "
                                          "NOT static per profile (one profile spans the counts, so the shapes after "
                                          "each TopK are data-dependent). Built with --keep-ladder 0.5,…,0.9: static "
                                          "per profile (one profile per ρ, counts pinned min = opt = max), one engine. "
                                          + FUSION_NOTE)
