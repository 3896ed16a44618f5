"""The TensorRT backend: deserialize an engine built by `dvit build` and run it on torch CUDA buffers.

Before deserializing, the engine manifest is checked against the installed TensorRT and the GPU
(``engines.targets.compatibility_problem``, the TensorRT target table's rule): an engine built elsewhere is refused with one line
instead of TensorRT's own deserialization error. Execution uses the documented TensorRT 10/11
API: ``set_input_shape`` (images), ``set_tensor_address`` (device buffers; host memory for inputs
the engine places on the host -- ``ICudaEngine.get_tensor_location(name)`` says which, e.g. the
``keep_counts`` shape-tensor input), ``execute_async_v3(stream)``. With ``cuda_graph=True`` one
inference is captured into a CUDA graph (for the current input shape) and replayed.

TensorRT-RTX engines (``dvit build --target rtx``, manifest ``tensorrt.flavour == "rtx"``) load
through ``tensorrt_rtx`` with the same calls: the engine JIT-compiles for this GPU on its first
run, and the result is kept in a runtime cache file beside the engine (``<engine>.runtime-cache``:
``IRuntimeConfig.create_runtime_cache``, ``IRuntimeCache.deserialize``/``serialize``) so later
runs skip that step. Deserializing needs a CUDA driver and a GPU of a compute capability the
engine was built for; without one the runner refuses in one line before TensorRT is asked.
"""

from __future__ import annotations

from types import MappingProxyType

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..artifact.manifest import EngineManifest
from ..artifact.names import LOGITS_NAME, TOKEN_OUTPUT_PREFIX, keep_counts_for, kept_patch_ids
from ..artifact.store import Artifact
from ..engines.ladder import default_rung, rung_for
from ..engines.targets import DeviceInfo, build_flavour, compatibility_problem, rtx_compatibility_problem
from ..helpers.errors import BadInput, DvitError
from ..helpers.lazy import require
from ..helpers.fileio import write_bytes_atomic
from .base import Runner, RunOutput, TensorInfo, check_cuda_index

TORCH_DTYPES = MappingProxyType({"float": "float32", "float32": "float32", "half": "float16", "float16": "float16",
                "bf16": "bfloat16", "bfloat16": "bfloat16", "int32": "int32", "int64": "int64", "int8": "int8",
                "bool": "bool", "uint8": "uint8"})


def torch_device(torch: Any, name: str) -> Any:
    """The torch device the runner's buffers live on (one place, so tests can keep them on the CPU)."""
    return torch.device(name)


def torch_dtype_name(trt_dtype: Any) -> str:
    """'DataType.FLOAT' -> 'float32' (names shared by torch and numpy)."""
    key = str(trt_dtype).split(".")[-1].lower()
    if key not in TORCH_DTYPES:
        raise DvitError(f"engine uses TensorRT dtype {trt_dtype}, which this runner does not bind")
    return TORCH_DTYPES[key]


def keep_counts_feed(engine: EngineManifest, keep_ratio: float | None) -> np.ndarray | None:
    """The ``keep_counts`` values for a --dynamic-keep engine (export ρ unless ``keep_ratio``)."""
    model = engine.model
    keep_input = model.keep_input
    if not model.dynamic_keep or not keep_input:
        if keep_ratio is not None:
            raise BadInput("--keep-ratio at run time needs an engine built from a --dynamic-keep export")
        return None
    if engine.ladder:  # one optimization profile per ρ: only a rung's counts can run
        rung = default_rung(engine) if keep_ratio is None else rung_for(engine, keep_ratio=keep_ratio)
        return np.asarray(rung.counts, dtype=np.int32)
    stages = len(keep_input["shape"]) and int(keep_input["shape"][0])
    if keep_ratio is None:
        counts = np.asarray(model.keep_counts, dtype=np.int32)
    else:
        try:
            counts = keep_counts_for(float(keep_ratio), stages, model.num_patches, model.keep_schedule)
        except ValueError as exc:  # an out-of-range ρ is a bad input (as in export.dynamic_keep)
            raise BadInput(str(exc)) from None
    check_keep_range(engine, counts)
    return counts


def check_keep_range(engine: EngineManifest, counts: np.ndarray) -> None:
    """Refuse kept counts outside the values the engine's ``keep_counts`` profile was built for
    (a ladder engine: counts that are not one rung's, naming the rungs)."""
    if engine.ladder:
        rung_for(engine, counts=counts.tolist())
        return
    profile = engine.profile((engine.model.keep_input or {}).get("name"))
    if profile is None or not profile.min or not profile.max:
        return
    low, high = np.asarray(profile.min), np.asarray(profile.max)
    if np.any(counts < low) or np.any(counts > high):
        raise BadInput(f"keep counts {counts.tolist()} are outside the engine's range "
                       f"{low.tolist()}..{high.tolist()} (rebuild with a wider --keep-range)")


