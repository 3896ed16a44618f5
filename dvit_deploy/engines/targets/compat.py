"""Hardware compatibility, engine names, and whether a TensorRT engine may be deserialized here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

from ...artifact.manifest import EngineManifest
from ...artifact.store import Artifact
from ...helpers.errors import BadInput
from .flavours import engine_record
from .versions import parse_trt_version

HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
# dvit's names -> TensorRT's HardwareCompatibilityLevel members (TRT >= 8.6).
HARDWARE_COMPAT_LEVELS = MappingProxyType({"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"})
# The first TensorRT with each level (HardwareCompatibilityLevel members in NVIDIA's bindings:
# 10.3 has NONE and AMPERE_PLUS only; SAME_COMPUTE_CAPABILITY appears in 10.9).
HARDWARE_COMPAT_SINCE = MappingProxyType({"none": (8, 6), "ampere+": (8, 6), "same-cc": (10, 9)})
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


__all__ = ("AMPERE_CC", "HARDWARE_COMPAT", "HARDWARE_COMPAT_LEVELS", "HARDWARE_COMPAT_SINCE", "DeviceInfo",
           "compatibility_problem", "engine_file_name", "gpu_tag")
