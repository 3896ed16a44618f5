"""export, build and doctor go through one seam: a frozen options object in, the job's
``run(options, context[, artifact])`` in ``jobs/``, a typed result out, and a thin CLI module that only turns
flags into options and renders the result."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from dvit_deploy.helpers.errors import BadInput

PACKAGE = Path(__file__).resolve().parents[1] / "dvit_deploy"
SEAM = {"export_cmd": "export", "build_cmd": "build", "doctor_cmd": "doctor"}  # CLI module -> jobs module


def _calls(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            names.append(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


@pytest.mark.parametrize("module, job", sorted(SEAM.items()))
def test_cli_module_is_thin_and_calls_one_run(module, job):
    path = PACKAGE / "cli" / f"{module}.py"
    assert len(path.read_text().splitlines()) <= 120
    runs = [name for name in _calls(path) if name == "run" or name.startswith("run_")]
    assert runs == ["run"], runs


@pytest.mark.parametrize("job", sorted(SEAM.values()))
def test_each_job_runs_with_options_then_the_run_context(job):
    import importlib
    import inspect

    from dvit_deploy.artifact.context import RunContext

    run = importlib.import_module(f"dvit_deploy.jobs.{job}").run
    params = list(inspect.signature(run).parameters.values())
    assert [p.name for p in params[:2]] == ["options", "context"]
    assert params[1].annotation in (RunContext, "RunContext") and params[1].default is inspect.Parameter.empty


def test_export_package_has_no_import_loop():
    """dynamic_keep and onnx_export share the exporter through export/exporter.py, not through each other."""
    imports: dict[str, set[str]] = {}
    for path in (PACKAGE / "export").glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
        imports[path.stem] = found

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for name in imports.get(start, ()):
            if name == goal or (name not in seen and reaches(name, goal, seen | {name})):
                return True
        return False

    loops = [m for m in imports if reaches(m, m, {m})]
    assert not loops, loops


def test_load_model_takes_no_callback_into_a_higher_layer():
    import inspect

    from dvit_deploy.models import checkpoint

    assert "before_build" not in inspect.signature(checkpoint.load_model).parameters


def test_options_are_frozen():
    from dvit_deploy.jobs.build import BuildOptions
    from dvit_deploy.jobs.doctor import DoctorOptions
    from dvit_deploy.jobs.export import ExportOptions

    for options in (ExportOptions(), BuildOptions(), DoctorOptions()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            options.force = True  # type: ignore[misc]
    made = ExportOptions(checkpoint="c.pth", stage_ratios=[0.7, 0.5])
    assert made.checkpoint == Path("c.pth") and made.stage_ratios == (0.7, 0.5)


@pytest.mark.parametrize("flags, expected", [
    ({}, ("fp32", False)), ({"fp16": True}, ("fp16", False)), ({"int8": True}, ("int8", False)),
    ({"int8": True, "fp16": True}, ("int8", True)), ({"tf32": True}, ("tf32", False)),
])
def test_precision_from_flags(flags, expected):
    from dvit_deploy.jobs.build import precision_from_flags

    assert precision_from_flags(**flags) == expected


@pytest.mark.parametrize("flags, message", [
    ({"int8": True, "bf16": True}, "--int8 combines with --fp16 only"),
    ({"fp16": True, "tf32": True}, "choose one of --fp16, --bf16, --tf32"),
])
def test_precision_flag_refusals(flags, message):
    from dvit_deploy.jobs.build import precision_from_flags

    with pytest.raises(BadInput, match=message):
        precision_from_flags(**flags)


def test_ladder_and_range_are_refused_when_the_options_are_made():
    from dvit_deploy.jobs.build import BuildOptions

    with pytest.raises(BadInput, match="--keep-ladder and --keep-range exclude each other"):
        BuildOptions(keep_ladder=(0.6, 0.7), keep_range=(0.5, 0.9))


def test_export_option_refusals_come_before_the_model(tmp_path, monkeypatch):
    from dvit_deploy.jobs.export import ExportOptions, run_export

    def built(*a, **k):
        raise AssertionError("the model was built before the options were checked")

    monkeypatch.setattr("dvit_deploy.models.create_model", built)
    with pytest.raises(BadInput, match="--opset must be between 18 and 23"):
        run_export(ExportOptions(model="tiny-deit", opset=12))
    (tmp_path / "taken.onnx").write_bytes(b"not ours")
    with pytest.raises(BadInput, match="already exists"):
        run_export(ExportOptions(model="tiny-deit", output=tmp_path / "taken.onnx"))
    assert (tmp_path / "taken.onnx").read_bytes() == b"not ours"


def test_run_export_and_run_doctor_as_a_library(tmp_path):
    from dvit_deploy.jobs.doctor import DoctorOptions, run_doctor
    from dvit_deploy.jobs.export import ExportOptions, run_export

    seen: list[str] = []
    notes: list[list[str]] = []
    result = run_export(ExportOptions(model="tiny-deit", keep_ratio=0.7, output=tmp_path / "m.onnx", check_samples=2),
                        on_phase=seen.append, on_notes=notes.append)
    assert result.path == tmp_path / "m.onnx" and result.manifest_path.is_file()
    assert result.variant == "tiny-deit" and result.keep_counts == (137, 96, 67) and result.random_weights
    assert result.check.passed and seen[0] == "export" and "write" in seen
    assert notes and "RANDOM weights" in notes[0][0]
    payload = result.to_json()
    # The manifest's own keys come last, as `dvit export --json` has always printed them ("artifact": the name).
    assert payload["passed"] is True and payload["manifest"] == str(result.manifest_path)
    assert payload["artifact"] == result.path.name
    assert payload["keep_counts"] == [137, 96, 67]
    report = run_doctor(result.path, DoctorOptions(target="trt-10", real_parser=False))
    assert report.passed and report.target.name == "trt-10"


# predict, eval, profile, tradeoff and flops: run(options, context[, artifact]) in jobs/, one call from a thin CLI.
RUN_SEAM = {"predict_cmd": "dvit_deploy.jobs.predict", "eval_cmd": "dvit_deploy.jobs.evaluate",
            "profile_cmd": "dvit_deploy.jobs.profile", "tradeoff_cmd": "dvit_deploy.jobs.tradeoff",
            "flops_cmd": "dvit_deploy.jobs.flops"}


@pytest.mark.parametrize("module", sorted(RUN_SEAM))
def test_run_seam_cli_is_thin_and_calls_one_run(module):
    path = PACKAGE / "cli" / f"{module}.py"
    assert len(path.read_text().splitlines()) <= 120
    calls = _calls(path)
    assert calls.count("run") == 1, calls
    assert not [name for name in calls if name.startswith(("run_", "plan_", "evaluate", "profile_artifacts"))], calls


@pytest.mark.parametrize("module", sorted(RUN_SEAM.values()))
def test_run_takes_options_a_context_and_opened_artifacts(module):
    import importlib
    import inspect

    job = importlib.import_module(module)
    params = list(inspect.signature(job.run).parameters.values())
    assert [p.name for p in params[:2]] == ["options", "context"]
    assert "RunContext" in str(params[1].annotation)
    if len(params) > 2 and params[2].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
        assert params[2].name in ("artifact", "artifacts") and "Artifact" in str(params[2].annotation)
        assert "Path" not in str(params[2].annotation)  # the default-artifact rule runs in the CLI, once
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[3:])


def test_run_seam_options_are_frozen_and_refuse_early():
    from dvit_deploy.jobs.evaluate import EvalOptions
    from dvit_deploy.jobs.flops import FlopsOptions
    from dvit_deploy.jobs.predict import PredictOptions
    from dvit_deploy.jobs.profile import ProfileOptions
    from dvit_deploy.jobs.tradeoff import TradeoffOptions

    for options in (PredictOptions(), EvalOptions(), ProfileOptions(), TradeoffOptions(), FlopsOptions()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            options.backend = "torch"  # type: ignore[misc]
    assert PredictOptions(images=["a.png"], viz="k.png").images == (Path("a.png"),)
    with pytest.raises(BadInput, match="cannot be used with --no-reference"):
        EvalOptions(reference=False, min_agreement=0.9)
    with pytest.raises(BadInput, match="between 0 and 1, got 1.5"):
        EvalOptions(min_agreement=1.5)
    with pytest.raises(BadInput, match="unknown model 'nope'"):
        FlopsOptions(models=("nope",))


def test_flops_run_as_a_library_is_what_the_cli_prints():
    import json

    from typer.testing import CliRunner

    from dvit_deploy.artifact.context import RunContext
    from dvit_deploy.cli import app
    from dvit_deploy.jobs.flops import FlopsOptions, run

    result = run(FlopsOptions(models=("deit-s",), keep_ratios=(0.7,)), RunContext())
    (model,) = result.models
    assert model.variant == "deit-s" and round(model.dense.gmacs, 1) == 4.6 and model.sparse[0].keep_ratio == 0.7
    printed = CliRunner().invoke(app, ["flops", "-m", "deit-s", "-r", "0.7", "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout) == json.loads(json.dumps(result.to_dict()))


def test_run_with_a_context_is_the_command(tmp_path):
    """``jobs.<command>.run(options, context[, artifact])``: the seam the CLI calls, as a library."""
    from dvit_deploy.artifact.context import RunContext
    from dvit_deploy.jobs import doctor, export

    context = RunContext()
    result = export.run(export.ExportOptions(model="tiny-deit", keep_ratio=0.5, output=tmp_path / "m.onnx",
                                             check_samples=1), context)
    assert result.keep_counts == (98, 49, 24) and result.manifest.model.keep_ratio == 0.5
    report = doctor.run(doctor.DoctorOptions(target="trt-10.3", real_parser=False), context, result.path)
    assert report.passed and report.target.name == "trt-10.3"


# Every command: its CLI module is thin and calls its job's one ``run(options, context, ...)``.
ALL_COMMANDS = {"export": ("export_cmd", "export"), "build": ("build_cmd", "build"), "doctor": ("doctor_cmd", "doctor"),
                "validate": ("validate_cmd", "validate"), "profile": ("profile_cmd", "profile"),
                "flops": ("flops_cmd", "flops"), "package": ("package_cmd", "package"),
                "verify": ("package_cmd", "verify"), "predict": ("predict_cmd", "predict"),
                "eval": ("eval_cmd", "evaluate"), "quantize": ("quantize_cmd", "quantize"),
                "serve": ("serve_cmd", "serve"), "tradeoff": ("tradeoff_cmd", "tradeoff")}


def test_every_registered_command_is_in_the_seam_table():
    import typer

    from dvit_deploy.cli import app

    assert sorted(typer.main.get_command(app).commands) == sorted(ALL_COMMANDS)


@pytest.mark.parametrize("command", sorted(ALL_COMMANDS))
def test_every_command_calls_its_jobs_run_once(command):
    import importlib
    import inspect

    cli_module, job = ALL_COMMANDS[command]
    path = PACKAGE / "cli" / f"{cli_module}.py"
    assert len(path.read_text().splitlines()) <= 120
    tree = ast.parse(path.read_text())
    function = "eval_images" if command == "eval" else command
    (node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    calls = [c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", "")
             for c in ast.walk(node) if isinstance(c, ast.Call)]
    assert calls.count("run") == 1 and not [c for c in calls if c.startswith("run_")], calls
    run = importlib.import_module(f"dvit_deploy.jobs.{job}").run
    params = list(inspect.signature(run).parameters.values())
    assert [p.name for p in params[:2]] == ["options", "context"], params
