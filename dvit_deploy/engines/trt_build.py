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
  ``set_shape_input(name, min, opt, max)`` for the ``keep_counts`` shape-tensor input; one profile,
  or one per rung of a ``--keep-ladder`` (``add_optimization_profile`` returns its index, -1 when
  refused; ``get_shape_input`` reads the values back);
* timing cache: ``create_timing_cache(bytes)`` (None for an unreadable blob),
  ``set_timing_cache(cache, ignore_mismatch=False) -> bool``, ``get_timing_cache()`` (None when
  none is set) ``.serialize()``;
* ``build_serialized_network(network, config)``; the engine is handed to the caller to write
  *before* any inspection; then ``Runtime.engine_host_code_allowed = True`` (version-compatible
  engines), ``Runtime.deserialize_cuda_engine`` and
  ``create_engine_inspector().get_engine_information(LayerInformationFormat.JSON)``, whose failures
  are warnings.

TensorRT-RTX (``plan.flavour == "rtx"``, module ``tensorrt_rtx``) goes through the same calls; what
differs is a row of ``targets.BUILD_FLAVOURS``: ``create_network()`` (strongly typed only), the
target compute capabilities (``num_compute_capabilities`` + ``set_compute_capability``), no timing
cache, and no engine inspection (deserializing needs a CUDA driver): the I/O and the TopK/Gather
structure are then read from the parsed network (``describe_network``).

Every name used here is checked against NVIDIA's bindings for 10.3, 10.13 and 11.4 and against
the real ``tensorrt_rtx`` 1.7 by ``tests/test_tensorrt_api.py`` (API-surface conformance, see
docs/tensorrt.md); ``tests/test_rtx.py`` runs the TensorRT-RTX path for real.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..helpers.errors import CheckFailed, DvitError
from ..helpers.lazy import require
from .build_plan import BuildPlan
from .targets import (HARDWARE_COMPAT_LEVELS, RTX_COMPUTE_CAPABILITIES, DeviceInfo, build_flavour,
                      parse_trt_version)


def import_tensorrt(flavour: str = "tensorrt"):
    """``tensorrt`` (or ``tensorrt_rtx``), or MissingDependency (exit 2) naming the extra to install."""
    kind = build_flavour(flavour)
    return require(kind.module, kind.extra, f"building {kind.product} engines")


def tensorrt_version(flavour: str = "tensorrt") -> str:
    return str(import_tensorrt(flavour).__version__)


def parser_errors(parser: Any) -> list[dict[str, Any]]:
    """Every error of an ``OnnxParser``, with the ONNX node it names (index, name, op) where the
    bindings have them (``ParserError.node_name``/``node_operator``: TensorRT >= 10.x, TensorRT-RTX)."""
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        item: dict[str, Any] = {"desc": str(error.desc()).strip(), "code": str(error.code()).split(".")[-1],
                                "node": int(error.node())}
        for key, method in (("node_name", "node_name"), ("op", "node_operator")):
            if hasattr(error, method):
                item[key] = str(getattr(error, method)())
        errors.append(item)
    return errors


def format_parser_error(error: dict[str, Any]) -> str:
    where = f"node {error['node']}" if error.get("node", -1) >= 0 else "the graph"
    if error.get("op") or error.get("node_name"):
        where += f" ({error.get('op') or '?'} '{error.get('node_name') or '?'}')"
    desc = " ".join(error["desc"].split())
    return f"{where}: {desc[:300]}"


@dataclass
class ParseResult:
    """NVIDIA's ONNX parser on one graph: its errors, or the network's structure when it parsed."""

    product: str
    version: str
    parsed: bool
    errors: list[dict[str, Any]]
    network: dict[str, Any] | None


