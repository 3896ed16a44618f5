"""The Triton Python-backend model that serves a dvit artifact (runs inside ``tritonserver``).

The model repository's ``model.py`` only imports ``TritonPythonModel`` from here, so the
code that runs in the server is this package's, versioned with it. The backend's stub process
imports it with the ``dvit serve`` environment (``serve.tritonserver.server_env``).

* ``initialize``: read the ``ServeSpec`` beside the config, re-check the artifact's sha256, open
  the runner and **warm it up** (one inference per distinct kept-count default) before returning,
  so Triton reports the model, and ``/v2/health/ready``, ready only once it can answer at speed;
* ``execute``: Triton's batch of requests through ``RequestHandler`` (grouped by kept counts);
  a bad request gets its own ``INVALID_ARG`` error (HTTP 400, gRPC INVALID_ARGUMENT);
* ``finalize``: close the runner.

Where the backend's time goes is on Triton's metrics endpoint (``BackendTimes``):
``dvit_backend_seconds_total{phase="execute"|"decode"|"runner"}`` and ``dvit_backend_batches_total``;
with Triton's own per-model statistics they split a request's time per hop (docs/serving.md).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ...artifact.names import INPUT_NAME
from .handler import Request, RequestHandler
from .decode import IMAGE_BYTES_NAME, single_threaded_preprocessing
from .spec import KEEP_RATIO_NAME, ServeSpec


# ORT's idle intra-op threads spin-wait by default. In the server, between two batches, those spinning
# threads hold the cores that Triton's threads, the IPC hand-off and the decoding need (the runner ran
# ~20 % slower inside the Python backend than in-process at batch 1): the served session lets them sleep.
SERVED_ORT_OPTIONS = MappingProxyType({"allow_spinning": False})


def warm_png() -> bytes:
    """A small PNG for the warm-up of the ``image_bytes`` path."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def open_spec_runner(spec: ServeSpec, folder: Path | None = None) -> Any:
    """The loaded, warmed-up runner for ``spec`` (BadInput/MissingDependency as every command raises).

    A relative ``spec.artifact`` (a packaged repository) is relative to the model ``folder``."""
    from ...artifact.context import RunContext
    from ...artifact.store import open_artifact
    from ...runtime import open_runner

    artifact = Path(spec.artifact)
    if not artifact.is_absolute() and folder is not None:
        artifact = folder / artifact
    opened = open_artifact(artifact, context=RunContext(verify=spec.verify))  # the spec's --no-verify, this process
    options = dict(spec.runner_options)
    if spec.token_outputs:  # kept tokens even from a graph without token outputs (ORT, OpenVINO)
        options.setdefault("topk_outputs", True)
    if spec.backend == "onnxruntime":  # idle ORT threads sleep instead of spinning: see SERVED_ORT_OPTIONS
        options = {**SERVED_ORT_OPTIONS, **options}
    if spec.backend == "openvino":  # the dynamic batcher runs every size up to the maximum: one dynamic compile
        options.setdefault("static_batch", False)
    runner = open_runner(spec.backend, opened, device=options.pop("device", "cpu"),
                         precision=spec.precision, **options).load()
    if spec.simulated_service:  # test-only: calls take a set time per ρ (serve.paced)
        from .paced import PacedRunner, SimulatedService

        runner = PacedRunner(runner, SimulatedService.from_json(spec.simulated_service), spec.num_patches,
                             float(spec.keep_ratio or 1.0))
    try:
        if spec.token_outputs and not runner.has_token_info:
            raise RuntimeError(f"{artifact.name} on {spec.backend} reports no kept tokens")
        warm = np.zeros((1, *spec.image_shape), np.float32)  # a fixed-batch artifact gets it padded
        handler = RequestHandler(runner, spec)
        requests = [Request(warm)]
        if spec.data_config is not None:  # the image_bytes path too (PIL, the transform), before "ready"
            requests.append(Request(None, image_bytes=np.asarray([[warm_png()]], dtype=object)))
        try:
            answers = handler.handle(requests)
        finally:
            handler.close()
        for response in answers:
            if response.error:
                raise RuntimeError(f"warm-up inference failed: {response.error}")
    except BaseException:
        runner.close()
        raise
    return runner


def sent_stamp(request: Any) -> float | None:
    """The ``dvit_sent`` request parameter (a client's time.monotonic(), for the per-batch trace), or None."""
    import json

    try:
        value = json.loads(request.parameters() or "{}").get("dvit_sent")
        return float(value) if value is not None else None
    except Exception:  # noqa: BLE001 - a backend without parameters(), or a malformed value: no stamp
        return None


