"""Everything about an engine build that does not need TensorRT: settings, profiles, names,
the engine manifest, and the "may this engine run here?" decision.

``trt_build.py`` turns a ``BuildPlan`` into TensorRT calls; the runner calls
``compatibility_problem`` before deserializing. Both are thin because the decisions live here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BadInput
from ..fileio import manifest_path
from ..models import KeepSchedule

ENGINE_SCHEMA = "dvit-deploy/engine-manifest/1"
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")  # int8: an explicitly quantized (Q/DQ) ONNX
HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
# dvit's names -> TensorRT's HardwareCompatibilityLevel members (TRT >= 8.6).
HARDWARE_COMPAT_LEVELS = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
# The first TensorRT with each level (HardwareCompatibilityLevel members in NVIDIA's bindings:
# 10.3 has NONE and AMPERE_PLUS only; SAME_COMPUTE_CAPABILITY appears in 10.9).
HARDWARE_COMPAT_SINCE = {"none": (8, 6), "ampere+": (8, 6), "same-cc": (10, 9)}
MAX_BATCH_LIMIT = 4096
DEFAULT_WORKSPACE_MB = 4096
DEFAULT_OPT_LEVEL = 3  # TensorRT's default builder_optimization_level
INSTALL_HINT = 'pip install "dvit-deploy[tensorrt]"'


@dataclass(frozen=True)
class InputProfile:
    """min/opt/max for one input: dimensions for execution tensors, values for shape tensors."""

    name: str
    kind: str  # "shape" (dims) or "values" (shape-tensor input, set_shape_input)
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BuildPlan:
    onnx_path: str
    engine_name: str
    trt_major: int
    precision: str
    strongly_typed: bool
    builder_flags: tuple[str, ...]  # BuilderFlag member names to set
    cleared_flags: tuple[str, ...]  # BuilderFlag member names to clear (TF32 is on by default)
    profiles: tuple[InputProfile, ...]
    workspace_bytes: int
    optimization_level: int
    hardware_compat: str
    version_compatible: bool
    timing_cache: str | None
    fp16_graph: bool  # True when the ONNX was converted to mixed precision first (TRT 11 fp16)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_trt_version(version: str) -> tuple[int, int, int]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not match:
        raise BadInput(f"cannot read a TensorRT version from '{version}'")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


@dataclass(frozen=True)
class PrecisionStrategy:
    strongly_typed: bool  # create the network with NetworkDefinitionCreationFlag.STRONGLY_TYPED
    set_flags: tuple[str, ...]
    cleared_flags: tuple[str, ...]
    fp16_graph: bool  # convert the ONNX to mixed precision before parsing


def precision_strategy(precision: str, trt_major: int, *, strongly_typed: bool = False,
                       fp16_fallback: bool = False) -> PrecisionStrategy:
    """How a precision is obtained on a TensorRT major version.

    TensorRT 10 is weakly typed by default: reduced precision is a builder flag (FP16/BF16),
    and TF32 is on unless cleared, so "fp32" clears it. ``strongly_typed=True`` on 10 takes the
    TensorRT 11 route instead. TensorRT 11 is always strongly typed and has no FP16/BF16 flags:
    the precision comes from the graph, so fp16 means converting the ONNX first.

    int8 is explicit quantization only (the ONNX carries QuantizeLinear/DequantizeLinear; no
    calibrator, which TensorRT 11 removed): a weakly typed TensorRT 10 network needs
    ``BuilderFlag.INT8`` for its Q/DQ layers, and ``fp16_fallback`` adds ``FP16`` so the layers
    outside Q/DQ pairs may run in fp16 ("INT8, with FP16 fallback if FP16 is also set"). Strongly
    typed (TensorRT 11, or 10 with ``--strongly-typed``): no flag, the Q/DQ nodes are the types.
    """
    if precision not in PRECISIONS:
        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if trt_major < 10:
        raise BadInput(f"TensorRT {trt_major}.x is not supported: dvit build needs TensorRT 10 or 11")
    if fp16_fallback and precision != "int8":
        raise BadInput("an fp16 fallback only applies to an int8 (Q/DQ) build")
    tf32 = (("TF32",), ()) if precision == "tf32" else ((), ("TF32",))
    if precision == "int8":
        if trt_major == 10 and not strongly_typed:
            return PrecisionStrategy(False, ("INT8",) + (("FP16",) if fp16_fallback else ()), tf32[1], False)
        if fp16_fallback:
            raise BadInput("--int8 --fp16 (INT8 with FP16 fallback) is a TensorRT 10 weakly typed build; TensorRT 11 "
                           "and --strongly-typed take every layer's precision from the Q/DQ graph itself")
        return PrecisionStrategy(True, (), tf32[1], False)
    if trt_major == 10 and not strongly_typed:
        reduced = {"fp16": ("FP16",), "bf16": ("BF16",)}.get(precision, ())
        return PrecisionStrategy(False, reduced + tf32[0], tf32[1], False)
    if precision == "bf16":
        raise BadInput("bf16 with a strongly typed network needs a bf16 graph; dvit converts graphs to fp16 only "
                       "(use TensorRT 10 without --strongly-typed for BF16)")
    return PrecisionStrategy(True, tf32[0], tf32[1], precision == "fp16")


def batch_range(min_batch: int | None, opt_batch: int | None, max_batch: int | None,
                io_inputs: list[dict[str, Any]]) -> tuple[int, int, int]:
    """min/opt/max batch for the image input: defaults 1 / opt / 64, or the fixed export batch."""
    images = io_inputs[0] if io_inputs else {"shape": ["batch"]}
    fixed = images["shape"][0] if images.get("shape") and isinstance(images["shape"][0], int) else None
    if fixed is not None:
        for name, value in (("--min-batch", min_batch), ("--opt-batch", opt_batch), ("--max-batch", max_batch)):
            if value is not None and value != fixed:
                raise BadInput(f"the ONNX has a fixed batch of {fixed}; {name} {value} does not fit (re-export without --batch)")
        return fixed, fixed, fixed
    lo = 1 if min_batch is None else min_batch
    hi = 64 if max_batch is None else max_batch
    opt = opt_batch if opt_batch is not None else min(max(lo, 32), hi)
    if not 1 <= lo <= opt <= hi <= MAX_BATCH_LIMIT:
        raise BadInput(f"batch range must satisfy 1 <= min <= opt <= max <= {MAX_BATCH_LIMIT}, "
                       f"got {lo}/{opt}/{hi}")
    return lo, opt, hi


def keep_count_range(keep_range: tuple[float, float] | None, export_ratio: float | None, num_stages: int,
                     num_patches: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """min/opt/max values of the ``keep_counts`` shape input from a ρ range.

    int(N·ρ^k) grows with ρ, so the lowest ρ gives the element-wise minimum and the highest
    the maximum; opt is the export's ρ (clamped into the range).
    """
    lo, hi = keep_range if keep_range is not None else (0.5, 0.9)
    if not 0 < lo <= hi <= 1:
        raise BadInput(f"--keep-range must satisfy 0 < low <= high <= 1, got {lo},{hi}")
    opt = min(max(export_ratio if export_ratio is not None else hi, lo), hi)
    try:
        counts = [KeepSchedule.from_ratio(r, num_stages, num_patches).counts for r in (lo, opt, hi)]
    except ValueError as exc:
        raise BadInput(f"--keep-range: {exc}") from None
    return tuple(counts[0]), tuple(counts[1]), tuple(counts[2])


def make_profiles(onnx_manifest: dict[str, Any], *, min_batch: int | None = None, opt_batch: int | None = None,
                  max_batch: int | None = None, keep_range: tuple[float, float] | None = None) -> tuple[InputProfile, ...]:
    inputs = onnx_manifest.get("inputs") or [{"name": "images", "shape": ["batch", 3, 224, 224]}]
    lo, opt, hi = batch_range(min_batch, opt_batch, max_batch, inputs)
    images = inputs[0]
    rest = tuple(int(d) for d in images["shape"][1:])
    profiles = [InputProfile(images["name"], "shape", (lo, *rest), (opt, *rest), (hi, *rest))]
    keep_input = onnx_manifest.get("keep_input")
    if onnx_manifest.get("dynamic_keep"):
        if not keep_input:
            raise BadInput("the ONNX manifest says dynamic_keep but does not describe its keep input")
        cmin, copt, cmax = keep_count_range(keep_range, onnx_manifest.get("keep_ratio"),
                                            len(onnx_manifest.get("pruning_locations") or keep_input["shape"]),
                                            int(onnx_manifest.get("num_patches", 196)))
        profiles.append(InputProfile(keep_input["name"], "values", cmin, copt, cmax))
    elif keep_range is not None:
        raise BadInput("--keep-range needs an ONNX exported with --dynamic-keep")
    return tuple(profiles)


def gpu_tag(gpu_name: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'rtx4090'; 'Orin (nvgpu)' -> 'orin'."""
    name = re.sub(r"\(.*?\)", "", gpu_name).lower()
    for noise in ("nvidia", "geforce", "tesla", "quadro", "graphics"):
        name = name.replace(noise, " ")
    tag = re.sub(r"[^a-z0-9]+", "", name)
    return tag or "gpu"


