"""Checkpoint reading: official layouts, detection, security, and clear errors for bad input."""

from __future__ import annotations

import argparse

import pytest
import torch

from dvit_deploy.helpers.errors import BadInput
from dvit_deploy.models import MODEL_CLASSES, VARIANTS, get_variant, make_schedule
from dvit_deploy.models.checkpoint import detect_variant, load_model, load_model_from_record, read_checkpoint

from .conftest import make_official_checkpoint


def _meta_state_dict(name, dense=False):
    variant = get_variant(name)
    with torch.device("meta"):
        model = MODEL_CLASSES[variant.family](variant, None if dense else make_schedule(variant, 0.7))
    return model.state_dict()


@pytest.mark.parametrize("name", ["deit-s", "deit-256", "deit-b", "lvvit-s", "lvvit-m"])
@pytest.mark.parametrize("dense", [False, True])
def test_every_variant_is_detected_from_its_own_state_dict(name, dense):
    detection = detect_variant(_meta_state_dict(name, dense))
    assert detection.variant.name == name
    assert detection.has_predictors is not dense


@pytest.mark.parametrize("layout", ["release", "training", "bare"])
def test_official_layouts_load_and_reproduce_the_model(tmp_path, layout):
    path = tmp_path / "ckpt.pth"
    source = make_official_checkpoint(path, "tiny-deit", keep_ratio=0.7, layout=layout)
    loaded = load_model(path)
    assert loaded.variant.name == "tiny-deit"
    assert loaded.checkpoint.source_key == ("<root>" if layout == "bare" else "model")
    assert any("tiny-deit detected" in n for n in loaded.notes)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.model(images), source(images))


def test_training_checkpoint_keep_ratio_comes_from_args(tmp_path):
    path = tmp_path / "ckpt.pth"
    make_official_checkpoint(path, "tiny-deit", keep_ratio=0.8, layout="training")
    loaded = load_model(path)
    assert loaded.keep_counts == (156, 125, 100)
    assert any("base_rate" in n for n in loaded.notes)
    # An explicit --keep-ratio wins over the training args.
    assert load_model(path, keep_ratio=0.7).keep_counts == (137, 96, 67)


def test_use_ema_takes_model_ema_weights(tmp_path):
    path = tmp_path / "ckpt.pth"
    make_official_checkpoint(path, "tiny-deit", layout="training", ema=True)
    plain = load_model(path)
    ema = load_model(path, use_ema=True)
    assert ema.checkpoint.source_key == "model_ema"
    assert torch.allclose(ema.model.head.bias, plain.model.head.bias + 1.0)
    no_ema = tmp_path / "no_ema.pth"
    make_official_checkpoint(no_ema, "tiny-deit", layout="training")
    with pytest.raises(BadInput, match="no 'model_ema' entry"):
        load_model(no_ema, use_ema=True)


def test_module_prefix_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    model = make_official_checkpoint(tmp_path / "a.pth", "tiny-deit")
    prefixed = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"model": prefixed}, tmp_path / "ddp.pth")
    assert load_model(tmp_path / "ddp.pth").variant.name == "tiny-deit"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    loaded = load_model(tmp_path / "w.safetensors")
    assert torch.equal(loaded.model.head.weight, model.head.weight)


class ArbitraryObject:
    """Stands for any pickled class: unpickling one can run code, so it needs explicit trust."""


def test_untrusted_pickled_objects_need_explicit_trust(tmp_path):
    path = tmp_path / "odd.pth"
    sd = make_official_checkpoint(tmp_path / "x.pth", "tiny-deit").state_dict()
    torch.save({"model": sd, "extra": ArbitraryObject()}, path)
    with pytest.raises(BadInput, match=r"ArbitraryObject\); pass --trust-checkpoint"):
        read_checkpoint(path)
    with pytest.warns(UserWarning, match="weights_only=False"):
        ckpt = read_checkpoint(path, trust=True)
    assert ckpt.trusted and "head.weight" in ckpt.state_dict


def test_namespace_args_are_allowed_without_trust(tmp_path):
    path = tmp_path / "train.pth"
    sd = make_official_checkpoint(tmp_path / "x.pth", "tiny-deit").state_dict()
    torch.save({"model": sd, "args": argparse.Namespace(model="deit-s", base_rate=0.7), "epoch": 3}, path)
    assert read_checkpoint(path).train_args == {"model": "deit-s", "base_rate": 0.7}


