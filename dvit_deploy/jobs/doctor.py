"""`dvit doctor` as a library call: will a TensorRT parser take this ONNX? No TensorRT or GPU needed.

``run(DoctorOptions(target=...), RunContext(), path)`` returns the report (``engines.doctor.DoctorReport``:
findings, blockers, ``passed``); the checks themselves live in ``engines.doctor``. The ONNX needs no manifest:
any graph can be checked, so the job takes its path (the CLI applies the default-artifact rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifact.context import RunContext
from ..engines.targets import DEFAULT_PARSER_TARGET

if TYPE_CHECKING:
    from ..engines.doctor import DoctorReport

__all__ = ("DoctorOptions", "run", "run_doctor")


@dataclass(frozen=True)
class DoctorOptions:
    """``target``: a TensorRT parser target (``trt-10``, ``trt-10.3``, ``trt-11``, ``rtx``) or a device target
    of ``dvit package``, checked against its parser. ``real_parser``: also run NVIDIA's TensorRT-RTX parser;
    None: when ``tensorrt_rtx`` is installed."""

    target: str = DEFAULT_PARSER_TARGET
    real_parser: bool | None = None


def run(options: DoctorOptions, context: RunContext, onnx_path: Path) -> "DoctorReport":
    """The readiness report of ``onnx_path`` for ``options.target`` (``BadInput`` for a missing or unreadable
    file or an unknown target). The graph is read as a file, not opened as an artifact: ``context`` holds
    nothing the report depends on."""
    from ..engines.doctor import diagnose  # onnx: loaded when a report is asked for

    return diagnose(onnx_path, options.target, real_parser=options.real_parser)


def run_doctor(onnx_path: Path, options: DoctorOptions = DoctorOptions()) -> "DoctorReport":
    """``run`` with a fresh ``RunContext`` (the Python API before the context existed)."""
    return run(options, RunContext(), onnx_path)
