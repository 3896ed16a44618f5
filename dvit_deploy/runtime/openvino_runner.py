"""The OpenVINO backend (CPU): runs the same ``.onnx`` files in f32, bf16, or int8 (Q/DQ exports).

Precisions:

* ``fp32`` — an fp32 export with ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO's default on AMX CPUs
  is bf16, so the hint is always set explicitly);
* ``bf16`` — an fp32 export with ``INFERENCE_PRECISION_HINT=bf16``: OpenVINO converts at load
  time. CPUs without bf16 support (no AVX512_BF16 / AMX-BF16) fall back to f32; ``describe()``
  says what was used. ``predictor_f32=True`` marks each stage's predictor subgraph (found
  structurally, like ``export.graph.pruning_nodes``) with the ``disable_fp16_compression`` runtime
  info, which OpenVINO's CPU plugin honours for bf16 too, so token scores are computed in f32;
* ``int8`` — an int8 Q/DQ export from ``dvit quantize``: OpenVINO's low-precision transformations
  run the quantized MatMuls with int8 kernels (VNNI / AMX-INT8 where the CPU has them); the rest
  runs at ``inference_precision`` (default f32). int8 Convs without a bias whose output is read twice
  get a negligible one in memory first (``openvino_graph``: OpenVINO 2026.4 scales them twice otherwise).

What actually ran is read back from the compiled model: its inference precision, and from the
runtime (execution) graph the kernel (``primitiveType``) and precision of every node, which says
whether AMX or VNNI kernels were chosen. Kept tokens come from the export's token outputs, or from
the in-memory rewrite ONNX Runtime uses too (``runtime.token_graph``): each stage's kept indices,
which for ConvNeXt / Swin are the first K of a TopK over all positions, not the TopK's output.
"""

from __future__ import annotations

import collections
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

import numpy as np

from ..artifact.store import Artifact
from ..helpers.errors import BadInput, DvitError
from ..models import kept_patch_ids
from .base import Fallback, Runner, RunOutput, TensorInfo
from .token_graph import declared_token_outputs, graph_with_kept_outputs

OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")
HINTS = MappingProxyType({"fp32": "f32", "bf16": "bf16"})
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
             "amx_fp16")
PERFORMANCE_MODES = ("latency", "throughput")
STATIC_KEPT = 2  # fixed-batch compiles kept at once (a full batch and a last partial one)
STATIC_COMPILES = 4  # fixed-batch compiles per runner; past them sizes vary too much: the dynamic compile only


def cpu_flags() -> dict[str, bool]:
    """The ISA extensions that decide reduced-precision speed, from /proc/cpuinfo (Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    present = set(line.partition(":")[2].split())
    return {flag: flag in present for flag in CPU_FLAGS}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def ov_error_cause(exc: BaseException, limit: int = 300) -> str:
    """The cause in an OpenVINO error, which comes last, after 'Exception from <file>:<line>:' frames."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    cause = (causes or lines or [type(exc).__name__])[-1]
    return cause if len(cause) <= limit else cause[:limit - 1] + "…"


