"""Every TensorRT fact dvit relies on, in one table: no torch, no onnx, no TensorRT needed.

``doctor`` (parser targets), ``build`` (precision flags, hardware compatibility, engine names),
``ship`` (device targets, trtexec flags, engine names, version families) and the TensorRT runner
(may this engine load here?) all read this module, so a fact changes in one place.

* **Parser targets** (``dvit doctor --target``): which ONNX opsets a TensorRT ONNX parser reads and
  whether it imports the opset-23 ``Attention`` op (parser >= 10.14). Sources: onnx-tensorrt
  ``docs/operators.md`` (10.0 and 10.15 editions) and the TensorRT 11.x ONNX Opset Guide.
* **Device targets** (``dvit package --target``): where a bundle goes, its TensorRT release and
  the parser target that release implies (opset limit), strongly typed from TensorRT 11.
* **Precision**: how each precision is obtained per TensorRT major (``BuilderFlag`` names for
  ``dvit build``, the same decision spelled as trtexec flags for ``build_on_device.sh``).
* **Compatibility**: which TensorRT version, platform and GPU may deserialize an engine.
* **Build flavours** (``dvit build --target rtx``): TensorRT and TensorRT-RTX share one builder
  (``trt_build.py``); what differs (module, typing, flags, compute capabilities, timing cache,
  what needs a GPU) is a row of ``BUILD_FLAVOURS``, and where TensorRT-RTX's parser legitimately
  differs from TensorRT 10.x/11.x it is a field of its parser target (``rtx``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from ..artifact.manifest import EngineManifest
from ..artifact.store import Artifact, typed_manifest
from ..helpers.errors import BadInput

# --------------------------------------------------------------------------------------------
# Versions


def parse_trt_version(version: str) -> tuple[int, int, int]:
    """'10.3.0.30' -> (10, 3, 0): an installed or recorded TensorRT version (major.minor at least)."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not match:
        raise BadInput(f"cannot read a TensorRT version from '{version}'")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def _release(version: str) -> tuple[int, int]:
    """major.minor of a version or of a release name: '10.3.0.30' -> (10, 3); '10' (any 10.x) -> (10, 0)."""
    match = re.match(r"(\d+)(?:\.(\d+))?", str(version))
    if not match:
        raise BadInput(f"cannot read a TensorRT version from '{version}'")
    return int(match.group(1)), int(match.group(2) or 0)


def same_tensorrt_release(version: str, release: str) -> bool:
    """Whether TensorRT ``version`` belongs to ``release``: '10.3.0.30' is in '10.3' and in '10'.

    A device target names a release (a family of versions); an engine is only meant for the
    release that built it. Whether it really loads is ``compatibility_problem``'s exact rule.
    """
    return version == release or version.startswith(release + ".")


# --------------------------------------------------------------------------------------------
# Parser targets (dvit doctor)

TRT10_OLDEST_MAX_OPSET = 20  # the 10.0 edition of operators.md: what every 10.0-10.3 parser reads
# Listed as supported by operators.md but refused by TensorRT-RTX 1.7's parser: NonZero and RoiAlign
# are plugin-backed (no plugin registry in TensorRT-RTX), DeformConv is not in its importer
# (OnnxParser.supports_operator says False).
RTX_LACKS_OPS = frozenset({"NonZero", "RoiAlign", "DeformConv"})


@dataclass(frozen=True)
class ParserTarget:
    """A TensorRT ONNX parser as ``dvit doctor`` checks against it (the report's ``target``)."""

    name: str
    description: str
    min_opset: int
    max_opset: int
    attention_op: bool  # ONNX Attention (opset 23) needs parser >= 10.14
    source: str
    # Ops the operator table lists as supported that this parser still refuses (TensorRT-RTX).
    lacks_ops: frozenset[str] = frozenset()
    # Whether a DequantizeLinear may read int32 data (ORT's quantized biases). TensorRT 10/11:
    # a warning (TensorRT quantizes weights and activations only); TensorRT-RTX's parser refuses it.
    int32_dequantize: bool = True
    enforces_opset: bool = True  # False: the parser itself does not refuse an opset (doctor still does)


