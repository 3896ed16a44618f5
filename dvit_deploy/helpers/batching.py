"""The one loop that runs a model over many inputs: batch, pad, run, trim, gather.

Every place that compares or reports outputs over a set of inputs (validate, predict, eval, the
post-export check, the dynamic-keep check, the fp16 check) runs its model through
``run_batched`` or, when inputs arrive batch by batch, through a ``Gathered``. In the spirit of
Polygraphy's ``Comparator.run(runners, data)``; numpy only, at the bottom of the package so
every layer (export, engines, runtime and up) can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class RunOutput:
    """What one model call returns, on every backend (``runtime.RunOutput`` is this class)."""

    logits: np.ndarray  # (B, num_classes) float32
    kept: list[np.ndarray] | None = None  # per stage (B, K_s) original patch ids, when available
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def pad_batch(chunk: np.ndarray, fixed_batch: int | None) -> tuple[np.ndarray, int]:
    """(chunk padded to a fixed batch by repeating its first image, real count) — trim outputs to it."""
    real = len(chunk)
    if fixed_batch and real < fixed_batch:
        chunk = np.concatenate([chunk, np.repeat(chunk[:1], fixed_batch - real, axis=0)])
    return chunk, real


@dataclass
class Gathered:
    """Outputs of successive batches, trimmed to their real rows and joined on demand."""

    _logits: list[np.ndarray] = field(default_factory=list)
    _kept: list[list[np.ndarray]] | None = field(default_factory=list)  # None once a batch had no kept ids
    _extra: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, out: RunOutput, real: int | None = None) -> None:
        real = len(out.logits) if real is None else real
        self._logits.append(np.asarray(out.logits)[:real])
        if out.kept is None or self._kept is None:
            self._kept = None
        else:
            self._kept.append([np.asarray(k)[:real] for k in out.kept])
        for name, value in out.extra.items():
            self._extra.setdefault(name, []).append(np.asarray(value)[:real])

    @property
    def logits(self) -> np.ndarray:
        return np.concatenate(self._logits)

    @property
    def kept(self) -> list[np.ndarray] | None:
        """Kept patch ids per stage over all inputs; None when any batch lacked them."""
        if self._kept is None or not self._kept:
            return None
        return [np.concatenate([b[s] for b in self._kept]) for s in range(len(self._kept[0]))]

    def extra(self, name: str) -> np.ndarray:
        return np.concatenate(self._extra[name])

    def has_extra(self, name: str) -> bool:
        return name in self._extra


def run_batched(run: Callable[[np.ndarray], RunOutput], images: np.ndarray, batch: int, *,
                fixed: bool = False, on_batch: Callable[[int], None] | None = None) -> Gathered:
    """Run ``images`` through ``run`` ``batch`` at a time; a fixed-batch model gets its last batch padded."""
    gathered = Gathered()
    for start in range(0, len(images), batch):
        chunk, real = pad_batch(images[start:start + batch], batch if fixed else None)
        gathered.add(run(chunk), real)
        if on_batch is not None:
            on_batch(real)
    return gathered
