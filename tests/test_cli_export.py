"""`dvit export` from the command line: the embedded default, real-size checkpoints, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from dvit_deploy.cli import app
from dvit_deploy.export.check import seeded_images

from .conftest import make_official_checkpoint

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, ["export", *map(str, args)])


def test_embedded_default_runs_from_the_installed_cli(tmp_path):
    """The README's first command: no checkpoint, a seeded DeiT-S, exported and checked."""
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "dvit_deploy", "export", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["passed"] and result["variant"] == "deit-s" and result["keep_counts"] == [137, 96, 67]
    assert result["check"]["parity"]["logits"]["max_abs"] < 1e-4
    assert [s["k"] for s in result["check"]["stages"]] == [137, 96, 67]
    assert (tmp_path / "export" / "deit-s-r0.7.onnx").is_file()
    assert (tmp_path / "export" / "deit-s-r0.7.onnx.json").is_file()
    assert "RANDOM weights" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name, ratio", [("deit-s", 0.7), ("deit-256", 0.7), ("lvvit-s", 0.7)])
def test_official_release_checkpoint_round_trip(workdir, name, ratio):
    """Official release layout -> `dvit export CKPT --keep-ratio` -> ORT logits equal PyTorch."""
    ckpt = workdir / f"dynamic-{name}_r{ratio}.pth"
    source = make_official_checkpoint(ckpt, name, keep_ratio=ratio, layout="release")
    out = workdir / "x.onnx"
    result = _invoke(ckpt, "--keep-ratio", ratio, "--output", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["variant"] == name and report["keep_counts"] == [137, 96, 67]
    assert report["checkpoint"]["source_key"] == "model"

    images = seeded_images(2, (3, 224, 224), seed=99)
    (logits,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"images": images.numpy()})
    with torch.no_grad():
        expected = source(images).numpy()
    np.testing.assert_allclose(logits, expected, atol=2e-4, rtol=1e-4)


def test_tiny_export_table_output(workdir):
    ckpt = workdir / "tiny.pth"
    make_official_checkpoint(ckpt, "tiny-deit", layout="training", keep_ratio=0.8)
    result = _invoke(ckpt, "--token-outputs")
    assert result.exit_code == 0, result.output
    assert "tiny-deit detected" in result.stderr
    assert "keep ratio 0.8 taken from the checkpoint's training args" in result.stderr
    assert "TopK per stage (K)" in result.stdout and "3 (156, 125, 100)" in result.stdout
    assert (workdir / "export" / "tiny-deit-r0.8.onnx").is_file()


def _assert_clean_failure(result, code, message, folder):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert not [p for p in folder.rglob("*.onnx")] and not [p for p in folder.rglob("*.json")]


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda d: None, ["missing.pth"], "checkpoint missing.pth not found"),
        (lambda d: (d / "ckpt_dir").mkdir(), ["ckpt_dir"], "is a directory, not a checkpoint file"),
        (lambda d: (d / "photo.pth").write_bytes(b"\xff\xd8\xff\xe0" + bytes(64)), ["photo.pth"],
         "is a JPEG image, not a PyTorch checkpoint"),
        (lambda d: make_official_checkpoint(d / "dense.pth", "tiny-deit", dense=True), ["dense.pth"],
         "looks like a dense deit checkpoint: it has no score_predictor weights — export it with --dense"),
        (lambda d: make_official_checkpoint(d / "lv.pth", "tiny-lvvit"), ["lv.pth", "--model", "tiny-deit"],
         "looks like tiny-lvvit"),
        (lambda d: None, ["--model", "tiny-deit", "--keep-ratio", "0"], "keep ratio must be in (0, 1], got 0.0"),
        (lambda d: None, ["--model", "tiny-deit", "--keep-ratio", "1.5"], "keep ratio must be in (0, 1], got 1.5"),
        (lambda d: (d / "afile").write_text("x"), ["--model", "tiny-deit", "--output", "afile/m.onnx"],
         "cannot write afile/m.onnx: afile is a file, not a folder"),
        (lambda d: None, ["--model", "nope"], "unknown model 'nope'"),
        (lambda d: None, ["--model", "tiny-deit", "--opset", "12"], "--opset must be between 18 and 23"),
    ],
    ids=["missing", "directory", "jpeg", "dense-as-dynamic", "lvvit-as-deit", "rho-zero", "rho-above-one",
         "unwritable-output", "unknown-model", "old-opset"],
)
def test_bad_input_is_one_line_exit_2(workdir, setup, args, message):
    setup(workdir)
    _assert_clean_failure(_invoke(*args), 2, message, workdir)


