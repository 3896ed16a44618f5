"""CPU classes and the int8 recipe each gets: fake flag sets for every class, so the choice is tested
on whatever CPU the suite runs on (AVX2-only, AVX-512/VNNI, AMX ...), never measured numbers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dvit_deploy.helpers.cpu import (CPU_CLASSES, ORT_EXACT_INT8_CONFIG, SATURATING_CLASSES, classify, cpu_info, fake_cpu,
                             ort_int8_session_config, parse_cpuinfo)
from dvit_deploy.helpers.errors import BadInput
from dvit_deploy.jobs.quantize import CPU_RECIPES, RECIPES, select_recipe

# /proc/cpuinfo flags of the three CPUs seen on the project's machines (abridged to what matters).
EPYC_AVX2 = {"sse4_1", "sse4_2", "fma", "avx", "avx2", "bmi2", "sha_ni", "vaes"}
EPYC_AVX512_VNNI = EPYC_AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}
XEON_AMX = EPYC_AVX512_VNNI | {"amx_tile", "amx_bf16", "amx_int8", "avx_vnni"}

CLASSES = [
    (EPYC_AVX2, "x86_64", "avx2", "s8s8-reduce-range"),
    (EPYC_AVX2 | {"avx512f", "avx512bw"}, "x86_64", "avx512", "s8s8-reduce-range"),
    (EPYC_AVX512_VNNI, "x86_64", "avx512-vnni", "s8s8"),
    (EPYC_AVX2 | {"avx_vnni"}, "x86_64", "avx-vnni", "s8s8"),
    (XEON_AMX, "x86_64", "amx", "s8s8"),
    ({"sse4_1"}, "x86_64", "x86-sse", "s8s8-reduce-range"),
    ({"asimd", "asimddp", "i8mm"}, "aarch64", "arm64", "s8s8"),
    (set(), "riscv64", "other", "s8s8"),
]


@pytest.mark.parametrize("flags, machine, cls, recipe", CLASSES, ids=[c[2] for c in CLASSES])
def test_class_and_cpu_recipe_for_every_class(flags, machine, cls, recipe):
    cpu = fake_cpu(flags, machine)
    assert classify(flags, machine) == cpu.cpu_class == cls
    choice = select_recipe("cpu", cpu)
    assert choice.recipe.name == recipe and choice.chosen_by == "auto" and choice.reason == CPU_RECIPES[cls][1]
    # 7-bit weights exactly where the int8 kernels sum pairs in saturating int16
    assert choice.recipe.reduce_range == (cls in SATURATING_CLASSES) == cpu.int8_saturates
    assert choice.recipe.weight_range == ((-64, 64) if cpu.int8_saturates else (-127, 127))
    # TensorRT accumulates in int32 on every GPU: full range whatever CPU quantizes
    trt = select_recipe("tensorrt", cpu)
    assert trt.recipe.name == "s8s8" and not trt.recipe.reduce_range
    assert choice.to_dict()["cpu_class"] == cls and choice.to_dict()["target"] == "cpu"


def test_every_class_has_a_recipe_and_says_whether_it_was_measured():
    assert set(CPU_RECIPES) == set(CPU_CLASSES)
    for cls, (name, why) in CPU_RECIPES.items():
        assert name in RECIPES
        assert why.startswith(("measured", "not measured")), cls
    assert CPU_RECIPES["avx2"][1].startswith("measured") and CPU_RECIPES["avx512-vnni"][1].startswith("measured")


@pytest.mark.parametrize("flags, machine, cls, recipe", CLASSES, ids=[c[2] for c in CLASSES])
def test_ort_exact_mode_only_for_full_range_weights_on_saturating_cpus(flags, machine, cls, recipe):
    cpu = fake_cpu(flags, machine)
    assert ort_int8_session_config(True, cpu) == {}
    assert ort_int8_session_config(False, cpu) == (ORT_EXACT_INT8_CONFIG if cls in SATURATING_CLASSES else {})
    # the CPU recipe never needs the slow exact mode on its own class
    assert ort_int8_session_config(RECIPES[recipe].reduce_range, cpu) == {}


def test_recipe_override_and_bad_names():
    cpu = fake_cpu(EPYC_AVX2)
    forced = select_recipe("cpu", cpu, override="s8s8")
    assert forced.recipe.name == "s8s8" and forced.chosen_by == "--recipe"
    assert "7-bit" in select_recipe("tensorrt", cpu, override="s8s8-reduce-range").reason
    assert select_recipe("cpu", cpu, override="auto").recipe.name == "s8s8-reduce-range"
    with pytest.raises(BadInput, match="--for must be one of cpu, tensorrt"):
        select_recipe("gpu", cpu)
    with pytest.raises(BadInput, match="--recipe must be auto or one of"):
        select_recipe("cpu", cpu, override="u8u8")


def test_parse_cpuinfo_x86_and_arm():
    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_1 avx2 fma\n"
    assert parse_cpuinfo(x86) == ("AMD EPYC 7B13", frozenset({"fpu", "sse4_1", "avx2", "fma"}))
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm bf16\nCPU implementer\t: 0x41\n"
    model, flags = parse_cpuinfo(arm)
    assert flags == {"fp", "asimd", "asimddp", "i8mm", "bf16"}
    assert fake_cpu(flags, "aarch64").bf16_native


def test_this_machine_is_classified():
    info = cpu_info()
    assert info.cpu_class in CPU_CLASSES
    record = info.to_dict()
    assert record["class"] == info.cpu_class and set(record["flags"]) >= {"avx2", "avx512_vnni", "amx_int8"}
    assert info.cpu_class in info.summary()


def _qdq_matmul(max_code: int) -> onnx.ModelProto:
    """x @ DQ(w) with int8 weight codes whose largest |value| is max_code."""
    codes = np.zeros((8, 4), np.int8)
    codes[0, :] = max_code
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], axis=1, name="w_dq"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[numpy_helper.from_array(codes, "w_q"),
                     numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
                     numpy_helper.from_array(np.zeros(4, np.int8), "w_zp")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("max_code, warned", [(63, True), (64, True), (127, False)])
def test_doctor_warns_tensorrt_about_7_bit_cpu_weights(max_code, warned):
    from dvit_deploy.engines.doctor import TARGETS, diagnose_model

    report = diagnose_model(_qdq_matmul(max_code), TARGETS["trt-10"])
    messages = [f.message for f in report.findings if f.check == "Q/DQ" and f.severity == "warning"]
    assert any("7 bits" in m and "--for tensorrt" in m for m in messages) == warned


@pytest.mark.parametrize("target, override, expected", [
    ("cpu", None, "No int8 recipe dvit has agrees with PyTorch on this avx2 CPU"),
    ("cpu", "s8s8", "The recipe for this CPU class is s8s8-reduce-range: drop --recipe"),
    ("tensorrt", None, "exact int8 arithmetic"),
])
def test_failed_agreement_is_one_line_with_cpu_recipe_kernels_and_advice(target, override, expected):
    from dvit_deploy.helpers.compare import Tolerance, compare
    from dvit_deploy.jobs.quantize.int8_check import QuantizeCheck
    from dvit_deploy.jobs.quantize.core import failure_line

    choice = select_recipe(target, fake_cpu(EPYC_AVX2), override=override)
    ref = np.eye(4, dtype=np.float32)[[0, 1, 2, 3] * 4] * 5
    check = QuantizeCheck(execution={"kernels": "60 MatMulIntegerToFloat int8"})
    check.comparison = compare(ref, ref[:, ::-1].copy(), Tolerance.for_precision("int8"))
    check.failures = list(check.comparison.failures)
    assert check.failures
    line = failure_line(choice, check)
    assert "\n" not in line and line.startswith(f"int8 check failed: recipe {choice.recipe.name} on this avx2 CPU")
    assert "onnxruntime ran 60 MatMulIntegerToFloat int8" in line and expected in line
