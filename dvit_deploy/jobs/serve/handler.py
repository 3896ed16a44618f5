"""Requests in, responses out, around one loaded runner: the serving logic, without Triton.

Triton's dynamic batcher hands the backend several requests at once. This module

* decodes ``image_bytes`` requests (``serve.decode``: predict's image checks and preprocessing), the
  images of the whole batch at once on a few threads (``DecodePool``), so a corrupt image fails its
  own request, not the batch;
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

import json
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ...artifact.names import INPUT_NAME, LOGITS_NAME
from ...helpers.batching import pad_batch
from ...helpers.errors import BadInput, DvitError
from .decode import IMAGE_BYTES_NAME, DecodePool
from .spec import KEEP_RATIO_NAME, ServeSpec, kept_ids_name

if TYPE_CHECKING:
    from .controller import SloController
    from .shedding import Shedder


@dataclass
class Request:
    images: np.ndarray | None  # (b, C, H, W) float32; None when the request sent image_bytes
    keep_ratio: np.ndarray | None = None  # (b, 1) float32, dynamic-keep models only
    image_bytes: np.ndarray | None = None  # (b, 1) encoded images (bytes), decoded into ``images``
    sent: float | None = None  # the client's time.monotonic() stamp (request parameter ``dvit_sent``; traces only)


def rows_of(request: Request) -> int:
    """How many images a request sends, either input (0 when it sends neither)."""
    for value in (request.images, request.image_bytes):
        if value is not None:
            return len(value)
    return 0


@dataclass
class Response:
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None  # one line; the request is refused
    internal: bool = False  # the server failed (Triton: INTERNAL), not the request (INVALID_ARG)
    overloaded: bool = False  # refused unrun by the queue bound (Triton: UNAVAILABLE, HTTP 503)


@dataclass
class CallRecord:
    """One runner call: what went in together (for tests and stats)."""

    rows: int
    keep_counts: tuple[int, ...] | None
    requests: int


class BatchTrace:
    """Diagnostics of the ``--slo-ms`` controller (``ServeSpec.trace_path``): one JSON line per Triton batch.

    ``t`` (time.monotonic at the batch's start), ``rows``, ``rho``; the controller's view: ``pred_s`` (its
    service-time model for the batch's runner calls, before it learnt from them), ``est_wait_s`` (how long it
    thinks the oldest request waited), ``rate`` / ``load_rate`` (λ, images/s), ``full_run``, ``p99_s`` (its
    prediction at the chosen ρ), ``bound`` (what set ρ); what happened: ``runner_s``, ``handle_s`` (the whole
    batch in the backend) and, when the requests carry a ``dvit_sent`` parameter (the benchmark's scheduled
    time, same monotonic clock), ``oldest_wait_s`` = start − the earliest stamp: the queue delay the
    controller could not see. Appended and flushed per batch; meant for benchmarks, not for production."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.row: dict[str, Any] = {}

    def begin(self, requests: list[Request], rows: int, controller: "SloController | None") -> None:
        now = time.monotonic()
        sent = [r.sent for r in requests if r.sent is not None]
        self.row = {"t": now, "rows": rows, "pred_s": 0.0, "runner_s": 0.0,
                    "oldest_wait_s": now - min(sent) if sent else None}
        if controller is not None:
            d = controller.last
            self.row.update(rho=d.rho, est_wait_s=d.wait_s, rate=d.rate, load_rate=controller.load_rate,
                            full_run=controller.full_run, p99_s=d.predicted_s if math.isfinite(d.predicted_s) else None,
                            bound=d.bound)

    def call(self, predicted: float, took: float) -> None:
        self.row["pred_s"] += predicted
        self.row["runner_s"] += took

    def end(self) -> None:
        self.row["handle_s"] = time.monotonic() - self.row["t"]
        self.file.write(json.dumps(self.row) + "\n")

    def close(self) -> None:
        self.file.close()


class RequestHandler:
    def __init__(self, runner: Any, spec: ServeSpec, controller: "SloController | None" = None,
                 decode_workers: int | None = None) -> None:
        self.runner = runner
        self.spec = spec
        self.calls: list[CallRecord] = []
        self.keep_calls = 64  # how many CallRecords to keep (a bounded log, not a leak)
        # --slo-ms: chooses ρ per batch for requests without their own (serve.controller, built by serve.slo)
        self.controller = controller
        self.decoder = DecodePool(spec.data_config, decode_workers) if spec.data_config is not None else None
        # Where the backend's time goes (seconds, summed over batches): read by serve.backend's metrics.
        self.seconds = {"decode": 0.0, "runner": 0.0}
        self.trace = BatchTrace(spec.trace_path) if spec.trace_path else None
        self.shedder: "Shedder | None" = None  # --slo-ms: the queue bound (serve.shedding), set with the controller

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
        if not np.isfinite(values).all():
            lo, hi = spec.keep_range
            raise DvitError(f"{KEEP_RATIO_NAME} must be a finite number in [{lo:g}, {hi:g}], got "
                            f"{values[~np.isfinite(values)][0]}")
        if values.size and not np.all(values == values[0]):
            raise DvitError(f"{KEEP_RATIO_NAME} must be the same for every image of one request "
                            f"(got {sorted(set(values.tolist()))}); send one request per ρ")
        rho = float(values[0])
        return rho, spec.counts_for(rho)

    def _input_of(self, request: Request) -> None:
        """BadInput unless the request sends exactly one of ``images`` and (when served) ``image_bytes``."""
        if request.image_bytes is not None and request.images is not None:
            raise BadInput(f"send {INPUT_NAME} or {IMAGE_BYTES_NAME} in one request, not both")
        if request.image_bytes is None and request.images is None:
            raise BadInput(f"send {INPUT_NAME} (FP32, preprocessed)" + (
                f" or {IMAGE_BYTES_NAME} (encoded JPEG/PNG/WebP)" if self.spec.data_config is not None else ""))
        if request.image_bytes is not None and self.decoder is None:
            raise BadInput(f"this model serves no {IMAGE_BYTES_NAME} input (its manifest records no preprocessing)")

    def _decode_all(self, requests: list[Request]) -> dict[int, str]:
        """Every ``image_bytes`` request of the batch gets its ``images`` (predict's checks and preprocessing,
        the batch's images decoded together); the refused ones' one-line errors, by request index."""
        errors: dict[int, str] = {}
        pending = []
        for index, request in enumerate(requests):
            try:
                self._input_of(request)
            except DvitError as exc:
                errors[index] = str(exc)
                continue
            if request.image_bytes is not None:
                pending.append(index)
        if pending and self.decoder is not None:
            start = time.perf_counter()
            for index, decoded in zip(pending, self.decoder.decode([requests[i].image_bytes for i in pending])):
                if isinstance(decoded, BadInput):
                    errors[index] = str(decoded)
                else:
                    requests[index].images, requests[index].image_bytes = decoded, None
            self.seconds["decode"] += time.perf_counter() - start
        return errors

    def _check_images(self, request: Request) -> None:
        images = request.images
        if images.dtype != np.float32 or images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.spec.image_shape):
            raise DvitError(f"images must be FP32 [B, {', '.join(map(str, self.spec.image_shape))}], got "
                            f"{images.dtype} {list(images.shape)}")
        if not np.isfinite(images).all():
            raise DvitError("images contain NaN or infinity")

    # -- a Triton batch -----------------------------------------------------------------------
    def handle(self, requests: list[Request]) -> list[Response]:
        rows = sum(rows_of(r) for r in requests)
        if self.controller is not None:
            self.controller.on_batch(rows)
        if self.trace is not None:
            self.trace.begin(requests, rows, self.controller)
        refusal = (self.shedder.refuse(rows, self.spec.max_batch, len(requests))
                   if self.shedder is not None else None)
        if refusal is not None:  # the queue bound: this batch is refused unrun (drop-front)
            if self.trace is not None:
                self.trace.row["shed"] = len(requests)
            self._end_batch()
            return [Response(error=refusal, overloaded=True) for _ in requests]
        responses: list[Response | None] = [None] * len(requests)
        groups: dict[tuple[int, ...] | None, list[tuple[int, float | None]]] = {}
        refused = self._decode_all(requests)
        for index, request in enumerate(requests):
            if index in refused:
                responses[index] = Response(error=refused[index])
                continue
            try:
                self._check_images(request)
                rho, counts = self._keep_of(request)
            except DvitError as exc:
                responses[index] = Response(error=str(exc))
                continue
            groups.setdefault(counts, []).append((index, rho))
        for counts, members in groups.items():
            self._run_group(requests, members, counts, responses)
        self._end_batch()
        return [r if r is not None else Response(error="internal error: no response") for r in responses]

    def _end_batch(self) -> None:
        if self.controller is not None:
            self.controller.on_batch_end()
        if self.trace is not None:
            self.trace.end()

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

    def _predicted(self, rho: float | None, rows: int) -> float:
        """The controller's modelled seconds for this call (the trace's ``pred_s``; 0 when unmodelled)."""
        model = getattr(self.controller, "model", None)
        if model is None or rho is None or rho not in model.rungs:
            return 0.0
        return model.seconds(rho, rows)

    def _run_chunk(self, requests: list[Request], chunk: list[tuple[int, float | None]],
                   counts: tuple[int, ...] | None, responses: list[Response | None]) -> None:
        images = np.concatenate([requests[i].images for i, _ in chunk]) if len(chunk) > 1 else requests[chunk[0][0]].images
        batch, real = pad_batch(images, self.spec.fixed_batch)
        run: Callable[..., Any] = self.runner.run
        predicted = self._predicted(chunk[0][1], len(batch)) if self.trace is not None else 0.0
        start = time.perf_counter()
        out = run(batch, keep_counts=np.asarray(counts, dtype=np.int32)) if counts is not None else run(batch)
        took = time.perf_counter() - start
        self.seconds["runner"] += took
        if self.controller is not None and chunk[0][1] is not None:
            self.controller.observe(chunk[0][1], len(batch), took)
        if self.trace is not None:
            self.trace.call(predicted, took)
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

    def close(self) -> None:
        if self.decoder is not None:
            self.decoder.close()
        if self.trace is not None:
            self.trace.close()
            self.trace = None
