"""One comparator: run a reference and a test over the same inputs, compare, report.

Every output comparison in dvit goes through ``Comparator.run`` (in the spirit of Polygraphy's
``Comparator.run`` + ``compare_accuracy``): the post-export check (ONNX Runtime vs PyTorch), the
``--dynamic-keep`` check (per ρ), the fp16 check (fp16 vs fp32 graph), the int8 check (ONNX Runtime
int8 vs PyTorch fp32) and ``dvit validate`` (every backend vs PyTorch fp32). Each passes its own
``Tolerance``; the numbers (logits, kept-token sets, the near-tie rule) are ``helpers.compare``'s.
Each flow reports through ``ParityReport`` (or a subclass adding what that flow checks besides).

A side of a comparison is either a callable running one batch (``RunOutput``; a reference puts its
keep-boundary margins in ``extra`` under ``margin_key(s)``) or ``Outputs`` already gathered (a cached
reference). Inputs are an array (run in batches) or a callable ``batch -> iterator of batches``
(streamed: one batch in memory at a time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Union

import numpy as np

from .batching import Gathered, RunOutput, pad_batch
from .compare import Comparison, Tolerance, compare

RunBatch = Callable[[np.ndarray], RunOutput]
Inputs = Union[np.ndarray, Callable[[int], Iterable[np.ndarray]]]


def margin_key(stage: int) -> str:
    """The ``RunOutput.extra`` key a reference stores stage ``stage``'s keep-boundary margins under."""
    return f"margin{stage}"


@dataclass(frozen=True)
class Outputs:
    """One side's outputs over every input: logits, kept patch ids per stage, reference margins."""

    logits: np.ndarray
    kept: list[np.ndarray] | None = None
    margins: list[np.ndarray] | None = None

    @classmethod
    def of(cls, gathered: Gathered) -> "Outputs":
        kept = gathered.kept
        stages = len(kept) if kept else 0
        margins = None
        if stages and gathered.has_extra(margin_key(0)):
            margins = [gathered.extra(margin_key(s)) for s in range(stages)]
        return cls(gathered.logits, kept, margins)

    @property
    def stages(self) -> int:
        return len(self.kept) if self.kept else 0


def batches_of(inputs: Inputs, batch: int) -> Iterator[np.ndarray]:
    if callable(inputs):
        yield from inputs(batch)
        return
    for start in range(0, len(inputs), batch):
        yield inputs[start:start + batch]


def gather(run: RunBatch, inputs: Inputs, batch: int, *, fixed: bool = False) -> Outputs:
    """Run every batch of ``inputs`` through ``run`` (a fixed-batch model gets its last batch padded)."""
    gathered = Gathered()
    for chunk in batches_of(inputs, batch):
        padded, real = pad_batch(chunk, batch if fixed else None)
        gathered.add(run(padded), real)
    return Outputs.of(gathered)


@dataclass(frozen=True)
class Comparator:
    """Compares a test with a reference under one ``Tolerance``: logits, and kept-token sets (with the
    near-tie rule) when both sides report them."""

    tolerance: Tolerance

    def run(self, reference: RunBatch | Outputs, test: RunBatch | Outputs, inputs: Inputs, *, batch: int,
            fixed: bool = False) -> Comparison:
        """Run both sides over the same ``inputs`` (``batch`` at a time; ``fixed``: pad the last batch)."""
        ref = reference if isinstance(reference, Outputs) else gather(reference, inputs, batch, fixed=fixed)
        got = test if isinstance(test, Outputs) else gather(test, inputs, batch, fixed=fixed)
        return self.compare(ref, got)

    def compare(self, reference: Outputs, test: Outputs) -> Comparison:
        tokens = bool(reference.kept) and bool(test.kept)
        return compare(reference.logits, test.logits, self.tolerance,
                       ref_kept=reference.kept if tokens else None, test_kept=test.kept if tokens else None,
                       ref_margins=reference.margins)


@dataclass
class ParityReport:
    """What one check found: the comparison (None before it ran), its tolerance, and the check's own
    failures (every line that fails it), notes and warnings (passed, but the user must know).

    The report class of every comparison flow: ``export.check.CheckReport`` (and the ``--dynamic-keep``
    and int8 checks built on it) and validate's per-backend ``BackendResult`` extend it with what they
    check besides the outputs."""

    comparison: Comparison | None = None
    tolerance: Tolerance | None = None
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    execution: dict[str, Any] = field(default_factory=dict)  # what ran: provider, CPU, kernels

    @property
    def passed(self) -> bool:
        return not self.failures

    def record(self, comparison: Comparison, tolerance: Tolerance | None = None, prefix: str = "") -> Comparison:
        """Keep ``comparison`` (and its tolerance); its failures become this report's, after ``prefix``."""
        self.comparison = comparison
        self.tolerance = tolerance if tolerance is not None else self.tolerance
        self.failures.extend(f"{prefix}{line}" for line in comparison.failures)
        return comparison

    def parity_dict(self) -> dict[str, Any] | None:
        return None if self.comparison is None else self.comparison.to_dict()


__all__ = ["Comparator", "Inputs", "Outputs", "ParityReport", "RunBatch", "batches_of", "gather", "margin_key"]
