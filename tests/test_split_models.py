"""DynamicCNN (AdaConvNeXt) and DynamicSwin: keep schedule, layouts, detection, official eval semantics."""

from __future__ import annotations

import pytest
import torch

from dvit_deploy.artifact.keep import KeepSchedule, schedule_kind_of
from dvit_deploy.helpers.errors import BadInput
from dvit_deploy.models import MODEL_CLASSES, VARIANTS, create_model, get_variant, make_schedule
from dvit_deploy.models.checkpoint import detect_variant, load_model, load_model_from_record

from .conftest import TINY_CONVNEXT, TINY_SWIN, make_official_checkpoint
from .reference_split_impl import official_convnext_forward, official_swin_forward

SPLIT_NAMES = ["convnext-t", "convnext-s", "convnext-b", "swin-t", "swin-s", "swin-b"]


@pytest.mark.parametrize("rho, counts", [(0.7, (137, 97, 58)), (0.9, (176, 137, 98)), (0.8, (156, 117, 78))])
def test_linear_schedule_is_the_official_float_rule(rho, counts):
    schedule = KeepSchedule.from_ratio(rho, 3, 196, "linear")
    # main.py: SPARSE_RATIO = [base_rate, base_rate - 0.2, base_rate - 0.4]; int(N * ratio).
    assert schedule.ratios == (rho, rho - 0.2, rho - 0.4)
    assert schedule.counts == counts == tuple(int(196 * r) for r in (rho, rho - 0.2, rho - 0.4))
    assert get_variant("convnext-t").keep_schedule(rho).counts == counts


def test_linear_schedule_refuses_ratios_that_empty_the_last_position():
    with pytest.raises(ValueError, match="must be above 0.4"):
        KeepSchedule.from_ratio(0.4, 3, 196, "linear")
    with pytest.raises(ValueError, match="unknown keep schedule"):
        KeepSchedule.from_ratio(0.7, 3, 196, "cubic")


def test_manifest_without_schedule_kind_reads_as_geometric():
    from dvit_deploy.artifact.manifest import ModelRecord
    from dvit_deploy.artifact.names import keep_counts_for

    assert schedule_kind_of({}) == "geometric"
    assert schedule_kind_of({"keep_schedule": "linear"}) == "linear"
    old = ModelRecord.from_json({"variant": "deit-s", "keep_counts": [137, 96, 67]})  # written before issue 17
    assert old.keep_schedule == "geometric" and not old.splits_tokens
    new = ModelRecord.from_json({"variant": "swin-t", "keep_schedule": "linear", "config": {"family": "swin"}})
    assert new.keep_schedule == "linear" and new.splits_tokens
    # The artifact layer's counts come from the same owner as the models'.
    assert keep_counts_for(0.7, 3, 196).tolist() == [137, 96, 67]
    assert keep_counts_for(0.7, 3, 196, "linear").tolist() == [137, 97, 58]


@pytest.mark.parametrize("name, pruning_loc, depths", [
    ("convnext-t", (1, 2, 3), (3, 3, 9, 3)), ("convnext-s", (3, 6, 9), (3, 3, 27, 3)),
    ("convnext-b", (3, 6, 9), (3, 3, 27, 3)), ("swin-t", (1, 2, 3), (2, 2, 6, 2)),
    ("swin-s", (2, 4, 6), (2, 2, 18, 2)), ("swin-b", (2, 4, 6), (2, 2, 18, 2)),
])
def test_registry_has_the_official_settings(name, pruning_loc, depths):
    v = get_variant(name)
    assert (v.pruning_loc, v.depths, v.num_patches, v.schedule_kind) == (pruning_loc, depths, 196, "linear")


def _meta_model(name, dense=False):
    variant = get_variant(name)
    with torch.device("meta"):
        return MODEL_CLASSES[variant.family](variant, None if dense else make_schedule(variant, 0.7))


