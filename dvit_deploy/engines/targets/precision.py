"""Precision: how each precision is obtained per TensorRT major (``BuilderFlag`` names for ``dvit build``),
and the same decision spelled as trtexec flags (``build_on_device.sh``)."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from ...helpers.errors import BadInput

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")  # int8: an explicitly quantized (Q/DQ) ONNX


@dataclass(frozen=True)
class PrecisionStrategy:
    strongly_typed: bool  # create the network with NetworkDefinitionCreationFlag.STRONGLY_TYPED
    set_flags: tuple[str, ...]
    cleared_flags: tuple[str, ...]
    fp16_graph: bool  # convert the ONNX to mixed precision before parsing


def precision_strategy(precision: str, trt_major: int, *, strongly_typed: bool = False,
                       fp16_fallback: bool = False) -> PrecisionStrategy:
    """How a precision is obtained on a TensorRT major version.

    TensorRT 10 is weakly typed by default: reduced precision is a builder flag (FP16/BF16),
    and TF32 is on unless cleared, so "fp32" clears it. ``strongly_typed=True`` on 10 takes the
    TensorRT 11 route instead. TensorRT 11 is always strongly typed and has no FP16/BF16 flags:
    the precision comes from the graph, so fp16 means converting the ONNX first.

    int8 is explicit quantization only (the ONNX carries QuantizeLinear/DequantizeLinear; no
    calibrator, which TensorRT 11 removed): a weakly typed TensorRT 10 network needs
    ``BuilderFlag.INT8`` for its Q/DQ layers, and ``fp16_fallback`` adds ``FP16`` so the layers
    outside Q/DQ pairs may run in fp16 ("INT8, with FP16 fallback if FP16 is also set"). Strongly
    typed (TensorRT 11, or 10 with ``--strongly-typed``): no flag, the Q/DQ nodes are the types.
    """
    if precision not in PRECISIONS:
        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if trt_major < 10:
        raise BadInput(f"TensorRT {trt_major}.x is not supported: dvit build needs TensorRT 10 or 11")
    if fp16_fallback and precision != "int8":
        raise BadInput("an fp16 fallback only applies to an int8 (Q/DQ) build")
    tf32 = (("TF32",), ()) if precision == "tf32" else ((), ("TF32",))
    if precision == "int8":
        if trt_major == 10 and not strongly_typed:
            return PrecisionStrategy(False, ("INT8",) + (("FP16",) if fp16_fallback else ()), tf32[1], False)
        if fp16_fallback:
            raise BadInput("--int8 --fp16 (INT8 with FP16 fallback) is a TensorRT 10 weakly typed build; TensorRT 11 "
                           "and --strongly-typed take every layer's precision from the Q/DQ graph itself")
        return PrecisionStrategy(True, (), tf32[1], False)
    if trt_major == 10 and not strongly_typed:
        reduced = {"fp16": ("FP16",), "bf16": ("BF16",)}.get(precision, ())
        return PrecisionStrategy(False, reduced + tf32[0], tf32[1], False)
    if precision == "bf16":
        raise BadInput("bf16 with a strongly typed network needs a bf16 graph; dvit converts graphs to fp16 only "
                       "(use TensorRT 10 without --strongly-typed for BF16)")
    return PrecisionStrategy(True, tf32[0], tf32[1], precision == "fp16")


# BuilderFlag name -> trtexec option. TF32 is on in trtexec unless --noTF32, so setting it is no flag.
TRTEXEC_SET_FLAGS: Mapping[str, str | None] = MappingProxyType({"FP16": "--fp16", "BF16": "--bf16", "INT8": "--int8",
                                                                "TF32": None})
TRTEXEC_CLEARED_FLAGS: Mapping[str, str] = MappingProxyType({"TF32": "--noTF32"})


def trtexec_flags(strategy: PrecisionStrategy) -> list[str]:
    """The trtexec options that make the same build as ``strategy`` does through the builder API:
    precision flags, ``--noTF32``, then ``--stronglyTyped`` (documented in 11.x as the default,
    given anyway for clarity)."""
    args = [flag for name in strategy.set_flags if (flag := TRTEXEC_SET_FLAGS[name])]
    args += [TRTEXEC_CLEARED_FLAGS[name] for name in strategy.cleared_flags]
    if strategy.strongly_typed:
        args.append("--stronglyTyped")
    return args


__all__ = ("PRECISIONS", "TRTEXEC_CLEARED_FLAGS", "TRTEXEC_SET_FLAGS", "PrecisionStrategy", "precision_strategy",
           "trtexec_flags")
