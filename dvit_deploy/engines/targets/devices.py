"""Device targets (``dvit package --target``): where a bundle goes, its TensorRT release, the parser target
that release implies (opset limit), and the precision its engine ends up with."""

from __future__ import annotations

from dataclasses import dataclass

from ...helpers.errors import BadInput
from .flavours import build_flavour
from .parsers import PARSER_TARGETS, ParserTarget, parser_target_for
from .precision import PrecisionStrategy, precision_strategy
from .versions import release_of


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
                        release_of(tensorrt)[0] >= 11, trtexec, compute_capability)


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


__all__ = ("DEVICE_TARGETS", "DevicePrecision", "DeviceTarget", "device_precision", "devices_refusing_opset",
           "get_device_target", "parser_target_named")
