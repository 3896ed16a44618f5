"""Runtime backends behind one interface (``Runner``), and how to pick and open one.

Backends are named (``torch``, ``onnxruntime``, ``tensorrt``) and imported lazily, so listing
them works on any machine; a backend whose package is missing is reported as unavailable with
the extra that installs it.

Runner classes are constructed as ``cls(artifact, device=..., precision=..., **options)`` from the
``Artifact`` a job opened (``artifact.store.open_artifact``), so the manifest is not read again, and
are not loaded yet: use ``with open_runner(...) as runner:``. ``runner_for_artifact`` also takes a
path (it is opened there).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Callable

from ..helpers.lazy import available
from ..helpers.errors import BadInput, MissingDependency
from ..artifact.store import Artifact, as_artifact
from .base import BackendStatus, Runner, RunOutput, TensorInfo, device_index

BACKENDS: Mapping[str, str] = MappingProxyType({
    "torch": "dvit_deploy.runtime.torch_runner:TorchRunner",
    "onnxruntime": "dvit_deploy.runtime.ort_runner:OnnxRuntimeRunner",
    "tensorrt": "dvit_deploy.runtime.trt_runner:TensorRTRunner",
    "openvino": "dvit_deploy.runtime.openvino_runner:OpenVINORunner",
})

# The Python package each backend needs, and the extra that installs it.
BACKEND_PACKAGES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "torch": ("torch", "torch"),
    "onnxruntime": ("onnxruntime", "gpu"),  # core dependency; [gpu] installs the CUDA/TensorRT-EP build
    "tensorrt": ("tensorrt", "tensorrt"),
    "openvino": ("openvino", "openvino"),
})

# Which backend runs an artifact by default, from its file suffix.
SUFFIX_BACKENDS: Mapping[str, str] = MappingProxyType({".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"})

# Backends that execute the artifact file itself (torch rebuilds the model from the manifest).
FILE_BACKENDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "onnxruntime": (".onnx",),
    "tensorrt": (".engine", ".plan"),
    "torch": (".onnx", ".engine", ".plan"),
    "openvino": (".onnx",),
})


def artifact_suffixes(backend: str | None, *, gpu: bool = True) -> tuple[str, ...]:
    """The artifact files ``backend`` (or ``backend:precision``) runs; when none is given, every kind its
    default backend runs here: engines only with a ``gpu`` (TensorRT and TensorRT-RTX engines need one)."""
    from ..artifact.store import ALL_SUFFIXES

    if backend is None and not gpu:
        return tuple(s for s in ALL_SUFFIXES if SUFFIX_BACKENDS[s] != "tensorrt")
    return FILE_BACKENDS.get((backend or "").partition(":")[0], ALL_SUFFIXES)


def cuda_gpu_visible() -> bool:
    """Whether torch sees a CUDA GPU (what the tensorrt runner needs to deserialize an engine)."""
    import torch

    return bool(torch.cuda.is_available())


def open_runnable(given: Path | None, backend: str | None = None, *, context: Any = None, verify: bool = True,
                  on_picked: Callable[[Path, str], None] | None = None) -> Artifact:
    """``given``, or the default artifact among the files ``backend`` runs (``artifact_suffixes``), opened.

    Without a backend, an engine's default backend is TensorRT, which needs a GPU: on a machine without one
    the default is the newest artifact that runs here, so an RTX engine built ahead of time on this CPU does
    not displace the export (when only engines are left, the refusal says why they were passed over)."""
    from ..artifact.store import ALL_SUFFIXES, open_artifact

    suffixes = artifact_suffixes(backend)
    if given is not None or backend is not None or cuda_gpu_visible():
        return open_artifact(given, suffixes, context=context, verify=verify, on_picked=on_picked)
    try:
        return open_artifact(None, artifact_suffixes(None, gpu=False), context=context, verify=verify,
                             on_picked=on_picked)
    except BadInput as exc:
        engines = tuple(s for s in ALL_SUFFIXES if SUFFIX_BACKENDS[s] == "tensorrt")
        try:
            open_artifact(None, engines, context=context, verify=False)
        except BadInput:  # nothing at all: the rule's own refusal, the same on every machine
            return open_artifact(None, suffixes, context=context, verify=verify, on_picked=on_picked)
        raise BadInput(f"{exc.message}; the engines there need a CUDA GPU and torch sees none here") from None


def runner_class(backend: str) -> type[Runner]:
    """The Runner subclass for ``backend`` (imports its module, not the backend package)."""
    if backend not in BACKENDS:
        raise BadInput(f"unknown backend '{backend}'; known: {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[backend].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise BadInput(f"backend '{backend}' is not part of this dvit-deploy build") from None
        raise
    return getattr(module, class_name)


def _cuda_device() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable, asked through torch (always installed)."""
    try:
        import torch

        if torch.cuda.is_available():
            return True, torch.cuda.get_device_name(0)
    except Exception:  # a broken CUDA install means no usable GPU, not a crash
        pass
    return False, "no CUDA GPU"


