"""Which CPU this is, for reduced precision: its int8/bf16 instructions and a class name.

Torch-free and import-light (bottom layer). The class decides two things elsewhere:

* whether x86 int8 GEMM kernels can **saturate**. Without VNNI, ONNX Runtime (MLAS) and
  OpenVINO (oneDNN) multiply u8 × s8 with ``vpmaddubsw``, which adds each pair of products into a
  *saturating int16*: 2 · 255 · 127 = 64 770 does not fit, so large activations times large
  weights clip. VNNI (``vpdpbusd``) and AMX accumulate in int32 and do not. Quantization recipes
  (``quantize.recipe``) and ONNX Runtime sessions (``runtime.ort_runner``) act on it;
* whether bf16 has hardware support (AVX512_BF16 or AMX-BF16), else runtimes emulate or fall back.

Flags come from /proc/cpuinfo (Linux); elsewhere from numpy's own CPU dispatch table, which is
portable but names feature groups (``AVX512_CLX`` = AVX-512 with VNNI) and has no AMX entry, so
AMX is only seen on Linux.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

# The flags that matter for int8/bf16 speed and correctness, by their /proc/cpuinfo names.
CPU_FLAGS = ("sse4_1", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "asimddp", "i8mm", "bf16")

# Class names, best int8 hardware first. "x86-sse" and "other" are not expected on CI machines.
CPU_CLASSES = ("amx", "avx512-vnni", "avx-vnni", "avx512", "avx2", "x86-sse", "arm64", "other")
# x86 classes whose int8 u8×s8 GEMM sums pairs in saturating int16 (no VNNI, no AMX).
SATURATING_CLASSES = frozenset({"avx512", "avx2", "x86-sse"})

# numpy's dispatch names -> the cpuinfo flags they imply (fallback off Linux).
_NUMPY_FEATURES = {
    "SSE41": ("sse4_1",), "AVX2": ("avx2",), "AVX512F": ("avx512f",), "AVX512_SKX": ("avx512f", "avx512bw"),
    "AVX512_CLX": ("avx512_vnni",), "AVX512_CNL": (), "AVX512_ICL": ("avx512_vnni",),
    "AVX512_SPR": ("avx512_bf16",), "ASIMDDP": ("asimddp",), "ASIMDHP": (),
}


@dataclass(frozen=True)
class CpuInfo:
    """What this CPU can do for int8/bf16, and where that was read from."""

    model: str
    machine: str
    flags: frozenset[str] = field(default_factory=frozenset)
    source: str = "/proc/cpuinfo"

    @property
    def cpu_class(self) -> str:
        return classify(self.flags, self.machine)

    @property
    def int8_saturates(self) -> bool:
        """True where x86 u8×s8 int8 GEMMs can clip in int16 (no VNNI/AMX)."""
        return self.cpu_class in SATURATING_CLASSES

    @property
    def bf16_native(self) -> bool:
        return bool({"avx512_bf16", "amx_bf16"} & self.flags) or (self.machine == "arm64" and "bf16" in self.flags)

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.cpu_class, "model": self.model, "machine": self.machine,
                "flags": {f: f in self.flags for f in CPU_FLAGS}, "int8_saturates": self.int8_saturates,
                "bf16_native": self.bf16_native, "source": self.source}

    def summary(self) -> str:
        """One line for logs: 'avx2 (AMD EPYC 7B13; avx2, no VNNI/AMX: int8 u8×s8 kernels can saturate)'."""
        present = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
                   if f in self.flags]
        extra = "int8 u8×s8 kernels can saturate" if self.int8_saturates else "int8 accumulates in int32"
        return f"{self.cpu_class} ({self.model}; {', '.join(present) or 'no AVX2'}; {extra})"


def classify(flags: Iterable[str], machine: str = "x86_64") -> str:
    """The class name for a set of /proc/cpuinfo flags (see CPU_CLASSES)."""
    flags = set(flags)
    machine = _machine(machine)
    if machine == "arm64":
        return "arm64"
    if machine != "x86_64":
        return "other"
    if {"amx_int8", "amx_bf16"} & flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "x86-sse"


def _machine(name: str) -> str:
    name = (name or "").lower()
    if name in ("x86_64", "amd64", "x64", "i686", "i386"):
        return "x86_64"
    if name in ("aarch64", "arm64"):
        return "arm64"
    return name or "unknown"


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo text (x86 'flags', ARM 'Features')."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return model, flags


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CpuInfo (cached: the CPU does not change under a running process)."""
    machine = _machine(platform.machine())
    try:
        model, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
        if flags:
            return CpuInfo(model or platform.processor() or "unknown CPU", machine, flags)
    except OSError:
        pass
    flags = set()
    try:  # numpy's runtime dispatch table: available wherever numpy is
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as features
        except ImportError:  # numpy < 2
            from numpy.core._multiarray_umath import __cpu_features__ as features
        for name, implied in _NUMPY_FEATURES.items():
            if features.get(name):
                flags.update(implied)
        source = "numpy __cpu_features__ (no /proc/cpuinfo; AMX not detectable)"
    except Exception:  # noqa: BLE001 - an unknown CPU is a valid answer
        source = "unknown (no /proc/cpuinfo, no numpy CPU table)"
    return CpuInfo(platform.processor() or "unknown CPU", machine, frozenset(flags), source)


def fake_cpu(flags: Iterable[str], machine: str = "x86_64", model: str = "test CPU") -> CpuInfo:
    """A CpuInfo for a flag set (tests and 'what would quantize pick on X')."""
    return CpuInfo(model, _machine(machine), frozenset(flags), "given")


# ONNX Runtime's own switch for the saturation (onnxruntime_session_options_config_keys.h,
# kOrtSessionOptionsAvx2PrecisionMode): on SSE4.1/AVX2/AVX-512 without VNNI it rewrites s8 weights
# to u8 and runs the slower, exact u8u8 kernels. No effect on VNNI/AMX CPUs.
ORT_EXACT_INT8_CONFIG = {"session.x64quantprecision": "1"}


def ort_int8_session_config(reduce_range: bool, cpu: CpuInfo | None = None) -> dict[str, str]:
    """Session config entries ONNX Runtime needs to run an int8 Q/DQ graph without int16 saturation.

    Full-range weights on a saturating CPU: the exact u8u8 mode. 7-bit weights (reduce_range) cannot
    saturate, and VNNI/AMX CPUs accumulate in int32: nothing to set.
    """
    cpu = cpu or cpu_info()
    return dict(ORT_EXACT_INT8_CONFIG) if cpu.int8_saturates and not reduce_range else {}
