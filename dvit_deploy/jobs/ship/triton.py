"""Triton Inference Server model repositories: ``config.pbtxt`` for the ONNX (onnxruntime_onnx)
and for engines (tensorrt_plan), including the config prepared for the engine the device builds.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from ...artifact.manifest import OnnxManifest, TensorRecord
from ...artifact.store import Artifact
from ...helpers.errors import BadInput
from .layout import DEFAULT_QUEUE_DELAY_US, EngineItem, OnnxItem
from .trtexec import _batch_profile

TRITON_TYPES: Mapping[str, str] = MappingProxyType({
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64",
    "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"})
_TRT_TYPES: Mapping[str, str] = MappingProxyType({
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT64": "int64", "INT32": "int32",
    "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"})


def triton_model_name(stem: str, kind: str) -> str:
    """Triton model names become folder names: keep letters, digits, '-' and '_'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{stem}-{kind}")


def _triton_dtype(dtype: Any) -> str:
    name = str(dtype or "").strip()
    name = _TRT_TYPES.get(name.upper().replace("DATATYPE.", ""), name.lower())
    if name not in TRITON_TYPES:
        raise BadInput(f"tensor data type '{dtype}' has no Triton equivalent")
    return TRITON_TYPES[name]


def _tensor_block(tensors: Sequence[TensorRecord], batched: bool,
                  shape_tensors: frozenset[str] | set[str] = frozenset()) -> list[str]:
    lines = []
    for i, tensor in enumerate(tensors):
        shape = list(tensor.shape)
        dims = shape[1:] if batched else shape
        dims_text = ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in dims)
        sep = "," if i < len(tensors) - 1 else ""
        lines += ["  {", f'    name: "{tensor.name}"', f"    data_type: {_triton_dtype(tensor.dtype)}",
                  f"    dims: [ {dims_text} ]"]
        if tensor.name in shape_tensors:
            lines.append("    is_shape_tensor: true")
        lines.append("  }" + sep)
    return lines


@dataclass(frozen=True)
class TritonModelConfig:
    """One Triton ``config.pbtxt``. ``max_batch_size`` 0: Triton does not batch, every tensor lists its
    full dims (-1 for a dynamic batch). ``preferred``: the dynamic batcher's preferred sizes.
    ``shape_tensors``: TensorRT shape-tensor inputs (``is_shape_tensor: true``, tensorrt_plan only)."""

    name: str
    platform: str
    inputs: Sequence[TensorRecord]
    outputs: Sequence[TensorRecord]
    max_batch_size: int
    preferred: Sequence[int] = ()
    gpu: bool = False
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    shape_tensors: frozenset[str] | set[str] = frozenset()


def triton_config(config: TritonModelConfig) -> str:
    """The ``config.pbtxt`` text of ``config``."""
    batched = config.max_batch_size > 0
    lines = [f'name: "{config.name}"', f'platform: "{config.platform}"', f"max_batch_size: {config.max_batch_size}",
             "input ["]
    lines += _tensor_block(config.inputs, batched, config.shape_tensors) + ["]", "output ["]
    lines += _tensor_block(config.outputs, batched) + ["]"]
    if batched:
        sizes = ", ".join(str(b) for b in sorted(set(config.preferred)) if 1 <= b <= config.max_batch_size)
        lines += ["dynamic_batching {"]
        if sizes:
            lines.append(f"  preferred_batch_size: [ {sizes} ]")
        lines += [f"  max_queue_delay_microseconds: {config.queue_delay_us}", "}"]
    if config.gpu:
        lines += ["instance_group [", "  {", "    count: 1", "    kind: KIND_GPU", "  }", "]"]
    return "\n".join(lines) + "\n"


def _engine_io(engine: EngineItem) -> tuple[list[TensorRecord], list[TensorRecord]] | None:
    """Inputs/outputs from the engine manifest (its dtypes are what the engine really uses)."""
    ins = [t for t in engine.manifest.io if t.mode.upper().endswith("INPUT")]
    outs = [t for t in engine.manifest.io if t.mode.upper().endswith("OUTPUT")]
    return (ins, outs) if ins and outs else None


def _engine_max_batch(engine: EngineItem) -> int | None:
    """The batch the engine's ``images`` profile allows at most (None when it records none)."""
    best = None
    for profile in engine.manifest.profiles:
        if profile.name == "images" and profile.max:  # another input's profile (a keep-count value) is not the batch
            best = max(best or 0, profile.max[0])
    return best


def _has_batch_dim(tensor: TensorRecord) -> bool:
    """Whether the tensor's first dim is the (dynamic) batch: a name or -1, not a fixed size."""
    shape = tensor.shape
    return bool(shape) and not (isinstance(shape[0], int) and shape[0] > 0)


