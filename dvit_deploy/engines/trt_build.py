"""The TensorRT boundary for building: a ``BuildPlan`` in, a serialized engine out.

Every decision (flags per version, profiles, names) is made in ``build_plan.py`` and ``targets.py``
and unit-tested without TensorRT; this module only performs the documented Python API calls:

* ``trt.Builder(logger).create_network(flags)`` — TensorRT 10: ``flags = 0`` (weakly typed) or
  ``1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED``; TensorRT 11: ``create_network()``,
  always strongly typed;
* ``trt.OnnxParser(network, logger).parse_from_file(path)`` (reads external weight files);
* ``IBuilderConfig``: ``set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``,
  ``builder_optimization_level``, ``hardware_compatibility_level``, ``profiling_verbosity =
  ProfilingVerbosity.DETAILED``, ``set_flag`` / ``clear_flag``, ``add_optimization_profile``;
* ``IOptimizationProfile.set_shape(name, min, opt, max)`` for the images and
  ``set_shape_input(name, min, opt, max)`` for the ``keep_counts`` shape-tensor input;
* timing cache: ``create_timing_cache(bytes)`` (None for an unreadable blob),
  ``set_timing_cache(cache, ignore_mismatch=False) -> bool``, ``get_timing_cache()`` (None when
  none is set) ``.serialize()``;
* ``build_serialized_network(network, config)``; the engine is handed to the caller to write
  *before* any inspection; then ``Runtime.engine_host_code_allowed = True`` (version-compatible
  engines), ``Runtime.deserialize_cuda_engine`` and
  ``create_engine_inspector().get_engine_information(LayerInformationFormat.JSON)``, whose failures
  are warnings.

Every name used here is checked against NVIDIA's bindings for 10.3, 10.13 and 11.4 by
``tests/test_tensorrt_api.py`` (API-surface conformance, see docs/tensorrt.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import CheckFailed, DvitError, require
from .build_plan import BuildPlan
from .targets import HARDWARE_COMPAT_LEVELS, DeviceInfo, parse_trt_version


def import_tensorrt():
    """``tensorrt``, or MissingDependency (exit 2) naming ``pip install "dvit-deploy[tensorrt]"``."""
    return require("tensorrt", "tensorrt", "building TensorRT engines")


def tensorrt_version() -> str:
    return str(import_tensorrt().__version__)


def cuda_device(index: int = 0) -> DeviceInfo:
    """The GPU the engine is built for, asked through torch (a dependency)."""
    import torch

    if not torch.cuda.is_available():
        raise DvitError("no CUDA GPU is visible (torch.cuda.is_available() is False): TensorRT builds and runs "
                        "engines on an NVIDIA GPU", hint="check the driver and CUDA_VISIBLE_DEVICES")
    import platform

    props = torch.cuda.get_device_properties(index)
    return DeviceInfo(props.name, (props.major, props.minor), platform.machine())


@dataclass
class BuiltEngine:
    serialized: bytes
    io_tensors: list[dict[str, Any]]  # empty when the engine could not be inspected (see warnings)
    inspector_json: str | None
    timing_cache: bytes | None
    warnings: list[str] = field(default_factory=list)


def check_plan_against_api(trt: Any, plan: BuildPlan) -> None:
    """One ``DvitError`` before any build work when the plan needs a name this TensorRT lacks.

    ``make_plan`` already refuses what it knows about (``same-cc`` before 10.9, FP16/BF16/INT8 flags
    on 11); this catches the rest from the installed module itself instead of an ``AttributeError``
    in the middle of a build.
    """
    version = trt.__version__
    for name in (*plan.builder_flags, *plan.cleared_flags):
        if not hasattr(trt.BuilderFlag, name):
            removed = " (TensorRT 11 removed the precision flags: it builds strongly typed, precision comes " \
                      "from the graph)" if plan.trt_major >= 11 else ""
            raise DvitError(f"TensorRT {version} has no BuilderFlag.{name}{removed}; this build cannot be made "
                            "with it")
    level = HARDWARE_COMPAT_LEVELS[plan.hardware_compat]
    if not hasattr(trt.HardwareCompatibilityLevel, level):
        raise DvitError(f"--hardware-compat {plan.hardware_compat}: TensorRT {version} has no "
                        f"HardwareCompatibilityLevel.{level} (SAME_COMPUTE_CAPABILITY needs TensorRT >= 10.9)")
    if plan.trt_major == 10 and plan.strongly_typed and not hasattr(trt.NetworkDefinitionCreationFlag,
                                                                    "STRONGLY_TYPED"):
        raise DvitError(f"TensorRT {version} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED")


def _attach_timing_cache(trt: Any, config: Any, path: Path, warnings: list[str]) -> bool:
    """Load ``path`` (if present) into the config; a corrupt or foreign cache becomes a fresh one.

    ``create_timing_cache`` may return None for a blob it cannot read, and ``set_timing_cache``
    returns False when the cache was made on another device/TensorRT (ignore_mismatch=False).
    """
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return True
    if blob:
        reason = ("could not be read (corrupt, or written by another TensorRT version)" if cache is None
                  else "was made for another GPU or TensorRT version (set_timing_cache refused it)")
        warnings.append(f"timing cache {path} {reason}: building with a fresh cache, which replaces the file")
        cache = config.create_timing_cache(b"")
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return True
    warnings.append(f"TensorRT could not set up a timing cache: building without one ({path} is left as it was)")
    return False


def build_engine(plan: BuildPlan, onnx_path: Path, *, on_phase: Callable[[str], None] | None = None,
                 verbose: bool = False, write_engine: Callable[[bytes], None] | None = None) -> BuiltEngine:
    """Build ``plan``; ``write_engine(bytes)`` is called as soon as the engine exists, before anything
    that could fail afterwards (timing cache, inspection), so a finished engine is never lost.
    Post-build problems become ``BuiltEngine.warnings``."""
    trt = import_tensorrt()
    phase = on_phase or (lambda name: None)
    major = parse_trt_version(trt.__version__)[0]
    if major != plan.trt_major:
        raise DvitError(f"plan was made for TensorRT {plan.trt_major}.x, TensorRT {trt.__version__} is installed")
    check_plan_against_api(trt, plan)
    warnings: list[str] = []
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)

    phase("parse ONNX")
    if major >= 11:
        network = builder.create_network()  # always strongly typed
    else:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
        network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise CheckFailed(f"TensorRT's ONNX parser rejected {onnx_path.name}: " + ("; ".join(errors[:3]) or "no detail"))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    config.builder_optimization_level = plan.optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel,
                                                  HARDWARE_COMPAT_LEVELS[plan.hardware_compat])
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))

    profile = builder.create_optimization_profile()
    for item in plan.profiles:
        if item.kind == "values":
            profile.set_shape_input(item.name, item.min, item.opt, item.max)
        else:
            profile.set_shape(item.name, item.min, item.opt, item.max)
    config.add_optimization_profile(profile)

    cache_attached = False
    if plan.timing_cache:
        cache_attached = _attach_timing_cache(trt, config, Path(plan.timing_cache), warnings)

    phase("build engine (minutes for real models)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CheckFailed("TensorRT could not build the engine (see the TensorRT messages above)")
    serialized = bytes(serialized)
    if write_engine is not None:
        write_engine(serialized)  # first: nothing after this point may lose the engine

    timing = None
    if cache_attached:
        try:
            cache = config.get_timing_cache()
            if cache is None:
                warnings.append(f"TensorRT returned no timing cache after the build: {plan.timing_cache} not updated")
            else:
                timing = bytes(cache.serialize())
        except Exception as exc:  # a failing cache must not cost the engine
            warnings.append(f"timing cache not saved ({type(exc).__name__}: {exc})")

    phase("inspect engine")
    io_tensors: list[dict[str, Any]] = []
    info = None
    try:
        runtime = trt.Runtime(logger)
        # Version-compatible engines embed the lean runtime (host code); TensorRT refuses to
        # deserialize them unless this is set. We built the engine ourselves, so allow it.
        runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            warnings.append("the engine was written but could not be inspected: TensorRT could not deserialize it "
                            "here (see the TensorRT messages above); I/O recorded from the ONNX manifest")
        else:
            io_tensors = describe_io(trt, engine)
            try:
                inspector = engine.create_engine_inspector()
                if inspector is not None:
                    info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
            except Exception as exc:
                warnings.append(f"engine inspector failed ({type(exc).__name__}: {exc}): no layer JSON written")
    except Exception as exc:
        warnings.append(f"the engine was written but could not be inspected ({type(exc).__name__}: {exc}); "
                        "I/O recorded from the ONNX manifest")
        io_tensors = []
    return BuiltEngine(serialized, io_tensors, info, timing, warnings)


def describe_io(trt: Any, engine: Any) -> list[dict[str, Any]]:
    """Name, mode, dtype and shape (-1 = dynamic) of every I/O tensor of a deserialized engine."""
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        tensors.append({
            "name": name,
            "mode": "input" if mode == trt.TensorIOMode.INPUT else "output",
            "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1].lower(),
            "shape": [int(d) for d in engine.get_tensor_shape(name)],
            "shape_tensor": bool(engine.is_shape_inference_io(name)),
            "location": str(engine.get_tensor_location(name)).split(".")[-1].lower(),  # host | device
        })
    return tensors