def engine_name(onnx_path: str | Path, gpu_name: str, precision: str) -> str:
    return f"{Path(onnx_path).stem}-{gpu_tag(gpu_name)}-{precision}.engine"


def make_plan(onnx_path: str | Path, onnx_manifest: dict[str, Any], *, trt_version: str, gpu_name: str,
              precision: str = "fp16", min_batch: int | None = None, opt_batch: int | None = None,
              max_batch: int | None = None, keep_range: tuple[float, float] | None = None,
              workspace_mb: int = DEFAULT_WORKSPACE_MB, optimization_level: int = DEFAULT_OPT_LEVEL,
              hardware_compat: str = "none", version_compatible: bool = False,
              timing_cache: str | Path | None = None, strongly_typed: bool = False,
              int8_fp16: bool = False) -> BuildPlan:
    version = parse_trt_version(trt_version)
    major = version[0]
    strategy = precision_strategy(precision, major, strongly_typed=strongly_typed, fp16_fallback=int8_fp16)
    flags = strategy.set_flags
    if hardware_compat not in HARDWARE_COMPAT:
        raise BadInput(f"--hardware-compat must be one of {', '.join(HARDWARE_COMPAT)}, got '{hardware_compat}'")
    since = HARDWARE_COMPAT_SINCE[hardware_compat]
    if version[:2] < since:
        raise BadInput(f"--hardware-compat {hardware_compat} needs TensorRT >= {since[0]}.{since[1]} "
                       f"(HardwareCompatibilityLevel.{HARDWARE_COMPAT_LEVELS[hardware_compat]} was added in "
                       f"{since[0]}.{since[1]}); this machine has TensorRT {trt_version}: use ampere+ (any GPU "
                       "with sm >= 8.0) or none")
    if not 0 <= optimization_level <= 5:
        raise BadInput(f"--opt-level must be between 0 and 5, got {optimization_level}")
    if workspace_mb < 1:
        raise BadInput(f"--workspace must be at least 1 MB, got {workspace_mb}")
    if version_compatible:
        flags = (*flags, "VERSION_COMPATIBLE")
    return BuildPlan(
        onnx_path=str(onnx_path),
        engine_name=engine_name(onnx_path, gpu_name, precision),
        trt_major=major,
        precision=precision,
        strongly_typed=strategy.strongly_typed,
        builder_flags=flags,
        cleared_flags=strategy.cleared_flags,
        profiles=make_profiles(onnx_manifest, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
                               keep_range=keep_range),
        workspace_bytes=int(workspace_mb) << 20,
        optimization_level=optimization_level,
        hardware_compat=hardware_compat,
        version_compatible=version_compatible,
        timing_cache=None if timing_cache is None else str(timing_cache),
        fp16_graph=strategy.fp16_graph,
    )


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: tuple[int, int]
    platform: str | None = None  # platform.machine() of the host: x86_64, aarch64 (Jetson) ...