def parse_onnx(onnx_path: Path, flavour: str = "rtx") -> ParseResult:
    """Parse ``onnx_path`` with the real parser of ``flavour`` (no build, no GPU): for ``dvit doctor``."""
    kind = build_flavour(flavour)
    trt = import_tensorrt(kind.name)
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network() if kind.always_strongly_typed else builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    parsed = bool(parser.parse_from_file(str(onnx_path)))
    return ParseResult(kind.product, str(trt.__version__), parsed, [] if parsed else parser_errors(parser),
                       describe_network(trt, network) if parsed else None)


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
    network: dict[str, Any] | None = None  # TensorRT-RTX: layer structure of the parsed network
    # --keep-ladder: each optimization profile's index and shape-tensor values as read back from TensorRT
    profiles: list[dict[str, Any]] = field(default_factory=list)


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
    kind = build_flavour(plan.flavour)
    trt = import_tensorrt(kind.name)
    phase = on_phase or (lambda name: None)
    major = parse_trt_version(trt.__version__)[0]
    if major != plan.trt_major:
        raise DvitError(f"plan was made for {kind.product} {plan.trt_major}.x, {kind.product} {trt.__version__} "
                        "is installed")
    check_plan_against_api(trt, plan)
    warnings: list[str] = []
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)

    phase("parse ONNX")
    network, _parser = _parsed_network(trt, builder, logger, plan, onnx_path)
    config = _builder_config(trt, builder, plan)
    profiles_set = add_profiles(trt, builder, config, plan)
    if plan.compute_capabilities:
        set_compute_capabilities(trt, config, plan.compute_capabilities)
    cache_attached = False
    if plan.timing_cache:
        cache_attached = _attach_timing_cache(trt, config, Path(plan.timing_cache), warnings)

    phase("build engine (minutes for real models)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CheckFailed(f"{kind.product} could not build the engine (see the TensorRT messages above)")
    serialized = bytes(serialized)
    if write_engine is not None:
        write_engine(serialized)  # first: nothing after this point may lose the engine

    timing = _saved_timing_cache(config, plan, warnings) if cache_attached else None
    if kind.needs_gpu_to_inspect:
        phase("describe the parsed network (the engine cannot be inspected without a GPU)")
        # Deserializing needs a CUDA driver (TensorRT-RTX: cudaError 35 without one), so what the
        # engine was built from is read from the parsed network instead: the same I/O, and the
        # layers the builder compiled.
        structure = describe_network(trt, network)
        if profiles_set:
            structure["optimization_profiles"] = profiles_set  # what the builder config held (read back)
        return BuiltEngine(serialized, structure.pop("io"), None, None, warnings, structure, profiles_set)
    phase("inspect engine")
    io_tensors, info = _inspect_engine(trt, logger, serialized, warnings)
    return BuiltEngine(serialized, io_tensors, info, timing, warnings, profiles=profiles_set)


def _parsed_network(trt: Any, builder: Any, logger: Any, plan: BuildPlan, onnx_path: Path) -> tuple[Any, Any]:
    """The network, strongly typed where the flavour or plan says so, with ``onnx_path`` parsed into it, and
    its parser (which holds the parsed weights: it stays referenced until the build is done)."""
    kind = build_flavour(plan.flavour)
    if plan.trt_major >= 11 or kind.always_strongly_typed:
        network = builder.create_network()  # always strongly typed
    else:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
        network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [format_parser_error(e) for e in parser_errors(parser)]
        hint = rtx_int8_hint(errors) if kind.name == "rtx" else ""
        raise CheckFailed(f"{kind.product}'s ONNX parser rejected {onnx_path.name}: "
                          + ("; ".join(errors[:3]) or "no detail") + hint)
    return network, parser


def _builder_config(trt: Any, builder: Any, plan: BuildPlan) -> Any:
    """The ``IBuilderConfig`` of ``plan``: workspace, optimization level, verbosity, hardware level, flags."""
    kind = build_flavour(plan.flavour)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    config.builder_optimization_level = plan.optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if kind.hardware_compat:  # TensorRT-RTX warns "setHardwareCompatibilityLevel() is unsupported"
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel,
                                                      HARDWARE_COMPAT_LEVELS[plan.hardware_compat])
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    return config


def _saved_timing_cache(config: Any, plan: BuildPlan, warnings: list[str]) -> bytes | None:
    """The timing cache after the build, serialized; a failure is a warning (it must not cost the engine)."""
    try:
        cache = config.get_timing_cache()
        if cache is None:
            warnings.append(f"TensorRT returned no timing cache after the build: {plan.timing_cache} not updated")
            return None
        return bytes(cache.serialize())
    except Exception as exc:  # a failing cache must not cost the engine
        warnings.append(f"timing cache not saved ({type(exc).__name__}: {exc})")
        return None


def _inspect_engine(trt: Any, logger: Any, serialized: bytes, warnings: list[str]
                    ) -> tuple[list[dict[str, Any]], str | None]:
    """The built engine's I/O and layer JSON (engine inspector); what fails becomes a warning."""
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
    return io_tensors, info


def add_profiles(trt: Any, builder: Any, config: Any, plan: BuildPlan) -> list[dict[str, Any]]:
    """One ``IOptimizationProfile`` per profile index of the plan (one, or a --keep-ladder's rungs):
    ``set_shape`` for the images, ``set_shape_input`` for the keep-count values. Returns what the
    builder config holds afterwards, read back from TensorRT (``get_shape``/``get_shape_input``)."""
    from .ladder import profile_groups

    added = []
    for group in profile_groups(plan.profiles):
        profile = builder.create_optimization_profile()
        for item in group:
            if item.kind == "values":
                profile.set_shape_input(item.name, item.min, item.opt, item.max)
            else:
                profile.set_shape(item.name, item.min, item.opt, item.max)
        index = config.add_optimization_profile(profile)
        if index < 0:  # TensorRT: -1 for an invalid profile (the reason is in its log)
            raise DvitError(f"TensorRT refused optimization profile {group[0].profile}"
                            + (f" (ρ {group[0].keep_ratio:g})" if group[0].keep_ratio is not None else "")
                            + " (see the TensorRT messages above)")
        added.append((index, group, profile))
    if len(added) == 1 and added[0][1][0].keep_ratio is None:
        return []  # one profile, as before: nothing more to report
    if config.num_optimization_profiles != len(added):
        raise DvitError(f"TensorRT's builder config holds {config.num_optimization_profiles} optimization profiles, "
                        f"not the {len(added)} added")
    held = []
    for index, group, profile in added:
        values = {}
        for item in group:
            if item.kind != "values":
                continue
            got = [[int(x) for x in v] for v in profile.get_shape_input(item.name)]
            if got != [list(item.min), list(item.opt), list(item.max)]:
                raise DvitError(f"TensorRT holds {item.name} = {got} in optimization profile {index}, not the "
                                f"{[list(item.min), list(item.opt), list(item.max)]} set")
            values[item.name] = got
        held.append({"index": int(index), "keep_ratio": group[0].keep_ratio, "values": values})
    return held


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


