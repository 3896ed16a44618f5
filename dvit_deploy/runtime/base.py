"""One small interface for every backend: load, describe inputs/outputs, run a batch.

Backends (``torch``, ``onnxruntime``, ``tensorrt``) subclass ``Runner``. Heavy imports happen in
``load()``, never at import time, so listing backends works on any machine.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..artifact.store import Artifact
from ..helpers.batching import RunOutput  # noqa: F401 - part of the runner interface
from ..helpers.errors import BadInput

DEVICE_PATTERN = re.compile(r"cpu|cuda(?::[0-9]+)?")


def device_index(device: str) -> int | None:
    """None for 'cpu', else the CUDA index ('cuda' is 0); BadInput for anything else."""
    if not DEVICE_PATTERN.fullmatch(device):
        raise BadInput(f"device must be cpu, cuda or cuda:N (N >= 0), got '{device}'")
    return None if device == "cpu" else int(device.partition(":")[2] or 0)


def check_cuda_index(device: str, count: int) -> int:
    """The CUDA index of ``device``, refused in one line when only ``count`` GPUs are visible."""
    index = device_index(device)
    if index is None:
        raise BadInput(f"device '{device}' is not a CUDA device")
    if index >= count:
        seen = "no CUDA GPU" if count == 0 else f"{count} CUDA GPU(s): cuda:0..cuda:{count - 1}"
        raise BadInput(f"device '{device}' requested but torch sees {seen}")
    return index


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[Any, ...]  # ints, or strings for symbolic dims


@dataclass(frozen=True)
class Fallback:
    """What executes differs from what was asked: a provider or a precision the backend could not honour.

    ``asked``: what was requested; ``running``: what runs instead; ``reason``: the one line reports show."""

    asked: str
    running: str
    reason: str

    def __str__(self) -> str:
        return self.reason

    @property
    def line(self) -> str:
        """The line human reports print for it (and validate's, evaluate's, predict's notes carry)."""
        return f"FALLBACK: {self.reason}"


# The facts a description's ``details`` may hold about what ran at reduced precision or on which kernels
# (OpenVINO precision and AMX/VNNI use, ONNX Runtime's int8 kernels): what ``dvit validate`` reports.
EXECUTION_KEYS = ("inference_precision", "amx_used", "vnni_used", "predictor_f32_ops", "gemm_precisions",
                  "gemm_kernels", "cpu_class", "cpu", "kernels", "executed_op_types", "session_config")


@dataclass(frozen=True)
class RunnerDescription:
    """What a loaded runner is and what actually executes, typed: callers read attributes, not dict keys.

    ``executes``: one line naming what runs (e.g. 'onnxruntime 1.23.2 CPUExecutionProvider').
    ``token_info``: whether ``run`` reports kept tokens (``Runner.has_token_info``). ``intra_op_threads``:
    the threads it runs with, where the backend sets them. ``details``: every backend-specific fact
    (providers, kernels, build sections …) in the order ``describe()`` has always listed them;
    ``execution`` is the part of them about what ran (``EXECUTION_KEYS``). ``to_dict()`` is the flat dict
    ``describe()`` returns."""

    backend: str
    device: str
    precision: str
    artifact: str
    executes: str
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    fallback: Fallback | None = None
    token_info: bool = False
    intra_op_threads: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def execution(self) -> dict[str, Any]:
        return {key: self.details[key] for key in EXECUTION_KEYS if key in self.details}

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "artifact": self.artifact,
            "inputs": [t.__dict__ for t in self.inputs],
            "outputs": [t.__dict__ for t in self.outputs],
            **self.details,
        }


@dataclass
class BackendStatus:
    name: str
    available: bool
    detail: str  # version/providers when available; what is missing and the extra to install otherwise


