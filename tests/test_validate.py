"""`dvit validate`: backends vs the PyTorch fp32 reference, kept-token agreement, exit codes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from dvit_deploy.cli import app
from dvit_deploy.artifact.manifest import ModelRecord
from dvit_deploy.helpers.fileio import manifest_path, read_json, write_json_atomic
from dvit_deploy.helpers.batching import RunOutput, run_batched


@pytest.fixture(scope="module")
def export_root(tmp_path_factory):
    """export/tiny.onnx with token outputs, and export/plain.onnx without (exported once)."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    root = tmp_path_factory.mktemp("validate")
    loaded = load_model(model_name="tiny-deit", keep_ratio=0.7)
    plain = export_onnx(loaded, root / "export" / "plain.onnx", check_samples=2)
    tokens = export_onnx(loaded, root / "export" / "tiny.onnx", token_outputs=True, check_samples=2)
    return tokens.path, plain.path


@pytest.fixture
def exported(export_root, monkeypatch):
    monkeypatch.chdir(export_root[0].parent.parent)
    return export_root


def invoke(*args):
    return CliRunner().invoke(app, ["validate", *map(str, args)])


def test_default_artifact_passes_with_stage_agreement(exported):
    result = invoke("--json", "--samples", "4")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is True and data["samples"] == 4
    (entry,) = data["results"]
    assert entry["artifact"].endswith("tiny.onnx")  # the newest export
    assert entry["backend"] == "onnxruntime" and "CPUExecutionProvider" in entry["executes"]
    assert entry["token_info"] == "token outputs"
    assert [s["keep_count"] for s in entry["stages"]] == [137, 96, 67]
    # Kept sets agree, or differ only where the reference itself had a near-tie (TopK tie order is
    # unspecified, and rounding differs between CPUs): the rule `validate` applies.
    assert entry["unexplained_flips"] == 0
    assert all(s["flipped_samples"] == s["near_tie_flips"] for s in entry["stages"])
    assert all(s["mean_jaccard"] > 0.95 for s in entry["stages"])
    assert entry["logits"]["max_abs"] < 1e-3 and entry["logits"]["top1_agreement"] == 1.0


