"""Everything about an engine build that does not need TensorRT: settings, profiles, the plan
and the engine manifest. torch-free and onnx-free.

The TensorRT facts the plan applies (precision flags per version, hardware-compatibility levels,
engine names, the "may this engine run here?" decision) live in ``targets.py`` and are
re-exported here. ``trt_build.py`` turns a ``BuildPlan`` into TensorRT calls; the runner calls
``compatibility_problem`` before deserializing. Both are thin because the decisions live here.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ..artifact.manifest import ENGINE_SCHEMA, EngineManifest, OnnxManifest, TensorRecord  # the schema is written once, there
from ..artifact.store import Artifact
from .. import __version__
from ..helpers.defaults import BUILD_KEEP_RANGE, BUILD_MAX_BATCH, BUILD_MIN_BATCH, BUILD_OPT_BATCH, MAX_BATCH
from ..helpers.errors import BadInput
from ..helpers.fileio import manifest_path
from ..models.config import KeepSchedule
# The option checks live in build_options (BuildOptions is re-exported here, where it always was).
from .build_options import BuildOptions, check_against_tensorrt, onnx_record
from .targets import (HARDWARE_COMPAT, HARDWARE_COMPAT_LEVELS, HARDWARE_COMPAT_SINCE, PRECISIONS,  # noqa: F401
                      DeviceInfo, PrecisionStrategy, build_flavour, compatibility_problem, engine_file_name, gpu_tag,
                      parse_trt_version, precision_strategy)

MAX_BATCH_LIMIT = MAX_BATCH  # what an export's dynamic batch dimension allows
INSTALL_HINT = 'pip install "dvit-deploy[tensorrt]"'
# The image input assumed for a manifest that lists no inputs (hand-made ones).
DEFAULT_IMAGE_INPUT = TensorRecord.from_json({"name": "images", "shape": ["batch", 3, 224, 224]})


@dataclass(frozen=True)
class InputProfile:
    """min/opt/max for one input: dimensions for execution tensors, values for shape tensors."""

    name: str
    kind: str  # "shape" (dims) or "values" (shape-tensor input, set_shape_input)
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]
    profile: int = 0  # which optimization profile (a --keep-ladder engine has one per rung)
    keep_ratio: float | None = None  # the rung's ρ (--keep-ladder only)


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
    flavour: str = "tensorrt"  # targets.BUILD_FLAVOURS: "tensorrt" or "rtx" (TensorRT-RTX)
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX targets; empty: the builder's default set
    int8_fp16: bool = False  # an int8 build with FP16 fallback (recorded in the engine manifest's builder)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_range(min_batch: int | None, opt_batch: int | None, max_batch: int | None,
                image_shape: Sequence[Any]) -> tuple[int, int, int]:
    """min/opt/max batch for the image input: defaults 1 / opt / 64, or the fixed export batch."""
    fixed = image_shape[0] if image_shape and isinstance(image_shape[0], int) else None
    if fixed is not None:
        for name, value in (("--min-batch", min_batch), ("--opt-batch", opt_batch), ("--max-batch", max_batch)):
            if value is not None and value != fixed:
                raise BadInput(f"the ONNX has a fixed batch of {fixed}; {name} {value} does not fit (re-export without --batch)")
        return fixed, fixed, fixed
    lo = BUILD_MIN_BATCH if min_batch is None else min_batch
    hi = BUILD_MAX_BATCH if max_batch is None else max_batch
    opt = opt_batch if opt_batch is not None else min(max(lo, BUILD_OPT_BATCH), hi)
    if not 1 <= lo <= opt <= hi <= MAX_BATCH_LIMIT:
        raise BadInput(f"batch range must satisfy 1 <= min <= opt <= max <= {MAX_BATCH_LIMIT}, "
                       f"got {lo}/{opt}/{hi}")
    return lo, opt, hi


def keep_count_range(keep_range: tuple[float, float] | None, export_ratio: float | None, num_stages: int,
                     num_patches: int, kind: str = "geometric"
                     ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """min/opt/max values of the ``keep_counts`` shape input from a ρ range.

    int(N·ρ^k) grows with ρ, so the lowest ρ gives the element-wise minimum and the highest
    the maximum; opt is the export's ρ (clamped into the range).
    """
    lo, hi = keep_range if keep_range is not None else BUILD_KEEP_RANGE
    if not 0 < lo <= hi <= 1:
        raise BadInput(f"--keep-range must satisfy 0 < low <= high <= 1, got {lo},{hi}")
    opt = min(max(export_ratio if export_ratio is not None else hi, lo), hi)
    try:
        counts = [KeepSchedule.from_ratio(r, num_stages, num_patches, kind).counts for r in (lo, opt, hi)]
    except ValueError as exc:
        raise BadInput(f"--keep-range: {exc}") from None
    return tuple(counts[0]), tuple(counts[1]), tuple(counts[2])


def make_profiles(source: OnnxManifest | Artifact, *, min_batch: int | None = None, opt_batch: int | None = None,
                  max_batch: int | None = None, keep_range: tuple[float, float] | None = None) -> tuple[InputProfile, ...]:
    """The optimization profiles of the ONNX's inputs: the image batch range, and for a
    --dynamic-keep graph the keep-count values of the ρ range."""
    onnx = onnx_record(source)
    images = (onnx.inputs or (DEFAULT_IMAGE_INPUT,))[0]
    lo, opt, hi = batch_range(min_batch, opt_batch, max_batch, images.shape)
    rest = tuple(int(d) for d in images.shape[1:])
    profiles = [InputProfile(images.name, "shape", (lo, *rest), (opt, *rest), (hi, *rest))]
    model = onnx.model
    keep_input = model.keep_input
    if model.dynamic_keep:
        if not keep_input:
            raise BadInput("the ONNX manifest says dynamic_keep but does not describe its keep input")
        cmin, copt, cmax = keep_count_range(keep_range, model.keep_ratio,
                                            len(model.pruning_locations or keep_input["shape"]),
                                            model.num_patches, model.keep_schedule)
        profiles.append(InputProfile(keep_input["name"], "values", cmin, copt, cmax))
    elif keep_range is not None:
        raise BadInput("--keep-range needs an ONNX exported with --dynamic-keep")
    return tuple(profiles)


def plan_profiles(source: OnnxManifest | Artifact, options: BuildOptions) -> tuple[InputProfile, ...]:
    """The profiles ``options`` ask for: one (``make_profiles``), or a ``--keep-ladder``'s (``ladder.py``)."""
    if options.keep_ladder is not None:
        from .ladder import ladder_profiles  # ladder.py builds on this module

        return ladder_profiles(source, options)
    return make_profiles(source, min_batch=options.min_batch, opt_batch=options.opt_batch,
                         max_batch=options.max_batch, keep_range=options.keep_range)


