"""`dvit predict`: top-5 on PNG/JPEG with the model's preprocessing, and the kept-token picture."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from dvit_deploy.helpers.fileio import manifest_path
from dvit_deploy.jobs import predict as predict_module
from dvit_deploy.cli import app
from dvit_deploy.helpers.fileio import sha256_file
from dvit_deploy.helpers.errors import BadInput, MissingDependency
from dvit_deploy.jobs.viz import MASK_COLOUR, MASK_OPACITY, keep_mask, masked_image, save_keep_figure

from .job_calls import predict

runner = CliRunner()


def make_images(folder, count=2):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        pixels = (rng.random((180 + 20 * i, 260, 3)) * 255).astype(np.uint8)
        path = folder / (f"img{i}.png" if i % 2 == 0 else f"img{i}.jpg")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def stripped_export(tiny_export, tmp_path):
    """The tiny export without its token outputs (what a plain `dvit export` writes)."""
    model = onnx.load(str(tiny_export.path))
    keep = [o for o in model.graph.output if o.name == "logits"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    path = tmp_path / "plain.onnx"
    onnx.save(model, str(path))
    onnx_record = dict(tiny_export.manifest.to_json()["onnx"], sha256=sha256_file(path), bytes=path.stat().st_size)
    manifest = dict(tiny_export.manifest.to_json(), token_outputs=False, artifact="plain.onnx", onnx=onnx_record,
                    outputs=[o for o in tiny_export.manifest.to_json()["outputs"] if o["name"] == "logits"])
    manifest_path(path).write_text(json.dumps(manifest))
    return path


def test_cli_predict_top5_json_matches_torch(tiny_export, tmp_path):
    images = make_images(tmp_path)
    result = runner.invoke(app, ["predict", *map(str, images), "--artifact", str(tiny_export.path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["backend"] == "onnxruntime" and len(doc["predictions"]) == 2
    torch_result = predict(images, tiny_export.path, "torch")
    for got, ref in zip(doc["predictions"], torch_result.predictions):
        probs = [c["probability"] for c in got["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
        assert got["top"][0]["name"] == f"class {got['top'][0]['index']}"  # 10-class model: no ImageNet names
        assert [c["index"] for c in got["top"]][:1] == [ref.top[0].index]
        assert probs[0] == pytest.approx(ref.top[0].probability, abs=1e-4)
        assert got["kept_per_stage"] == [137, 96, 67]


def test_cli_predict_viz_writes_png_with_kept_sets_of_torch(tiny_export, tmp_path):
    images = make_images(tmp_path)
    out = tmp_path / "viz" / "keep.png"
    result = runner.invoke(app, ["predict", *map(str, images), "--artifact", str(tiny_export.path), "--viz", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as png:
        assert png.format == "PNG"
        width, height = png.size
    assert width > 1.5 * height  # two rows of four panels (input + 3 stages)
    again = runner.invoke(app, ["predict", str(images[0]), "--artifact", str(tiny_export.path), "--viz", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    ort = predict(images, tiny_export.path, want_kept=True)
    ref = predict(images, tiny_export.path, "torch", want_kept=True)
    for a, b in zip(ort.kept, ref.kept):
        assert all(set(x) == set(y) for x, y in zip(a, b))
    for s in range(1, 3):  # later stages keep a subset of the earlier stage's patches
        assert all(set(ort.kept[s][i]) <= set(ort.kept[s - 1][i]) for i in range(2))


def test_masking_paints_exactly_the_dropped_patches():
    grid, patch = 14, 16
    image = np.random.default_rng(1).random((224, 224, 3)).astype(np.float32)
    kept = np.array([0, 15, 195])  # top-left, row 1 col 1, bottom-right
    mask = keep_mask(kept, grid)
    assert mask.sum() == 3 and mask[0, 0] and mask[1, 1] and mask[13, 13]
    shown = masked_image(image, mask, patch)
    np.testing.assert_array_equal(shown[16:32, 16:32], image[16:32, 16:32])  # patch 15 kept as is
    dropped = shown[0:16, 16:32]  # patch 1 was dropped
    np.testing.assert_allclose(dropped, MASK_OPACITY * MASK_COLOUR + (1 - MASK_OPACITY) * image[0:16, 16:32], rtol=1e-6)
    with pytest.raises(BadInput, match="outside the 14×14"):
        keep_mask(np.array([196]), grid)


def test_viz_without_matplotlib_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependency, match=r"dvit-deploy\[viz\]"):
        save_keep_figure(tmp_path / "x.png", np.zeros((1, 224, 224, 3)), [np.zeros((1, 3), int)], grid=14, patch=16)


def test_artifact_without_token_outputs(stripped_export, tmp_path, monkeypatch):
    images = make_images(tmp_path, 1)
    # ONNX Runtime recovers the kept tokens from the graph's TopK nodes.
    result = runner.invoke(app, ["predict", str(images[0]), "--artifact", str(stripped_export),
                                 "--viz", str(tmp_path / "a.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.png").is_file()
    # A backend that cannot recover them: one clear line pointing at --token-outputs, exit 2.
    real_open = predict_module.runner_for_artifact
    monkeypatch.setattr(predict_module, "runner_for_artifact",
                        lambda *a, **kw: real_open(*a, **{**kw, "topk_outputs": False}))
    result = runner.invoke(app, ["predict", str(images[0]), "--artifact", str(stripped_export),
                                 "--viz", str(tmp_path / "b.png")])
    assert result.exit_code == 2
    assert "has no token outputs" in result.output and "dvit export --token-outputs" in result.output
    assert not (tmp_path / "b.png").exists()
    # Without --viz the same artifact predicts fine.
    assert runner.invoke(app, ["predict", str(images[0]), "--artifact", str(stripped_export)]).exit_code == 0


def test_predict_bad_inputs(tiny_export, workdir):
    good = make_images(workdir, 1)[0]
    (workdir / "fake.jpg").write_bytes(b"\x00\x01 definitely not a jpeg")
    dense = workdir / "dense.onnx"
    shutil.copy2(tiny_export.path, dense)
    manifest_path(dense).write_text(json.dumps(dict(tiny_export.manifest.to_json(), dense=True)))
    cases = [
        (["predict", str(workdir / "fake.jpg"), "--artifact", str(tiny_export.path)], "not an image"),
        (["predict", str(workdir / "nope.png"), "--artifact", str(tiny_export.path)], "not found"),
        (["predict", str(good)], "no .onnx/.engine/.plan artifact"),  # empty ./export
        (["predict", str(good), "--artifact", str(tiny_export.path), "--backend", "magic"], "unknown backend"),
        (["predict", str(good), "--artifact", str(dense), "--viz", "d.png"], "dense model"),
        (["predict", str(good), "--artifact", str(tiny_export.path), "--viz", "d.jpg"], "ending in .png"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
