"""The ONNX Runtime backend: CPU, CUDA and TensorRT execution providers, whichever the build has.

ONNX Runtime quietly runs nodes on the CPU provider when a requested provider cannot start
(no driver, missing libraries). This runner compares what it asked for with
``session.get_providers()`` and records every fallback in ``notes`` and ``describe()`` so
commands can say so loudly.
"""

from __future__ import annotations

from types import MappingProxyType

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..artifact.names import kept_patch_ids
from ..artifact.store import Artifact
from ..helpers.errors import BadInput, DvitError, MissingDependency
from ..helpers.ort_session import GRAPH_OPTIMIZATION_LEVELS, SessionSettings, create_session, optimized_graph_folder
from .base import Fallback, Runner, RunOutput, TensorInfo, check_cuda_index, device_index
from .token_graph import declared_token_outputs, graph_with_kept_outputs

PROVIDER_ALIASES = MappingProxyType({
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
})
# Op types in ONNX Runtime's optimized graph that say which int8 kernels a Q/DQ graph became.
INT8_OP_TYPES = ("QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeMatMul", "QGemm",
                 "QLinearConv", "ConvInteger", "DynamicQuantizeLinear", "QAttention")
ALLOW_SPINNING = "session.intra_op.allow_spinning"  # ORT session config key: idle intra-op threads spin (1) or sleep (0)
FLOAT_GEMM_OP_TYPES = ("MatMul", "FusedMatMul", "Gemm", "Conv", "FusedConv")
ORT_DTYPES = MappingProxyType({"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(double)": np.float64})


def resolve_providers(requested: str | list[str] | None, device: str) -> list[str]:
    """Full provider names, in priority order, for a device or an explicit list ("cuda,cpu")."""
    if requested is None:
        requested = ["cpu"] if device == "cpu" else ["cuda", "cpu"]
    elif isinstance(requested, str):
        requested = [p.strip() for p in requested.split(",") if p.strip()]
    names = [PROVIDER_ALIASES.get(p.lower(), p) for p in requested]
    if not names:
        raise BadInput("no ONNX Runtime provider given")
    try:
        import onnxruntime as ort
    except ImportError:  # load() reports the missing package
        return names
    # A typo must read as a typo, not as a missing onnxruntime-gpu build.
    known = ort.get_all_providers()
    for requested_name, name in zip(requested, names):
        if name not in known:
            raise BadInput(f"unknown ONNX Runtime provider '{requested_name}'; use {', '.join(PROVIDER_ALIASES)} "
                           "or a full name such as CUDAExecutionProvider")
    return names


def ort_load_cause(exc: BaseException, limit: int = 400) -> str:
    """The cause in an ONNX Runtime load error, which comes last, after a long fixed preamble.

    '[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model from m.onnx failed:This is an invalid
    model. In Node, (...) , Error No Op registered for FooBar ...' -> 'No Op registered for FooBar
    ... (INVALID_GRAPH; in node (...))'.
    """
    text = " ".join(str(exc).split())
    code = re.search(r"\[ONNXRuntimeError\] : \d+ : (\w+) :", text)
    after = text.split(" failed:", 1)[1].strip() if " failed:" in text else text
    where = ""
    if ", Error " in after:
        context, after = after.split(", Error ", 1)
        node = re.search(r"In Node, (\(.*?\))", context)
        where = f"; in node {node.group(1)}" if node else ""
    cause = after.strip() or type(exc).__name__
    if len(cause) > limit:
        cause = cause[:limit - 1] + "…"
    label = f" ({code.group(1)}{where})" if code else (f" ({where[2:]})" if where else "")
    return cause + label