PARSER_TARGETS: dict[str, ParserTarget] = {
    t.name: t
    for t in (
        ParserTarget("trt-10.3", "TensorRT 10.3 (JetPack 6, Jetson Orin)", 9, TRT10_OLDEST_MAX_OPSET, False,
                     "onnx-tensorrt operators.md (10.x table; opset range of the 10.0 edition)"),
        ParserTarget("trt-10", "TensorRT 10.x, newest (10.15)", 9, 24, True,
                     "onnx-tensorrt operators.md, TensorRT 10.15 edition (opset 9-24)"),
        ParserTarget("trt-11", "TensorRT 11.x", 9, 25, True,
                     "NVIDIA ONNX Opset Guide for TensorRT 11.x (max opset 25) + operators.md"),
        # TensorRT-RTX 1.7: its parser is onnx-tensorrt's, but TensorRT-RTX ships no plugin library,
        # so ops the parser imports through a plugin fail ("plugin was not found in the plugin
        # registry"); measured with the real tensorrt_rtx 1.7.1.116 parser (tests/test_rtx.py).
        # It parses any opset a node claims (even 30), so the opset range is TensorRT 11's
        # documented one, kept by doctor, not by the parser.
        ParserTarget("rtx", "TensorRT-RTX 1.7 (RTX GPUs; engines built ahead of time, no GPU needed)", 9, 25, True,
                     "TensorRT 11.x ONNX Opset Guide + the real tensorrt_rtx 1.7.1 parser",
                     lacks_ops=RTX_LACKS_OPS, int32_dequantize=False, enforces_opset=False),
    )
}
DEFAULT_PARSER_TARGET = "trt-10"


def parser_target_for(trt_version: str | None) -> str:
    """The parser target of a TensorRT version, by its major.minor (not just the major).

    10.0-10.3 (JetPack 6) read opsets <= 20 and have no Attention: ``trt-10.3``; later 10.x:
    ``trt-10``; 11.x and later: ``trt-11``. No version (TensorRT not installed): the default.
    """
    if trt_version is None:
        return DEFAULT_PARSER_TARGET
    major, minor = _release(trt_version)
    if major >= 11:
        return "trt-11"
    if (major, minor) <= (10, 3):
        return "trt-10.3"
    return "trt-10"


# --------------------------------------------------------------------------------------------
# Device targets (dvit package)


@dataclass(frozen=True)
class DeviceTarget:
    """A device a bundle is made for (its fields are written into ``bundle.json`` as they are)."""

    name: str
    description: str
    arch: str  # "aarch64" or "x86_64"
    tensorrt: str  # the TensorRT release the target runs ("10.3": 10.3.x; "10": any 10.x)
    max_opset: int  # highest ONNX opset its TensorRT parser accepts
    strongly_typed: bool  # TensorRT 11: no --fp16 builder flag; precision comes from the graph
    trtexec: str  # where trtexec usually lives on the target
    compute_capability: str | None = None  # fixed for an embedded GPU, None for discrete GPUs
    flavour: str = "tensorrt"  # "rtx": ships TensorRT-RTX engines built ahead of time (no device build)

    @property
    def tensorrt_major(self) -> int:
        return int(self.tensorrt.split(".")[0])

    @property
    def parser_target(self) -> ParserTarget:
        return PARSER_TARGETS["rtx" if self.flavour == "rtx" else parser_target_for(self.tensorrt)]


def _device(name: str, description: str, arch: str, tensorrt: str, trtexec: str,
            compute_capability: str | None = None) -> DeviceTarget:
    """A device target whose opset limit and typing follow from its TensorRT release: "10" means
    any 10.x, so the oldest 10.x parser's limit applies."""
    return DeviceTarget(name, description, arch, tensorrt, PARSER_TARGETS[parser_target_for(tensorrt)].max_opset,
                        _release(tensorrt)[0] >= 11, trtexec, compute_capability)