def engine_name(onnx_path: str | Path, gpu_name: str, precision: str) -> str:
    """``<onnx stem>-<gpu tag>-<precision>.engine`` (``targets.engine_file_name``)."""
    return engine_file_name(Path(onnx_path).stem, gpu_tag(gpu_name), precision)


def make_plan(source: Artifact, options: BuildOptions = BuildOptions(), *, trt_version: str,
              gpu_name: str) -> BuildPlan:
    """The build ``options`` ask for, checked against the flavour and the TensorRT version, for ``source``.

    ``options.precision`` is the precision to build (``jobs.build.check_options`` resolves it against the ONNX first).
    """
    kind = options.flavour
    precision, timing_cache = options.precision, options.timing_cache
    version_compatible = options.version_compatible
    ccs, strategy = check_against_tensorrt(options, trt_version)
    major = parse_trt_version(trt_version)[0]
    flags = strategy.set_flags
    if version_compatible:
        flags = (*flags, "VERSION_COMPATIBLE")
    onnx_path = source.path
    return BuildPlan(
        onnx_path=str(onnx_path),
        engine_name=engine_file_name(Path(onnx_path).stem, kind.engine_tag or gpu_tag(gpu_name), precision),
        trt_major=major,
        precision=precision,
        strongly_typed=strategy.strongly_typed,
        builder_flags=flags,
        cleared_flags=strategy.cleared_flags,
        profiles=plan_profiles(source, options),
        workspace_bytes=int(options.workspace_mb) << 20,
        optimization_level=options.optimization_level,
        hardware_compat=options.hardware_compat,
        version_compatible=version_compatible,
        timing_cache=None if timing_cache is None else str(timing_cache),
        fp16_graph=strategy.fp16_graph,
        flavour=kind.name,
        compute_capabilities=ccs,
        int8_fp16=options.int8_fp16,
    )


@dataclass(frozen=True)
class BuildRecord:
    """What a build produced, beyond its plan: the facts ``engine_manifest`` records.

    ``device`` is None for a TensorRT-RTX build (ahead of time, no GPU). ``io_tensors``: the engine's own I/O
    when it was inspected (else empty: the ONNX's is recorded). ``network``: the parsed network's structure
    (TensorRT-RTX). ``fp16_conversion``: the report of the mixed-precision graph the engine was built from."""

    engine_path: Path
    engine_sha256: str
    engine_bytes: int
    onnx_sha256: str
    built_from: Path
    trt_version: str
    device: DeviceInfo | None
    io_tensors: list[dict[str, Any]]
    build_seconds: float
    inspector_file: str | None
    doctor: dict[str, Any] | None
    network: dict[str, Any] | None = None
    fp16_conversion: dict[str, Any] | None = None
    warnings: Sequence[str] = ()


