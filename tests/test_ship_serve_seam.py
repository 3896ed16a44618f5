"""quantize, package, verify and serve through the one seam: a frozen options object, the run's context and
opened artifacts into the job's ``run`` in ``jobs/``, and a thin CLI module; the serve runner's threads travel in
the spec, not the environment."""

from __future__ import annotations

import ast
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from dvit_deploy.artifact.context import RunContext
from dvit_deploy.artifact.store import open_artifact
from dvit_deploy.helpers.errors import BadInput

PACKAGE = Path(__file__).resolve().parents[1] / "dvit_deploy"
SEAM = {"quantize_cmd": ["run"], "package_cmd": ["run", "run"], "serve_cmd": ["run"]}  # each command's job.run


def _calls(path: Path) -> list[str]:
    return [node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]


@pytest.mark.parametrize("module, jobs", sorted(SEAM.items()))
def test_cli_module_is_thin_and_calls_its_runs(module, jobs):
    path = PACKAGE / "cli" / f"{module}.py"
    assert len(path.read_text().splitlines()) <= 120
    assert sorted(name for name in _calls(path) if name == "run" or name.startswith("run_")) == sorted(jobs)


def test_options_are_frozen_and_checked_when_made():
    from dvit_deploy.jobs.quantize import QuantizeOptions
    from dvit_deploy.jobs.serve.server import ServeSettings
    from dvit_deploy.jobs.serve.spec import ServeOptions
    from dvit_deploy.jobs.ship import PackageOptions, VerifyOptions

    for options in (QuantizeOptions(), PackageOptions("x86-trt10"), VerifyOptions("b"), ServeOptions(),
                    ServeSettings()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            options.force = True  # type: ignore[misc]
    assert QuantizeOptions(output="x-int8.onnx").output == Path("x-int8.onnx")
    assert PackageOptions("x86-trt10", profile=[1, 2, 4]).profile == (1, 2, 4)
    assert ServeOptions(keep_range=[0.5, 0.9]).keep_range == (0.5, 0.9)
    # in the order `dvit package` always checked them
    with pytest.raises(BadInput, match="--triton-python adds a model to the Triton repository"):
        PackageOptions("nowhere", triton_python=True, precision="int4")
    with pytest.raises(BadInput, match="unknown target 'nowhere'"):
        PackageOptions("nowhere", precision="int4")
    with pytest.raises(BadInput, match="--precision must be fp32, fp16 or bf16, got 'int4'"):
        PackageOptions("x86-trt10", precision="int4")


def test_run_package_takes_opened_artifacts_and_run_verify_checks_the_bundle(tiny_export, tmp_path):
    from dvit_deploy.jobs.ship import PackageOptions, VerifyOptions, open_artifacts, run_package, run_verify

    for f in (tiny_export.path, tiny_export.manifest_path):
        shutil.copy2(f, tmp_path / Path(f).name)
    opened = open_artifacts([tmp_path / tiny_export.path.name])
    phases: list[str] = []
    result = run_package(PackageOptions("x86-trt10", output=tmp_path / "bundle", archive=False), RunContext(),
                         opened, on_phase=phases.append)
    assert phases == ["collect", "copy", "device files", "checksums"]
    assert result.archive is None and "model/tiny.onnx" in result.files and result.build_commands == 1
    report = run_verify(VerifyOptions(result.folder), RunContext())
    assert report.passed, report.to_dict()
    bundle = json.loads((result.folder / "bundle.json").read_text())
    assert bundle["models"][0]["onnx"] == "model/tiny.onnx" and bundle["batch_profile"] == [1, 8, 32]
    with pytest.raises(BadInput, match=r"ONNX model .*missing.onnx not found"):
        open_artifacts([tmp_path / "missing.onnx"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BadInput, match="notes.txt is neither an ONNX model"):
        open_artifacts([tmp_path / "notes.txt"])


def test_serve_threads_travel_in_the_spec_not_the_environment(tiny_export, monkeypatch):
    """--threads (context.threads) is the runner's intra_op_threads in the spec the backend reads; no
    DVIT_SERVE_THREADS is set for the server, and one left in the environment changes nothing."""
    pytest.importorskip("pytriton")
    from dvit_deploy.jobs.serve.server import prepare
    from dvit_deploy.jobs.serve.spec import ServeOptions, ServeSpec
    from dvit_deploy.jobs.serve.tritonserver import find_tritonserver, server_env

    opened = open_artifact(tiny_export.path)
    spec = prepare(opened, ServeOptions(), RunContext(threads=2))
    assert spec.backend == "onnxruntime" and spec.runner_options == {"intra_op_threads": 2}
    assert ServeSpec.from_json(json.loads(json.dumps(spec.to_json()))).runner_options == {"intra_op_threads": 2}
    assert prepare(opened, ServeOptions(), RunContext()).runner_options == {}
    assert prepare(opened, ServeOptions(), RunContext(verify=False)).verify is False
    assert "DVIT_SERVE_THREADS" not in server_env(find_tritonserver())

    from dvit_deploy.jobs.serve import backend

    monkeypatch.setenv("DVIT_SERVE_THREADS", "3")
    seen = {}

    def fake_open_runner(name, artifact, device="cpu", precision=None, **options):
        seen.update(options)
        raise RuntimeError("stop here")

    monkeypatch.setattr("dvit_deploy.runtime.open_runner", fake_open_runner)
    with pytest.raises(RuntimeError, match="stop here"):
        backend.open_spec_runner(spec)
    assert seen["intra_op_threads"] == 2
    assert "DVIT_SERVE_THREADS" not in Path(backend.__file__).read_text()


def test_make_spec_needs_the_backend_decided(tiny_export):
    from dvit_deploy.jobs.serve.spec import ServeOptions, make_spec

    with pytest.raises(TypeError, match="backend and precision decided"):
        make_spec(open_artifact(tiny_export.path), ServeOptions())