DEVICE_TARGETS: dict[str, DeviceTarget] = {
    t.name: t
    for t in (
        _device("jetson-orin", "Jetson AGX/NX/Nano Orin, JetPack 6 (TensorRT 10.3)", "aarch64", "10.3",
                "/usr/src/tensorrt/bin/trtexec", "8.7"),
        _device("x86-trt10", "x86-64 server or workstation GPU with TensorRT 10.x", "x86_64", "10", "trtexec"),
        _device("x86-trt11", "x86-64 GPU with TensorRT 11.x (strongly typed builds only)", "x86_64", "11",
                "trtexec"),
        # TensorRT-RTX engines are built ahead of time anywhere (dvit build --target rtx) and shipped as
        # they are; the device JIT-compiles them on first run. Release "1.7": the engine's TensorRT-RTX.
        DeviceTarget("rtx", "RTX desktop, laptop or workstation GPU (sm 8.0-12.x; Linux or Windows) with "
                     "TensorRT-RTX 1.7", "x86_64", "1.7", 25, True, "tensorrt_rtx", None, "rtx"),
    )
}


def parser_target_named(name: str) -> ParserTarget:
    """A parser target by its name (``trt-10``) or by a device target's (``x86-trt10``: the parser its
    TensorRT release implies, the very limit ``dvit package`` enforces for that device)."""
    if name in PARSER_TARGETS:
        return PARSER_TARGETS[name]
    if name in DEVICE_TARGETS:
        return DEVICE_TARGETS[name].parser_target
    raise BadInput(f"unknown --target '{name}'; choose a TensorRT parser ({', '.join(PARSER_TARGETS)}) or a device "
                   f"target ({', '.join(DEVICE_TARGETS)})")


def devices_refusing_opset(opset: int) -> list[DeviceTarget]:
    """The device targets whose TensorRT parser cannot read ``opset`` (``dvit package`` refuses them)."""
    return [t for t in DEVICE_TARGETS.values() if opset > t.max_opset]


def get_device_target(name: str) -> DeviceTarget:
    try:
        return DEVICE_TARGETS[name]
    except KeyError:
        raise BadInput(f"unknown target '{name}'; known: {', '.join(DEVICE_TARGETS)}") from None


# --------------------------------------------------------------------------------------------
# Precision: builder flags (dvit build) and the same decision as trtexec flags (bundles)

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")  # int8: an explicitly quantized (Q/DQ) ONNX


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


# BuilderFlag name -> trtexec option. TF32 is on in trtexec unless --noTF32, so setting it is no flag.
TRTEXEC_SET_FLAGS: Mapping[str, str | None] = {"FP16": "--fp16", "BF16": "--bf16", "INT8": "--int8", "TF32": None}
TRTEXEC_CLEARED_FLAGS: Mapping[str, str] = {"TF32": "--noTF32"}


def trtexec_flags(strategy: PrecisionStrategy) -> list[str]:
    """The trtexec options that make the same build as ``strategy`` does through the builder API:
    precision flags, ``--noTF32``, then ``--stronglyTyped`` (documented in 11.x as the default,
    given anyway for clarity)."""
    args = [flag for name in strategy.set_flags if (flag := TRTEXEC_SET_FLAGS[name])]
    args += [TRTEXEC_CLEARED_FLAGS[name] for name in strategy.cleared_flags]
    if strategy.strongly_typed:
        args.append("--stronglyTyped")
    return args


# --------------------------------------------------------------------------------------------
# Build flavours: TensorRT and TensorRT-RTX through the one builder (trt_build.py)

