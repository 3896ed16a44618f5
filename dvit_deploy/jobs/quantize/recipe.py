"""Which INT8 recipe ``dvit quantize`` writes, per target (CPU or TensorRT) and per CPU class.

Two recipes, both TensorRT-legal Q/DQ (signed int8, symmetric, zero points 0, per-channel weights):

* ``s8s8``: weights use the full int8 range [-127, 127]. What TensorRT's explicit quantization
  is built for, and correct on CPUs whose int8 GEMMs accumulate in int32 (VNNI, AMX, ARM dot
  product).
* ``s8s8-reduce-range``: weights in 7 bits, [-64, 64] (``quantize_static(reduce_range=True)``). On
  x86 CPUs without VNNI, ONNX Runtime and OpenVINO compute u8 × s8 with ``vpmaddubsw``, which sums
  each pair of products into a saturating int16; with |w| ≤ 64 a pair is at most 2 · 255 · 64 =
  32 640 and cannot clip. It costs one bit of weight precision. TensorRT reads the file fine but
  then also runs 7-bit weights, which it does not need (``dvit build --int8`` warns).

Measured (DeiT-S/0.7, seeded weights, the quantize check: 32 inputs, 27 with reference margin ≥ 0.1;
onnxruntime 1.32.0, openvino 2026.4.1; ``docs/quantization.md`` has the table):

* AVX2-only AMD EPYC (Zen 3), this project's machine: ``s8s8`` fails on ONNX Runtime (top-1 55.6 %,
  kept-set Jaccard 0.877) and OpenVINO (48.1 %, 0.856); ``s8s8-reduce-range`` passes on both (100 %,
  0.966 / 0.967). u8 asymmetric activations with s8 weights also fail (70.4 %, 0.898: the same
  saturation); u8u8 passes (100 %, 0.952) but is not TensorRT-legal; the full-range file with ONNX
  Runtime's ``session.x64quantprecision=1`` (exact u8u8 kernels) passes (100 %, 0.962).
* AVX-512 VNNI AMD EPYC (an earlier session, README "reduced precision" table): ``s8s8`` passes,
  top-1 99.4 % (167/168), Jaccard 0.963 (ORT) / 0.964 (OpenVINO).

AMX, AVX-VNNI, AVX-512 without VNNI and ARM were not measured: their rows follow from the
instruction set (int32 accumulation or not) and are marked so in ``CPU_RECIPES``. ``--recipe``
overrides the choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from ...helpers.cpu import CPU_CLASSES, CpuInfo, cpu_info
from ...helpers.defaults import QUANTIZE_TARGET
from ...helpers.errors import BadInput

if TYPE_CHECKING:
    from .int8_check import QuantizeCheck

TARGETS = ("cpu", "tensorrt")
DEFAULT_TARGET = QUANTIZE_TARGET


@dataclass(frozen=True)
class Recipe:
    name: str
    reduce_range: bool
    summary: str

    @property
    def weight_range(self) -> tuple[int, int]:
        return (-64, 64) if self.reduce_range else (-127, 127)

    @property
    def weights(self) -> str:
        lo, hi = self.weight_range
        return f"int8 symmetric per-channel, range [{lo}, {hi}]"

    @property
    def activations(self) -> str:
        return "int8 symmetric per-tensor"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reduce_range": self.reduce_range, "activations": self.activations,
                "weights": self.weights, "summary": self.summary}


RECIPES: Mapping[str, Recipe] = MappingProxyType({
    "s8s8": Recipe("s8s8", False, "int8 activations and full-range int8 weights (TensorRT's recipe)"),
    "s8s8-reduce-range": Recipe("s8s8-reduce-range", True,
                                "int8 activations, 7-bit weights [-64, 64]: no int16 saturation without VNNI"),
})

# CPU class -> (recipe for --for cpu, where the choice comes from). "measured" rows were run;
# the others follow from whether the class's int8 GEMM accumulates in int32.
CPU_RECIPES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "amx": ("s8s8", "not measured: AMX-INT8 tiles accumulate in int32 (no saturation)"),
    "avx512-vnni": ("s8s8", "measured on AMD EPYC AVX512-VNNI: top-1 99.4 %, Jaccard 0.963 (DeiT-S/0.7)"),
    "avx-vnni": ("s8s8", "not measured: AVX-VNNI vpdpbusd accumulates in int32"),
    "avx512": ("s8s8-reduce-range", "not measured: AVX-512 without VNNI uses vpmaddubsw (int16 saturation), "
                                    "as AVX2 does"),
    "avx2": ("s8s8-reduce-range", "measured on AMD EPYC AVX2: s8s8 top-1 55.6 % (fails), reduce-range 100 %, "
                                  "Jaccard 0.966 (DeiT-S/0.7)"),
    "x86-sse": ("s8s8-reduce-range", "not measured: SSE4.1 pmaddubsw saturates like AVX2"),
    "arm64": ("s8s8", "not measured: ARM sdot/smmla accumulate in int32"),
    "other": ("s8s8", "not measured: no known int16-saturating int8 kernel"),
})
assert set(CPU_RECIPES) == set(CPU_CLASSES)


@dataclass(frozen=True)
class RecipeChoice:
    """The recipe picked for a target on a CPU, and why."""

    recipe: Recipe
    target: str
    cpu: CpuInfo
    chosen_by: str  # "auto" or "--recipe"
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.recipe.to_dict(), "target": self.target, "chosen_by": self.chosen_by, "reason": self.reason,
                "cpu_class": self.cpu.cpu_class}

    def line(self) -> str:
        """What ``dvit quantize`` prints: which path it took on which CPU."""
        return (f"recipe {self.recipe.name} for {self.target} on this {self.cpu.cpu_class} CPU "
                f"({self.chosen_by}: {self.reason})")


def select_recipe(target: str = DEFAULT_TARGET, cpu: CpuInfo | None = None, override: str | None = None) -> RecipeChoice:
    """The recipe for ``target`` ("cpu": correct and fast on this CPU class; "tensorrt": full range)."""
    if target not in TARGETS:
        raise BadInput(f"--for must be one of {', '.join(TARGETS)}, got '{target}'")
    cpu = cpu or cpu_info()
    if override is not None and override != "auto":
        if override not in RECIPES:
            raise BadInput(f"--recipe must be auto or one of {', '.join(RECIPES)}, got '{override}'")
        recipe = RECIPES[override]
        reason = "asked for"
        if target == "tensorrt" and recipe.reduce_range:
            reason += "; TensorRT then runs 7-bit weights it does not need"
        return RecipeChoice(recipe, target, cpu, "--recipe", reason)
    if target == "tensorrt":
        # TensorRT accumulates int8 in int32 on every GPU: full range, whatever this CPU is.
        return RecipeChoice(RECIPES["s8s8"], target, cpu, "auto",
                            "TensorRT accumulates in int32; full-range int8 weights")
    name, why = CPU_RECIPES[cpu.cpu_class]
    return RecipeChoice(RECIPES[name], target, cpu, "auto", why)


def check_session_config(choice: RecipeChoice) -> dict[str, str]:
    """How the check runs the graph on ONNX Runtime.

    ``--for cpu``: exactly as dvit's ORT runner will on this CPU (``cpu.ort_int8_session_config``).
    ``--for tensorrt``: TensorRT accumulates in int32; on a CPU whose kernels saturate, the check uses
    ORT's exact u8u8 kernels so that it judges the quantization, not this CPU's int16 overflow.
    """
    from ...helpers.cpu import ort_int8_session_config

    return ort_int8_session_config(choice.recipe.reduce_range, choice.cpu)


def failure_line(choice: RecipeChoice, check: "QuantizeCheck") -> str:
    """One line: what failed, on which CPU with which recipe and kernels, and what to do instead."""
    kernels = (check.execution or {}).get("kernels")
    where = (f"recipe {choice.recipe.name} on this {choice.cpu.cpu_class} CPU"
             + (f" (onnxruntime ran {kernels})" if kernels else ""))
    text = f"int8 check failed: {where}: " + "; ".join(check.failures)
    agreement = check.comparison is not None and check.comparison.failures
    if not agreement:
        return text
    if choice.chosen_by == "--recipe":
        auto = select_recipe(choice.target, choice.cpu)
        if auto.recipe.name != choice.recipe.name:
            return text + f". The recipe for this CPU class is {auto.recipe.name}: drop --recipe"
    if choice.target == "tensorrt":
        return (text + ". The check used exact int8 arithmetic (as TensorRT runs it) and counted near-tie flips as "
                "agreeing, so the quantization itself disagrees: try --calib DIR with real images or --method "
                "entropy, or build fp16")
    return (text + f". No int8 recipe dvit has agrees with PyTorch on this {choice.cpu.cpu_class} CPU for this model: "
            "keep fp32 here (validate/profile --backend openvino runs f32 fastest on CPU), or try --calib DIR with "
            "real images or --method entropy")