def available_backends() -> list[BackendStatus]:
    """Every backend with what is installed (version, devices/providers) or what to install."""
    statuses = []

    try:
        import torch

        cuda, gpu = _cuda_device()
        statuses.append(BackendStatus("torch", True, f"torch {torch.__version__}; "
                                      + (f"CUDA {torch.version.cuda} on {gpu}" if cuda else "CPU only (no CUDA GPU)")))
    except ImportError:
        statuses.append(BackendStatus("torch", False, 'torch is not installed: pip install torch'))

    try:
        import onnxruntime as ort

        providers = [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]
        statuses.append(BackendStatus("onnxruntime", True, f"onnxruntime {ort.__version__}; providers "
                                      + ", ".join(providers)))
    except ImportError:
        statuses.append(BackendStatus("onnxruntime", False,
                                      'onnxruntime is not installed: pip install onnxruntime '
                                      '(or "dvit-deploy[gpu]" for the CUDA build)'))

    if not available("tensorrt"):
        statuses.append(BackendStatus("tensorrt", False,
                                      'tensorrt is not installed: pip install "dvit-deploy[tensorrt]" (needs an NVIDIA GPU)'))
    else:
        try:
            import tensorrt

            version = getattr(tensorrt, "__version__", "?")
        except Exception as exc:  # a broken install (missing libnvinfer) imports with an error
            statuses.append(BackendStatus("tensorrt", False, f"tensorrt does not import ({str(exc).splitlines()[0][:120]}); "
                                          'reinstall with pip install "dvit-deploy[tensorrt]"'))
        else:
            cuda, gpu = _cuda_device()
            statuses.append(BackendStatus("tensorrt", cuda, f"tensorrt {version}; "
                                          + (gpu if cuda else "but no CUDA GPU: engines cannot run here")))

    if not available("openvino"):
        statuses.append(BackendStatus("openvino", False,
                                      'openvino is not installed: pip install "dvit-deploy[openvino]"'))
    else:
        try:
            import openvino

            statuses.append(BackendStatus("openvino", True, f"openvino {openvino.get_version().split('-')[0]}; CPU "
                                          "(fp32, bf16, int8 Q/DQ)"))
        except Exception as exc:  # a broken install imports with an error
            statuses.append(BackendStatus("openvino", False, f"openvino does not import ({str(exc).splitlines()[0][:120]})"))
    return statuses


def open_runner(backend: str, artifact: Artifact, *, device: str = "cpu", precision: str | None = "fp32",
                **options: Any) -> Runner:
    """A runner for ``backend`` (not loaded yet). Unknown backend: BadInput; package missing: MissingDependency.

    ``artifact``: an opened ``Artifact`` (``artifact.store.open_artifact``; a model held only in memory:
    ``Artifact.of(path, manifest)``, which torch rebuilds from its model record).
    ``precision=None`` means the artifact's own precision (``Artifact.precision``).
    """
    if not isinstance(artifact, Artifact):
        raise TypeError("open_runner takes an opened Artifact (artifact.store.open_artifact, or "
                        f"Artifact.of(path, manifest)), not {type(artifact).__name__}")
    cls = runner_class(backend)
    package, extra, purpose = _package_for(backend, artifact)
    if not available(package):
        raise MissingDependency(package, extra, purpose)
    device_index(device)  # BadInput for anything but cpu, cuda, cuda:N
    if precision is None:
        precision = artifact.precision
    return cls(artifact, device=device, precision=precision, **options)


def _package_for(backend: str, artifact: Artifact) -> tuple[str, str, str]:
    """(package, extra, purpose) the backend needs for this artifact: a TensorRT-RTX engine runs through
    ``tensorrt_rtx`` (the [rtx] extra), never TensorRT itself (so its missing GPU is reported by the runner)."""
    package, extra = BACKEND_PACKAGES[backend]
    engine = artifact.engine
    if backend == "tensorrt" and engine is not None and engine.is_rtx:
        from ..engines.targets import build_flavour

        flavour = build_flavour(engine.flavour)
        return flavour.module, flavour.extra, "the tensorrt backend with TensorRT-RTX engines"
    return package, extra, f"the {backend} backend"


def default_backend(artifact: Path) -> str:
    try:
        return SUFFIX_BACKENDS[Path(artifact).suffix]
    except KeyError:
        raise BadInput(f"cannot tell which backend runs {Path(artifact).name}: expected "
                       f"{', '.join(SUFFIX_BACKENDS)}") from None


def runner_for_artifact(artifact: Artifact | Path, backend: str | None = None, **options: Any) -> Runner:
    """A runner for an artifact with its manifest; the backend defaults from the file suffix.

    ``artifact``: the ``Artifact`` the job opened (not read again), or a path (opened here, checked).
    ``backend="torch"`` rebuilds the PyTorch model the manifest records (the reference).
    """
    artifact = as_artifact(artifact)
    backend = backend or default_backend(artifact.path)
    suffixes = FILE_BACKENDS.get(backend)
    if suffixes is not None and artifact.path.suffix not in suffixes:
        raise BadInput(f"the {backend} backend cannot run {artifact.name} (expects {', '.join(suffixes)})")
    return open_runner(backend, artifact, **options)


__all__ = (
    "artifact_suffixes",
    "BACKENDS",
    "BackendStatus",
    "RunOutput",
    "Runner",
    "TensorInfo",
    "available_backends",
    "default_backend",
    "open_runner",
    "runner_class",
    "runner_for_artifact",
)