def test_several_artifacts_and_torch_backend(exported):
    tokens, plain = exported
    result = invoke(tokens, plain, "--backend", "onnxruntime", "--backend", "torch", "--samples", "3",
                    "--batch", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by = {(r["artifact"].rsplit("/", 1)[-1], r["backend"]): r for r in data["results"]}
    assert set(by) == {("tiny.onnx", "onnxruntime"), ("tiny.onnx", "torch"),
                       ("plain.onnx", "onnxruntime"), ("plain.onnx", "torch")}
    assert by[("plain.onnx", "onnxruntime")]["token_info"] == "TopK outputs (in-memory copy)"
    assert len(by[("plain.onnx", "onnxruntime")]["stages"]) == 3
    assert by[("tiny.onnx", "torch")]["logits"]["max_abs"] == 0.0  # the reference against itself


def test_table_output(exported):
    result = invoke("--samples", "2")
    assert result.exit_code == 0, result.output
    assert "pass" in result.stdout and "S1:" in result.stdout


def test_mismatch_fails_with_exit_1(exported, tmp_path):
    tokens, _ = exported
    wrong = tmp_path / "wrong.onnx"  # outside ./export: other tests' default artifact stays the same
    shutil.copy(tokens, wrong)
    manifest = read_json(manifest_path(tokens))
    manifest["seed"] = 12345  # the reference is rebuilt with other weights than the graph holds
    write_json_atomic(manifest_path(wrong), manifest)
    result = invoke(wrong, "--samples", "2", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["passed"] is False and data["results"][0]["status"] == "failed"
    entry = data["results"][0]
    # Other weights pick other tokens: flagged as disagreements, not as near-tie flips.
    assert entry["unexplained_flips"] >= 1
    assert any("kept different tokens" in f for f in entry["failures"])
    assert entry["stages"][0]["mean_jaccard"] < 1.0


def test_unavailable_backend_exits_2(exported):
    pytest.importorskip("onnxruntime")
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    tokens, _ = exported
    result = invoke(tokens, "--backend", "tensorrt", "--samples", "2")
    assert result.exit_code == 2
    assert "tensorrt" in result.output


def test_no_artifact_is_bad_input(workdir):
    result = invoke()
    assert result.exit_code == 2 and "dvit export" in result.output


def test_real_images(exported, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (240, 300, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    result = invoke(exported[0], "--images", folder, "--samples", "8", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["samples"] == 3 and "imgs" in data["inputs"]
    # Fewer images than --samples: used whole, and said (stderr, --json), never silently fewer.
    assert "--samples 8 asked; the folder holds only 3" in data["inputs"]
    assert data["warnings"] == [f"validated 3 image(s), fewer than --samples 8: {folder} holds only 3"]
    assert "warning: validated 3 image(s), fewer than --samples 8" in result.stderr


def test_fixed_batch_padding_is_trimmed():
    seen = []

    def run(chunk):
        seen.append(len(chunk))
        return RunOutput(chunk.sum(axis=(1, 2, 3))[:, None])

    images = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1)
    reals = []
    outputs = run_batched(run, images, 2, fixed=True, on_batch=reals.append)
    assert seen == [2, 2, 2] and reals == [2, 2, 1]
    assert outputs.logits[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_default_keeps_the_pruned_model_when_a_dense_twin_is_newer(workdir):
    """`dvit export` then `dvit export --dense` (what profiling wants): the default artifact rule
    (newest *pruned*) keeps the pruned model, whose per-stage token agreement is reported."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    export_onnx(load_model(model_name="tiny-deit", keep_ratio=0.7), check_samples=2)
    export_onnx(load_model(model_name="tiny-deit", dense=True), check_samples=2)
    result = invoke("--json", "--samples", "2")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)["results"]
    assert [e["artifact"].split("/")[-1] for e in entries] == ["tiny-deit-r0.7.onnx"]
    assert [s["keep_count"] for s in entries[0]["stages"]] == [137, 96, 67]
    assert "using export/tiny-deit-r0.7.onnx (newest pruned" in result.stderr


def test_many_samples_are_streamed_not_held(exported):
    """`validate --samples 20000` held every input (13.7 GB): inputs are now made one batch at a time.

    200 DeiT-size inputs are 120 MB; with batches of 8 the numpy memory at any moment stays a few batches.
    """
    import tracemalloc

    from dvit_deploy.jobs import validate as validate_lib

    tracemalloc.start()
    try:
        report = validate_lib.validate([exported[0]], samples=200, batch=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.passed and report.samples == 200
    assert peak < 40 << 20, f"numpy peak {peak / 2**20:.0f} MB: the inputs were held at once"
    # The same inputs, whatever the batch: seeded batches are one stream.
    source = validate_lib.load_inputs(ModelRecord.from_json(read_json(manifest_path(exported[0]))), 10, None)
    assert np.array_equal(np.concatenate(list(source.batches(3))), np.concatenate(list(source.batches(10))))


def test_validate_command_reads_the_manifest_once(exported, file_reads):
    """`dvit validate` with no path: the default is picked, opened and verified inside the command's
    --no-verify policy, and that Artifact goes to the job: its manifest is read once."""
    tokens, plain = exported
    reads = file_reads({manifest_path(p): p.name for p in (tokens, plain)})
    result = invoke("--json", "--samples", "2")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["artifact"].endswith("tiny.onnx")
    # The chosen one once (picked, checked, verified, run); a candidate looked at while picking, at most once.
    assert reads.count("tiny.onnx") == 1 and reads.count("plain.onnx") <= 1, reads


def test_run_is_the_command_seam_options_context_artifacts(exported):
    """The job takes a frozen ValidateOptions, the RunContext and the opened artifacts; the CLI module only
    turns flags into options, calls that one run and renders."""
    import ast
    import dataclasses
    from pathlib import Path

    from dvit_deploy.artifact.context import RunContext
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.cli import validate_cmd
    from dvit_deploy.helpers.errors import BadInput
    from dvit_deploy.jobs.validate import ValidateOptions, run

    tokens, plain = exported
    options = ValidateOptions(backends=("onnxruntime", "torch"), samples=4, batch=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.samples = 1  # type: ignore[misc]
    report = run(options, RunContext(), [open_artifact(plain)])
    assert [r.backend for r in report.results] == ["onnxruntime", "torch"] and report.passed
    assert [r.token_info for r in report.results] == ["TopK outputs (in-memory copy)", "token outputs"]
    assert all(r.comparison.samples == 4 and len(r.comparison.stages) == 3 for r in report.results)
    with pytest.raises(BadInput, match="--samples must be"):
        run(ValidateOptions(samples=0), RunContext(), [])
    source = Path(validate_cmd.__file__).read_text()
    calls = [n.func.attr for n in ast.walk(ast.parse(source))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr.startswith("run")]
    assert len(source.splitlines()) <= 120 and calls == ["run"]