def engine_manifest(plan: BuildPlan, *, engine_path: Path, engine_sha256: str, engine_bytes: int,
                    onnx_manifest: dict[str, Any], onnx_sha256: str, built_from: Path, trt_version: str,
                    device: DeviceInfo, io_tensors: list[dict[str, Any]], build_seconds: float,
                    inspector_file: str | None, doctor: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON written beside an engine: what it is, how it was built, what it may run on."""
    model_record = {k: onnx_manifest.get(k) for k in (
        "variant", "config", "dense", "keep_ratio", "stage_ratios", "keep_counts", "pruning_locations",
        "num_patches", "random_weights", "seed", "checkpoint", "data_config", "dynamic_keep", "keep_input",
        "token_outputs", "batch", "dynamic_batch", "quantization")}  # batch: validate/predict pad fixed-batch artifacts
    return {
        "schema": ENGINE_SCHEMA,
        "kind": "tensorrt-engine",
        "artifact": engine_path.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **model_record,
        "precision": plan.precision,
        "tensorrt": {"version": trt_version, "major": plan.trt_major, "strongly_typed": plan.strongly_typed},
        "gpu": {"name": device.name, "compute_capability": list(device.compute_capability),
                "platform": device.platform},
        "builder": {
            "flags": list(plan.builder_flags),
            "cleared_flags": list(plan.cleared_flags),
            "workspace_bytes": plan.workspace_bytes,
            "optimization_level": plan.optimization_level,
            "hardware_compat": plan.hardware_compat,
            "version_compatible": plan.version_compatible,
            "timing_cache": plan.timing_cache,
            "profiling_verbosity": "DETAILED",
            "fp16_graph": plan.fp16_graph,
            "seconds": round(build_seconds, 2),
        },
        "profiles": [asdict(p) for p in plan.profiles],
        "io": io_tensors,
        "engine": {"sha256": engine_sha256, "bytes": engine_bytes},
        "source_onnx": {"path": str(Path(plan.onnx_path).resolve()), "built_from": str(built_from),
                        "sha256": onnx_sha256, "manifest": str(manifest_path(plan.onnx_path).resolve())},
        "inspector": inspector_file,
        "doctor": doctor,
        "versions": {"dvit_deploy": __version__, "tensorrt": trt_version},
    }


def _same_gpu_model(a: str, b: str) -> bool:
    return " ".join(str(a).lower().split()) == " ".join(str(b).lower().split())


def compatibility_problem(manifest: dict[str, Any], *, trt_version: str, device: DeviceInfo) -> str | None:
    """None when the engine may be deserialized here, else one line saying why not.

    Engines are tied to the TensorRT version that built them (the same major.minor.patch, or, when
    built version-compatible, the same or a later version of the same major: compatibility is
    forward only), to the platform (an x86-64 engine does not load on an aarch64 Jetson and vice
    versa, whatever the hardware-compatibility level) and to the GPU:

    * ``none`` (default): the same GPU model (name) with the same compute capability;
    * ``ampere+``: any GPU with sm >= 8.0 on the same platform;
    * ``same-cc``: any GPU model with the same compute capability, same platform.

    Manifests written before the platform was recorded are not refused for it.
    """
    trt = manifest.get("tensorrt") or {}
    built_version = str(trt.get("version", "?"))
    builder = manifest.get("builder") or {}
    gpu = manifest.get("gpu") or {}
    built_cc = tuple(gpu.get("compute_capability") or ())
    here = parse_trt_version(trt_version)
    try:
        built = parse_trt_version(built_version)
    except BadInput:
        return f"engine manifest has no readable TensorRT version ('{built_version}'); rebuild it with dvit build"
    if builder.get("version_compatible"):
        if built[0] != here[0] or here < built:
            return (f"engine was built with TensorRT {built_version} (version-compatible with {built_version} "
                    f"and later {built[0]}.x), this machine has TensorRT {trt_version}: rebuild it here with dvit build")
    elif built != here:
        return (f"engine was built with TensorRT {built_version}, this machine has TensorRT {trt_version}: "
                "rebuild it here with dvit build (or build with --version-compatible)")
    compat = builder.get("hardware_compat", "none")
    cc = tuple(device.compute_capability)
    built_on = f"{gpu.get('name', '?')} (sm {'.'.join(map(str, built_cc)) or '?'})"
    built_platform = gpu.get("platform")
    if built_platform and device.platform and built_platform != device.platform:
        return (f"engine was built on {built_platform} ({built_on}), this machine is {device.platform}: engines do "
                f"not move between platforms at any hardware-compat level; rebuild it here with dvit build")
    if compat == "ampere+":
        if cc < (8, 0):
            return (f"engine was built for Ampere or newer (hardware-compat ampere+), this GPU {device.name} "
                    f"is sm {cc[0]}.{cc[1]}: rebuild it here with dvit build")
        return None
    if built_cc and cc != built_cc:
        return (f"engine was built for {built_on}, this GPU is {device.name} (sm {cc[0]}.{cc[1]}): "
                "rebuild it here with dvit build")
    if compat != "same-cc" and gpu.get("name") and not _same_gpu_model(gpu["name"], device.name):
        return (f"engine was built for {built_on}, this GPU is {device.name}: without --hardware-compat an engine "
                "is specific to the GPU model (same-cc allows any model of that compute capability, TensorRT "
                ">= 10.9); rebuild it here with dvit build")
    return None


def io_description(io_tensors: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {"inputs": [t for t in io_tensors if t["mode"] == "input"],
            "outputs": [t for t in io_tensors if t["mode"] == "output"]}


__all__ = [
    "BuildPlan",
    "DeviceInfo",
    "InputProfile",
    "compatibility_problem",
    "engine_manifest",
    "engine_name",
    "gpu_tag",
    "keep_count_range",
    "make_plan",
    "make_profiles",
    "parse_trt_version",
    "precision_strategy",
]

