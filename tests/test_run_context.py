"""The run context: what one command decides (verify policy, moved checkpoint, verbosity) and its caches
are passed explicitly and last one run; nothing is left behind in module or process state."""

from __future__ import annotations

import json
import os
import warnings

import pytest
from typer.testing import CliRunner

from dvit_deploy.artifact.context import RunContext
from dvit_deploy.artifact.store import default_artifact, open_artifact
from dvit_deploy.cli.commands import app
from dvit_deploy.helpers.fileio import manifest_path

runner = CliRunner()


def _fake_export(folder, name="tiny.onnx", **fields):
    """A file with a manifest that records its real sha256 (no model needed to open it)."""
    from dvit_deploy.helpers.fileio import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"not a real graph: only opened here")
    manifest = {"variant": "tiny-deit", "kind": "onnx", "precision": "fp32", "dense": False, "keep_ratio": 0.7,
                "keep_counts": [6, 4, 3], "num_patches": 9,
                "onnx": {"sha256": sha256_file(path), "bytes": path.stat().st_size, "external_data": []}, **fields}
    manifest_path(path).write_text(json.dumps(manifest))
    return path


def test_one_context_reads_each_manifest_and_hashes_each_file_once(tmp_path, monkeypatch, file_reads):
    from dvit_deploy.artifact import verify

    monkeypatch.chdir(tmp_path)
    path = _fake_export(tmp_path / "export")
    hashed = []
    real = verify.sha256_file
    monkeypatch.setattr(verify, "sha256_file", lambda p: hashed.append(p) or real(p))
    reads = file_reads({manifest_path(path): "tiny"})
    run = RunContext()
    assert default_artifact((".onnx",), context=run)[0] == path  # picking reads the candidate's manifest
    first = open_artifact(None, (".onnx",), context=run)
    again = open_artifact(path, context=run)
    assert first.sha256_checked and again.sha256_checked and first.context is run and again.context is run
    assert reads == ["tiny"] and len(hashed) == 1  # one read, one hash, for the whole run
    open_artifact(path)  # no context given: a fresh run, cold caches
    assert reads == ["tiny", "tiny"] and len(hashed) == 2


def test_the_moved_checkpoint_is_the_runs_and_checked_against_the_record(tmp_path):
    from dvit_deploy.artifact.manifest import ModelRecord
    from dvit_deploy.helpers.errors import BadInput
    from dvit_deploy.models.checkpoint import load_model_from_record

    record = ModelRecord.from_json({"variant": "tiny-deit", "keep_counts": [6, 4, 3],
                                    "checkpoint": {"path": str(tmp_path / "gone.pth"), "sha256": "ab" * 32}})
    with pytest.raises(BadInput, match="gone.pth, is not there \\(moved\\?\\)"):
        load_model_from_record(record)
    with pytest.raises(BadInput, match="--checkpoint .*nothere.pth not found"):
        load_model_from_record(record, context=RunContext(checkpoint=tmp_path / "nothere.pth"))
    other = tmp_path / "other.pth"
    other.write_bytes(b"some other file")
    with pytest.raises(BadInput, match="is not the checkpoint this artifact was exported from"):
        load_model_from_record(record, context=RunContext(checkpoint=other))
    with pytest.raises(BadInput, match="is not there \\(moved\\?\\)"):  # a new run: nothing moved any more
        load_model_from_record(record, context=RunContext())


def test_with_changes_keeps_the_runs_caches():
    run = RunContext()
    run.caches.digests[("x",)] = "d"
    quiet = run.with_changes(verify=False)
    assert quiet.verify is False and run.verify is True and quiet.caches is run.caches


def test_verbose_is_the_commands_own_and_leaves_no_process_state(monkeypatch):
    """``dvit --verbose`` shows library warnings raw; it lives in the command's click context, so a later
    command in the same process (a test run, an embedding tool) is quiet again."""
    from dvit_deploy.jobs import flops as flops_cmd  # the job counts; the CLI renders
    from dvit_deploy.cli.failures import verbose_requested

    real = flops_cmd.count_macs

    def noisy(*args, **kwargs):
        warnings.warn("a library says something", UserWarning)
        return real(*args, **kwargs)

    monkeypatch.setattr(flops_cmd, "count_macs", noisy)
    args = ["flops", "--model", "deit-s", "--keep-ratio", "0.7", "--json"]
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        loud = runner.invoke(app, ["--verbose", *args])
    assert loud.exit_code == 0, loud.output
    assert "warning: a library says something" not in loud.stderr  # not turned into a note line
    assert any("a library says something" in str(w.message) for w in raw)  # raised as it came
    quiet = runner.invoke(app, args)
    assert quiet.exit_code == 0, quiet.output
    assert "warning: a library says something" in quiet.stderr
    assert "DVIT_VERBOSE" not in os.environ and verbose_requested() is False


def test_a_job_binds_the_artifact_to_its_own_run(exported):
    """A job run in context B on an artifact opened in context A uses B (its moved checkpoint, its caches)."""
    from dvit_deploy.artifact.store import open_artifact

    a, b = RunContext(), RunContext(verify=False)
    opened = open_artifact(exported, context=a)
    assert opened.context is a
    assert opened.in_context(a) is opened
    rebound = opened.in_context(b)
    assert rebound.context is b and rebound.path == opened.path and rebound.manifest is opened.manifest
    assert opened.context is a  # the original is untouched (frozen)