# Parameter counts of the official dense ConvNeXt / Swin releases (28.6M, 28.3M, 88.6M, 87.8M).
@pytest.mark.parametrize("name, dense_params", [("convnext-t", 28_589_128), ("swin-t", 28_288_354),
                                                 ("convnext-b", 88_591_464), ("swin-b", 87_768_224)])
def test_dense_twins_have_the_official_parameter_counts(name, dense_params):
    model = _meta_model(name, dense=True)
    assert sum(p.numel() for p in model.parameters()) == dense_params
    assert not any("score_predictor" in k or "fast_path" in k or "fastmlp" in k for k in model.state_dict())


def test_official_key_names_and_ada_block_placement():
    keys = set(_meta_model("convnext-t").state_dict())
    for key in ("downsample_layers.0.0.weight", "downsample_layers.3.1.bias", "stages.2.0.dwconv.weight",
                "stages.2.1.fast_path.0.weight", "stages.2.8.fast_path_gamma", "stages.2.1.gamma",
                "score_predictor.2.in_conv.1.weight", "score_predictor.0.out_conv.4.bias", "norm.weight"):
        assert key in keys, key
    assert "stages.2.0.fast_path.1.weight" not in keys  # blocks before the first position are plain
    assert _meta_model("convnext-t").state_dict()["score_predictor.0.in_conv.1.weight"].shape == (384, 384, 1, 1)
    keys = set(_meta_model("swin-s").state_dict())
    for key in ("patch_embed.proj.weight", "patch_embed.norm.bias", "layers.0.blocks.1.attn_mask",
                "layers.2.blocks.0.attn.relative_position_index", "layers.2.blocks.2.fastmlp.fc1.1.weight",
                "layers.2.score_predictor.2.out_conv.4.weight", "layers.2.downsample.reduction.weight"):
        assert key in keys, key
    assert "layers.2.blocks.1.fastmlp.fc1.0.weight" not in keys  # Swin-S: first position is block 2
    assert "layers.3.downsample.reduction.weight" not in keys


@pytest.mark.parametrize("name", SPLIT_NAMES)
@pytest.mark.parametrize("dense", [False, True])
def test_every_split_variant_is_detected_from_its_own_state_dict(name, dense):
    detection = detect_variant(_meta_model(name, dense).state_dict())
    assert detection.variant.name == name
    assert detection.has_predictors is not dense


