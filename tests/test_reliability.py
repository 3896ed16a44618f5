"""Reliability guarantees (issue 8): --force, sha256 checks, signals, default artifact, clean output.

The one-line-per-bad-input rule for every command lives in ``test_bad_inputs.py``; these tests
cover what happens on the good paths and with real signals sent to a real process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dvit_deploy.helpers.fileio import manifest_path
from dvit_deploy.artifact import verify as artifact_verify
from dvit_deploy.artifact.context import RunContext
from dvit_deploy.cli import app
from dvit_deploy.export import export_onnx
from dvit_deploy.models.checkpoint import load_model
from dvit_deploy.jobs.ship import make_bundle, verify_bundle
from dvit_deploy.artifact.store import default_artifact

from .conftest import make_official_checkpoint

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# 1. --force replaces only what the tool made


def test_force_replaces_a_previous_bundle_and_leaves_no_parked_copy(exported, workdir):
    first = make_bundle([exported], "x86-trt10", output=workdir / "b")
    (first.folder / "extra-from-device.txt").write_text("x")
    second = make_bundle([exported], "x86-trt10", output=workdir / "b", force=True)
    assert second.folder == first.folder and not (second.folder / "extra-from-device.txt").exists()
    assert verify_bundle(second.folder).passed
    assert sorted(p.name for p in workdir.iterdir()) == ["b", "b.tar.gz", "export"]  # no .b.old-<pid>, no temp


def test_package_force_on_the_current_folder_deletes_nothing(exported, workdir):
    (workdir / "precious.txt").write_text("my work")
    result = runner.invoke(app, ["package", "--target", "x86-trt10", "-o", ".", "--force"])
    assert result.exit_code == 2 and "current folder" in result.stderr
    assert (workdir / "precious.txt").read_text() == "my work" and exported.is_file()


def test_force_help_says_what_it_replaces():
    text = runner.invoke(app, ["package", "--help"], env={"COLUMNS": "200"}).stdout
    assert "only a folder holding a dvit bundle.json" in " ".join(text.split())
    text = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200"}).stdout
    assert "anything else is refused" in " ".join(text.split())


# --------------------------------------------------------------------------------------------
# 2. Artifacts are checked against their manifests


def _record_wrong_digest(artifact: Path) -> None:
    manifest_file = manifest_path(artifact)
    data = json.loads(manifest_file.read_text())
    data["onnx"]["sha256"] = "0" * 64
    manifest_file.write_text(json.dumps(data))


def test_no_verify_warns_and_runs(exported):
    _record_wrong_digest(exported)
    refused = runner.invoke(app, ["validate", "-n", "2"])
    assert refused.exit_code == 2 and "does not match its manifest" in refused.stderr
    allowed = runner.invoke(app, ["validate", "-n", "2", "--no-verify"])
    assert allowed.exit_code == 0, allowed.output
    assert "warning:" in allowed.stderr and "used anyway (--no-verify)" in allowed.stderr


def test_digests_are_streamed_once_per_file_state(tmp_path, monkeypatch):
    calls = []
    real = artifact_verify.sha256_file
    monkeypatch.setattr(artifact_verify, "sha256_file", lambda p: calls.append(p) or real(p))
    f = tmp_path / "m.onnx"
    f.write_bytes(b"abc")
    run = RunContext()
    assert artifact_verify.cached_sha256(f, run) == artifact_verify.cached_sha256(f, run)
    assert len(calls) == 1
    f.write_bytes(b"abcd")  # a changed file is hashed again
    artifact_verify.cached_sha256(f, run)
    assert len(calls) == 2
    artifact_verify.cached_sha256(f, RunContext())  # the cache is the run's: a new run hashes again
    assert len(calls) == 3


def test_package_refuses_an_artifact_that_verify_would_reject(exported, workdir):
    _record_wrong_digest(exported)
    result = runner.invoke(app, ["package", "--target", "x86-trt10", "-o", "b"])
    assert result.exit_code == 2 and "does not match its manifest" in result.stderr
    assert not (workdir / "b").exists() and not (workdir / "b.tar.gz").exists()


# --------------------------------------------------------------------------------------------
# 5. Signals on a real process: no traceback, exit 130/143, temporary files removed


def _dvit_process(args: list[str], cwd: Path, *, tiny_variants: bool = False) -> subprocess.Popen:
    """`dvit ARGS` through the executable's entry point (optionally with the tests' tiny variants)."""
    if tiny_variants:
        command = [sys.executable, "-c", "import sys; sys.argv = ['dvit', *sys.argv[1:]]; import tests.conftest; "
                   "from dvit_deploy.entry import main; main()", *args]
    else:
        command = [sys.executable, "-m", "dvit_deploy", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# The real entry point, with an import hook that reports (on stdout) when the process first imports a
# given module and may pause there: signals then arrive at a known point, whatever the machine's speed.
_AT_IMPORT = r"""
import sys, time
class AtImport:
    def __init__(self, name, pause):
        self.name, self.pause = name, pause
    def find_spec(self, name, path=None, target=None):
        if name == self.name:
            sys.meta_path.remove(self)
            print("reached " + name, flush=True)
            time.sleep(self.pause)
        return None