class BackendTimes:
    """Seconds spent in ``execute`` and, inside it, decoding and in the runner, as Triton counters.

    Sent at most every ``EVERY_S`` (each update is a message to the server process); a no-op where
    the backend has no custom metrics."""

    EVERY_S = 0.25
    PHASES = ("execute", "decode", "runner")

    def __init__(self, pb_utils: Any, model: str) -> None:
        self.ok, self.last = False, 0.0
        self.totals = dict.fromkeys(self.PHASES, 0.0)
        self.sent = dict.fromkeys(self.PHASES, 0.0)
        self.batches = self.batches_sent = 0
        try:
            family = pb_utils.MetricFamily
            self._families = [
                family(name="dvit_backend_seconds_total", kind=family.COUNTER,
                       description="seconds in the Python backend's execute, and in decoding and the runner within it"),
                family(name="dvit_backend_batches_total", kind=family.COUNTER,
                       description="Triton batches the Python backend executed")]
            self._phase = {p: self._families[0].Metric(labels={"model": model, "phase": p}) for p in self.PHASES}
            self._batches = self._families[1].Metric(labels={"model": model})
            self.ok = True
        except Exception:  # noqa: BLE001 - an older backend without custom metrics: serving goes on
            pass

    def add(self, execute_s: float, handler_seconds: dict[str, float]) -> None:
        """One more batch: its ``execute_s`` and the handler's running totals (decode, runner)."""
        if not self.ok:
            return
        self.totals["execute"] += execute_s
        self.totals.update(handler_seconds)
        self.batches += 1
        now = time.monotonic()
        if now - self.last < self.EVERY_S:
            return
        self.last = now
        for phase, total in self.totals.items():
            if total > self.sent[phase]:
                self._phase[phase].increment(total - self.sent[phase])
                self.sent[phase] = total
        self._batches.increment(float(self.batches - self.batches_sent))
        self.batches_sent = self.batches

    def close(self) -> None:
        if self.ok:  # Metric objects before their families (the stub insists)
            del self._phase, self._batches
            self._families.clear()


class TritonPythonModel:
    """Triton's Python-backend interface (``initialize`` / ``execute`` / ``finalize``)."""

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils  # provided by the backend stub

        self._pb = pb_utils
        folder = Path(args["model_repository"])
        self.spec = ServeSpec.read(folder)  # the runner's options (intra-op threads included) are the spec's
        if self.spec.data_config is not None:
            single_threaded_preprocessing()
        try:
            self.runner = open_spec_runner(self.spec, folder)
        except Exception as exc:  # Triton logs this one line and refuses to load the model
            raise pb_utils.TritonModelException(f"dvit: {exc}") from None
        self.handler = RequestHandler(self.runner, self.spec)
        self.times = BackendTimes(pb_utils, self.spec.name)
        self.metrics = None
        if self.spec.slo_ms and self.spec.dynamic_keep:
            self._start_controller(pb_utils, folder)
            self.handler.seconds = dict.fromkeys(self.handler.seconds, 0.0)  # the counters count served batches only
        # torch, timm, onnxruntime and the model leave ~400 K objects for the cyclic GC to walk: a full
        # collection took 1.6 s on the loaded 2-vCPU machine (0.5 ms once frozen). Freeze what start-up made,
        # so a collection while serving walks only what serving makes.
        gc.collect()
        gc.freeze()

    def _start_controller(self, pb_utils: Any, folder: Path) -> None:
        """--slo-ms: measure the service time per rung, warn when the objective is out of reach, export metrics."""
        from .slo import SloMetrics, report, start_controller, write_report

        try:
            controller = start_controller(self.spec, self.handler)
        except Exception as exc:  # noqa: BLE001 - one line in Triton's log, the model refuses to load
            self.runner.close()
            raise pb_utils.TritonModelException(f"dvit: {exc}") from None
        self.handler.controller = controller
        if self.spec.sheds:  # the queue bound, from Triton's queue length (Triton's own policy would stop prefetching)
            from .shedding import PendingProbe, Shedder

            probe = PendingProbe(self.spec.metrics_address, self.spec.name,
                                 warn=lambda line: pb_utils.Logger.log_warn(f"dvit: {line}"))
            self.handler.shedder = Shedder(self.spec.queue_timeout_ms / 1e3, probe.pending, controller.drain)
        found = report(controller)
        write_report(folder, found)
        if found["warning"]:
            pb_utils.Logger.log_warn(f"dvit: {found['warning']}")
        self.metrics = SloMetrics(pb_utils, self.spec.name)
        self.metrics.update(controller)

    def execute(self, requests: list[Any]) -> list[Any]:
        started = time.perf_counter()
        pb = self._pb
        parsed: list[Request] = []
        for request in requests:
            images = pb.get_input_tensor_by_name(request, INPUT_NAME)
            encoded = pb.get_input_tensor_by_name(request, IMAGE_BYTES_NAME) if self.spec.data_config else None
            keep = pb.get_input_tensor_by_name(request, KEEP_RATIO_NAME) if self.spec.dynamic_keep else None
            parsed.append(Request(None if images is None else images.as_numpy(), None if keep is None else keep.as_numpy(),
                                  None if encoded is None else encoded.as_numpy(),
                                  sent=sent_stamp(request) if self.handler.trace is not None else None))
        responses = []
        answers = self.handler.handle(parsed)
        if self.metrics is not None:
            self.metrics.update(self.handler.controller, self.handler.shedder)
        for response in answers:
            if response.error is not None:
                code = (pb.TritonError.INTERNAL if response.internal else
                        pb.TritonError.UNAVAILABLE if response.overloaded else pb.TritonError.INVALID_ARG)
                responses.append(pb.InferenceResponse(error=pb.TritonError(response.error, code)))
            else:
                responses.append(pb.InferenceResponse(
                    output_tensors=[pb.Tensor(name, np.ascontiguousarray(value)) for name, value in response.outputs.items()]))
        self.times.add(time.perf_counter() - started, self.handler.seconds)
        return responses

    def finalize(self) -> None:
        if getattr(self, "metrics", None) is not None:
            self.metrics.close()
        if getattr(self, "times", None) is not None:
            self.times.close()
        if getattr(self, "handler", None) is not None:
            self.handler.close()
        if getattr(self, "runner", None) is not None:  # the model's attribute (set in initialize), not a runner's
            self.runner.close()
