"""Build flavours: TensorRT and TensorRT-RTX through the one builder (``trt_build.py``).

What differs (module, typing, flags, compute capabilities, timing cache, what needs a GPU) is a row of
``BUILD_FLAVOURS``; the compute-capability rules and the TensorRT-RTX "may this engine load here?" rule live
beside it."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from ...artifact.manifest import EngineManifest
from ...artifact.store import Artifact, typed_manifest
from ...helpers.errors import BadInput

# --compute-capability value -> tensorrt_rtx.ComputeCapability member (1.7.1: no Hopper 9.0, no
# Jetson Orin 8.7: TensorRT-RTX is for RTX desktop/workstation GPUs).
RTX_COMPUTE_CAPABILITIES: Mapping[str, str] = MappingProxyType({"7.5": "SM75", "8.0": "SM80", "8.6": "SM86",
                                                                "8.9": "SM89", "12.0": "SM120", "12.1": "SM121"})
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


__all__ = ("BUILD_FLAVOURS", "RTX_COMPUTE_CAPABILITIES", "RTX_DEFAULT_COMPUTE_CAPABILITIES", "RTX_ENGINE_MAGIC",
           "RTX_NO_FP32_GEMM", "BuildFlavour", "build_flavour", "compute_capability_list", "compute_capability_refusal",
           "engine_compute_capability_problem", "engine_record", "rtx_compatibility_problem")
