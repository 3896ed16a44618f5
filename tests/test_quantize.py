"""`dvit quantize`: INT8 Q/DQ graphs, their manifest, the agreement-judged check, and bad inputs.

Assertions are on structure, records and agreement thresholds, never on exact int8 numbers or on
which token wins a near-tie: int8 kernels and float summation order differ between CPUs.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from dvit_deploy.cli import app
from dvit_deploy.helpers.compare import TOLERANCES, Tolerance, compare
from dvit_deploy.helpers.fileio import manifest_path, read_json, sha256_file

runner = CliRunner()


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory):
    """A tiny DeiT (token outputs, dynamic batch) in <tmp>/export/tiny.onnx."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    root = tmp_path_factory.mktemp("quantize")
    loaded = load_model(model_name="tiny-deit", keep_ratio=0.7)
    return export_onnx(loaded, root / "export" / "tiny.onnx", token_outputs=True, check_samples=2).path


@pytest.fixture(scope="module")
def quantized(fp32_export):
    from dvit_deploy.jobs.quantize import quantize_onnx

    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.jobs.quantize import QuantizeOptions

    return quantize_onnx(open_artifact(fp32_export), options=QuantizeOptions(method="minmax", calib_samples=8,
                                                                            check_samples=16))


def test_quantized_graph_is_qdq_with_pruning_structure_intact(quantized, fp32_export):
    assert quantized.path == fp32_export.with_name("tiny-int8.onnx")
    model = onnx.load(str(quantized.path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    assert ops.count("TopK") == 3
    from dvit_deploy.export.graph import check_pruning_structure
    from dvit_deploy.jobs.quantize import qdq_facts

    stages, problems = check_pruning_structure(model, [137, 96, 67])
    assert problems == [] and [s.k for s in stages] == [137, 96, 67]
    facts, qdq_problems = qdq_facts(model)
    assert qdq_problems == []
    assert facts["zero_points_all_zero"] and facts["per_channel_weights"] == facts["quantized_weights"] > 0
    # Every int8 zero point is 0 and every weight scale is a per-channel vector.
    from dvit_deploy.export.graph import constant_values

    consts = constant_values(model.graph)
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = consts[node.input[2]]
            assert zp.dtype == np.int8 and not zp.any()
    # Nothing that decides which tokens survive computes on quantized data.
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    recorded = quantized.manifest.to_json()["quantization"]["excluded"]  # as written
    excluded = set(recorded["nodes"])
    for node in model.graph.node:
        if node.name in excluded or node.op_type in ("TopK", "Softmax", "LayerNormalization"):
            assert not dq_out & set(node.input), node.name
    # 36: the export's light passes leave one Reshape per predictor that the full onnxscript rewriter fused.
    assert recorded["predictor_nodes_per_stage"] == [36, 36, 36]


def test_manifest_records_precision_quantization_and_derivation(quantized, fp32_export):
    manifest = read_json(manifest_path(quantized.path))
    source = read_json(manifest_path(fp32_export))
    assert manifest["artifact"] == "tiny-int8.onnx" and manifest["precision"] == "int8"
    assert manifest["onnx"]["sha256"] == sha256_file(quantized.path)
    assert manifest["onnx"]["bytes"] == quantized.path.stat().st_size
    for key in ("variant", "config", "keep_counts", "pruning_locations", "seed", "inputs", "outputs", "data_config",
                "dynamic_batch", "token_outputs"):
        assert manifest[key] == source[key], key
    q = manifest["quantization"]
    assert q["tool"].startswith("onnxruntime") and q["tool_version"] and q["format"] == "QDQ"
    assert q["weights"]["scheme"] == "symmetric" and q["weights"]["granularity"] == "per-channel"
    assert q["activations"]["scheme"] == "symmetric" and q["per_channel"] is True
    assert q["calibration"] == {**q["calibration"], "source": "generated scenes", "samples": 8, "method": "minmax"}
    assert q["excluded"]["op_types"] == ["TopK", "Softmax", "LayerNormalization"]
    assert q["derived_from"]["path"] == "tiny.onnx"
    assert q["derived_from"]["sha256"] == source["onnx"]["sha256"] == sha256_file(fp32_export)
    check = manifest["check"]
    assert check["passed"] and check["parity"]["judged_by"] == "agreement"
    assert check["parity"]["mean_jaccard"] >= 0.95
    assert quantized.size_ratio < 1.0


def test_result_carries_the_typed_manifest_as_written(quantized, fp32_export):
    """The int8 manifest derives from the fp32 one (same model record) and is written from it: the
    result's typed manifest is the file, which reads back to itself; one DerivedFrom, in quantization."""
    from dvit_deploy.artifact.manifest import OnnxManifest

    written = read_json(manifest_path(quantized.path))
    source = OnnxManifest.from_json(read_json(manifest_path(fp32_export)))
    assert quantized.manifest.to_json() == written
    assert OnnxManifest.from_json(written).to_json() == written
    m = quantized.manifest
    assert (m.precision, m.artifact, m.bytes) == ("int8", "tiny-int8.onnx", quantized.path.stat().st_size)
    assert m.sha256 == sha256_file(quantized.path) and m.schema == OnnxManifest.SCHEMA
    assert m.model == source.model and m.opset == m.quantization.opset >= 13
    q = m.quantization
    assert (q.calibration_method, q.calibration_samples, q.calibration_source) == ("minmax", 8, "generated scenes")
    assert q.recipe == quantized.choice.recipe.name and q.reduce_range is quantized.choice.recipe.reduce_range
    assert m.derived_from == q.derived_from and m.derived_from.sha256 == source.sha256 == sha256_file(fp32_export)
    assert m.derived_from.bytes == fp32_export.stat().st_size and "derived_from" not in written
    assert set(written["onnx"]) == {"sha256", "bytes", "external_data", "external_data_sha256"}
    assert written["quantization"]["excluded"] == quantized.kept_float.to_json()
    assert quantized.size_ratio == pytest.approx(m.bytes / fp32_export.stat().st_size)


def test_summary_rows_come_from_the_result(quantized):
    from dvit_deploy.jobs.quantize import summary_rows

    rows = dict(summary_rows(quantized))
    recipe = quantized.choice.recipe
    assert rows["recipe"] == (f"{recipe.name} for cpu (auto): weights int8 symmetric per-channel, range "
                              f"[{recipe.weight_range[0]}, {recipe.weight_range[1]}], activations int8 symmetric "
                              "per-tensor")
    assert rows["why this recipe"] == quantized.choice.reason
    assert rows["kept in float"] == (f"{len(quantized.kept_float.nodes)} nodes: predictors (36/36/36), "
                                     "TopK, Softmax, LayerNormalization")
    assert rows["TopK per stage (K)"] == "3 (137, 96, 67)"


def test_options_are_checked_when_made_and_frozen():
    import dataclasses

    from dvit_deploy.helpers.defaults import (QUANTIZE_CALIB_BATCH, QUANTIZE_CALIB_SAMPLES, QUANTIZE_CHECK_SAMPLES,
                                      QUANTIZE_METHOD, QUANTIZE_PERCENTILE, QUANTIZE_TARGET)
    from dvit_deploy.helpers.errors import BadInput
    from dvit_deploy.jobs.quantize import EXCLUDED_OP_TYPES, QuantizeOptions, select_recipe

    options = QuantizeOptions()
    assert (options.method, options.percentile, options.calib_samples, options.calib_batch, options.check_samples,
            options.target) == (QUANTIZE_METHOD, QUANTIZE_PERCENTILE, QUANTIZE_CALIB_SAMPLES, QUANTIZE_CALIB_BATCH,
                                QUANTIZE_CHECK_SAMPLES, QUANTIZE_TARGET)
    assert options.exclude_op_types == EXCLUDED_OP_TYPES and options.calib_dir is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.method = "minmax"
    made = QuantizeOptions(exclude_op_types=["TopK", "MatMul"], calib_dir="images")
    assert made.exclude_op_types == ("TopK", "MatMul") and str(made.calib_dir) == "images"
    for bad, message in (({"method": "kl"}, "--method must be one of entropy, percentile, minmax, got 'kl'"),
                         ({"percentile": 0.0}, "--percentile must be in"), ({"calib_batch": 0}, "--calib-batch"),
                         ({"check_samples": 0}, "--check-samples"), ({"exclude_op_types": ("Relu",)},
                                                                     "cannot keep op types Relu in float")):
        with pytest.raises(BadInput, match=message):
            QuantizeOptions(**bad)
    trt = QuantizeOptions(target="tensorrt").choice()
    assert trt.recipe.name == "s8s8" and trt.target == "tensorrt" and trt.chosen_by == "auto"
    chosen = select_recipe("cpu", override="s8s8-reduce-range")
    assert QuantizeOptions(recipe=chosen).choice() is chosen
    assert QuantizeOptions(recipe="s8s8").choice().chosen_by == "--recipe"


def _max_weight_code(path) -> int:
    from dvit_deploy.export.graph import constant_values

    model = onnx.load(str(path))
    consts = constant_values(model.graph)
    inits = {i.name for i in model.graph.initializer}
    return max(int(np.abs(consts[n.input[0]].astype(np.int32)).max()) for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits and consts[n.input[0]].dtype == np.int8)


def test_recipe_is_the_one_for_this_cpu_class_and_recorded(quantized):
    """Whatever CPU runs the suite: the manifest names its class and the recipe chosen for it, the
    graph's weights obey that recipe's range, and the check ran the kernels dvit's ORT runner will."""
    from dvit_deploy.helpers.cpu import cpu_info, ort_int8_session_config
    from dvit_deploy.jobs.quantize import select_recipe

    expected = select_recipe("cpu", cpu_info()).recipe
    q = read_json(manifest_path(quantized.path))["quantization"]
    assert q["recipe"]["name"] == expected.name and q["recipe"]["target"] == "cpu"
    assert q["recipe"]["chosen_by"] == "auto" and q["reduce_range"] is expected.reduce_range
    assert q["cpu"]["class"] == cpu_info().cpu_class and "avx2" in q["cpu"]["flags"]
    assert q["weights"]["range"] == list(expected.weight_range)
    # per-channel symmetric: each channel's largest weight maps to the top of the range
    assert _max_weight_code(quantized.path) == expected.weight_range[1]
    execution = quantized.check.execution
    assert execution["cpu"]["class"] == cpu_info().cpu_class
    assert execution["session_config"] == ort_int8_session_config(expected.reduce_range) == {}
    int8_ops = {"QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger", "QGemm", "DynamicQuantizeMatMul"}
    assert int8_ops & set(execution["executed_op_types"]), execution
    assert "int8" in execution["kernels"]


def test_for_tensorrt_is_full_range_and_checked_with_exact_int8(fp32_export, tmp_path):
    """--for tensorrt: full-range weights on every CPU; where this CPU's kernels would saturate, the check
    (and dvit's ORT runner) use ONNX Runtime's exact u8u8 kernels. Piped progress counts calibration to
    the end and reports every phase done."""
    from dvit_deploy.helpers.cpu import cpu_info, ort_int8_session_config

    out = tmp_path / "trt-int8.onnx"
    result = runner.invoke(app, ["quantize", str(fp32_export), "-o", str(out), "--for", "tensorrt", "--method",
                                 "minmax", "--calib-samples", "8", "--check-samples", "16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["quantization"]["recipe"]["name"] == "s8s8" and report["quantization"]["recipe"]["target"] == "tensorrt"
    assert report["quantization"]["reduce_range"] is False and _max_weight_code(out) == 127
    assert report["check"]["execution"]["session_config"] == ort_int8_session_config(False)
    assert f"recipe s8s8 for tensorrt on this {cpu_info().cpu_class} CPU" in result.stderr
    assert "quantize: calibration 8/8 images" in result.stderr
    for phase in ("calibrate", "onnx.checker", "onnxruntime int8 vs PyTorch fp32", "write"):
        assert any(line.startswith(f"quantize: {phase}") and " done (" in line
                   for line in result.stderr.splitlines()), phase
    from dvit_deploy.runtime import runner_for_artifact

    with runner_for_artifact(out, "onnxruntime", precision=None) as r:
        info = r.describe()
    assert info["session_config"] == ort_int8_session_config(False)
    assert info["cpu_class"] == cpu_info().cpu_class and "int8" in info["kernels"]


def test_a_graph_with_no_int8_compute_is_refused_and_one_orts_runs_in_float_is_flagged(fp32_export, tmp_path):
    """--keep-float MatMul leaves only the patch Conv and the head Gemm on int8 inputs, which ONNX Runtime
    runs in float: the file is written (TensorRT runs those in int8) but says so; a graph in which no
    MatMul/Gemm/Conv takes int8 inputs is refused."""
    from dvit_deploy.jobs.quantize.int8_check import QuantizeCheck, int8_compute_problems

    out = tmp_path / "mm-float.onnx"
    result = runner.invoke(app, ["quantize", str(fp32_export), "-o", str(out), "--for", "tensorrt", "--keep-float",
                                 "MatMul", "--method", "minmax", "--calib-samples", "4", "--check-samples", "4",
                                 "--json"])
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout)["check"]
    assert check["qdq"]["int8_compute_nodes"] == 2 and check["qdq"]["float_compute_nodes"] > 10
    ran = check["execution"]["executed_op_types"]
    if not set(ran) & {"QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger", "QGemm", "QLinearConv",
                       "ConvInteger", "DynamicQuantizeMatMul"}:
        assert "ONNX Runtime runs no int8 kernel" in result.stderr and check["warnings"]
    else:  # an ONNX Runtime that fuses Q/DQ Conv/Gemm without a quantized output
        assert not check["warnings"]
    floated = QuantizeCheck()
    int8_compute_problems(onnx.load(str(fp32_export)), {}, floated)  # the fp32 graph: nothing on int8 inputs
    assert floated.qdq["int8_compute_nodes"] == 0
    assert "no MatMul, Gemm or Conv computes on int8 inputs" in floated.failures[0]


def test_validate_judges_int8_by_agreement(quantized):
    result = runner.invoke(app, ["validate", str(quantized.path), "--backend", "onnxruntime", "-n", "16", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    assert row["precision"] == "int8" and row["judged_by"] == "agreement"
    assert row["tolerance"]["judge"] == "agreement" and row["tolerance"]["min_top1_confident"] == 0.99
    assert row["logits"]["top1_agreement_confident"] is not None
    assert len(row["stages"]) == 3 and row["mean_jaccard"] >= 0.95
    assert all("near_tie_flips" in s for s in row["stages"])


def test_cli_default_source_calib_folder_and_force(fp32_export, tmp_path, monkeypatch):
    from PIL import Image

    work = tmp_path / "w"
    (work / "export").mkdir(parents=True)
    for f in (fp32_export, manifest_path(fp32_export)):
        shutil.copy(f, work / "export" / f.name)
    calib = tmp_path / "calib" / "sub"
    calib.mkdir(parents=True)
    from dvit_deploy.jobs.quantize.calibration import scene

    rng = np.random.default_rng(0)
    for i in range(4):
        picture = (scene(rng, 240, 260).transpose(1, 2, 0) * 255).astype(np.uint8)
        Image.fromarray(picture).save(calib / f"{i}.png")
    monkeypatch.chdir(work)
    args = ["quantize", "--calib", str(calib.parent), "--calib-samples", "3", "--method", "percentile",
            "--check-samples", "16", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["artifact"] == "tiny-int8.onnx" and report["path"].endswith("export/tiny-int8.onnx")
    cal = report["quantization"]["calibration"]
    assert cal["source"] == "image folder" and cal["samples"] == 3 and cal["method"] == "percentile"
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output
    # The newest fp32 export is still the default source, not the int8 file just written.
    forced = runner.invoke(app, args + ["--force"])
    assert forced.exit_code == 0, forced.output
    assert not [p for p in (work / "export").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    refused = runner.invoke(app, ["quantize", "export/tiny-int8.onnx", "-o", "export/x.onnx"])
    assert refused.exit_code == 2 and "int8 graph" in refused.output


@pytest.mark.parametrize("extra, message", [
    (["--method", "kl"], "--method"),
    (["--calib", "no/such/folder"], "not found"),
    (["--percentile", "0"], "--percentile"),
    (["-o", "x.txt"], ".onnx"),
    (["--keep-float", "Relu"], "--keep-float takes"),
    (["--keep-float", "Gemm,MatMul,Conv"], "the file would be no int8 model"),
])
def test_bad_inputs_one_line_exit_2(fp32_export, tmp_path, extra, message):
    result = runner.invoke(app, ["quantize", str(fp32_export), "-o", str(tmp_path / "q.onnx"), *extra]
                           if "-o" not in extra else ["quantize", str(fp32_export), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_empty_calibration_folder(fp32_export, tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["quantize", str(fp32_export), "-o", str(tmp_path / "q.onnx"),
                                 "--calib", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no image files" in result.output


def test_failed_check_writes_nothing(fp32_export, tmp_path, monkeypatch):
    impossible = Tolerance(atol=0.5, rtol=0.5, tie_margin=0.1, judge="agreement", min_top1_confident=1.0,
                           min_mean_jaccard=1.0 + 1e-9)
    monkeypatch.setitem(TOLERANCES, "int8", impossible)
    out = tmp_path / "q.onnx"
    result = runner.invoke(app, ["quantize", str(fp32_export), "-o", str(out), "--calib-samples", "4",
                                 "--check-samples", "4", "--method", "minmax"])
    assert result.exit_code == 1 and "Jaccard" in result.output
    assert list(tmp_path.iterdir()) == []


def test_agreement_judgement_on_synthetic_outputs():
    tol = TOLERANCES["int8"]
    ref = np.array([[3.0, 1.0, 0.0], [1.0, 0.95, 0.0], [0.0, 2.0, 0.5]])
    # Sample 1 is a near-tie in the reference (margin 0.05): its flip is not judged.
    test = np.array([[2.9, 1.2, 0.0], [0.9, 1.0, 0.0], [0.1, 1.8, 0.4]])
    ok = compare(ref, test, tol)
    assert ok.passed and ok.judged_by == "agreement"
    assert ok.logits.confident_samples == 2 and ok.logits.top1_agreement_confident == 1.0
    assert ok.logits.top1_agreement == pytest.approx(2 / 3)
    bad = compare(ref, np.array([[1.0, 3.0, 0.0], [1.0, 0.9, 0.0], [0.0, 2.0, 0.5]]), tol)
    assert not bad.passed and "top-1 agreement" in bad.failures[0]
    ids = [np.array([[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]])]
    low = compare(ref, test, tol, ref_kept=ids, test_kept=[np.array([[0, 1, 2, 9], [0, 1, 2, 3], [0, 1, 2, 3]])])
    assert low.mean_jaccard == pytest.approx((0.6 + 1 + 1) / 3) and low.passed is False
    assert "Jaccard" in low.failures[0]
    flat = compare(np.zeros((2, 3)), np.zeros((2, 3)), tol)
    assert flat.passed and "not judged" in flat.notes[0]
    # fp32 keeps the logit tolerance.
    assert not compare(ref, test, TOLERANCES["fp32"]).passed


def test_agreement_applies_the_near_tie_rule_to_kept_sets():
    """Flips where the reference was a near-tie at the keep boundary count as agreeing (validate's rule);
    raw Jaccard alone (0.8 here) would fail the 0.95 minimum although no flip is unexplained."""
    tol = TOLERANCES["int8"]
    ref = np.array([[3.0, 1.0, 0.0], [3.0, 1.0, 0.0], [0.0, 2.0, 0.5], [0.0, 2.0, 0.5]])
    ref_ids = [np.array([[0, 1, 2, 3]] * 4), np.array([[0, 1]] * 4)]
    flipped = [np.array([[0, 1, 2, 9], [0, 1, 2, 9], [0, 1, 2, 3], [0, 1, 2, 3]]),
               np.array([[0, 9], [7, 9], [0, 1], [0, 1]])]  # stage 2 differs downstream of stage 1's flips
    near = [np.array([0.01, 0.05, 1.0, 1.0]), np.array([1.0, 1.0, 1.0, 1.0])]
    ok = compare(ref, ref, tol, ref_kept=ref_ids, test_kept=flipped, ref_margins=near)
    assert ok.mean_jaccard < 0.95 and ok.unexplained_flips == 0
    assert ok.passed, ok.failures
    assert ok.judged_jaccard == 1.0 and "near-tie rule" in ok.notes[-1]
    far = [np.array([0.01, 0.5, 1.0, 1.0]), near[1]]  # input 1's flip is beyond the tie margin
    bad = compare(ref, ref, tol, ref_kept=ref_ids, test_kept=flipped, ref_margins=far)
    assert not bad.passed and bad.unexplained_flips == 1
    assert bad.judged_jaccard == pytest.approx(((0.6 + 3) / 4 + (0 + 3) / 4) / 2)
    assert "near-tie flips counted as agreeing" in bad.failures[0]


def test_generated_scenes_are_seeded_and_normalised():
    from dvit_deploy.jobs.quantize import generated_scenes, mixed_inputs

    config = {"input_size": [3, 32, 32], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    a, b = generated_scenes(config, 3, seed=1), generated_scenes(config, 3, seed=1)
    assert a.shape == (3, 3, 32, 32) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, generated_scenes(config, 3, seed=2))
    assert -2.2 <= a.min() and a.max() <= 2.7  # (x - mean) / std for x in [0, 1]
    mixed = mixed_inputs(config, 5)
    assert mixed.shape == (5, 3, 32, 32) and np.array_equal(mixed[:3], generated_scenes(config, 3))
