"""--dynamic-keep: one graph, per-stage K from the keep_counts input, equal to fixed-ratio exports."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from dvit_deploy.cli import app
from dvit_deploy.export import export_onnx, pruning_stages
from dvit_deploy.export.check import seeded_images
from dvit_deploy.export.dynamic_keep import (
    KEEP_COUNTS_INPUT,
    float32_graph_counts,
    keep_counts_for,
    run_keep_counts,
)
from dvit_deploy.engines.doctor import diagnose
from dvit_deploy.models import KeepSchedule
from dvit_deploy.models.checkpoint import load_model

runner = CliRunner()


@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dynkeep")
    loaded = load_model(model_name="tiny-deit", keep_ratio=0.7)
    return loaded, export_onnx(loaded, folder / "tiny-dynkeep.onnx", dynamic_keep=True)


def test_graph_takes_keep_counts_and_has_no_constant_k(dynamic_export):
    _, result = dynamic_export
    model = onnx.load(str(result.path))
    assert [i.name for i in model.graph.input] == ["images", KEEP_COUNTS_INPUT]
    keep = model.graph.input[1].type.tensor_type
    assert keep.elem_type == onnx.TensorProto.INT32 and [d.dim_value for d in keep.shape.dim] == [3]
    stages = pruning_stages(model)
    assert len(stages) == 3 and all(s.k is None for s in stages) and all(len(s.gathers) == 1 for s in stages)
    assert result.manifest.model.dynamic_keep is True
    assert result.manifest.model.keep_input == {"name": KEEP_COUNTS_INPUT, "dtype": "int32", "shape": [3],
                                             "meaning": "per-stage kept token counts int(num_patches * rho**k)"}
    assert result.path.name == "tiny-dynkeep.onnx"
    written = json.loads(result.manifest_path.read_text())
    assert written["dynamic_keep"] is True and written["keep_input"]["name"] == KEEP_COUNTS_INPUT
    assert result.manifest.to_json() == written  # the result carries the typed manifest as written


def test_post_export_check_covered_several_ratios(dynamic_export):
    _, result = dynamic_export
    checked = {round(e["keep_ratio"], 6): e for e in result.check.per_ratio}
    assert set(checked) == {0.9, 0.8, 0.7}
    assert checked[0.9]["graph_k"] == [176, 158, 142]
    assert checked[0.8]["graph_k"] == [156, 125, 100]
    assert checked[0.7]["graph_k"] == [137, 96, 67]
    for entry in checked.values():
        assert entry["parity"]["passed"] and entry["parity"]["logits"]["max_abs"] < 1e-3
    assert result.check.passed


def test_reproduces_fixed_ratio_exports(dynamic_export, tmp_path):
    """ORT on the dynamic graph at ρ equals ORT on the fixed-ratio export at ρ (K and logits)."""
    loaded, result = dynamic_export
    model = onnx.load(str(result.path))
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    from dvit_deploy.export.graph import with_topk_outputs

    probe = ort.InferenceSession(with_topk_outputs(model).SerializeToString(), providers=["CPUExecutionProvider"])
    images = seeded_images(4, loaded).numpy()
    for ratio in (0.9, 0.8):
        fixed = export_onnx(load_model(model_name="tiny-deit", keep_ratio=ratio), tmp_path / f"r{ratio}.onnx",
                            token_outputs=True, check_samples=2)
        fixed_session = ort.InferenceSession(str(fixed.path), providers=["CPUExecutionProvider"])
        fixed_out = fixed_session.run(None, {"images": images})
        counts = keep_counts_for(ratio, 3, 196)
        logits, kept, got_k = run_keep_counts(probe, model, images, counts, 2, 196)
        assert got_k == [o.shape[1] for o in fixed_out[1:]] == list(fixed.manifest.model.keep_counts)
        np.testing.assert_allclose(logits, fixed_out[0], atol=1e-4, rtol=1e-4)
        plain = session.run(None, {"images": images, KEEP_COUNTS_INPUT: counts})[0]
        np.testing.assert_allclose(plain, fixed_out[0], atol=1e-4, rtol=1e-4)


def test_doctor_sees_a_shape_tensor_input(dynamic_export):
    _, result = dynamic_export
    for target in ("trt-10", "trt-11"):
        report = diagnose(result.path, target)
        assert report.passed
        kinds = {p["input"]: p["kind"] for p in report.profile_needs}
        assert kinds == {"images": "dimensions", KEEP_COUNTS_INPUT: "shape tensor values"}


def test_keep_counts_are_the_official_counts():
    assert keep_counts_for(0.7, 3, 196).tolist() == [137, 96, 67]
    assert keep_counts_for(0.5, 3, 196).tolist() == [98, 49, 24]
    assert keep_counts_for(0.7, 3, 196).dtype == np.int32


def test_float32_computation_would_match_on_the_usual_grid():
    """Why keep_counts is computed on the host: documented comparison of float32 vs float64."""
    mismatches = []
    for step in range(25, 101):
        rho = step / 100
        expected = list(KeepSchedule.from_ratio(rho, 3, 196).counts)
        if float32_graph_counts(rho, 3, 196) != expected:
            mismatches.append(rho)
    assert mismatches == []  # numpy float32; TensorRT's Pow/fp16 paths are not guaranteed, hence ints


def test_cli_flag_and_dense_refusal(workdir):
    result = runner.invoke(app, ["export", "-m", "tiny-deit", "--dynamic-keep", "--check-samples", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dynamic_keep"] is True and report["artifact"].endswith("tiny-deit-dynkeep.onnx")
    assert [e["graph_k"] for e in report["check"]["dynamic_keep"]][:3] == [[176, 158, 142], [156, 125, 100],
                                                                          [137, 96, 67]]
    dense = runner.invoke(app, ["export", "-m", "tiny-deit", "--dense", "--dynamic-keep"])
    assert dense.exit_code == 2 and "--dynamic-keep needs a pruned model" in dense.output
