"""`dvit eval`: top-1/top-5 on generated image folders, and agreement with PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dvit_deploy.cli import app

from .job_calls import evaluate, predict

runner = CliRunner()


def noise_images(folder, count, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"im{i:02d}.png"
        Image.fromarray((rng.random((160, 200, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def labelled_flat(tiny_export, tmp_path):
    """Six images labelled so the expected accuracy is known: 4 with the model's own top-1, 2 wrong."""
    root = tmp_path / "flat"
    paths = noise_images(root, 6)
    result = predict(paths, tiny_export.path, "torch")
    lines = ["filename,label"]
    for i, p in enumerate(result.predictions):
        top5 = [c.index for c in p.top]
        label = top5[0] if i < 4 else next(c for c in range(10) if c not in top5)  # outside the top-5
        lines.append(f"{p.image.name},{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_eval_flat_folder_known_accuracy_and_agreement(tiny_export, labelled_flat):
    result = runner.invoke(app, ["eval", "--data", str(labelled_flat), "--artifact", str(tiny_export.path),
                                 "--batch", "4", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dataset"]["layout"] == "labels file" and doc["dataset"]["images"] == 6
    by_backend = {r["backend"]: r for r in doc["results"]}
    assert set(by_backend) == {"torch", "onnxruntime"} and by_backend["torch"]["reference"]
    for r in by_backend.values():
        assert r["top1"] == pytest.approx(4 / 6) and r["top5"] == pytest.approx(4 / 6)
    agree = by_backend["onnxruntime"]["agreement"]
    assert agree["top1"] == 1.0 and agree["max_abs_logit_diff"] < 1e-3
    assert [k["keep_count"] for k in agree["kept_tokens"]] == [137, 96, 67]
    assert all(k["mean_jaccard"] == 1.0 for k in agree["kept_tokens"])


def test_eval_class_folders_limit_and_table(tiny_export, tmp_path):
    root = tmp_path / "tree"
    for cls, seed in (("a_cls", 1), ("b_cls", 2)):
        noise_images(root / cls, 3, seed)
    full = evaluate(root, tiny_export.path, ["onnxruntime"], batch=4)
    # Independent count: class index = sorted folder position; hits where the model's top-1 matches.
    paths = sorted((root / "a_cls").glob("*.png")) + sorted((root / "b_cls").glob("*.png"))
    preds = predict(paths, tiny_export.path, "onnxruntime").predictions
    expected = np.mean([p.top[0].index == (0 if i < 3 else 1) for i, p in enumerate(preds)])
    assert {s.backend: s.top1 for s in full.scores}["onnxruntime"] == pytest.approx(expected)

    result = runner.invoke(app, ["eval", "--data", str(root), "--artifact", str(tiny_export.path), "--limit", "3",
                                 "--backend", "onnxruntime", "--no-reference", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dataset"]["images"] == 3 and doc["dataset"]["layout"] == "class folders"
    assert doc["dataset"]["label_mapping"] == "sorted folder names -> 0..N-1"  # a 10-class model: folder order
    assert [r["backend"] for r in doc["results"]] == ["onnxruntime"] and doc["results"][0]["agreement"] is None
    assert doc["results"][0]["top1"] == pytest.approx(np.mean([p.top[0].index == 0 for p in preds[:3]]))
    table = runner.invoke(app, ["eval", "--data", str(root), "--artifact", str(tiny_export.path)], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "top-1 agreement" in table.stdout and "(reference)" in table.stdout
    assert "labels: sorted folder names" in table.stdout


def test_eval_min_agreement_and_bad_inputs(tiny_export, labelled_flat, tmp_path):
    ok = runner.invoke(app, ["eval", "--data", str(labelled_flat), "--artifact", str(tiny_export.path),
                             "--min-agreement", "0.99"])
    assert ok.exit_code == 0, ok.output
    (labelled_flat / "labels.csv").write_text("im00.png,42\n")
    cases = [
        (["eval", "--data", str(tmp_path / "missing"), "--artifact", str(tiny_export.path)], "not found"),
        (["eval", "--data", str(labelled_flat), "--artifact", str(tiny_export.path)], "out of range"),
        (["eval", "--data", str(labelled_flat), "--artifact", str(tiny_export.path), "--limit", "0"], "--limit"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_min_agreement_needs_the_reference_and_a_fraction(tiny_export, labelled_flat):
    base = ["eval", "--data", str(labelled_flat), "--artifact", str(tiny_export.path)]
    for extra, message in ((["--min-agreement", "0.9", "--no-reference"], "cannot be used with --no-reference"),
                           (["--min-agreement", "1.5"], "between 0 and 1, got 1.5")):
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 2 and message in result.stderr, result.output


def test_reference_stays_fp32_for_an_fp16_artifact(tiny_export, labelled_flat, workdir):
    """The fp16 graph `dvit build --fp16 --onnx-only` writes is evaluated against PyTorch fp32."""
    built = runner.invoke(app, ["build", str(tiny_export.path), "--fp16", "--onnx-only", "--json"])
    assert built.exit_code == 0, built.output
    fp16_onnx = json.loads(built.stdout)["fp16_onnx"]
    result = evaluate(labelled_flat, fp16_onnx, ["onnxruntime"])
    reference = next(s for s in result.scores if s.reference)
    tested = next(s for s in result.scores if not s.reference)
    assert "fp32" in reference.executes or reference.backend == "torch"
    assert tested.agreement["top1"] == 1.0