# --compute-capability value -> tensorrt_rtx.ComputeCapability member (1.7.1: no Hopper 9.0, no
# Jetson Orin 8.7: TensorRT-RTX is for RTX desktop/workstation GPUs).
RTX_COMPUTE_CAPABILITIES: Mapping[str, str] = {"7.5": "SM75", "8.0": "SM80", "8.6": "SM86", "8.9": "SM89",
                                               "12.0": "SM120", "12.1": "SM121"}
# What an engine covers when none is asked for: NVIDIA's "CPU-Only AOT" page, "by default ... 8.0,
# 8.6, 8.9, 12.0, and later"; Turing (7.5) must be asked for.
RTX_DEFAULT_COMPUTE_CAPABILITIES = ("8.0", "8.6", "8.9", "12.0", "12.1")
# Turing (7.5) has no FP32 GEMM in TensorRT-RTX 1.7 ("Cannot compile operation 'node_MatMul_13' for
# Turing (SM75): FP32 GEMM is not supported", measured): every dvit graph keeps fp32 MatMuls (the
# fp16 graph keeps the score predictors fp32; an ORT Q/DQ graph leaves some MatMuls fp32 too, also
# refused, measured), so no dvit graph may target it.
RTX_NO_FP32_GEMM = ("7.5",)
RTX_ENGINE_MAGIC = b"vtrt"  # the first bytes of every TensorRT-RTX 1.7 engine file (measured)


@dataclass(frozen=True)
class BuildFlavour:
    """One TensorRT product as ``dvit build`` drives it (a row of ``BUILD_FLAVOURS``)."""

    name: str  # "tensorrt" | "rtx"
    product: str  # what messages call it
    module: str  # the Python module
    extra: str  # pip install "dvit-deploy[<extra>]"
    parser_target: str | None  # doctor target; None: from the installed TensorRT's version
    always_strongly_typed: bool  # False: TensorRT 10 is weakly typed unless asked (11 always is)
    needs_gpu_to_build: bool  # TensorRT: builds for the GPU it runs on; TensorRT-RTX: AOT, none needed
    needs_gpu_to_inspect: bool  # deserialize / get_engine_validity need a CUDA driver and a GPU
    compute_capabilities: Mapping[str, str]  # --compute-capability values it accepts (empty: not an option)
    default_compute_capabilities: tuple[str, ...]
    timing_cache_refusal: str | None  # why --timing-cache is refused; None: supported
    hardware_compat: bool  # --hardware-compat / --version-compatible apply
    engine_tag: str | None  # the engine name's <where>; None: the build GPU's tag
    engine_magic: bytes | None
    runtime_cache: bool  # engines JIT-compile on first run and keep a runtime cache file

    def precision_major(self, major: int) -> int:
        """The TensorRT major whose precision rules apply: TensorRT-RTX is typed like TensorRT 11."""
        return 11 if self.always_strongly_typed and major < 10 else major


BUILD_FLAVOURS: dict[str, BuildFlavour] = {
    f.name: f
    for f in (
        BuildFlavour("tensorrt", "TensorRT", "tensorrt", "tensorrt", None, False, True, False, {}, (), None, True,
                     None, None, False),
        BuildFlavour("rtx", "TensorRT-RTX", "tensorrt_rtx", "rtx", "rtx", True, False, True,
                     RTX_COMPUTE_CAPABILITIES, RTX_DEFAULT_COMPUTE_CAPABILITIES,
                     "TensorRT-RTX builds ahead of time without a GPU, and a timing cache makes that step query "
                     "for one (NVIDIA's release notes): build without --timing-cache", False, "rtx",
                     RTX_ENGINE_MAGIC, True),
    )
}


def build_flavour(name: str | None) -> BuildFlavour:
    try:
        return BUILD_FLAVOURS[name or "tensorrt"]
    except KeyError:
        raise BadInput(f"unknown build flavour '{name}'; known: {', '.join(BUILD_FLAVOURS)}") from None


