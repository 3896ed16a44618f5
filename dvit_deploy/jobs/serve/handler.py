"""Requests in, responses out, around one loaded runner: the serving logic, without Triton.

Triton's dynamic batcher hands the backend several requests at once. This module

* decodes ``image_bytes`` requests (``serve.decode``: predict's image checks and preprocessing), so
  a corrupt image fails its own request, not the batch;
* checks each request on its own (a bad ``keep_ratio`` fails that request only, with a one-line
  reason; Triton itself has already refused wrong dtypes, shapes and batch sizes against the
  model config);
* **groups requests by their kept counts** and runs one runner call per group. A
  ``--dynamic-keep`` graph takes one ``keep_counts`` vector for the whole batch, so requests at
  different ρ can never share a runner call: that is the guarantee, by construction;
* splits each call's outputs back per request (a fixed-batch artifact gets its batch padded, and
  the padding trimmed).

``serve.backend`` wraps this in Triton's Python-backend types.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ...artifact.names import INPUT_NAME, LOGITS_NAME
from ...helpers.batching import pad_batch
from ...helpers.errors import BadInput, DvitError
from .decode import IMAGE_BYTES_NAME, decode_images
from .spec import KEEP_RATIO_NAME, ServeSpec, kept_ids_name


@dataclass
class Request:
    images: np.ndarray | None  # (b, C, H, W) float32; None when the request sent image_bytes
    keep_ratio: np.ndarray | None = None  # (b, 1) float32, dynamic-keep models only
    image_bytes: np.ndarray | None = None  # (b, 1) encoded images (bytes), decoded into ``images``


@dataclass
class Response:
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None  # one line; the request is refused
    internal: bool = False  # the server failed (Triton: INTERNAL), not the request (INVALID_ARG)


class KeepController:
    """Adaptive ρ for ``--slo-ms``: what only a token-pruned model can trade under load.

    The signal is the wall time of each Triton batch the model executes: under load the dynamic
    batcher hands over bigger batches and every queued request waits behind the current one, so
    a batch time near the latency objective means the queue is growing. Above 80 % of ``slo_ms``
    ρ steps down (fewer tokens, faster), below 40 % it steps back up, within the keep range;
    ρ moves on a grid of ``step`` so only a few kept-count vectors (runner calls) exist.
    A request that names its own ``keep_ratio`` is served at it. With ``grid`` (a --keep-ladder
    engine's rungs) ρ moves one rung at a time instead, since only the rungs can run.
    """

    HIGH, LOW = 0.8, 0.4

    def __init__(self, low: float, high: float, start: float, slo_ms: float, step: float = 0.05,
                 grid: Sequence[float] | None = None) -> None:
        self.low, self.high, self.slo_ms, self.step = low, high, slo_ms, step
        self.grid = tuple(sorted(grid)) if grid else ()
        self.rho = min(max(start, low), high)
        if self.grid:  # start on the rung nearest to ``start``
            self.rho = min(self.grid, key=lambda r: (round(abs(r - start), 9), -r))

    def observe(self, batch_ms: float) -> float:
        down, up = batch_ms > self.HIGH * self.slo_ms, batch_ms < self.LOW * self.slo_ms
        if self.grid:
            index = self.grid.index(self.rho)
            self.rho = self.grid[max(index - 1, 0)] if down else self.grid[min(index + 1, len(self.grid) - 1)] \
                if up else self.rho
        elif down:
            self.rho = max(self.low, round(self.rho - self.step, 6))
        elif up:
            self.rho = min(self.high, round(self.rho + self.step, 6))
        return self.rho


@dataclass
class CallRecord:
    """One runner call: what went in together (for tests and stats)."""

    rows: int
    keep_counts: tuple[int, ...] | None
    requests: int


class RequestHandler:
    def __init__(self, runner: Any, spec: ServeSpec) -> None:
        self.runner = runner
        self.spec = spec
        self.calls: list[CallRecord] = []
        self.keep_calls = 64  # how many CallRecords to keep (a bounded log, not a leak)
        self.controller: KeepController | None = None
        if spec.dynamic_keep and spec.slo_ms:
            low, high = spec.keep_range
            self.controller = KeepController(low, high, float(spec.keep_ratio or high), spec.slo_ms, spec.slo_step,
                                             grid=spec.rungs)

    # -- one request at a time ----------------------------------------------------------------
    def _keep_of(self, request: Request) -> tuple[float | None, tuple[int, ...] | None]:
        """(ρ, per-stage counts) a request runs at; BadInput-style DvitError with the reason."""
        spec = self.spec
        if not spec.dynamic_keep:
            return spec.keep_ratio, None
        if request.keep_ratio is None:
            rho = self.controller.rho if self.controller is not None else float(spec.keep_ratio)
            return rho, spec.counts_for(rho)
        values = np.asarray(request.keep_ratio, dtype=np.float64).reshape(-1)
        if values.size != len(request.images):
            raise DvitError(f"{KEEP_RATIO_NAME} needs one value per image ({len(request.images)}), got {values.size}")
        if values.size and not np.all(values == values[0]):
            raise DvitError(f"{KEEP_RATIO_NAME} must be the same for every image of one request "
                            f"(got {sorted(set(values.tolist()))}); send one request per ρ")
        rho = float(values[0])
        return rho, spec.counts_for(rho)

    def _decode(self, request: Request) -> None:
        """An ``image_bytes`` request gets its ``images`` (predict's checks and preprocessing), or BadInput."""
        if request.image_bytes is not None and request.images is not None:
            raise BadInput(f"send {INPUT_NAME} or {IMAGE_BYTES_NAME} in one request, not both")
        if request.image_bytes is None and request.images is None:
            raise BadInput(f"send {INPUT_NAME} (FP32, preprocessed)" + (
                f" or {IMAGE_BYTES_NAME} (encoded JPEG/PNG/WebP)" if self.spec.data_config is not None else ""))
        if request.image_bytes is not None:
            if self.spec.data_config is None:
                raise BadInput(f"this model serves no {IMAGE_BYTES_NAME} input (its manifest records no preprocessing)")
            request.images = decode_images(request.image_bytes, self.spec.data_config)
            request.image_bytes = None

    def _check_images(self, request: Request) -> None:
        images = request.images
        if images.dtype != np.float32 or images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.spec.image_shape):
            raise DvitError(f"images must be FP32 [B, {', '.join(map(str, self.spec.image_shape))}], got "
                            f"{images.dtype} {list(images.shape)}")
        if not np.isfinite(images).all():
            raise DvitError("images contain NaN or infinity")

    # -- a Triton batch -----------------------------------------------------------------------
    def handle(self, requests: list[Request]) -> list[Response]:
        start = time.perf_counter()
        responses: list[Response | None] = [None] * len(requests)
        groups: dict[tuple[int, ...] | None, list[tuple[int, float | None]]] = {}
        for index, request in enumerate(requests):
            try:
                self._decode(request)
                self._check_images(request)
                rho, counts = self._keep_of(request)
            except DvitError as exc:
                responses[index] = Response(error=str(exc))
                continue
            groups.setdefault(counts, []).append((index, rho))
        for counts, members in groups.items():
            self._run_group(requests, members, counts, responses)
        if self.controller is not None:
            self.controller.observe((time.perf_counter() - start) * 1e3)
        return [r if r is not None else Response(error="internal error: no response") for r in responses]

    def _run_group(self, requests: list[Request], members: list[tuple[int, float | None]],
                   counts: tuple[int, ...] | None, responses: list[Response | None]) -> None:
        """All ``members`` share ``counts``: run them in runner calls of at most max_batch rows."""
        limit = self.spec.fixed_batch or self.spec.max_batch
        start = 0
        while start < len(members):
            chunk, rows = [], 0
            while start < len(members) and (not chunk or rows + len(requests[members[start][0]].images) <= limit):
                chunk.append(members[start])
                rows += len(requests[members[start][0]].images)
                start += 1
            try:
                self._run_chunk(requests, chunk, counts, responses)
            except Exception as exc:  # noqa: BLE001 - a failed call is this chunk's answer, not the server's end
                line = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                for index, _ in chunk:
                    responses[index] = Response(error=f"inference failed: {line}",
                                                internal=not isinstance(exc, BadInput))

    def _run_chunk(self, requests: list[Request], chunk: list[tuple[int, float | None]],
                   counts: tuple[int, ...] | None, responses: list[Response | None]) -> None:
        images = np.concatenate([requests[i].images for i, _ in chunk]) if len(chunk) > 1 else requests[chunk[0][0]].images
        batch, real = pad_batch(images, self.spec.fixed_batch)
        run: Callable[..., Any] = self.runner.run
        out = run(batch, keep_counts=np.asarray(counts, dtype=np.int32)) if counts is not None else run(batch)
        self.calls.append(CallRecord(rows=real, keep_counts=counts, requests=len(chunk)))
        del self.calls[:-self.keep_calls]
        logits = np.asarray(out.logits, dtype=np.float32)[:real]
        kept = [np.asarray(k, dtype=np.int64)[:real] for k in out.kept] if (self.spec.token_outputs and out.kept) else None
        offset = 0
        for index, rho in chunk:
            n = len(requests[index].images)
            outputs = {LOGITS_NAME: logits[offset:offset + n]}
            if self.spec.token_outputs:
                if kept is None:
                    raise DvitError("the runner reported no kept tokens for a model served with token outputs")
                for stage, ids in enumerate(kept):
                    outputs[kept_ids_name(stage + 1)] = ids[offset:offset + n]
            if not self.spec.dense:
                outputs[KEEP_RATIO_NAME] = np.full((n, 1), np.nan if rho is None else rho, dtype=np.float32)
            responses[index] = Response(outputs=outputs)
            offset += n