def executed_op_types(optimized_model: str | Path) -> dict[str, int]:
    """Counts of the GEMM-like op types (int8 and float) in an optimized graph ORT wrote.

    ``SessionOptions.optimized_model_filepath`` saves the graph after ORT's fusions, so this says
    what a Q/DQ graph runs as (QLinearMatMul, MatMulIntegerToFloat, ...) rather than what it declares.
    """
    import onnx

    counts: dict[str, int] = {}
    model = onnx.load(str(optimized_model), load_external_data=False)
    for node in model.graph.node:
        if node.op_type in INT8_OP_TYPES or node.op_type in FLOAT_GEMM_OP_TYPES:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _read_kernels(optimized_model: Path) -> dict[str, int] | None:
    try:
        return executed_op_types(optimized_model)
    except Exception:  # noqa: BLE001 - the kernels report is informative only
        return None


def describe_kernels(op_types: dict[str, int]) -> str:
    """'60 MatMulIntegerToFloat, 12 QLinearMatMul int8; 12 MatMul, 1 Gemm float'."""
    int8 = ", ".join(f"{n} {op}" for op, n in op_types.items() if op in INT8_OP_TYPES)
    flt = ", ".join(f"{n} {op}" for op, n in op_types.items() if op in FLOAT_GEMM_OP_TYPES)
    return "; ".join(part for part in (f"{int8} int8" if int8 else "", f"{flt} float" if flt else "") if part) or "no GEMMs"


