"""bench_zoo's int8 column: which candidates count as agreeing, the winner when one or none agrees, and the
runtime estimate with and without it (no timing is asserted; nothing is quantized here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_zoo  # noqa: E402
import zoo_int8  # noqa: E402


def test_int8_column_is_in_the_defaults_and_the_estimate():
    full = bench_zoo.parse_args([])
    assert "int8" in full.backends and full.agreement == 32 and not full.prepare_only
    assert bench_zoo.parse_args(["--quick"]).agreement == 8
    assert bench_zoo.parse_args(["--prepare-only"]).prepare_only
    with_int8 = bench_zoo.estimate(full)
    without = bench_zoo.estimate(bench_zoo.parse_args(["--backends", "onnxruntime,openvino"]))
    assert with_int8["measure_s"] > without["measure_s"] > 0
    assert with_int8["exports_first_run_s"] > without["exports_first_run_s"]
    with pytest.raises(SystemExit):
        bench_zoo.parse_args(["--backends", "int4"])


def _fake_prepare(monkeypatch, verdicts: dict[tuple[str, str, str], bool], refused: set[tuple[str, str]] = frozenset()):
    """verdicts[(role, recipe, backend)] -> passed; refused: (role, recipe) that dvit quantize refused."""
    def quantized(fp32: Path, recipe: str):
        role = "dense" if "dense" in fp32.name else "sparse"
        if (role, recipe) in refused:
            return {"error": f"dvit quantize ({recipe}): top-1 55.6 % < 99 %"}
        return {"path": fp32.with_name(f"{fp32.stem}-int8-{recipe}.onnx")}

    def agreement(int8: Path, backend: str, samples: int):
        role = "dense" if "dense" in int8.name else "sparse"
        recipe = int8.stem.split("-int8-")[1]
        passed = verdicts.get((role, recipe, backend), False)
        return {"passed": passed, "status": "passed" if passed else "failed",
                "failures": [] if passed else ["mean kept-set Jaccard 0.90 < 0.95"]}

    monkeypatch.setattr(zoo_int8, "ensure_quantized", quantized)
    monkeypatch.setattr(zoo_int8, "agreement", agreement)
    paths = {"dense": Path("m-dense-seed0.onnx"), "sparse": Path("m-r0.7-seed0.onnx")}
    return zoo_int8.prepare(paths, 8, log=lambda line: None)


def test_a_candidate_agrees_only_when_sparse_and_dense_both_pass(monkeypatch):
    found = _fake_prepare(monkeypatch, {("sparse", "s8s8", "openvino"): True, ("dense", "s8s8", "openvino"): True,
                                        ("sparse", "s8s8", "onnxruntime"): True},
                          refused={("dense", "s8s8-reduce-range")})
    verdict = {(c["recipe"], c["backend"]): c["agrees"] for c in found}
    assert verdict == {("s8s8", "onnxruntime"): False, ("s8s8", "openvino"): True,
                       ("s8s8-reduce-range", "onnxruntime"): False, ("s8s8-reduce-range", "openvino"): False}
    ort = next(c for c in found if (c["recipe"], c["backend"]) == ("s8s8", "onnxruntime"))
    assert ort["why_not"].startswith("dense: mean kept-set Jaccard")
    refused = next(c for c in found if c["recipe"] == "s8s8-reduce-range")
    assert "dense: dvit quantize (s8s8-reduce-range): top-1 55.6 %" in refused["why_not"]
    # one agreeing candidate wins without a screening round; none agreeing gives no winner
    best = zoo_int8.screen(found, 16, None, None, None)
    assert (best["recipe"], best["backend"]) == ("s8s8", "openvino")
    assert zoo_int8.screen([dict(c, agrees=False) for c in found], 16, None, None, None) is None


def test_a_model_where_no_int8_agrees_gets_rows_that_say_so(monkeypatch):
    found = _fake_prepare(monkeypatch, {})
    args = bench_zoo.parse_args(["--models", "deit-256", "--batches", "1,16"])
    report = {"rows": [], "skipped": []}
    bench_zoo.measure_int8("deit-256", found, args, report)
    assert [r["batch"] for r in report["rows"]] == [1, 16]
    assert all(r["none_agrees"] and r["backend"] == "int8" and r["ratio"]["median"] is None for r in report["rows"])
    assert set(report["rows"][0]["why_not"]) == {"s8s8/onnxruntime", "s8s8/openvino", "s8s8-reduce-range/onnxruntime",
                                                 "s8s8-reduce-range/openvino"}


def test_int8_recipes_choice_all_auto_list_and_unknown():
    from dvit_deploy.helpers import cpu as cpu_mod
    from dvit_deploy.jobs.quantize import CPU_RECIPES

    assert zoo_int8.recipes_for("all") == zoo_int8.RECIPES
    assert zoo_int8.recipes_for("s8s8-reduce-range") == ("s8s8-reduce-range",)
    assert zoo_int8.recipes_for("auto") == (CPU_RECIPES[cpu_mod.cpu_info().cpu_class][0],)
    assert zoo_int8.candidates(("s8s8",)) == [("s8s8", "onnxruntime"), ("s8s8", "openvino")]
    with pytest.raises(ValueError, match="unknown int8 recipe"):
        zoo_int8.recipes_for("s4")
    assert zoo_int8.recipes_for("s8s8,s8s8+predictor") == ("s8s8", "s8s8+predictor")
    with pytest.raises(ValueError, match="unknown int8 recipe"):
        zoo_int8.recipes_for("s4+predictor")
    with pytest.raises(SystemExit):
        bench_zoo.parse_args(["--int8-recipes", "s4"])
    one = bench_zoo.estimate(bench_zoo.parse_args(["--models", "deit-s", "--int8-recipes", "s8s8"]))
    both = bench_zoo.estimate(bench_zoo.parse_args(["--models", "deit-s"]))
    assert one["exports_first_run_s"] < both["exports_first_run_s"]
    assert one["measure_s"] < both["measure_s"]


def test_predictor_recipe_quantizes_the_predictors_too(tmp_path):
    """``<recipe>+predictor``: dvit quantize --quantize-predictor, in a file of its own beside the fp32 one."""
    from bench_cpu import ensure_export
    from bench_limits import ensure_int8

    from dvit_deploy.helpers.fileio import manifest_path, read_json

    fp32 = ensure_export(tmp_path, "tiny-convnext", 0.7, 0)
    plain, quantized = ensure_int8(fp32, "s8s8-reduce-range"), ensure_int8(fp32, "s8s8-reduce-range+predictor")
    assert plain.name == "tiny-convnext-r0.7-seed0-int8-s8s8-reduce-range.onnx"
    assert quantized.name == "tiny-convnext-r0.7-seed0-int8-s8s8-reduce-range-predictor.onnx"
    excluded = {p: read_json(manifest_path(p))["quantization"]["excluded"] for p in (plain, quantized)}
    assert excluded[plain]["predictor_subgraph"] is True and excluded[quantized]["predictor_subgraph"] is False
    assert len(excluded[quantized]["nodes"]) < len(excluded[plain]["nodes"])
    assert ensure_int8(fp32, "s8s8-reduce-range+predictor") == quantized  # reused, not made again
    dense = ensure_export(tmp_path, "tiny-convnext", None, 0)  # no predictors: the plain file serves
    assert ensure_int8(dense, "s8s8-reduce-range+predictor") == ensure_int8(dense, "s8s8-reduce-range")
