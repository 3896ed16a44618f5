"""Parser targets (``dvit doctor --target``): which ONNX opsets a TensorRT ONNX parser reads, whether it
imports the opset-23 ``Attention`` op, and what TensorRT-RTX's parser legitimately lacks."""

from __future__ import annotations

from dataclasses import dataclass

from .versions import release_of

TRT10_OLDEST_MAX_OPSET = 20  # the 10.0 edition of operators.md: what every 10.0-10.3 parser reads
# Listed as supported by operators.md but refused by TensorRT-RTX 1.7's parser: NonZero and RoiAlign
# are plugin-backed (no plugin registry in TensorRT-RTX), DeformConv is not in its importer
# (OnnxParser.supports_operator says False).
RTX_LACKS_OPS = frozenset({"NonZero", "RoiAlign", "DeformConv"})


@dataclass(frozen=True)
class ParserTarget:
    """A TensorRT ONNX parser as ``dvit doctor`` checks against it (the report's ``target``)."""

    name: str
    description: str
    min_opset: int
    max_opset: int
    attention_op: bool  # ONNX Attention (opset 23) needs parser >= 10.14
    source: str
    # Ops the operator table lists as supported that this parser still refuses (TensorRT-RTX).
    lacks_ops: frozenset[str] = frozenset()
    # Whether a DequantizeLinear may read int32 data (ORT's quantized biases). TensorRT 10/11:
    # a warning (TensorRT quantizes weights and activations only); TensorRT-RTX's parser refuses it.
    int32_dequantize: bool = True
    enforces_opset: bool = True  # False: the parser itself does not refuse an opset (doctor still does)


PARSER_TARGETS: dict[str, ParserTarget] = {
    t.name: t
    for t in (
        ParserTarget("trt-10.3", "TensorRT 10.3 (JetPack 6, Jetson Orin)", 9, TRT10_OLDEST_MAX_OPSET, False,
                     "onnx-tensorrt operators.md (10.x table; opset range of the 10.0 edition)"),
        ParserTarget("trt-10", "TensorRT 10.x, newest (10.15)", 9, 24, True,
                     "onnx-tensorrt operators.md, TensorRT 10.15 edition (opset 9-24)"),
        ParserTarget("trt-11", "TensorRT 11.x", 9, 25, True,
                     "NVIDIA ONNX Opset Guide for TensorRT 11.x (max opset 25) + operators.md"),
        # TensorRT-RTX 1.7: its parser is onnx-tensorrt's, but TensorRT-RTX ships no plugin library,
        # so ops the parser imports through a plugin fail ("plugin was not found in the plugin
        # registry"); measured with the real tensorrt_rtx 1.7.1.116 parser (tests/test_rtx.py).
        # It parses any opset a node claims (even 30), so the opset range is TensorRT 11's
        # documented one, kept by doctor, not by the parser.
        ParserTarget("rtx", "TensorRT-RTX 1.7 (RTX GPUs; engines built ahead of time, no GPU needed)", 9, 25, True,
                     "TensorRT 11.x ONNX Opset Guide + the real tensorrt_rtx 1.7.1 parser",
                     lacks_ops=RTX_LACKS_OPS, int32_dequantize=False, enforces_opset=False),
    )
}
DEFAULT_PARSER_TARGET = "trt-10"


def parser_target_for(trt_version: str | None) -> str:
    """The parser target of a TensorRT version, by its major.minor (not just the major).

    10.0-10.3 (JetPack 6) read opsets <= 20 and have no Attention: ``trt-10.3``; later 10.x:
    ``trt-10``; 11.x and later: ``trt-11``. No version (TensorRT not installed): the default.
    """
    if trt_version is None:
        return DEFAULT_PARSER_TARGET
    major, minor = release_of(trt_version)
    if major >= 11:
        return "trt-11"
    if (major, minor) <= (10, 3):
        return "trt-10.3"
    return "trt-10"


__all__ = ("DEFAULT_PARSER_TARGET", "PARSER_TARGETS", "RTX_LACKS_OPS", "TRT10_OLDEST_MAX_OPSET", "ParserTarget",
           "parser_target_for")