def test_dense_checkpoint_as_dynamicvit_explains(tmp_path):
    path = tmp_path / "deit_small_patch16_224.pth"
    make_official_checkpoint(path, "tiny-deit", dense=True)
    with pytest.raises(BadInput, match="dense deit checkpoint: it has no score_predictor weights — export it with --dense"):
        load_model(path)
    assert load_model(path, dense=True).keep_counts == ()


def test_dynamicvit_checkpoint_exports_as_dense_baseline(tmp_path):
    path = tmp_path / "dyn.pth"
    make_official_checkpoint(path, "tiny-deit")
    loaded = load_model(path, dense=True)
    assert loaded.dense and any("ignored" in n and "score_predictor" in n for n in loaded.notes)


def test_lvvit_checkpoint_forced_into_deit(tmp_path):
    path = tmp_path / "lv.pth"
    make_official_checkpoint(path, "tiny-lvvit")
    with pytest.raises(BadInput, match="looks like tiny-lvvit .* but --model tiny-deit was given"):
        load_model(path, model_name="tiny-deit")


def test_mismatched_keys_are_listed(tmp_path):
    sd = make_official_checkpoint(tmp_path / "x.pth", "tiny-deit").state_dict()
    sd["blocks.0.mlp.fc1.weight"] = sd["blocks.0.mlp.fc1.weight"][:, :10]
    del sd["norm.weight"]
    sd["surprise.weight"] = torch.zeros(1)
    torch.save({"model": sd}, tmp_path / "bad.pth")
    with pytest.raises(BadInput) as info:
        load_model(tmp_path / "bad.pth")
    text = str(info.value)
    assert "missing 1 (norm.weight)" in text
    assert "unexpected 1 (surprise.weight)" in text
    assert "blocks.0.mlp.fc1.weight (128, 10) vs (128, 64)" in text


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "not found"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(100)), "is a JPEG image, not a PyTorch checkpoint"),
        (lambda p: p.write_text("hello, I am text"), "not a PyTorch checkpoint"),
    ],
    ids=["missing", "directory", "empty", "jpeg", "text"],
)
def test_bad_files(tmp_path, make, message):
    path = tmp_path / "ckpt.pth"
    make(path)
    with pytest.raises(BadInput, match=message):
        read_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    good = tmp_path / "good.pth"
    make_official_checkpoint(good, "tiny-deit")
    data = good.read_bytes()
    bad = tmp_path / "cut.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="truncated or corrupt") as info:
        read_checkpoint(bad)
    # torch's reason is quoted in whole sentences (or cut at a word with "…"), never mid-sentence.
    detail = str(info.value).rpartition(" (")[2]
    assert detail.endswith((".)", "…)")), str(info.value)


def test_long_library_reasons_are_cut_at_a_sentence_or_a_word():
    from dvit_deploy.models.checkpoint import _first_line

    reason = ("PytorchStreamReader failed reading zip archive: failed finding central directory. This is an "
              "internal miniz error. If you are seeing this error, there is a high likelihood that your "
              "checkpoint file is corrupted.")
    assert _first_line(RuntimeError(reason)) == ("PytorchStreamReader failed reading zip archive: failed finding "
                                                 "central directory. This is an internal miniz error.")
    long_word_run = "word " * 60
    cut = _first_line(RuntimeError(long_word_run))
    assert cut.endswith("word…") and len(cut) <= 161
    assert _first_line(RuntimeError("short reason")) == "short reason"


def test_record_round_trip_rebuilds_the_same_model(tmp_path):
    path = tmp_path / "c.pth"
    make_official_checkpoint(path, "tiny-lvvit", layout="training", keep_ratio=0.6)
    loaded = load_model(path)
    rebuilt = load_model_from_record(loaded.record())
    assert rebuilt.keep_counts == loaded.keep_counts == (117, 70, 42)
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(rebuilt.model(images), loaded.model(images))
    make_official_checkpoint(path, "tiny-lvvit", layout="training", keep_ratio=0.6, seed=1)
    with pytest.raises(BadInput, match="changed since export"):
        load_model_from_record(loaded.record())


def test_known_variants_listed_for_unknown_shapes(tmp_path):
    sd = {"cls_token": torch.zeros(1, 1, 48), "pos_embed": torch.zeros(1, 197, 48), "blocks.0.norm1.weight": torch.ones(48)}
    torch.save(sd, tmp_path / "odd.pth")
    with pytest.raises(BadInput, match="no known variant .* dim 48 and depth 1"):
        load_model(tmp_path / "odd.pth")
    assert "deit-s" in VARIANTS
