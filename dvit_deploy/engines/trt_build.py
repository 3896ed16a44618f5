"""The TensorRT boundary for building: a ``BuildPlan`` in, a serialized engine out.

Every decision (flags per version, profiles, names) is made in ``manifest.py`` and unit-tested
without TensorRT; this module only performs the documented Python API calls:

* ``trt.Builder(logger).create_network(flags)`` — TensorRT 10: ``flags = 0`` (weakly typed) or
  ``1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED``; TensorRT 11: ``create_network()``,
  always strongly typed;
* ``trt.OnnxParser(network, logger).parse_from_file(path)`` (reads external weight files);
* ``IBuilderConfig``: ``set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``,
  ``builder_optimization_level``, ``hardware_compatibility_level``, ``profiling_verbosity =
  ProfilingVerbosity.DETAILED``, ``set_flag`` / ``clear_flag``, ``add_optimization_profile``;
* ``IOptimizationProfile.set_shape(name, min, opt, max)`` for the images and
  ``set_shape_input(name, min, opt, max)`` for the ``keep_counts`` shape-tensor input;
* timing cache: ``create_timing_cache(bytes)``, ``set_timing_cache(cache, ignore_mismatch=False)``,
  ``get_timing_cache().serialize()``;
* ``build_serialized_network(network, config)``, then ``Runtime.deserialize_cuda_engine`` and
  ``create_engine_inspector().get_engine_information(LayerInformationFormat.JSON)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import CheckFailed, DvitError, require
from .manifest import HARDWARE_COMPAT_LEVELS, BuildPlan, DeviceInfo, parse_trt_version


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
    props = torch.cuda.get_device_properties(index)
    return DeviceInfo(props.name, (props.major, props.minor))


@dataclass
class BuiltEngine:
    serialized: bytes
    io_tensors: list[dict[str, Any]]
    inspector_json: str | None
    timing_cache: bytes | None


def build_engine(plan: BuildPlan, onnx_path: Path, *, on_phase: Callable[[str], None] | None = None,
                 verbose: bool = False) -> BuiltEngine:
    trt = import_tensorrt()
    phase = on_phase or (lambda name: None)
    major = parse_trt_version(trt.__version__)[0]
    if major != plan.trt_major:
        raise DvitError(f"plan was made for TensorRT {plan.trt_major}.x, TensorRT {trt.__version__} is installed")
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

    if plan.timing_cache:
        cache_path = Path(plan.timing_cache)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    phase("build engine (minutes for real models)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CheckFailed("TensorRT could not build the engine (see the TensorRT messages above)")
    serialized = bytes(serialized)

    phase("inspect engine")
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(serialized)
    io_tensors = describe_io(trt, engine)
    inspector = engine.create_engine_inspector()
    info = inspector.get_engine_information(trt.LayerInformationFormat.JSON) if inspector is not None else None
    timing = bytes(config.get_timing_cache().serialize()) if plan.timing_cache else None
    return BuiltEngine(serialized, io_tensors, info, timing)


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
        })
    return tensors
