"""ONNX export: graph structure, ORT parity, manifests, atomic writes, and the check itself."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from dvit_deploy.helpers.compare import Tolerance, compare
from dvit_deploy.helpers.errors import BadInput, CheckFailed
from dvit_deploy.export import check_pruning_structure, export_onnx, pruning_stages
from dvit_deploy.export import onnx_export as onnx_export_module
from dvit_deploy.export.check import CheckReport
from dvit_deploy.helpers.fileio import sha256_file
from dvit_deploy.models import kept_patch_ids
from dvit_deploy.models.checkpoint import load_model, load_model_from_record


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_graph_has_one_topk_and_one_gather_per_stage(tiny_export):
    model = onnx.load(str(tiny_export.path))
    stages, problems = check_pruning_structure(model, [137, 96, 67])
    assert problems == []
    assert [s.k for s in stages] == [137, 96, 67]
    assert all(s.k_source == "constant" and s.largest and s.axis == 1 for s in stages)
    assert [len(s.gathers) for s in stages] == [1, 1, 1]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("TopK") == 3
    assert "ArgMax" not in ops and "Sort" not in ops


def test_outputs_and_dynamic_batch_match_pytorch(tiny_export):
    manifest = tiny_export.manifest
    assert [o.name for o in manifest.outputs] == ["logits", "kept_tokens_stage1", "kept_tokens_stage2",
                                                  "kept_tokens_stage3"]
    assert [t.to_json() for t in manifest.inputs] == [{"name": "images", "dtype": "float32",
                                                       "shape": ["batch", 3, 224, 224]}]
    assert list(manifest.outputs[1].shape) == ["batch", 137]
    reference = load_model_from_record(manifest)
    session = _session(tiny_export.path)
    for batch in (1, 5):
        images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        logits, *kept = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            ref_logits, decisions = reference.model.forward_with_decisions(images)
        np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4, rtol=1e-4)
        ours = kept_patch_ids(kept, 196)
        theirs = kept_patch_ids([d.numpy() for d in decisions.keep_indices], 196)
        for a, b in zip(ours, theirs):
            assert a.dtype == np.int64
            assert [set(r) for r in a.tolist()] == [set(r) for r in b.tolist()]


def test_manifest_records_what_was_built(tiny_export):
    m = json.loads(tiny_export.manifest_path.read_text())
    assert m == json.loads(json.dumps(tiny_export.manifest.to_json()))
    assert m["variant"] == "tiny-deit" and m["keep_counts"] == [137, 96, 67]
    assert m["pruning_locations"] == [1, 2, 3] and m["stage_ratios"][2] == pytest.approx(0.343)
    assert m["onnx"]["sha256"] == sha256_file(tiny_export.path)
    assert m["onnx"]["bytes"] == tiny_export.path.stat().st_size
    assert m["opset"] == 18 and m["dynamic_batch"] and m["token_outputs"]
    assert m["random_weights"] and m["seed"] == 0 and m["checkpoint"] is None
    assert {"torch", "onnx", "timm", "onnxruntime", "dvit_deploy"} <= set(m["versions"])
    assert m["check"]["passed"] and m["check"]["parity"]["logits"]["max_abs"] < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(tiny_export.path)).metadata_props}
    assert meta["dvit.keep_counts"] == "137,96,67"


def test_manifest_round_trips_through_its_typed_record(tiny_export):
    """The export writes its manifest from an OnnxManifest: reading it back and writing it again gives
    the same JSON, key for key, and the typed fields are the ones the JSON holds."""
    from dvit_deploy.artifact.manifest import ONNX_SCHEMA, OnnxManifest

    m = json.loads(tiny_export.manifest_path.read_text())
    typed = OnnxManifest.from_json(m)
    assert typed.to_json() == m
    assert tiny_export.manifest.to_json() == m and typed.model == tiny_export.manifest.model
    for key in ("schema", "kind", "artifact", "created", "variant", "config", "dense", "keep_ratio", "keep_schedule",
                "stage_ratios", "keep_counts", "pruning_locations", "num_patches", "random_weights", "seed",
                "checkpoint", "opset", "batch", "dynamic_batch", "token_outputs", "dynamic_keep", "inputs", "outputs",
                "data_config", "onnx", "check", "versions"):
        assert key in m, key
    assert m["schema"] == ONNX_SCHEMA and m["kind"] == "onnx" and "quantization" not in m
    assert set(m["onnx"]) == {"sha256", "bytes", "external_data", "external_data_sha256"}
    assert m["onnx"]["external_data"] == [] and m["onnx"]["external_data_sha256"] == {}
    assert (typed.precision, typed.opset, typed.bytes) == ("fp32", 18, tiny_export.path.stat().st_size)
    assert typed.sha256 == sha256_file(tiny_export.path) and typed.model.keep_counts == (137, 96, 67)
    assert typed.model.data_config == m["data_config"] and typed.model.dynamic_batch is True


def test_static_batch_and_dense_exports(workdir):
    loaded = load_model(model_name="tiny-deit", keep_ratio=0.5)
    static = export_onnx(loaded, workdir / "static.onnx", batch=3)
    assert list(static.manifest.inputs[0].shape) == [3, 3, 224, 224]
    assert [s.k for s in pruning_stages(onnx.load(str(static.path)))] == [98, 49, 24]

    dense = export_onnx(load_model(model_name="tiny-deit", dense=True))
    assert dense.path == workdir / "export" / "tiny-deit-dense.onnx"
    assert pruning_stages(onnx.load(str(dense.path))) == []
    assert dense.manifest.model.keep_counts == () and dense.manifest.model.dense


def test_lvvit_export_parity(workdir):
    result = export_onnx(load_model(model_name="tiny-lvvit", keep_ratio=0.7), token_outputs=True)
    parity = result.check.comparison
    assert parity.passed and parity.logits.max_abs < 1e-4
    # Same kept sets, except where the reference had a near-tie (tie order differs across CPUs).
    assert parity.unexplained_flips == 0
    assert all(s.flipped_samples == s.near_tie_flips for s in parity.stages)
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert "ReduceMax" in ops  # the aux head's max over tokens


def _with_changed_k(model, stage_index, new_k):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    topk = [n for n in copy.graph.node if n.op_type == "TopK"][stage_index]
    name = topk.input[1]
    for init in copy.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(np.array([new_k], dtype=np.int64), name))
            return copy
    for node in copy.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array([new_k], dtype=np.int64)))
            return copy
    raise AssertionError("K not found")


def test_structure_check_catches_wrong_k_and_missing_stage(tiny_export):
    model = onnx.load(str(tiny_export.path))
    _, problems = check_pruning_structure(_with_changed_k(model, 1, 95), [137, 96, 67])
    assert problems == ["stage 2: TopK K is 95, expected the constant 96"]
    _, problems = check_pruning_structure(model, [137, 96, 67, 40])
    assert "expected 4 TopK nodes (one per pruning stage), found 3" in problems


def test_structure_check_catches_a_second_gather(tiny_export):
    model = onnx.load(str(tiny_export.path))
    stage = pruning_stages(model)[0]
    model.graph.node.append(onnx.helper.make_node("Gather", ["images", stage.indices_output], ["extra_gather"], axis=0))
    _, problems = check_pruning_structure(model, [137, 96, 67])
    assert problems == ["stage 1: TopK indices feed 2 Gather-family nodes, expected 1"]


def test_failed_check_leaves_no_artifact(workdir, monkeypatch):
    def failing_check(*args, **kwargs):
        report = CheckReport(checker="passed")
        report.failures.append("logits differ by up to 0.5")
        return report

    monkeypatch.setattr(onnx_export_module, "check_export", failing_check)
    with pytest.raises(CheckFailed, match="post-export check failed: logits differ by up to 0.5"):
        export_onnx(load_model(model_name="tiny-deit"), workdir / "out" / "m.onnx")
    assert list((workdir / "out").iterdir()) == []


def test_existing_output_needs_force(workdir):
    target = workdir / "m.onnx"
    target.write_text("precious")
    loaded = load_model(model_name="tiny-deit")
    with pytest.raises(BadInput, match="already exists; pass --force"):
        export_onnx(loaded, target)
    assert target.read_text() == "precious"
    export_onnx(loaded, target, force=True)
    assert onnx.load(str(target)).graph.input[0].name == "images"


def test_external_data_path_for_large_models(workdir, monkeypatch):
    # Force the >2 GB branch on a tiny model: weights go to a side file that travels with the graph.
    monkeypatch.setattr(onnx_export_module, "PROTOBUF_LIMIT", 1000)
    result = export_onnx(load_model(model_name="tiny-deit"), workdir / "big.onnx")
    side_files = result.manifest.external_data
    assert len(side_files) == 1 and (workdir / side_files[0]).is_file()
    assert result.manifest.external_data_sha256[side_files[0]] == sha256_file(workdir / side_files[0])
    assert result.check.passed
    assert not [p for p in workdir.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_compare_counts_near_tie_flips_separately():
    tol = Tolerance.for_precision("fp32")
    ref_logits = np.array([[1.0, 2.0], [3.0, 1.0]])
    ref_kept = [np.array([[0, 1], [2, 3]])]
    test_kept = [np.array([[0, 2], [2, 3]])]  # sample 0 kept token 2 instead of 1
    near_tie = compare(ref_logits, ref_logits + 0.5 * np.array([[1], [0]]), tol, ref_kept=ref_kept,
                       test_kept=test_kept, ref_margins=[np.array([1e-6, 1.0])])
    assert near_tie.passed and near_tie.excluded_samples == 1
    assert near_tie.stages[0].near_tie_flips == 1 and near_tie.stages[0].mean_jaccard == pytest.approx((1 / 3 + 1) / 2)
    real = compare(ref_logits, ref_logits, tol, ref_kept=ref_kept, test_kept=test_kept,
                   ref_margins=[np.array([0.5, 1.0])])
    assert not real.passed and real.unexplained_flips == 1
    far = compare(ref_logits, ref_logits + 0.01, tol)
    assert not far.passed and "logits differ by up to 0.01" in far.failures[0]