@dataclass(frozen=True)
class DevicePrecision:
    """The engine a bundle's device target ends up with for a requested precision.

    ``built`` names the engine; ``strategy`` is how its precision is obtained (the trtexec flags of
    the device build, or, for TensorRT-RTX, how ``dvit build --target rtx`` made the shipped engine,
    typed like TensorRT 11); ``builds_on_device`` is False where engines ship as built (TensorRT-RTX).
    """

    built: str
    strategy: PrecisionStrategy
    builds_on_device: bool

    @property
    def label(self) -> str:
        """The device engine's precision in words (``int8 (fp16 outside the Q/DQ pairs)``)."""
        if not self.builds_on_device:  # the ONNX rides along for reference: the device runs the engines as built
            return f"{self.built} (no device build: TensorRT-RTX engines ship as built)"
        if self.built == "int8" and "FP16" in self.strategy.set_flags:
            return "int8 (fp16 outside the Q/DQ pairs)"
        return self.built


def device_precision(target: DeviceTarget, precision: str, *, quantized: bool) -> DevicePrecision:
    """The precision decision ``dvit build`` makes (``precision_strategy``), for a device target.

    A Q/DQ ONNX (``quantized``) builds int8 (on a weakly typed TensorRT 10 with ``precision`` fp16:
    FP16 fallback outside the Q/DQ pairs); a strongly typed target (TensorRT 11, TensorRT-RTX)
    builds the graph's own precision. Bundles build fp32, fp16 or bf16; any other value builds exact
    fp32. The target's flavour picks the precision rules (TensorRT-RTX 1.x is typed like TensorRT 11).
    """
    built = "int8" if quantized else "fp32" if target.strongly_typed else precision
    if quantized:
        strategy_precision = "int8"
    elif not target.strongly_typed and precision in ("fp16", "bf16"):
        strategy_precision = precision
    else:
        strategy_precision = "fp32"
    fallback = quantized and precision == "fp16" and not target.strongly_typed
    flavour = build_flavour(target.flavour)
    strategy = precision_strategy(strategy_precision, flavour.precision_major(target.tensorrt_major),
                                  fp16_fallback=fallback)
    return DevicePrecision(built, strategy, builds_on_device=flavour.needs_gpu_to_build)


def engine_record(engine: EngineManifest | Artifact) -> EngineManifest:
    """The typed engine manifest of an opened engine (or the manifest itself)."""
    return typed_manifest(engine, EngineManifest)