def test_truncated_checkpoint_cli(workdir):
    good = workdir / "good.pth"
    make_official_checkpoint(good, "tiny-deit")
    (workdir / "cut.pth").write_bytes(good.read_bytes()[:5000])
    good.unlink()
    _assert_clean_failure(_invoke("cut.pth"), 2, "truncated or corrupt", workdir)


def test_existing_output_requires_force(workdir):
    args = ["--model", "tiny-deit", "--output", "m.onnx"]
    assert _invoke(*args).exit_code == 0
    before = (workdir / "m.onnx").stat().st_mtime_ns
    result = _invoke(*args)
    assert result.exit_code == 2 and "already exists; pass --force" in result.stderr
    assert (workdir / "m.onnx").stat().st_mtime_ns == before
    assert _invoke(*args, "--force").exit_code == 0


def test_version_flag():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("dvit-deploy ")


_REFUSE_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None   # importing torch now fails: a refusal must come before it
sys.modules["timm"] = None
from typer.testing import CliRunner
from dvit_deploy.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"exit_code": result.exit_code, "stderr": result.stderr,
                  "torch": sys.modules.get("torch") is not None}))
"""


@pytest.mark.parametrize("args, words", [
    (["--model", "convnext-t", "--dynamic-keep"], ["--dynamic-keep is not supported for convnext"]),
    (["--model", "swin-t", "--dynamic-keep", "-r", "0.8"], ["--dynamic-keep is not supported for swin"]),
    (["--model", "convnext-t", "-r", "1"], ["keep all 196 positions at predictor 1", "--dense"]),
    (["--model", "swin-t", "--keep-ratio", "1.0"], ["stage ratios 1, 0.8, 0.6", "ρ = 1 is not 'everything kept'"]),
    (["--model", "convnext-t", "--stage-ratios", "0.9,1,0.5"], ["keep all 196 positions at predictor 2"]),
])
def test_convnext_swin_requests_refused_before_torch_loads(tmp_path, args, words):
    """--dynamic-keep and ρ = 1 on ConvNeXt/Swin are refused in one line from the flags alone: torch (and so
    the checkpoint and the model) is never imported, where it used to take 8-38 s to fail."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-c", _REFUSE_WITHOUT_TORCH, "export", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["exit_code"] == 2 and not result["torch"], result
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert all(w in lines[0] for w in words), lines[0]
    assert not list(tmp_path.iterdir())


def test_convnext_checkpoint_at_rho_one_is_refused_before_the_model_is_built(workdir, monkeypatch):
    """A checkpoint's variant is known once it is read: the refusal comes then, before the model is built."""
    make_official_checkpoint(workdir / "c.pth", "tiny-convnext", keep_ratio=0.7)

    def built(*a, **k):
        raise AssertionError("the model was built before the request was checked")

    monkeypatch.setattr("dvit_deploy.models.create_model", built)
    for args in (["-r", "1"], ["--dynamic-keep"]):
        result = _invoke(workdir / "c.pth", *args)
        assert result.exit_code == 2, result.output
        assert ("keep all 16 positions" if args[0] == "-r" else "--dynamic-keep is not supported") in result.stderr
    assert not (workdir / "export").exists()


def test_convnext_below_rho_one_still_exports(workdir):
    """Any ρ below 1 exports as the official schedule runs it (0.99: 15/12/9 of 16 positions at 64 px)."""
    result = _invoke("--model", "tiny-convnext", "-r", "0.99", "--check-samples", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["keep_counts"] == [15, 12, 9]
