"""ONNX export of DynamicCNN / DynamicSwin: graph structure, ORT parity, dense twins, doctor's Scatter rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dvit_deploy.engines.doctor import TARGETS, diagnose_model
from dvit_deploy.helpers.errors import BadInput
from dvit_deploy.export import check_pruning_structure, export_onnx
from dvit_deploy.export.graph import split_blocks_of
from dvit_deploy.models.checkpoint import load_model, load_model_from_record

from .conftest import TINY_SWIN, make_official_checkpoint
from .reference_split_impl import official_convnext_forward, official_swin_forward


@pytest.fixture(scope="module", params=["tiny-convnext", "tiny-swin"])
def split_export(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("split_export")
    path = folder / "ckpt.pth"
    make_official_checkpoint(path, request.param, keep_ratio=0.7)
    loaded = load_model(path, keep_ratio=0.7)  # detected, no --model
    return loaded, export_onnx(loaded, folder / f"{request.param}.onnx", token_outputs=True)


def test_graph_has_per_position_topk_slices_two_gathers_and_one_scatter_per_ada_block(split_export):
    loaded, result = split_export
    model = onnx.load(str(result.path))
    blocks = split_blocks_of(loaded.variant)
    assert blocks == ((1, 1, 2) if loaded.variant.family == "convnext" else (1, 1, 1))
    stages, problems = check_pruning_structure(model, loaded.keep_counts, split_blocks=blocks)
    assert problems == []
    assert [s.k for s in stages] == [11, 7, 4]  # int(16 * [0.7, 0.7-0.2, 0.7-0.4])
    assert all(s.split and s.sort_k == 16 and s.largest for s in stages)  # one full-order TopK, K constant
    assert [len(s.scatters) for s in stages] == list(blocks)
    assert [len(s.gathers) for s in stages] == [2 * b for b in blocks]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("TopK") == 3 and ops.count("ScatterND") == sum(blocks)
    assert "ScatterElements" not in ops and "NonZero" not in ops
    scatters = [n for n in model.graph.node if n.op_type == "ScatterND"]
    assert all(not any(a.name == "reduction" and a.s not in (b"", b"none") for a in n.attribute) for n in scatters)
    assert result.manifest.model.keep_schedule == "linear"
    assert list(result.manifest.model.keep_counts) == [11, 7, 4]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["dvit.keep_schedule"] == "linear"
    assert result.check.passed and result.check.comparison.logits.top1_agreement == 1.0


def test_onnxruntime_matches_the_official_eval_path_at_several_batches(split_export):
    loaded, result = split_export
    cfg = loaded.variant
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    sd = loaded.model.state_dict()
    for batch in (1, 3):
        images = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        logits, *kept = session.run(None, {"images": images.numpy()})
        ratios = cfg.stage_ratios(0.7)
        if cfg.family == "convnext":
            ref, ref_kept = official_convnext_forward(sd, cfg.depths, cfg.pruning_loc, images, ratios)
        else:
            ref, ref_kept = official_swin_forward(sd, cfg.depths, cfg.heads, cfg.pruning_loc, images, ratios,
                                                  cfg.window_size)
        np.testing.assert_allclose(logits, ref.numpy(), atol=1e-4, rtol=1e-4)
        for ours, theirs in zip(kept, ref_kept):  # positions of the whole map, never composed
            assert ours.shape == tuple(theirs.shape)
            assert [set(r) for r in ours.tolist()] == [set(r) for r in theirs.tolist()]


def test_dense_twin_has_no_predictor_topk_or_scatter(split_export, tmp_path):
    loaded, result = split_export
    rebuilt = load_model_from_record(dataclasses.replace(result.manifest.model, dense=True, stage_ratios=None,
                                                       keep_counts=()))
    dense = export_onnx(rebuilt, tmp_path / "dense.onnx")
    ops = {n.op_type for n in onnx.load(str(dense.path)).graph.node}
    assert not ops & {"TopK", "ScatterND", "ScatterElements"}
    assert dense.check.passed and dense.manifest.model.dense is True
    assert not any("score_predictor" in k or "fast" in k for k in rebuilt.model.state_dict())


def test_structure_check_catches_a_missing_write_back(split_export):
    loaded, result = split_export
    model = onnx.load(str(result.path))
    scatter = next(n for n in model.graph.node if n.op_type == "ScatterND")
    scatter.op_type = "Identity"
    del scatter.input[1:]
    _, problems = check_pruning_structure(model, loaded.keep_counts, split_blocks=split_blocks_of(loaded.variant))
    assert any("Scatter nodes write the two sets back" in p for p in problems)


def test_dynamic_keep_is_refused_for_split_models_in_one_line(tmp_path):
    loaded = load_model(model_name=TINY_SWIN.name, keep_ratio=0.7)
    with pytest.raises(BadInput, match="--dynamic-keep is not supported for swin models"):
        export_onnx(loaded, tmp_path / "x.onnx", dynamic_keep=True)


def test_doctor_knows_the_scatter_rules(split_export):
    _, result = split_export
    model = onnx.load(str(result.path))
    report = diagnose_model(model, TARGETS["trt-10.3"])
    scatter = [f for f in report.findings if f.check == "Scatter"]
    assert scatter and all(f.severity == "info" and "IScatterLayer" in f.message for f in scatter)
    assert report.passed
    node = next(n for n in model.graph.node if n.op_type == "ScatterND")
    node.attribute.append(onnx.helper.make_attribute("reduction", "add"))
    blocked = diagnose_model(model, TARGETS["trt-10"])
    assert any(f.severity == "blocker" and "ignored" in f.message for f in blocked.findings if f.check == "Scatter")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext-t", "swin-t"])
def test_real_shape_official_checkpoint_exports_without_model_and_matches(tmp_path, name):
    path = tmp_path / "ckpt.pth"
    make_official_checkpoint(path, name, keep_ratio=0.7, layout="training")
    loaded = load_model(path)
    assert loaded.variant.name == name and loaded.keep_counts == (137, 97, 58)
    result = export_onnx(loaded, tmp_path / f"{name}.onnx", check_samples=2)
    assert result.check.passed, result.check.failures
    assert [s.k for s in result.check.stages] == [137, 97, 58]


def test_pruning_overhead_nodes_cover_predictor_gathers_and_scatters(split_export):
    """What `profile`'s overhead split and `quantize`'s float predictor take as the pruning-only nodes."""
    from dvit_deploy.export.graph import pruning_nodes

    loaded, result = split_export
    model = onnx.load(str(result.path))
    ops = {n.name: n.op_type for n in model.graph.node}
    for nodes, blocks in zip(pruning_nodes(model), split_blocks_of(loaded.variant)):
        kinds = [ops[n] for n in nodes]
        assert kinds.count("TopK") == 1 and kinds.count("ScatterND") == blocks
        assert kinds.count("Gather") >= 2 * blocks
        expected_layers = "Conv" if loaded.variant.family == "convnext" else "MatMul"
        assert kinds.count(expected_layers) >= 4  # the predictor's four layers