@dataclass(frozen=True)
class OrtOptions:
    """How the ONNX Runtime runner opens its session (each also a keyword of ``OnnxRuntimeRunner``).

    ``providers``: names or aliases in priority order ("cuda,cpu"; default from the device).
    ``enable_profiling``: ORT's profiler, writing under this prefix (``profile_file`` after close).
    ``optimized_model_path``: where ORT writes the graph it really runs, for attributing profiles.
    ``cuda_graph``: CUDA graphs in the CUDA / TensorRT providers.
    ``allow_spinning``: whether idle intra-op threads spin-wait for work (ORT's
    ``session.intra_op.allow_spinning``); None: ORT's default (on). ``dvit serve`` turns it off: in a
    server the spinning threads take the cores the request path (IPC, Triton, clients) needs."""

    providers: str | list[str] | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    graph_optimization: str = "all"
    execution_mode: str = "sequential"
    enable_profiling: str | Path | None = None
    cuda_graph: bool = False
    optimized_model_path: str | Path | None = None
    allow_spinning: bool | None = None

    def checked(self) -> "OrtOptions":
        if self.graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise BadInput(f"graph optimization must be one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}, "
                           f"got '{self.graph_optimization}'")
        if self.execution_mode not in ("sequential", "parallel"):
            raise BadInput(f"execution mode must be sequential or parallel, got '{self.execution_mode}'")
        return self


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"
    needs = "an .onnx artifact"

    def __init__(self, artifact: Artifact, *, device: str = "cpu", precision: str = "fp32",
                 topk_outputs: bool = False, options: OrtOptions | None = None, **settings: Any) -> None:
        """``options``, or its fields as keywords (``intra_op_threads=2``): how the session is opened."""
        super().__init__(artifact, device=device, precision=precision, topk_outputs=topk_outputs)
        self.options = dataclasses.replace(options or OrtOptions(), **settings).checked()
        self.requested_providers = resolve_providers(self.options.providers, device)
        self.intra_op_threads = self.options.intra_op_threads
        self.graph_optimization = self.options.graph_optimization
        self.execution_mode = self.options.execution_mode
        self.cuda_graph = self.options.cuda_graph
        self.enable_profiling = None if self.options.enable_profiling is None else Path(self.options.enable_profiling)
        self.optimized_model_path = (None if self.options.optimized_model_path is None
                                     else Path(self.options.optimized_model_path))
        self.profile_file: Path | None = None
        self.session = None
        self._stage_outputs: list[str] = []
        self.session_config: dict[str, str] = {}
        self.executed_ops: dict[str, int] | None = None
        self.gelu_fused = 0  # exact-erf GELU subgraphs run as one com.microsoft Gelu (CPU provider only)
        self.attention_fused = 0  # self-attention blocks run as one com.microsoft Attention (CPU provider only)

    # -- lifecycle ---------------------------------------------------------------------------
    def check(self) -> None:
        if not self.path.is_file():
            raise BadInput(f"ONNX file {self.path} not found")
        graph_precision = self.artifact.precision
        if self.precision != graph_precision:
            raise BadInput(f"{self.path.name} is a {graph_precision} graph; ONNX Runtime runs the graph's own "
                           f"precision, so {self.precision} needs a {self.precision} export")

    def load(self) -> "OnnxRuntimeRunner":
        from ..helpers.lazy import require

        ort = require("onnxruntime", "gpu", "the onnxruntime backend")
        self.check()
        providers = self._providers(ort)
        provider_missing = bool(self.notes)
        int8_cpu = self.artifact.precision == "int8" and providers[0] == "CPUExecutionProvider"
        if int8_cpu:
            self.session_config = self._int8_cpu_settings()
        # read back which int8 kernels the Q/DQ graph became, unless the caller keeps that graph
        with optimized_graph_folder(int8_cpu and self.optimized_model_path is None) as kernels_dir:
            written = kernels_dir / "optimized.onnx" if kernels_dir is not None else self.optimized_model_path
            fuse = providers[0] == "CPUExecutionProvider" and self.graph_optimization != "disable"
            source, self._stage_outputs = self._graph_source(self.path, fuse_gelu=fuse)
            try:
                self.session = create_session(source, self._settings(providers, written), what=self.path.name,
                                              error=BadInput, cause=ort_load_cause)
            finally:
                if self.artifact.precision == "int8" and written is not None and written.is_file():
                    self.executed_ops = _read_kernels(written)
        if self.executed_ops is not None:
            from ..helpers.cpu import cpu_info

            self.notes.append(f"ran on this {cpu_info().cpu_class} CPU as {describe_kernels(self.executed_ops)}"
                              + (" (exact u8u8 mode)" if self.session_config else ""))
        actual = self.session.get_providers()
        if actual[0] != providers[0] or provider_missing:
            asked = ", ".join(self.requested_providers)
            self.fallback = Fallback(asked, actual[0], f"asked for {asked}, running on {actual[0]}")
        self._input = self.session.get_inputs()[0]
        self._extra_feed = self._keep_feed()
        self._input_dtype = ORT_DTYPES.get(self._input.type, np.float32)
        self._output_names = [o.name for o in self.session.get_outputs()]
        return self

    def _providers(self, ort: Any) -> list[str]:
        """The requested providers this build has (a missing one noted); MissingDependency when a GPU
        device is left without a GPU provider."""
        self._device_id = device_index(self.device) or 0
        if self.device != "cpu":
            import torch

            count = torch.cuda.device_count()
            if count:  # a CPU-only torch counts no GPUs, yet onnxruntime-gpu may still see them
                check_cuda_index(self.device, count)
        available = ort.get_available_providers()
        providers = []
        for name in self.requested_providers:
            if name in available or name == "CPUExecutionProvider":
                providers.append(name)
            else:
                self.notes.append(f"{name} is not in this onnxruntime build ({ort.__version__}: "
                                  f"{', '.join(p for p in available if p != 'AzureExecutionProvider')})")
        if not providers or (self.device != "cpu" and not any(p != "CPUExecutionProvider" for p in providers)):
            raise MissingDependency("onnxruntime-gpu", "gpu",
                                    f"ONNX Runtime on {self.device} ({', '.join(self.requested_providers)})")
        return providers

    def _settings(self, providers: list[str], optimized: Path | None) -> SessionSettings:
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise BadInput(f"intra-op threads must be ≥ 1, got {self.intra_op_threads}")
        provider_args: list[Any] = []
        for name in providers:
            if name in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                opts = {"device_id": str(self._device_id)}  # without it both run on GPU 0
                if self.cuda_graph:
                    opts["enable_cuda_graph" if name == "CUDAExecutionProvider" else "trt_cuda_graph_enable"] = "1"
                provider_args.append((name, opts))
            else:
                provider_args.append(name)
        config = dict(self.session_config)
        if self.options.allow_spinning is not None:
            config[ALLOW_SPINNING] = "1" if self.options.allow_spinning else "0"
        return SessionSettings(
            providers=tuple(provider_args), config=config,
            graph_optimization=self.graph_optimization, parallel=self.execution_mode == "parallel",
            intra_op_threads=self.intra_op_threads, inter_op_threads=self.options.inter_op_threads,
            profile_prefix=None if self.enable_profiling is None else str(self.enable_profiling),
            optimized_model_path=None if optimized is None else str(optimized))

    def _int8_cpu_settings(self) -> dict[str, str]:
        """Full-range int8 weights on a CPU without VNNI: ORT's exact u8u8 kernels, else they saturate."""
        from ..helpers.cpu import cpu_info, ort_int8_session_config

        record = self.artifact.quantization
        config = ort_int8_session_config(bool(record and record.reduce_range))
        if config:
            self.notes.append(
                f"this {cpu_info().cpu_class} CPU has no VNNI/AMX: full-range int8 weights would saturate ONNX "
                "Runtime's u8s8 kernels, so they run on its exact, slower u8u8 kernels (session.x64quantprecision=1); "
                "'dvit quantize --for cpu' here writes 7-bit weights that run the fast kernels correctly")
        return config

    def _keep_feed(self) -> dict[str, np.ndarray]:
        """Graphs exported with --dynamic-keep take the per-stage kept counts as a second input."""
        names = [i.name for i in self.session.get_inputs()[1:]]
        if not names:
            return {}
        model = self.artifact.model
        keep_input, counts = model.keep_input or {}, list(model.keep_counts)
        if keep_input.get("name") not in names or not counts:
            raise BadInput(f"{self.path.name} has inputs {names} besides the images that its "
                           "manifest does not describe")
        return {keep_input["name"]: np.asarray(counts, dtype=keep_input.get("dtype", "int32"))}

    def _graph_source(self, artifact: Path, *, fuse_gelu: bool = False) -> tuple[str | bytes, list[str]]:
        """The path (or in-memory graph: kept-index outputs added, GELUs fused) to load, and the per-stage
        index outputs.

        ``fuse_gelu`` (CPU provider): the exporter's five-node exact-erf GELU becomes one com.microsoft Gelu and
        its self-attention blocks one com.microsoft Attention, which ONNX Runtime's own fusions do not do for
        these node orders (``runtime.ort_fusions.fuse_for_cpu``)."""
        if self.topk_outputs:
            model, names = graph_with_kept_outputs(self.artifact, artifact, ort_load_cause)
        else:
            model, names = None, declared_token_outputs(self.artifact)
        if fuse_gelu:
            from .ort_fusions import fuse_for_cpu

            rewritten = model is not None
            if model is None:
                import onnx

                try:
                    model = onnx.load(str(artifact))
                except Exception as exc:  # noqa: BLE001 - onnx raises several types for unreadable files
                    raise BadInput(f"{artifact.name} is not a readable ONNX file: {ort_load_cause(exc)}") from None
            if model.ByteSize() < 2 ** 31 - 1:  # a bigger graph cannot be handed over in memory
                fused = fuse_for_cpu(model)
                self.gelu_fused, self.attention_fused = fused["gelu"], fused["attention"]
            if not rewritten and not (self.gelu_fused or self.attention_fused):
                model = None
        return (str(artifact) if model is None else model.SerializeToString()), names

    def close(self) -> None:
        if self.session is not None and self.enable_profiling is not None:
            self.profile_file = Path(self.session.end_profiling())
        self.session = None

    # -- description -------------------------------------------------------------------------
    @staticmethod
    def _info(value) -> TensorInfo:
        dtype = ORT_DTYPES.get(value.type)
        return TensorInfo(value.name, np.dtype(dtype).name if dtype else value.type,
                          tuple(d if d is not None else "?" for d in value.shape))

    @property
    def inputs(self) -> list[TensorInfo]:
        return [self._info(v) for v in self._require().get_inputs()]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [self._info(v) for v in self._require().get_outputs()]

    @property
    def provider(self) -> str | None:
        return None if self.session is None else self.session.get_providers()[0]

    @property
    def has_token_info(self) -> bool:
        return bool(self._stage_outputs)

    def _executes(self) -> str:
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__} {self.provider}"

    def _threads(self) -> int | None:
        return self.intra_op_threads

    def _details(self) -> dict[str, Any]:
        session = self._require()
        info: dict[str, Any] = dict(
            executes=self._executes(),
            provider=self.provider,
            providers=session.get_providers(),
            requested_providers=self.requested_providers,
            fallback=None if self.fallback is None else self.fallback.reason,
            graph_optimization=self.graph_optimization,
            execution_mode=self.execution_mode,
            intra_op_threads=self.intra_op_threads,
            token_outputs=self._stage_outputs,
            session_config=self.session_config,
            gelu_fused=self.gelu_fused,
        )
        if self.precision == "int8":
            from ..helpers.cpu import cpu_info

            info.update(cpu_class=cpu_info().cpu_class, cpu=cpu_info().to_dict(), executed_op_types=self.executed_ops,
                        kernels=None if self.executed_ops is None else describe_kernels(self.executed_ops))
        return info

    # -- execution ---------------------------------------------------------------------------
    def _require(self):
        if self.session is None:
            raise DvitError("runner used before load(): use 'with open_runner(...) as runner'")
        return self.session

    def run(self, images: np.ndarray, *, keep_counts: np.ndarray | None = None) -> RunOutput:
        session = self._require()
        feed = {self._input.name: np.ascontiguousarray(images, dtype=self._input_dtype), **self._extra_feed}
        if keep_counts is not None:
            name = next(iter(self._extra_feed), None)
            feed[name] = self._keep_counts_value(keep_counts, self._extra_feed.get(name))
        values = dict(zip(self._output_names, session.run(self._output_names, feed)))
        logits = values.get("logits", values[self._output_names[0]]).astype(np.float32)
        kept = None
        if self._stage_outputs:
            kept = kept_patch_ids([values[n].astype(np.int64) for n in self._stage_outputs], self.num_patches,
                                  compose=self.compose_ids)
        extra = {k: v for k, v in values.items() if k != "logits" and k not in self._stage_outputs}
        return RunOutput(logits=logits, kept=kept, extra=extra)

    def timed_call(self, images: np.ndarray, *, include_transfer: bool = False) -> Callable[[], None]:
        """One synchronous ``Run`` per call, all graph outputs fetched.

        On CUDA without transfers, input and outputs are bound to device memory once
        (IOBinding), so the call measures the graph alone; CUDA graphs need that binding too.
        """
        session = self._require()
        batch = np.ascontiguousarray(images, dtype=self._input_dtype)
        on_gpu = self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        if on_gpu and (not include_transfer or self.cuda_graph):
            import onnxruntime as ort

            staged = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self._device_id)
            binding = session.io_binding()
            binding.bind_ortvalue_input(self._input.name, staged)
            for name, value in self._extra_feed.items():
                binding.bind_cpu_input(name, value)
            for name in self._output_names:
                binding.bind_output(name, "cuda", self._device_id)
            # Run once, then keep the outputs' device buffers: fixed addresses (CUDA graphs need
            # them) and no allocation inside the timed call.
            session.run_with_iobinding(binding)
            for name, value in zip(self._output_names, binding.get_outputs()):
                binding.bind_ortvalue_output(name, value)

            def call_bound() -> None:
                if include_transfer:
                    staged.update_inplace(batch)
                session.run_with_iobinding(binding)
                if include_transfer:
                    binding.copy_outputs_to_cpu()

            return call_bound

        feed = {self._input.name: batch, **self._extra_feed}

        def call() -> None:
            session.run(self._output_names, feed)

        return call