def _onnx_triton(item: OnnxItem, profile: tuple[int, int, int], gpu: bool, platform: str,
                 name: str, io: tuple[list[TensorRecord], list[TensorRecord]] | None = None,
                 max_batch: int | None = None) -> str:
    """Triton config for an ONNX (or its engine). Triton batches only when *every* input has the batch
    as its first dim: a --dynamic-keep model's ``keep_counts`` (shape [stages]) has none, so it gets
    ``max_batch_size: 0`` with full dims (``images`` [-1, 3, H, W]); on tensorrt_plan ``keep_counts`` is
    a shape tensor (``is_shape_tensor: true``)."""
    dynamic = _batch_profile(item.model, profile) is not None
    inputs, outputs = io or (list(item.manifest.inputs), list(item.manifest.outputs))
    if not inputs or not outputs:
        raise BadInput(f"manifest of {item.path.name} lists no inputs/outputs; re-export with this dvit-deploy")
    batched = dynamic and all(_has_batch_dim(t) for t in inputs)
    high = (max_batch or profile[2]) if batched else 0
    model = item.model
    keep = (model.keep_input or {}).get("name") if model.dynamic_keep else None
    shape_tensors = ({t.name for t in inputs if t.is_shape_tensor or t.name == keep}
                     if platform == "tensorrt_plan" else set())
    return triton_config(TritonModelConfig(name, platform, inputs, outputs, max_batch_size=high,
                                           preferred=[profile[1], high] if batched else [], gpu=gpu,
                                           shape_tensors=shape_tensors))


def _write_python_model(repo: Path, item: OnnxItem, profile: tuple[int, int, int]) -> str:
    """The CPU flavour: our Python-backend model (``dvit serve``'s) running the ONNX with ONNX Runtime.

    Loads in any tritonserver with the Python backend (the one nvidia-pytriton ships included) whose
    Python environment has dvit-deploy installed. The artifact and its manifest sit in ``1/``; the
    spec names it relative to the model folder, so the repository can be moved.
    """
    from ..serve.server import write_model
    from ..serve.spec import ServeOptions, make_spec

    name = triton_model_name(item.path.stem, "python")
    max_batch = item.model.batch or profile[2]
    spec = make_spec(item.artifact, ServeOptions(backend="onnxruntime", precision=item.artifact.precision, name=name,
                                                 max_batch=int(max_batch), queue_delay_us=DEFAULT_QUEUE_DELAY_US))
    spec.artifact = f"1/{item.path.name}"
    write_model(spec, repo / name, files=item.files)
    return name


def _write_triton(root: Path, onnx_items: list[OnnxItem], engines: list[EngineItem],
                  profile: tuple[int, int, int], *, python: bool = False) -> tuple[list[str], dict[str, str]]:
    repo = root / "triton"
    repo.mkdir()
    names: list[str] = []
    pending: dict[str, str] = {}  # onnx file name -> Triton model the device build installs
    for item in onnx_items:
        name = triton_model_name(item.path.stem, "onnx")
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(_onnx_triton(item, profile, gpu=False, platform="onnxruntime_onnx",
                                                               name=name))
        # One self-contained file: Triton's onnxruntime backend loads model.onnx (+ external data beside it).
        for f in item.files[:-1]:
            shutil.copy2(f, repo / name / "1" / ("model.onnx" if f == item.path else f.name))
        names.append(name)
        # A tensorrt_plan config prepared for the engine the device will build.
        trt_name = triton_model_name(item.path.stem, "trt")
        (root / "device" / "triton").mkdir(parents=True, exist_ok=True)
        (root / "device" / "triton" / f"{trt_name}.config.pbtxt").write_text(
            _onnx_triton(item, profile, gpu=True, platform="tensorrt_plan", name=trt_name))
        pending[item.path.name] = trt_name
        if python:
            names.append(_write_python_model(repo, item, profile))
    for engine in engines:
        stem = engine.path.stem
        name = triton_model_name(stem, "trt")
        reference = engine.source
        io = _engine_io(engine)
        if reference is None and io is None:
            raise BadInput(f"cannot write a Triton config for {engine.path.name}: its manifest records no I/O tensors "
                           "and no source ONNX")
        # No source ONNX: the engine's own I/O, batched as a dynamic-batch model.
        carrier = reference or OnnxItem(Artifact(engine.path, OnnxManifest.from_json({"dynamic_batch": True}), False))
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(
            _onnx_triton(carrier, profile, gpu=True, platform="tensorrt_plan", name=name, io=io,
                         max_batch=_engine_max_batch(engine)))
        shutil.copy2(engine.path, repo / name / "1" / "model.plan")
        names.append(name)
    return names, pending