class OpenVINORunner(Runner):
    backend = "openvino"
    needs = "an .onnx artifact"

    def __init__(self, artifact: Artifact, *, device: str = "cpu", precision: str = "fp32",
                 intra_op_threads: int | None = None, topk_outputs: bool = False,
                 predictor_f32: bool | None = None, inference_precision: str | None = None,
                 performance_mode: str = "latency", static_batch: bool = True,
                 properties: dict[str, Any] | None = None) -> None:
        """``predictor_f32``: ask OpenVINO to keep the predictor subgraphs in f32 under bf16 (off by default:
        measured, bf16 token flips stay within the near-tie rule — docs/quantization.md).
        ``inference_precision``: for int8 graphs, the precision of the non-quantized part (fp32/bf16).
        ``static_batch``: a dynamic-batch file also gets compiled for the batch size it is run at (see
        ``_request_for``); ``dvit serve`` turns it off (its dynamic batcher runs every size up to the maximum).
        ``properties``: further OpenVINO compile properties, applied last (e.g. ``{"PERF_COUNT": True}``)."""
        super().__init__(artifact, device=device, precision=precision, topk_outputs=topk_outputs)
        if device != "cpu":
            raise BadInput(f"the openvino backend runs on the CPU here, not '{device}'")
        self.intra_op_threads = intra_op_threads
        self.predictor_f32 = predictor_f32
        self.inference_precision = inference_precision
        if performance_mode not in PERFORMANCE_MODES:
            raise BadInput(f"OpenVINO performance mode must be latency or throughput, got '{performance_mode}'")
        self.performance_mode = performance_mode
        self.compiled = None
        self._request = None
        self._stage_ports: list[int] = []
        self._marked_f32 = 0
        self._biased_convs = 0  # int8 Convs given a negligible bias (openvino_graph)
        self._float_concat_convs = 0  # quantized predictor Convs fed their float input (openvino_graph)
        self.static_batch = static_batch
        self.properties = dict(properties or {})
        self._model = None  # the ov.Model compiled (kept to compile it again for a fixed batch)
        self._config: dict[str, Any] = {}
        self._statics: dict[int, tuple[Any, Any]] = {}  # batch -> (compiled, request), least recently used first
        self._static_compiles = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def check(self) -> None:
        self._hint()

    def _hint(self) -> str:
        """The inference-precision hint this artifact runs at, or BadInput for a precision it cannot run."""
        artifact = self.path
        if not artifact.is_file():
            raise BadInput(f"ONNX file {artifact} not found")
        if artifact.suffix != ".onnx":
            raise BadInput(f"the openvino backend runs .onnx files, not {artifact.name}")
        graph_precision = self.artifact.precision
        if self.precision not in OPENVINO_PRECISIONS:
            raise BadInput(f"the openvino backend runs {', '.join(OPENVINO_PRECISIONS)}, not '{self.precision}'")
        if graph_precision == "int8":
            if self.precision != "int8":
                raise BadInput(f"{artifact.name} is an int8 Q/DQ graph: run it as int8")
            hint = HINTS.get(self.inference_precision or "fp32")
            if hint is None:
                raise BadInput(f"inference precision for the float part of an int8 graph must be fp32 or bf16, "
                               f"got '{self.inference_precision}'")
            return hint
        if graph_precision == "fp32":
            if self.precision == "int8":
                raise BadInput(f"{artifact.name} is an fp32 graph; int8 needs a Q/DQ graph: run 'dvit quantize' first")
            return HINTS[self.precision]
        raise BadInput(f"{artifact.name} is a {graph_precision} graph; the openvino backend runs fp32 exports "
                       "(as fp32 or bf16) and int8 Q/DQ exports")

    def load(self) -> "OpenVINORunner":
        from ..helpers.lazy import require

        ov = require("openvino", "openvino", "the openvino backend")
        hint = self._hint()
        artifact = self.path
        graph_precision = self.artifact.precision
        model_record = self.artifact.model

        core = ov.Core()
        rewritten, stage_names = (graph_with_kept_outputs(self.artifact, artifact, ov_error_cause) if self.topk_outputs
                                  else (None, declared_token_outputs(self.artifact)))
        if graph_precision == "int8":
            rewritten = self._int8_workarounds(rewritten)
        try:
            model = core.read_model(str(artifact) if rewritten is None else rewritten.SerializeToString())
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long messages
            raise BadInput(f"OpenVINO cannot read {artifact.name}: {ov_error_cause(exc)}") from None
        port_of = {name: k for k, port in enumerate(model.outputs) for name in port.get_names()}
        self._stage_ports = [port_of[n] for n in stage_names if n in port_of]
        if len(self._stage_ports) != len(stage_names):
            self.notes.append(f"OpenVINO's model lacks kept-token outputs "
                              f"{sorted(set(stage_names) - set(port_of))}: kept tokens not reported")
            self._stage_ports = []

        if self.predictor_f32 and hint == "bf16" and not model_record.dense:
            self._marked_f32 = self._keep_predictors_f32(model, artifact)

        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": self.performance_mode.upper(),
        }
        if self.performance_mode == "latency":
            config["NUM_STREAMS"] = "1"
        if self.intra_op_threads is not None:
            if self.intra_op_threads < 1:
                raise BadInput(f"intra-op threads must be ≥ 1, got {self.intra_op_threads}")
            config["INFERENCE_NUM_THREADS"] = str(self.intra_op_threads)
        config.update(self.properties)
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            if hint != "bf16":
                raise BadInput(f"OpenVINO cannot compile {artifact.name}: {ov_error_cause(exc)}") from None
            # The CPU plugin can advertise BF16 where its kernels then refuse it (e.g. oneDNN capped below
            # the CPU's ISA): run f32 and say so, rather than fail on the CPU's features.
            config["INFERENCE_PRECISION_HINT"] = "f32"
            try:
                self.compiled = core.compile_model(model, "CPU", config)
            except Exception as retry_exc:
                raise BadInput(f"OpenVINO cannot compile {artifact.name}: {ov_error_cause(retry_exc)}") from None
            self.notes.append(f"bf16 kernels could not be compiled on this CPU ({ov_error_cause(exc)}); running f32")
        self._request = self.compiled.create_infer_request()
        self._core = core
        # kept only where a fixed-batch compile can help: a dynamic-batch file, per-batch compiles asked for
        dynamic_batch = not self.compiled.inputs[0].get_partial_shape()[0].is_static
        self._model, self._config = (model if self.static_batch and dynamic_batch else None), config
        self._version = ov.__version__ if hasattr(ov, "__version__") else ov.get_version()
        used = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self._used_hint = used.get_type_name() if hasattr(used, "get_type_name") else str(used)
        if self._used_hint != hint:
            self.fallback = Fallback(hint, self._used_hint,
                                     f"asked for inference precision {hint}, OpenVINO uses {self._used_hint}")
        if graph_precision == "int8":
            self._int8_cpu_note()
        if self._marked_f32 and not self.execution()["gemm_precisions"].get("f32"):
            self.notes.append(f"{self._marked_f32} predictor ops were marked to stay f32, but OpenVINO "
                              f"{self._version.split('-')[0]} runs every MatMul in {self._used_hint} anyway")
        self._input_names = [sorted(i.get_names())[0] if i.get_names() else f"input{k}"
                             for k, i in enumerate(self.compiled.inputs)]
        self._extra_feed = self._keep_feed()
        self._warm_up()
        return self

    def _int8_workarounds(self, rewritten):
        """The in-memory graph OpenVINO reads for an int8 file: int8 Convs without a bias get a negligible
        one (``openvino_graph``: OpenVINO 2026.4 scales them twice otherwise), and a quantized predictor's
        Convs that read a Concat get it in float (computed wrong otherwise). None: the file as is."""
        import onnx

        from .openvino_graph import bias_int8_convs, float_predictor_concat_inputs

        model = rewritten
        if model is None:
            try:
                model = onnx.load(str(self.path))
            except Exception as exc:  # noqa: BLE001 - onnx raises several types for unreadable files
                raise BadInput(f"{self.path.name} is not a readable ONNX file: {ov_error_cause(exc)}") from None
        self._biased_convs = bias_int8_convs(model)
        self._float_concat_convs = float_predictor_concat_inputs(model)
        changed = self._biased_convs or self._float_concat_convs
        return model if changed or rewritten is not None else None

    def _int8_cpu_note(self) -> None:
        """OpenVINO has no exact-int8 switch: say when full-range weights meet a CPU that saturates."""
        from ..helpers.cpu import cpu_info

        record = self.artifact.quantization
        cpu = cpu_info()
        if cpu.int8_saturates and not (record and record.reduce_range):
            self.notes.append(
                f"this {cpu.cpu_class} CPU has no VNNI/AMX and the graph has full-range int8 weights: OpenVINO's int8 "
                "kernels sum pairs of products in saturating int16 here, so results can be wrong; "
                "'dvit quantize --for cpu' here writes 7-bit weights that cannot saturate")

    def _warm_up(self) -> None:
        """One inference, so kernels are chosen and ``describe()`` can report them (OpenVINO picks lazily)."""
        port = self.compiled.inputs[0]
        shape = [d.get_length() if d.is_static else 1 for d in port.get_partial_shape()]
        fixed = self.artifact.model.batch
        if fixed and not port.get_partial_shape()[0].is_static:
            shape[0] = fixed
        self._request.infer(self._feed(np.zeros(shape, np.float32)))

    def _keep_predictors_f32(self, model, artifact: Path) -> int:
        """Mark predictor ops with disable_fp16_compression; returns how many ops were marked."""
        import onnx

        from ..export.graph import pruning_nodes

        onnx_model = onnx.load(str(artifact), load_external_data=False)
        names: set[str] = set()
        for stage in pruning_nodes(onnx_model):
            names |= stage
        outputs = {o for n in onnx_model.graph.node if n.name in names for o in n.output}
        marked = 0
        for op in model.get_ordered_ops():
            tensor_names = set().union(*(o.get_names() for o in op.outputs())) if op.get_output_size() else set()
            if op.get_friendly_name() in names or tensor_names & outputs:
                op.get_rt_info()["disable_fp16_compression_0"] = ""
                marked += 1
        if not marked:
            self.notes.append("no predictor node found in the OpenVINO model: bf16 everywhere")
        return marked

    def _keep_feed(self) -> dict[int, np.ndarray]:
        if len(self._input_names) < 2:
            return {}
        keep_input = self.artifact.model.keep_input or {}
        counts = list(self.artifact.model.keep_counts)
        if keep_input.get("name") not in self._input_names or not counts:
            raise BadInput(f"{self.path.name} has inputs {self._input_names[1:]} besides the images that its "
                           "manifest does not describe")
        return {self._input_names.index(keep_input["name"]):
                np.asarray(counts, dtype=keep_input.get("dtype", "int32"))}

    def close(self) -> None:
        self._request = None
        self.compiled = None
        self._statics = {}
        self._model = None

    # -- a batch compiled for its size -------------------------------------------------------
    def _request_for(self, batch: int) -> tuple[Any, Any]:
        """(compiled model, infer request) to run a batch of ``batch`` images with.

        A dynamic batch costs OpenVINO shape inference and memory planning at every call, more for the split
        models' batch-dependent nodes (ScatterND's zero map, batch offsets): compiled for a fixed batch, the
        same file ran 3–7 % faster dense and 8–12 % faster sparse at batch 1 (benchmarks/README.md, the split
        models' compiled graph). So the runner compiles the model once more for the batch size it is run at,
        keeping the last ``STATIC_KEPT`` sizes (a full batch and a last partial one; a sweep moves on). Past
        ``STATIC_COMPILES`` compiles the sizes vary too much for a compile each: the dynamic compile serves
        every call from then on, and the fixed-batch compiles are let go."""
        if batch in self._statics:
            self._statics[batch] = self._statics.pop(batch)  # most recently used last
            return self._statics[batch]
        if self._model is None:  # a fixed-batch file, per-batch compiles off, or given up
            return self.compiled, self._request
        if self._static_compiles >= STATIC_COMPILES:
            self._statics, self._model = {}, None  # the sizes vary: the dynamic compile from now on
            return self.compiled, self._request
        model = self._model.clone()
        shape = model.inputs[0].get_partial_shape()
        shape[0] = batch
        try:
            model.reshape({model.inputs[0]: shape})
            compiled = self._core.compile_model(model, "CPU", self._config)
        except Exception as exc:  # noqa: BLE001 - the dynamic compile still runs it; say why once
            self.notes.append(f"OpenVINO could not compile for batch {batch} ({ov_error_cause(exc)}): the dynamic "
                              "batch serves every call")
            self._statics, self._model = {}, None
            return self.compiled, self._request
        self._static_compiles += 1
        while len(self._statics) >= STATIC_KEPT:
            self._statics.pop(next(iter(self._statics)))  # the least recently used
        self._statics[batch] = (compiled, compiled.create_infer_request())
        return self._statics[batch]

    # -- description -------------------------------------------------------------------------
    def _require(self):
        if self.compiled is None:
            raise DvitError("runner used before load(): use 'with open_runner(...) as runner'")
        return self.compiled

    @staticmethod
    def _info(port, fallback: str) -> TensorInfo:
        names = sorted(port.get_names())
        shape = tuple(d.get_length() if d.is_static else "?" for d in port.get_partial_shape())
        return TensorInfo(names[0] if names else fallback, port.get_element_type().to_dtype().name, shape)

    @property
    def inputs(self) -> list[TensorInfo]:
        return [self._info(p, f"input{k}") for k, p in enumerate(self._require().inputs)]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [self._info(p, f"output{k}") for k, p in enumerate(self._require().outputs)]

    @property
    def has_token_info(self) -> bool:
        return bool(self._stage_ports)

    def execution(self) -> dict[str, Any]:
        """Kernels and precisions OpenVINO chose, from the runtime graph (what actually executes)."""
        runtime = self._require().get_runtime_model()
        kernels: collections.Counter = collections.Counter()
        gemm_precisions: collections.Counter = collections.Counter()
        for op in runtime.get_ordered_ops():
            info = op.get_rt_info()
            layer = str(info["layerType"].astype(str)) if "layerType" in info else op.get_type_name()
            primitive = str(info["primitiveType"].astype(str)) if "primitiveType" in info else "?"
            precision = str(info["runtimePrecision"].astype(str)) if "runtimePrecision" in info else "?"
            if layer in ("FullyConnected", "MatMul", "Convolution", "ScaledDotProductAttention", "Subgraph"):
                kernels[f"{layer}:{primitive}"] += 1
            if layer in ("FullyConnected", "MatMul", "Convolution"):
                gemm_precisions[precision] += 1
        names = " ".join(kernels).lower()
        int8 = any(p in ("i8", "u8") for p in gemm_precisions)
        flags = cpu_flags()
        amx = "amx" in names
        # OpenVINO names kernels by ISA family ("brgemm_avx512_i8", "brgemm_avx512_amx"): AMX shows, VNNI
        # does not. oneDNN's int8 brgemm on a CPU with AVX512-VNNI / AVX-VNNI runs VNNI instructions.
        vnni = int8 and not amx and bool(flags.get("avx512_vnni") or flags.get("avx_vnni") or "vnni" in names)
        return {
            "gemm_kernels": dict(kernels.most_common()),
            "gemm_precisions": dict(gemm_precisions.most_common()),
            "int8_kernels": int8,
            "amx_used": amx,
            "vnni_used": vnni,
            "isa_basis": "kernel names from the runtime graph (primitiveType); VNNI inferred from int8 kernels "
                         "plus the CPU flag",
        }

    def _executes(self) -> str:
        return (f"openvino {self._version.split('-')[0]} CPU {self._used_hint}"
                + (" (int8 Q/DQ)" if self.precision == "int8" else ""))

    def _threads(self) -> int | None:
        return self.intra_op_threads

    def _details(self) -> dict[str, Any]:
        compiled = self._require()
        info: dict[str, Any] = {}
        capabilities = [str(c) for c in self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
        execution = self.execution()
        flags = cpu_flags()
        from ..helpers.cpu import cpu_info

        info.update(
            cpu_class=cpu_info().cpu_class,
            executes=self._executes(),
            device_name=str(self._core.get_property("CPU", "FULL_DEVICE_NAME")),
            inference_precision=self._used_hint,
            optimization_capabilities=capabilities,
            cpu_flags=flags,
            amx_available=bool(flags.get("amx_bf16") or flags.get("amx_int8")),
            vnni_available=bool(flags.get("avx512_vnni") or flags.get("avx_vnni")),
            predictor_f32_ops=self._marked_f32,
            int8_convs_biased=self._biased_convs,
            predictor_convs_float_input=self._float_concat_convs,
            performance_mode=self.performance_mode,
            intra_op_threads=self.intra_op_threads,
            num_streams=str(compiled.get_property("NUM_STREAMS")),
            fallback=None if self.fallback is None else self.fallback.reason,
            token_outputs=len(self._stage_ports),
            compiled_for_batches=sorted(self._statics),
            **execution,
        )
        return info

    # -- execution ---------------------------------------------------------------------------
    def _feed(self, images: np.ndarray) -> dict[int, np.ndarray]:
        return {0: np.ascontiguousarray(images, dtype=np.float32), **self._extra_feed}

    def run(self, images: np.ndarray, *, keep_counts: np.ndarray | None = None) -> RunOutput:
        self._require()
        feed = self._feed(images)
        if keep_counts is not None:
            index = next(iter(self._extra_feed), None)
            feed[index] = self._keep_counts_value(keep_counts, self._extra_feed.get(index))
        compiled, request = self._request_for(len(feed[0]))
        result = request.infer(feed)
        values = [np.asarray(result[port]) for port in compiled.outputs]
        logits = values[0].astype(np.float32)
        kept = None
        if self._stage_ports:
            kept = kept_patch_ids([values[p].astype(np.int64) for p in self._stage_ports], self.num_patches,
                                  compose=self.compose_ids)
        return RunOutput(logits=logits, kept=kept)

    def compiled_for(self, batch: int) -> tuple[Any, Any]:
        """The compiled model and ``InferRequest`` a call at ``batch`` images runs: the fixed-batch compile
        where ``static_batch`` makes one (compiled now if need be), else the dynamic one. Profilers read their
        runtime graph and ``get_profiling_info()``."""
        self._require()
        return self._request_for(batch)

    @property
    def infer_request(self) -> Any:
        """The loaded model's OpenVINO ``InferRequest`` (profilers read its ``get_profiling_info()``)."""
        self._require()
        return self._request

    def timed_call(self, images: np.ndarray, *, include_transfer: bool = False) -> Callable[[], None]:
        self._require()
        feed = self._feed(images)
        _, request = self._request_for(len(feed[0]))
        for index, value in feed.items():  # staged once: the call measures inference alone
            request.set_input_tensor(index, self._tensor(value))

        def call() -> None:
            request.infer()

        return call

    @staticmethod
    def _tensor(value: np.ndarray):
        import openvino as ov

        return ov.Tensor(np.ascontiguousarray(value))