class Runner(abc.ABC):
    """A loaded model on one backend. Use as a context manager or call ``load``/``close``.

    Constructed from the ``Artifact`` a job opened (``artifact.store.open_artifact``; in memory:
    ``Artifact.of(path, manifest)``): ``self.artifact`` is that artifact (its typed manifest, model
    record, quantization), ``self.path`` its file.
    """

    backend: str = ""
    needs: str = "an opened Artifact"  # what the backend runs, for the refusal when given none
    notes: list[str]  # set per instance in __init__ (below)
    fallback: Fallback | None
    topk_outputs: bool

    def __init__(self, artifact: Artifact, *, device: str = "cpu", precision: str = "fp32",
                 topk_outputs: bool = False) -> None:
        """``topk_outputs`` (the same default, False, on every backend): also report kept tokens when the
        artifact has no token outputs, by running an in-memory copy of the graph that outputs each TopK's
        indices (ONNX Runtime, OpenVINO). The torch backend always reports them; a TensorRT engine reports
        the token outputs it was built with."""
        device_index(device)  # refuse 'cuda:x', 'cuda:-1' before anything loads
        if artifact is None:
            raise BadInput(f"the {self.backend} backend needs {self.needs}")
        if not isinstance(artifact, Artifact):
            raise TypeError(f"{type(self).__name__} takes an opened Artifact (artifact.store.open_artifact, or "
                            f"Artifact.of(path, manifest) for one held in memory), not {type(artifact).__name__}")
        self.artifact = artifact
        self.path: Path = artifact.path
        self.device = device
        self.precision = precision
        self.num_patches = artifact.model.num_patches
        self.compose_ids = not artifact.model.splits_tokens  # ConvNeXt/Swin indices are already positions
        # Declared here so no caller has to guess: what the runner has to say about how it ran (one line
        # each, for the human report and --json), and, apart from them, the one line saying that what
        # executes differs from what was asked (a provider or precision fallback), else None.
        self.notes: list[str] = []
        self.fallback: Fallback | None = None
        self.topk_outputs = topk_outputs

    @property
    def has_token_info(self) -> bool:
        """Whether ``run`` reports the kept tokens of each stage (``RunOutput.kept``)."""
        return False

    def report_notes(self) -> list[str]:
        """``notes`` and, last, the fallback's report line (``Fallback.line``)."""
        return self.notes + ([self.fallback.line] if self.fallback else [])

    # -- lifecycle ---------------------------------------------------------------------------
    def check(self) -> None:
        """What ``load`` would refuse without loading anything (precision, device, backend package), in
        ``load``'s own words: for a command that must refuse before it starts something slow (``dvit serve``)."""

    @abc.abstractmethod
    def load(self) -> "Runner":
        """Import the backend, load the artifact; raise BadInput/MissingDependency on failure."""

    def close(self) -> None:
        """Release sessions, engines and device memory."""

    def __enter__(self) -> "Runner":
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- description -------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @property
    @abc.abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    def description(self) -> RunnerDescription:
        """Backend, device, what actually executes (e.g. ORT provider), precision, I/O: typed."""
        return RunnerDescription(
            backend=self.backend, device=self.device, precision=self.precision, artifact=str(self.path),
            executes=self._executes(), inputs=tuple(self.inputs), outputs=tuple(self.outputs),
            fallback=self.fallback, token_info=self.has_token_info, intra_op_threads=self._threads(),
            details=self._details())

    def describe(self) -> dict[str, Any]:
        """``description()`` as the flat dict of every fact (for --json and logs)."""
        return self.description().to_dict()

    # What each backend adds to its description (overridden per backend; ``_details`` in describe()'s order).
    def _executes(self) -> str:
        return self.backend

    def _threads(self) -> int | None:
        return None

    def _details(self) -> dict[str, Any]:
        return {}

    # -- execution ---------------------------------------------------------------------------
    @abc.abstractmethod
    def run(self, images: np.ndarray, *, keep_counts: np.ndarray | None = None) -> RunOutput:
        """Run one batch (N, C, H, W) float32 on the host; return host outputs.

        ``keep_counts``: for a --dynamic-keep artifact, the per-stage kept counts of this call
        (one vector for the whole batch; default the manifest's). Other artifacts refuse it."""

    def timed_call(self, images: np.ndarray, *, include_transfer: bool = False) -> Callable[[], None]:
        """A zero-argument callable running one inference, for profiling.

        Inputs are staged once (on the device when ``include_transfer`` is False) so the call
        measures what the backend does per batch. Subclasses override for device backends; the
        callable must return only when the work is complete (synchronised).
        """
        return lambda: self.run(images)

    def _keep_counts_value(self, keep_counts: np.ndarray | None, default: np.ndarray | None) -> np.ndarray | None:
        """The kept counts one call runs with: ``keep_counts`` checked against the graph's keep input."""
        if keep_counts is None:
            return default
        if default is None:
            raise BadInput("per-call keep counts need a --dynamic-keep artifact")
        counts = np.asarray(keep_counts).astype(default.dtype)
        if counts.shape != default.shape:
            raise BadInput(f"keep counts must have {default.shape[0]} value(s), one per stage, got {counts.tolist()}")
        return counts
