"""The report of every check a graph dvit made goes through (kept light: no torch, no onnx).

The post-export check fills it (``export.check``), the ``--dynamic-keep`` check extends it with its
per-ρ results, and the int8 check with its Q/DQ facts (``jobs.quantize.int8_check``). The comparison
part is ``helpers.comparator.ParityReport``'s, shared with ``dvit validate``'s per-backend results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..helpers.comparator import ParityReport

if TYPE_CHECKING:
    from .graph import StageGraph


@dataclass
class CheckReport(ParityReport):
    """The post-export check: onnx.checker, the pruning structure, and ORT vs PyTorch parity."""

    checker: str = "not run"
    stages: list[StageGraph] = field(default_factory=list)
    structure_problems: list[str] = field(default_factory=list)
    provider: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "onnx_checker": self.checker,
            "stages": [s.to_dict() for s in self.stages],
            "structure_problems": self.structure_problems,
            "onnxruntime_provider": self.provider,
            "parity": self.parity_dict(),
            "failures": self.failures,
        }


__all__ = ("CheckReport",)