def engine_manifest(plan: BuildPlan, source: Artifact, built: BuildRecord) -> EngineManifest:
    """The manifest written beside an engine: what it is, how it was built, what it may run on.

    The model (``ModelRecord``), quantization and I/O are the source ONNX's typed records, so the
    engine describes the same model (keep schedule included); its I/O is the engine's own when it
    was inspected (``built.io_tensors``), else the ONNX's. ``built.device`` is None for a TensorRT-RTX
    build (ahead of time, no GPU): the ``rtx`` section then says which compute capabilities it covers.
    """
    kind, device = build_flavour(plan.flavour), built.device
    onnx = onnx_record(source)
    builder: dict[str, Any] = {
        "flags": list(plan.builder_flags),
        "cleared_flags": list(plan.cleared_flags),
        "workspace_bytes": plan.workspace_bytes,
        "optimization_level": plan.optimization_level,
        "hardware_compat": plan.hardware_compat,
        "version_compatible": plan.version_compatible,
        "timing_cache": plan.timing_cache,
        "profiling_verbosity": "DETAILED",
        "fp16_graph": plan.fp16_graph,
        "seconds": round(built.build_seconds, 2),
    }
    if plan.precision == "int8":
        builder["int8_fp16_fallback"] = plan.int8_fp16
    # How it was built and what it may run on: sections only engines have (typed by EngineManifest.from_json).
    written = EngineManifest.from_json({
        "artifact": built.engine_path.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "precision": plan.precision,
        "tensorrt": {"version": built.trt_version, "major": plan.trt_major, "strongly_typed": plan.strongly_typed,
                     "flavour": kind.name, "product": kind.product, "module": kind.module},
        "gpu": ({"name": device.name, "compute_capability": list(device.compute_capability),
                 "platform": device.platform} if device is not None else
                {"name": None, "compute_capability": None, "platform": platform.machine(),
                 "note": f"built ahead of time without a GPU ({kind.product})"}),
        **({"rtx": {"compute_capabilities": list(plan.compute_capabilities or kind.default_compute_capabilities),
                    "requested": list(plan.compute_capabilities) or None,
                    "source": "--compute-capability" if plan.compute_capabilities else
                              f"{kind.product}'s default set",
                    "runtime_cache": built.engine_path.with_suffix(".runtime-cache").name}}
           if kind.name == "rtx" else {}),
        "builder": builder,
        "profiles": [asdict(p) for p in plan.profiles],
        "io": built.io_tensors,
        **({"network": built.network} if built.network is not None else {}),
        "engine": {"sha256": built.engine_sha256, "bytes": built.engine_bytes},
        "source_onnx": {"path": str(Path(plan.onnx_path).resolve()), "built_from": str(built.built_from),
                        "sha256": built.onnx_sha256, "manifest": str(manifest_path(plan.onnx_path).resolve())},
        "inspector": built.inspector_file,
        "doctor": built.doctor,
        "versions": {"dvit_deploy": __version__, "tensorrt": built.trt_version},
        "warnings": list(built.warnings),
    })
    inputs, outputs = onnx.inputs, onnx.outputs  # not inspected, no network I/O: the ONNX's own (build warns)
    if built.io_tensors:
        described = io_description(built.io_tensors)
        inputs, outputs = TensorRecord.all_from(described["inputs"]), TensorRecord.all_from(described["outputs"])
    # What it is: the source's typed records (to_json writes the schema, kind and model keys from them).
    return written.with_changes(model=onnx.model, inputs=inputs, outputs=outputs, quantization=onnx.quantization,
                                fp16_conversion=built.fp16_conversion)


def io_description(io_tensors: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {"inputs": [t for t in io_tensors if t["mode"] == "input"],
            "outputs": [t for t in io_tensors if t["mode"] == "output"]}


__all__ = (
    "ENGINE_SCHEMA",
    "BuildOptions",
    "HARDWARE_COMPAT",
    "HARDWARE_COMPAT_LEVELS",
    "HARDWARE_COMPAT_SINCE",
    "PRECISIONS",
    "BuildPlan",
    "BuildRecord",
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
    "PrecisionStrategy",
    "precision_strategy",
)