def _perturbed(model, seed, noise=0.05, spread=10.0):
    """Seeded weights away from init (layer scales 1e-6 would hide the FFNs), predictors spread."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * noise)
        if not model.dense:
            for predictor in model.score_predictor:
                predictor.out_conv[4].weight.normal_(0.0, spread, generator=gen)
    return model


def _official(cfg, sd, images, ratios):
    if cfg.family == "convnext":
        return official_convnext_forward(sd, cfg.depths, cfg.pruning_loc, images, ratios)
    return official_swin_forward(sd, cfg.depths, cfg.heads, cfg.pruning_loc, images, ratios, cfg.window_size)


def _assert_matches_official(cfg, rho, batch, seed, dense=False, noise=0.05, spread=10.0):
    model = _perturbed(create_model(cfg, rho, dense=dense, seed=seed), seed, noise, spread)
    images = torch.randn(batch, 3, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits, decisions = model.forward_with_decisions(images)
    ratios = None if dense else cfg.stage_ratios(rho)
    ref_logits, ref_kept = _official(cfg, model.state_dict(), images, ratios)
    assert torch.allclose(logits, ref_logits, atol=2e-5, rtol=1e-4), (logits - ref_logits).abs().max()
    assert len(decisions.keep_indices) == len(ref_kept) == (0 if dense else 3)
    for p, (ours, theirs, scores) in enumerate(zip(decisions.keep_indices, ref_kept, decisions.scores)):
        k = model.schedule.counts[p]
        ordered = scores.sort(dim=1, descending=True).values
        assert float((ordered[:, k - 1] - ordered[:, k]).min()) > 2e-5, "near-tie: choose another seed"
        assert ours.shape == theirs.shape == (batch, k)
        assert [sorted(r) for r in ours.tolist()] == [sorted(r) for r in theirs.tolist()]
    return logits


@pytest.mark.parametrize("cfg", [TINY_CONVNEXT, TINY_SWIN], ids=["convnext", "swin"])
@pytest.mark.parametrize("rho", [0.7, 0.9])
def test_tiny_models_match_the_official_eval_path(cfg, rho):
    _assert_matches_official(cfg, rho, batch=3, seed=4)


@pytest.mark.parametrize("cfg", [TINY_CONVNEXT, TINY_SWIN], ids=["convnext", "swin"])
def test_tiny_dense_twins_match_the_official_dense_path(cfg):
    _assert_matches_official(cfg, None, batch=2, seed=5, dense=True)


def test_fast_path_matters_and_decisions_are_reused_after_the_last_position():
    """Kept and other positions really take different paths, and block 3.. reuse decision 3."""
    model = _perturbed(create_model(TINY_CONVNEXT, 0.7, seed=2), 2)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(images)
        for block in list(model.stages[2])[1:]:
            block.fast_path_gamma.mul_(3.0)
        changed = model(images)
    assert (logits - changed).abs().max() > 1e-3


REAL_SEED = 0  # no near-tie (gap > 2e-5) at any position's keep boundary for either model


@pytest.mark.parametrize("name", ["convnext-t", "swin-t"])
def test_real_shape_t_models_match_the_official_eval_path(name):
    # Real widths: smaller weight noise keeps activations in a trained model's range.
    _assert_matches_official(get_variant(name), 0.7, batch=2, seed=REAL_SEED, noise=0.02, spread=1.0)


@pytest.mark.parametrize("cfg", [TINY_CONVNEXT, TINY_SWIN], ids=["convnext", "swin"])
def test_official_checkpoint_loads_detected_with_linear_schedule(tmp_path, cfg):
    path = tmp_path / "ckpt.pth"
    source = make_official_checkpoint(path, cfg.name, keep_ratio=0.9, layout="training", ema=True)
    loaded = load_model(path)  # no --model: family and size from keys and shapes
    assert loaded.variant.name == cfg.name
    assert loaded.keep_counts == (14, 11, 8)  # int(16 * [0.9, 0.7, 0.5]) from the training args
    assert loaded.record()["keep_schedule"] == "linear"
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(images), source(images))
    ema = load_model(path, use_ema=True)
    assert ema.checkpoint.source_key == "model_ema"
    rebuilt = load_model_from_record(loaded.record())
    assert rebuilt.keep_counts == loaded.keep_counts
    dense = load_model(path, dense=True)
    assert dense.dense and any("fast path" in n for n in dense.notes)


def test_swin_checkpoint_without_derived_buffers_still_loads(tmp_path):
    path = tmp_path / "ckpt.pth"
    model = create_model(TINY_SWIN, 0.7, seed=1)
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith(("relative_position_index", "attn_mask"))}
    torch.save({"model": sd}, path)
    assert load_model(path, keep_ratio=0.7).keep_counts == (11, 7, 4)


def test_mismatched_split_checkpoints_are_refused_in_one_line(tmp_path):
    path = tmp_path / "ckpt.pth"
    sd = create_model(TINY_CONVNEXT, 0.7, seed=1).state_dict()
    sd["stages.2.1.fast_path.1.weight"] = torch.zeros(3, 3)
    torch.save({"model": sd}, path)
    with pytest.raises(BadInput, match="wrong shape 1"):
        load_model(path)
    with pytest.raises(BadInput, match="looks like tiny-convnext"):
        load_model(path, model_name="convnext-t")
    with pytest.raises(BadInput, match="must be above 0.4"):
        load_model(model_name="convnext-t", keep_ratio=0.3)
    assert "convnext-t" in VARIANTS and "swin-b" in VARIANTS