def compute_capability_list(flavour: BuildFlavour, requested: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The --compute-capability values, checked (``compute_capability_refusal``); empty when the option was not
    given (the builder's default set). Given but naming none (``--compute-capability ""``) is refused."""
    if requested is None or (isinstance(requested, (list, tuple)) and not requested):
        return ()
    if not flavour.compute_capabilities:
        raise BadInput(f"--compute-capability applies to TensorRT-RTX builds (--target rtx); {flavour.product} builds "
                       "for the GPU it runs on")
    values = []
    for item in requested:
        for value in str(item).replace(" ", "").split(","):
            if not value:
                continue
            value = value.lower().removeprefix("sm").replace("_", "")
            if "." not in value and value.isdigit() and len(value) >= 2:
                value = f"{value[:-1]}.{value[-1]}"  # sm86 / 86 -> 8.6
            refusal = compute_capability_refusal(flavour, value)
            if refusal is not None:
                raise BadInput(f"--compute-capability {item}: {refusal}")
            if value not in values:
                values.append(value)
    if not values:
        shown = ",".join(str(item) for item in requested)
        raise BadInput(f"--compute-capability '{shown}' names no compute capability: give a list such as 8.6,8.9, or "
                       f"leave the option out for {flavour.product}'s default set "
                       f"({', '.join(flavour.default_compute_capabilities)})")
    return tuple(values)


def compute_capability_refusal(flavour: BuildFlavour, value: str) -> str | None:
    """Why ``dvit build`` refuses to build for compute capability ``value`` ("8.6"), or None: the one rule, also
    applied to what an engine manifest claims (``dvit package``, ``dvit verify``)."""
    if value not in flavour.compute_capabilities:
        return (f"{flavour.product} builds for {', '.join(flavour.compute_capabilities)} "
                "(no Hopper 9.0 or Jetson Orin 8.7)")
    if flavour.name == "rtx" and value in RTX_NO_FP32_GEMM:
        return ("Turing: TensorRT-RTX has no FP32 GEMM there, and every dvit graph keeps fp32 MatMuls (the fp16 "
                "graph keeps the token predictors fp32, a Q/DQ graph its unquantized MatMuls); build for 8.0 and newer")
    return None


def engine_compute_capability_problem(engine: EngineManifest | Artifact) -> str | None:
    """One line when a TensorRT-RTX engine's manifest claims compute capabilities a build would refuse (a
    hand-edited manifest: ``["7.5"]``), else None. A TensorRT engine's is its build GPU's, not a choice."""
    record = engine_record(engine)
    if not record.is_rtx:
        return None
    flavour = build_flavour(record.flavour)
    for value in record.rtx_compute_capabilities:
        refusal = compute_capability_refusal(flavour, str(value))
        if refusal is not None:
            return (f"its manifest says it was built for compute capability {value}, which dvit build refuses "
                    f"({refusal})")
    return None


def rtx_compatibility_problem(engine: EngineManifest | Artifact, *, rtx_version: str,
                              compute_capability: tuple[int, int], gpu_name: str) -> str | None:
    """None when a TensorRT-RTX engine may load on this GPU, else one line saying why not.

    A TensorRT-RTX engine is built for a list of compute capabilities (AOT), not for one GPU, and
    is portable between Linux and Windows; it loads with the TensorRT-RTX version that built it.
    """
    record = engine_record(engine)
    built = record.tensorrt or "?"
    if built != rtx_version:
        return (f"engine was built with TensorRT-RTX {built}, this machine has TensorRT-RTX {rtx_version}: rebuild "
                "it with dvit build --target rtx (any machine, no GPU needed)")
    covers = list(record.rtx_compute_capabilities)
    here = f"{compute_capability[0]}.{compute_capability[1]}"
    if covers and here not in covers:
        return (f"engine was built for compute capability {', '.join(covers)}; this GPU {gpu_name} is sm {here}"
                + (": TensorRT-RTX has no target for it (RTX GPUs only: no Hopper, no Jetson)"
                   if here not in RTX_COMPUTE_CAPABILITIES else
                   f": rebuild with --compute-capability {here}"))
    return None


# --------------------------------------------------------------------------------------------
# Hardware compatibility and engine names

HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
# dvit's names -> TensorRT's HardwareCompatibilityLevel members (TRT >= 8.6).
HARDWARE_COMPAT_LEVELS = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
# The first TensorRT with each level (HardwareCompatibilityLevel members in NVIDIA's bindings:
# 10.3 has NONE and AMPERE_PLUS only; SAME_COMPUTE_CAPABILITY appears in 10.9).
HARDWARE_COMPAT_SINCE = {"none": (8, 6), "ampere+": (8, 6), "same-cc": (10, 9)}
AMPERE_CC = (8, 0)  # hardware-compat ampere+: any GPU with sm >= 8.0


def gpu_tag(gpu_name: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'rtx4090'; 'Orin (nvgpu)' -> 'orin'."""
    name = re.sub(r"\(.*?\)", "", gpu_name).lower()
    for noise in ("nvidia", "geforce", "tesla", "quadro", "graphics"):
        name = name.replace(noise, " ")
    tag = re.sub(r"[^a-z0-9]+", "", name)
    return tag or "gpu"


def engine_file_name(stem: str, where: str, precision: str) -> str:
    """``<onnx stem>-<where>-<precision>.engine``; ``where`` is a GPU tag (``dvit build``) or a
    device target's name (an engine a bundle builds on the device)."""
    return f"{stem}-{where}-{precision}.engine"


# --------------------------------------------------------------------------------------------
# May this engine be deserialized here?


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: tuple[int, int]
    platform: str | None = None  # platform.machine() of the host: x86_64, aarch64 (Jetson) ...


def _same_gpu_model(a: str, b: str) -> bool:
    return " ".join(str(a).lower().split()) == " ".join(str(b).lower().split())


def compatibility_problem(engine: EngineManifest | Artifact, *, trt_version: str, device: DeviceInfo) -> str | None:
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
    record = engine_record(engine)
    built_version = record.tensorrt or "?"
    built_cc = record.compute_capability_pair
    here = parse_trt_version(trt_version)
    try:
        built = parse_trt_version(built_version)
    except BadInput:
        return f"engine manifest has no readable TensorRT version ('{built_version}'); rebuild it with dvit build"
    if record.version_compatible:
        if built[0] != here[0] or here < built:
            return (f"engine was built with TensorRT {built_version} (version-compatible with {built_version} "
                    f"and later {built[0]}.x), this machine has TensorRT {trt_version}: rebuild it here with dvit build")
    elif built != here:
        return (f"engine was built with TensorRT {built_version}, this machine has TensorRT {trt_version}: "
                "rebuild it here with dvit build (or build with --version-compatible)")
    compat = record.hardware_compat or "none"
    cc = tuple(device.compute_capability)
    built_on = f"{record.gpu or '?'} (sm {'.'.join(map(str, built_cc)) or '?'})"
    built_platform = record.platform
    if built_platform and device.platform and built_platform != device.platform:
        return (f"engine was built on {built_platform} ({built_on}), this machine is {device.platform}: engines do "
                f"not move between platforms at any hardware-compat level; rebuild it here with dvit build")
    if compat == "ampere+":
        if cc < AMPERE_CC:
            return (f"engine was built for Ampere or newer (hardware-compat ampere+), this GPU {device.name} "
                    f"is sm {cc[0]}.{cc[1]}: rebuild it here with dvit build")
        return None
    if built_cc and cc != built_cc:
        return (f"engine was built for {built_on}, this GPU is {device.name} (sm {cc[0]}.{cc[1]}): "
                "rebuild it here with dvit build")
    if compat != "same-cc" and record.gpu and not _same_gpu_model(record.gpu, device.name):
        return (f"engine was built for {built_on}, this GPU is {device.name}: without --hardware-compat an engine "
                "is specific to the GPU model (same-cc allows any model of that compute capability, TensorRT "
                ">= 10.9); rebuild it here with dvit build")
    return None


__all__ = [
    "BUILD_FLAVOURS",
    "BuildFlavour",
    "RTX_COMPUTE_CAPABILITIES",
    "RTX_DEFAULT_COMPUTE_CAPABILITIES",
    "RTX_ENGINE_MAGIC",
    "RTX_NO_FP32_GEMM",
    "build_flavour",
    "compute_capability_list",
    "compute_capability_refusal",
    "engine_compute_capability_problem",
    "device_precision",
    "DevicePrecision",
    "engine_record",
    "rtx_compatibility_problem",
    "DEFAULT_PARSER_TARGET",
    "DEVICE_TARGETS",
    "HARDWARE_COMPAT",
    "HARDWARE_COMPAT_LEVELS",
    "HARDWARE_COMPAT_SINCE",
    "PARSER_TARGETS",
    "PRECISIONS",
    "DeviceInfo",
    "DeviceTarget",
    "ParserTarget",
    "PrecisionStrategy",
    "compatibility_problem",
    "engine_file_name",
    "get_device_target",
    "gpu_tag",
    "parse_trt_version",
    "parser_target_for",
    "precision_strategy",
    "same_tensorrt_release",
    "trtexec_flags",
]