sys.meta_path.insert(0, AtImport(sys.argv[1], float(sys.argv[2])))
sys.argv = ["dvit", *sys.argv[3:]]
from dvit_deploy.entry import main
main()
"""


def _dvit_at_import(module: str, pause: float, args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _AT_IMPORT, module, str(pause), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == f"reached {module}", (line, proc.communicate(timeout=120))
    return proc


def _interrupted_in_one_line(proc: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    code, word = (130, "interrupted") if sig == signal.SIGINT else (143, "terminated")
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines() == [word], stderr


# Where start-up spends its time, in order: the handler's own modules (cli.failures: typer, rich), the
# commands (cli.commands), then the command's heavy ones (torch). A signal while paused in any of them.
START_UP_IMPORTS = ["dvit_deploy.cli.failures", "typer", "rich.console", "dvit_deploy.cli.commands", "torch"]


@pytest.mark.parametrize("module", START_UP_IMPORTS)
def test_ctrl_c_while_importing_is_one_line_and_130(tmp_path, module):
    _interrupted_in_one_line(_dvit_at_import(module, 1.0, ["export", "--model", "deit-s"], tmp_path))


@pytest.mark.parametrize("module", ["dvit_deploy.cli.failures", "rich.console", "dvit_deploy.cli.commands"])
def test_sigterm_while_importing_is_one_line_and_143(tmp_path, module):
    _interrupted_in_one_line(_dvit_at_import(module, 1.0, ["export", "--model", "deit-s"], tmp_path), signal.SIGTERM)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.15, 0.6, 1.2])
def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path, delay):
    """Ctrl-C ``delay`` s after dvit's code starts running (timed from its first import, so the point is in
    dvit's start-up, not in the interpreter's, on a fast or a slow machine): never an abort or traceback."""
    proc = _dvit_at_import("dvit_deploy.cli", 0.0, ["export", "--model", "deit-s"], tmp_path)
    time.sleep(delay)
    _interrupted_in_one_line(proc)


def test_sigterm_during_export_removes_the_temporary_folder(tmp_path):
    proc = _dvit_process(["export", "--model", "tiny-deit"], tmp_path, tiny_variants=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("export/.tiny-deit-r0.7.*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the export never started writing"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "terminated"
    assert list((tmp_path / "export").iterdir()) == []  # no .tiny-deit-r0.7.* temp folder, no half artifact


# --------------------------------------------------------------------------------------------
# 6. Honest messages; warnings do not leak


def test_trusted_checkpoint_warning_is_one_line(workdir):
    make_official_checkpoint(workdir / "c.pth", "tiny-deit")
    result = runner.invoke(app, ["export", "c.pth", "--trust-checkpoint", "--check-samples", "1"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "weights_only=False" in warnings[0]
    assert "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr


def test_ort_load_error_keeps_its_cause():
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from dvit_deploy.runtime.ort_runner import ort_load_cause

    node = helper.make_node("FooBar", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(Exception) as raised:
        ort.InferenceSession(model.SerializeToString())
    cause = ort_load_cause(raised.value)
    assert "FooBar" in cause and cause.startswith("No Op registered")


# --------------------------------------------------------------------------------------------
# 7. One rule for the default artifact


def test_default_artifact_is_the_newest_pruned_one_for_every_command(exported, workdir):
    dense = export_onnx(load_model(model_name="tiny-deit", dense=True), check_samples=1)
    os.utime(dense.path, (time.time() + 10, time.time() + 10))  # the dense twin is newer
    path, why = default_artifact()
    assert path == exported and "newest pruned" in why
    assert default_artifact((".onnx",))[0] == exported
    for args in (["doctor"], ["package", "--target", "x86-trt10", "--no-archive", "-o", "b"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert f"using export/{exported.name} (newest pruned" in result.stderr
    (workdir / "img.png").write_bytes(b"")  # predict and validate print the same line before their work
    for args in (["validate", "-n", "2"], ["predict", "img.png"]):
        assert f"using export/{exported.name} (newest pruned" in runner.invoke(app, args).stderr


def test_only_dense_exports_pick_the_newest_and_say_so(workdir):
    dense = export_onnx(load_model(model_name="tiny-deit", dense=True), check_samples=1)
    path, why = default_artifact()
    assert path == dense.path and "none of them is pruned" in why


# --------------------------------------------------------------------------------------------
# 8. Consistent inputs


def test_validate_images_reads_class_sub_folders_like_eval(exported, workdir):
    for cls in ("cat", "dog"):
        (workdir / "val" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 32, 3), 60 * i + 40, np.uint8)).save(workdir / "val" / cls / f"{i}.png")
    result = runner.invoke(app, ["validate", "--images", "val", "-n", "4", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["samples"] == 4 and "4 image(s) from val" in doc["inputs"]


def test_a_different_head_is_said_in_the_export_notes(workdir):
    model = make_official_checkpoint(workdir / "c.pth", "tiny-deit")
    state = torch.load(workdir / "c.pth", weights_only=True)
    state["model"]["head.weight"] = state["model"]["head.weight"][:5]
    state["model"]["head.bias"] = state["model"]["head.bias"][:5]
    torch.save(state, workdir / "c5.pth")
    loaded = load_model(workdir / "c5.pth")
    assert model.head.out_features == 10 and loaded.variant.num_classes == 5
    assert any("10 → 5 classes" in note for note in loaded.notes)


# --------------------------------------------------------------------------------------------
# 9. Progress when piped


def test_piped_progress_is_a_line_per_phase(workdir):
    result = runner.invoke(app, ["export", "--model", "tiny-deit", "--check-samples", "1"])
    assert result.exit_code == 0, result.output
    phases = [line for line in result.stderr.splitlines() if line.startswith("export: ")]
    assert phases[0] == "export: export …" and any(line.endswith(" s)") for line in phases)
    assert not [line for line in result.stderr.splitlines() if not line.strip()]  # no blank lines


def test_an_artifact_never_takes_over_another_artifacts_manifest(tmp_path):
    """Manifests are named after the whole file name (m.onnx.json, m.engine.json), so m.onnx and m.engine in
    one folder (trtexec's naming) each keep their own; a 0.1 manifest m.json stays m.onnx's, and a manifest
    name describing another file that is there is still refused, with or without --force."""
    from dvit_deploy.helpers.errors import BadInput
    from dvit_deploy.helpers.fileio import prepare_output

    (tmp_path / "m.onnx").write_bytes(b"onnx")
    (tmp_path / "m.json").write_text(json.dumps({"schema": "dvit-deploy/onnx-1", "artifact": "m.onnx"}))
    assert manifest_path(tmp_path / "m.onnx") == tmp_path / "m.json"  # the old name, still read (and rewritten)
    for force in (False, True):
        assert prepare_output(tmp_path / "m.engine", force=force, kinds=(".engine",)) == tmp_path / "m.engine"
    assert manifest_path(tmp_path / "m.engine") == tmp_path / "m.engine.json"
    assert json.loads((tmp_path / "m.json").read_text())["artifact"] == "m.onnx"
    # m.engine.json taken by a dvit manifest of another file that is there: refused, --force or not.
    (tmp_path / "n.onnx").write_bytes(b"onnx")
    (tmp_path / "m.engine.json").write_text(json.dumps({"schema": "dvit-deploy/onnx-1", "artifact": "n.onnx"}))
    for force in (False, True):
        with pytest.raises(BadInput, match=r"m\.engine\.json beside it is the manifest of n\.onnx"):
            prepare_output(tmp_path / "m.engine", force=force, kinds=(".engine",))
    # Its own manifest, or one whose artifact is gone, is replaced as before.
    assert prepare_output(tmp_path / "m.onnx", force=True, kinds=(".onnx",)) == tmp_path / "m.onnx"
    (tmp_path / "n.onnx").unlink()
    assert prepare_output(tmp_path / "m.engine", force=False, kinds=(".engine",)) == tmp_path / "m.engine"
    text = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200"}).stdout
    assert "anything else is refused" in " ".join(text.split())


def test_a_resource_warning_at_an_interrupt_is_not_shown(capsys):
    """Ctrl-C inside torch's import once printed "warning: unclosed file <…pyc>" before "interrupted"."""
    import warnings

    from dvit_deploy.cli.failures import captured_warnings

    with captured_warnings(verbose=False):
        warnings.warn("unclosed file <_io.BufferedReader name='x.pyc'>", ResourceWarning)
        warnings.warn("shown", UserWarning)
    err = capsys.readouterr().err
    assert "unclosed file" not in err and "shown" in err