def rtx_int8_hint(errors: list[str]) -> str:
    """TensorRT-RTX's parser refuses a DequantizeLinear of int32 data (ORT's quantized biases)."""
    if any("Int32" in e and "DequantizeLinear" in e for e in errors):
        return (". TensorRT-RTX dequantizes FP8/FP4/Int4/Int8/UInt8 only: quantize without the biases "
                "(ORT quantize_static extra_options QuantizeBias=False; dvit quantize does)")
    return ""


def set_compute_capabilities(trt: Any, config: Any, capabilities: tuple[str, ...]) -> None:
    """TensorRT-RTX: the compute capabilities the AOT engine is compiled for (default: its own set)."""
    config.num_compute_capabilities = len(capabilities)
    for index, value in enumerate(capabilities):
        member = getattr(trt.ComputeCapability, RTX_COMPUTE_CAPABILITIES[value])
        if not config.set_compute_capability(member, index):
            raise DvitError(f"TensorRT-RTX {trt.__version__} refused compute capability {value}")


_TRACE_THROUGH = ("SHUFFLE", "ELEMENTWISE", "IDENTITY", "CAST", "CONCATENATION", "UNARY", "SLICE")


def _name(value: Any) -> str:
    return str(value).split(".")[-1]


def _constant_value(trt: Any, tensor: str, producers: dict[str, Any]) -> int | None:
    """The value of a single-value tensor made from a CONSTANT layer (a TopK's K), through the
    reshapes and casts the parser adds; None when it is computed (a --dynamic-keep K)."""
    layer = producers.get(tensor)
    while layer is not None and _name(layer.type) in ("SHUFFLE", "CAST", "SQUEEZE", "UNSQUEEZE", "IDENTITY"):
        source = layer.get_input(0)
        layer = producers.get(source.name) if source is not None else None
    if layer is None or _name(layer.type) != "CONSTANT":
        return None
    layer.__class__ = trt.IConstantLayer
    import numpy as np

    values = np.asarray(layer.weights).reshape(-1)  # the bindings give Weights as a numpy array
    return int(values[0]) if values.size == 1 else None


def describe_network(trt: Any, network: Any) -> dict[str, Any]:
    """A parsed network's I/O (as ``describe_io`` gives an engine's) and its token-pruning structure:
    each TopK layer with its K and the Gather layers its indices feed (through shuffles, casts and
    element-wise index arithmetic), and the layer counts by type."""
    io = []
    for mode, count, get in (("input", network.num_inputs, network.get_input),
                             ("output", network.num_outputs, network.get_output)):
        for i in range(count):
            tensor = get(i)
            shape_tensor = bool(tensor.is_shape_tensor)
            io.append({"name": tensor.name, "mode": mode, "dtype": _name(tensor.dtype).lower(),
                       "shape": [int(d) for d in tensor.shape], "shape_tensor": shape_tensor,
                       "location": "host" if shape_tensor else "device"})
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    consumers: dict[str, list[Any]] = {}
    for layer in layers:
        for j in range(layer.num_inputs):
            tensor = layer.get_input(j)
            if tensor is not None:
                consumers.setdefault(tensor.name, []).append((layer, j))
    producers = {layer.get_output(k).name: layer for layer in layers for k in range(layer.num_outputs)}
    counts: dict[str, int] = {}
    for layer in layers:
        counts[_name(layer.type)] = counts.get(_name(layer.type), 0) + 1
    topk = []
    for layer in layers:
        if _name(layer.type) != "TOPK":
            continue
        gathers, seen, frontier = [], set(), [layer.get_output(1).name]
        while frontier:
            tensor = frontier.pop()
            for consumer, slot in consumers.get(tensor, []):
                if consumer.name in seen:
                    continue
                seen.add(consumer.name)
                kind = _name(consumer.type)
                if kind == "GATHER" and slot == 1:
                    gathers.append(consumer.name)
                elif kind in _TRACE_THROUGH:
                    frontier.extend(consumer.get_output(k).name for k in range(consumer.num_outputs))
        k_input = layer.get_input(1) if layer.num_inputs > 1 else None
        if k_input is None:
            layer.__class__ = trt.ITopKLayer  # the bindings' documented downcast, for .k
            k = int(layer.k)
        else:  # the parser passes K as a tensor: a constant one has a value, a computed one has none
            k = _constant_value(trt, k_input.name, producers)
        topk.append({"name": layer.name, "k": k, "k_from_tensor": k_input is not None,
                     "gathers": sorted(gathers)})
    return {"io": io, "layers": len(layers), "layer_counts": dict(sorted(counts.items())), "topk": topk}
