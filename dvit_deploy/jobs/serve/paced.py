"""A simulated service time per ρ, for tests and quick benchmarks that must not depend on machine speed.

``ServeSpec.simulated_service`` (``dvit serve --simulate-service-ms``, a hidden, test-only flag)
wraps the real runner in ``PacedRunner``: each call still runs the model (answers stay real), then
sleeps until it has taken ``call_ms + image_ms(ρ) · rows``, with ``image_ms`` interpolated linearly
between the given ρ points. The ρ of a call is read from its first stage's kept count. A call that
already took longer than that is not shortened: keep the simulated times well above the real ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...helpers.errors import BadInput


@dataclass(frozen=True)
class SimulatedService:
    call_ms: float
    image_ms: tuple[tuple[float, float], ...]  # (ρ, ms per image), ascending ρ

    def seconds(self, rho: float, rows: int) -> float:
        xs = [p[0] for p in self.image_ms]
        ys = [p[1] for p in self.image_ms]
        return 1e-3 * (self.call_ms + float(np.interp(rho, xs, ys)) * rows)

    @classmethod
    def parse(cls, text: str) -> "SimulatedService":
        """``CALL_MS,RHO:MS,RHO:MS…`` e.g. ``40,0.6:20,0.9:100`` (40 ms per call, 20 ms per image at ρ 0.6, …)."""
        try:
            head, *points = [p.strip() for p in text.split(",")]
            call = float(head)
            pairs = tuple(sorted((float(r), float(ms)) for r, ms in (p.split(":") for p in points)))
        except ValueError:
            raise BadInput(f"--simulate-service-ms takes CALL_MS,RHO:MS[,RHO:MS…], got {text!r}") from None
        if not pairs or call < 0 or any(ms < 0 or not 0 < r <= 1 for r, ms in pairs):
            raise BadInput(f"--simulate-service-ms takes CALL_MS,RHO:MS[,RHO:MS…] with ms ≥ 0 and 0 < ρ ≤ 1, got {text!r}")
        return cls(call, pairs)

    def to_json(self) -> dict[str, Any]:
        return {"call_ms": self.call_ms, "image_ms": [list(p) for p in self.image_ms]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SimulatedService":
        return cls(float(data["call_ms"]), tuple((float(r), float(ms)) for r, ms in data["image_ms"]))


class PacedRunner:
    """``runner`` whose calls take the simulated time (at least); everything else is the runner's."""

    def __init__(self, runner: Any, service: SimulatedService, num_patches: int, default_rho: float,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.perf_counter) -> None:
        self.inner, self.service, self.num_patches, self.default_rho = runner, service, num_patches, default_rho
        self.sleep, self.clock = sleep, clock

    def run(self, batch: np.ndarray, **kwargs: Any) -> Any:
        start = self.clock()
        out = self.inner.run(batch, **kwargs)
        counts = kwargs.get("keep_counts")
        rho = float(np.asarray(counts).reshape(-1)[0]) / self.num_patches if counts is not None else self.default_rho
        left = self.service.seconds(rho, len(batch)) - (self.clock() - start)
        if left > 0:
            self.sleep(left)
        return out

    def __getattr__(self, name: str) -> Any:  # load, close, has_token_info, describe …
        return getattr(self.inner, name)