class TensorRTRunner(Runner):
    backend = "tensorrt"
    needs = "an .engine artifact"

    def __init__(self, artifact: Artifact, *, device: str = "cuda", precision: str = "fp32",
                 topk_outputs: bool = False, cuda_graph: bool = False, keep_ratio: float | None = None) -> None:
        """``topk_outputs`` changes nothing here: an engine reports the token outputs it was built with."""
        super().__init__(artifact, device="cuda" if device == "cpu" else device, precision=precision,
                         topk_outputs=topk_outputs)
        if artifact.engine is None:
            raise BadInput(f"the tensorrt backend needs an .engine artifact, not {artifact.name}")
        self.engine_manifest: EngineManifest = artifact.engine
        self.cuda_graph = cuda_graph
        self.keep_counts = keep_counts_feed(self.engine_manifest, keep_ratio)
        if device == "cpu":
            self.notes.append("TensorRT runs on the GPU; device 'cpu' was taken as 'cuda'")
        self.engine = None
        self.context = None
        self._graph: tuple[tuple[int, ...], Any, Any, Any] | None = None  # (shape, graph, input, outputs)
        self._profile: int | None = None  # the active optimization profile (a --keep-ladder engine's rung)
        self.flavour = build_flavour(self.engine_manifest.flavour)
        self._runtime_cache = None  # TensorRT-RTX: the JIT results, saved beside the engine on close
        self._token_outputs: list[str] = []  # the engine's kept-token outputs, found by load()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def runtime_cache_path(self) -> Path:
        return self.path.with_suffix(".runtime-cache")

    def check(self) -> Any:
        """Runner.check; returns the TensorRT module (tensorrt or tensorrt_rtx) it imported."""
        built = self.engine_manifest
        rtx = self.flavour.name == "rtx"
        trt = require(self.flavour.module, self.flavour.extra,
                "the tensorrt backend" + (" with TensorRT-RTX engines" if rtx else ""))
        import torch

        if not torch.cuda.is_available():
            if rtx:
                raise DvitError(f"{self.path.name} is a TensorRT-RTX engine: it runs on an RTX GPU (sm "
                                f"{built.rtx_covers}) and this machine has none (torch.cuda.is_available() is False); "
                                "deserializing needs a CUDA driver (TensorRT-RTX fails with cudaError 35 without one)")
            raise DvitError("the tensorrt backend needs an NVIDIA GPU, and torch sees none (torch.cuda.is_available() "
                            "is False)")
        check_cuda_index(self.device, torch.cuda.device_count())
        path = self.path
        if not path.is_file():
            raise BadInput(f"engine {path} not found")
        if built.precision != self.precision:
            raise BadInput(f"{path.name} is a {built.precision} engine; an engine runs the precision "
                           f"it was built with, so {self.precision} needs another dvit build")
        return trt

    def load(self) -> "TensorRTRunner":
        trt = self.check()
        built, path = self.engine_manifest, self.path
        rtx = self.flavour.name == "rtx"
        import platform

        import torch

        self._torch_device = torch_device(torch, self.device)
        props = torch.cuda.get_device_properties(torch.device(self.device))
        if rtx:
            problem = rtx_compatibility_problem(built, rtx_version=trt.__version__,
                                                compute_capability=(props.major, props.minor), gpu_name=props.name)
        else:
            problem = compatibility_problem(built, trt_version=trt.__version__,
                                            device=DeviceInfo(props.name, (props.major, props.minor),
                                                              platform.machine()))
        if problem:
            raise BadInput(problem)
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if built.version_compatible:
            # Version-compatible engines embed the lean runtime (host code); TensorRT refuses
            # to deserialize them unless the runtime allows it.
            runtime.engine_host_code_allowed = True
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BadInput(f"{self.flavour.product} could not deserialize {path.name} (see the TensorRT messages above)")
        if rtx:
            self.context = self.engine.create_execution_context(self._runtime_config())
        else:
            self.context = self.engine.create_execution_context()
        self._trt = trt
        self._stream = torch.cuda.Stream(device=self._torch_device)
        self._names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in self._names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in self._names if n not in self._inputs]
        self._image_input = next(n for n in self._inputs if not self.engine.is_shape_inference_io(n))
        self._host_inputs: dict[str, np.ndarray] = {}
        self._device_inputs: dict[str, Any] = {}
        for name in self._inputs:
            if name == self._image_input:
                continue
            if self.keep_counts is None:
                raise BadInput(f"{path.name} has an input '{name}' its manifest does not describe")
            values = np.ascontiguousarray(self.keep_counts.astype(torch_dtype_name(self.engine.get_tensor_dtype(name))))
            # The engine says where it reads each input (shape tensors: the host). Asked, not guessed.
            if self.engine.get_tensor_location(name) == trt.TensorLocation.HOST:
                self._host_inputs[name] = values
            else:
                self._device_inputs[name] = torch.from_numpy(values).to(self._torch_device)
        if self.engine_manifest.ladder:
            self._check_ladder(self.engine)
            self._select_profile(self.keep_counts)
        self._token_outputs = sorted((n for n in self._outputs if n.startswith(TOKEN_OUTPUT_PREFIX)),
                                     key=lambda n: int(n[len(TOKEN_OUTPUT_PREFIX):]))
        return self

    def _check_ladder(self, engine: Any) -> None:
        rungs = self.engine_manifest.ladder
        if engine.num_optimization_profiles != len(rungs):
            raise BadInput(f"{self.path.name} has {engine.num_optimization_profiles} optimization profile(s) but its "
                           f"manifest lists a ladder of {len(rungs)}: the manifest does not describe this engine")

    def _select_profile(self, counts: np.ndarray) -> None:
        """A ladder engine: make the profile that pins ``counts`` the context's active one
        (``IExecutionContext.set_optimization_profile_async``); input shapes are set again on the next bind."""
        rung = rung_for(self.engine_manifest, counts=counts.tolist())
        if rung.profile == self._profile:
            return
        if not self.context.set_optimization_profile_async(rung.profile, self._stream.cuda_stream):
            raise DvitError(f"TensorRT refused optimization profile {rung.profile} (ρ {rung.keep_ratio:g}) "
                            "(set_optimization_profile_async returned False)")
        self._profile = rung.profile
        self._graph = None  # a captured graph belongs to the previous profile

    def _runtime_config(self):
        """TensorRT-RTX: a runtime config whose runtime cache starts from the file beside the engine."""
        config = self.engine.create_runtime_config()
        cache = config.create_runtime_cache()
        path = self.runtime_cache_path
        if path.is_file() and not cache.deserialize(path.read_bytes()):
            self.notes.append(f"runtime cache {path.name} could not be read (another TensorRT-RTX or GPU?): the "
                              "engine JIT-compiles afresh and the file is replaced")
        if not config.set_runtime_cache(cache):
            self.notes.append("TensorRT-RTX refused the runtime cache: the engine JIT-compiles on every load")
            return config
        self._runtime_cache = cache
        return config

    def close(self) -> None:
        self._graph = None
        if self._runtime_cache is not None:
            try:  # the JIT results; losing them costs the next load time, never this run's outputs
                write_bytes_atomic(self.runtime_cache_path, bytes(self._runtime_cache.serialize()))
            except Exception as exc:
                self.notes.append(f"runtime cache not saved ({type(exc).__name__}: {exc})")
            self._runtime_cache = None
        self.context = None
        self.engine = None

    # -- description -------------------------------------------------------------------------
    def _info(self, name: str) -> TensorInfo:
        shape = tuple(int(d) if d >= 0 else "dynamic" for d in self._require().get_tensor_shape(name))
        return TensorInfo(name, torch_dtype_name(self.engine.get_tensor_dtype(name)), shape)

    def _require(self):
        if self.engine is None:
            raise DvitError("the TensorRT runner is not loaded; use it as a context manager or call load()")
        return self.engine

    @property
    def inputs(self) -> list[TensorInfo]:
        self._require()
        return [self._info(n) for n in self._inputs]

    @property
    def outputs(self) -> list[TensorInfo]:
        self._require()
        return [self._info(n) for n in self._outputs]

    @property
    def has_token_info(self) -> bool:
        return bool(self._token_outputs)

    def _details(self) -> dict[str, Any]:
        # The build sections exactly as `dvit build` wrote them (describe() shows them verbatim; the typed
        # EngineManifest keeps only the fields runners decide on): the one raw read of this runner.
        sections = self.engine_manifest.raw
        return dict({"tensorrt": sections.get("tensorrt"), "gpu": sections.get("gpu"),
                     **({"rtx": sections.get("rtx"), "runtime_cache": str(self.runtime_cache_path)}
                        if self.flavour.name == "rtx" else {}),
                     "cuda_graph": self.cuda_graph,
                     "keep_counts": None if self.keep_counts is None else self.keep_counts.tolist(),
                     **({"keep_ladder": [r.keep_ratio for r in self.engine_manifest.ladder],
                         "optimization_profile": self._profile} if self.engine_manifest.ladder else {}),
                     "notes": self.notes})

    # -- execution ---------------------------------------------------------------------------
    def _bind(self, images):
        """Set shapes and addresses for one device batch; return the torch output buffers."""
        import torch

        context = self.context
        if not context.set_input_shape(self._image_input, tuple(images.shape)):
            profiles = self.engine_manifest.profiles
            raise BadInput(f"batch shape {tuple(images.shape)} is outside the engine's profile "
                           f"({profiles[0].to_json() if profiles else {}})")
        addresses = {self._image_input: images.data_ptr()}
        addresses.update({name: values.ctypes.data for name, values in self._host_inputs.items()})
        addresses.update({name: tensor.data_ptr() for name, tensor in self._device_inputs.items()})
        outputs = {}
        for name in self._outputs:
            shape = tuple(context.get_tensor_shape(name))
            dtype = getattr(torch, torch_dtype_name(self.engine.get_tensor_dtype(name)))
            outputs[name] = torch.empty(shape, dtype=dtype, device=self._torch_device)
            addresses[name] = outputs[name].data_ptr()
        for name, address in addresses.items():
            if not context.set_tensor_address(name, address):
                raise DvitError(f"TensorRT refused the buffer for '{name}' (set_tensor_address returned False)")
        return outputs

    def _stage(self, images: np.ndarray):
        import torch

        if images.ndim != 4:
            raise BadInput(f"expected images (N, C, H, W), got shape {images.shape}")
        dtype = getattr(torch, torch_dtype_name(self.engine.get_tensor_dtype(self._image_input)))
        return torch.from_numpy(np.ascontiguousarray(images)).to(self._torch_device, dtype=dtype)

    def _execute(self, images) -> dict[str, Any]:
        """Enqueue one inference on ``self._stream``; callers synchronize it before reading outputs."""
        import torch

        # The images were staged on the current stream; TensorRT must not read them before that
        # copy is done, and their memory must not be reused while TensorRT's stream reads it.
        self._stream.wait_stream(torch.cuda.current_stream(self._torch_device))
        images.record_stream(self._stream)
        key = tuple(images.shape)
        with torch.cuda.stream(self._stream):
            if self.cuda_graph and self._graph is not None and self._graph[0] == key:
                _, graph, captured_in, captured_out = self._graph
                captured_in.copy_(images)  # the graph reads the buffers it was captured with
                graph.replay()
                return captured_out
            # Only the graph for the current shape is kept: set_input_shape changes the
            # context's shape-dependent state, which a graph captured for another shape relies
            # on, so a shape change drops the old graph and captures anew.
            self._graph = None
            outputs = self._bind(images)
            if not self.context.execute_async_v3(self._stream.cuda_stream):
                raise DvitError("TensorRT execute_async_v3 failed (see the TensorRT messages above)")
            if self.cuda_graph:
                # The plain run above let TensorRT finish shape-dependent setup; now capture one.
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self._stream):
                    self.context.execute_async_v3(self._stream.cuda_stream)
                self._graph = (key, graph, images, outputs)
            return outputs

    def run(self, images: np.ndarray, *, keep_counts: np.ndarray | None = None) -> RunOutput:
        self._require()
        if keep_counts is not None:
            self._set_keep_counts(keep_counts)
        device_images = self._stage(images)
        outputs = self._execute(device_images)
        self._stream.synchronize()
        host = {name: tensor.float().cpu().numpy() if tensor.is_floating_point() else tensor.cpu().numpy()
                for name, tensor in outputs.items()}
        kept = None
        if self._token_outputs:
            kept = kept_patch_ids([host[n].astype(np.int64) for n in self._token_outputs], self.num_patches,
                                  compose=self.compose_ids)
        logits_name = LOGITS_NAME if LOGITS_NAME in host else self._outputs[0]
        extra = {k: v for k, v in host.items() if k != logits_name and k not in self._token_outputs}
        return RunOutput(logits=host[logits_name].astype(np.float32), kept=kept, extra=extra)

    def _set_keep_counts(self, keep_counts: np.ndarray) -> None:
        """New values for the ``keep_counts`` shape tensor, written into the buffer TensorRT reads."""
        counts = self._keep_counts_value(keep_counts, self.keep_counts)
        if np.array_equal(counts, self.keep_counts):
            return
        check_keep_range(self.engine_manifest, counts)
        if self.engine_manifest.ladder:
            self._select_profile(counts)
        self.keep_counts = counts
        for values in self._host_inputs.values():
            np.copyto(values, counts.astype(values.dtype))
        for tensor in self._device_inputs.values():
            import torch

            tensor.copy_(torch.from_numpy(counts.astype(str(tensor.dtype).replace("torch.", ""))))
        self._graph = None  # a captured graph was recorded with the previous output shapes

    def timed_call(self, images: np.ndarray, *, include_transfer: bool = False) -> Callable[[], None]:
        self._require()
        if include_transfer:
            return lambda: self.run(images)
        device_images = self._stage(images)

        def call() -> None:
            self._execute(device_images)
            self._stream.synchronize()

        return call
