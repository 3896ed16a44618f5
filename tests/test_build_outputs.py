"""What `dvit build` writes, and what `dvit package` / `dvit verify` believe of it (real TensorRT-RTX builds).

- trtexec's naming (``m.onnx`` -> ``m.engine`` in one folder) keeps both manifests (``m.onnx.json``,
  ``m.engine.json``), also beside an ONNX whose manifest still has 0.1's name (``m.json``);
- the mixed-precision graph of an fp16 build is named after its engine, so two models with the same ONNX stem
  built into one folder each keep their own, and an interrupted build leaves none behind;
- an RTX bundle records the precision its engines were built in; an engine manifest claiming compute
  capabilities a build refuses is refused by package and failed by verify.

Refusals that need no build (output over the source, wrong suffix, ``--compute-capability ""``) are rows of
tests/test_bad_inputs.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dvit_deploy.artifact.store import open_artifact
from dvit_deploy.cli import app
from dvit_deploy.jobs import build as build_job
from dvit_deploy.engines.build_plan import BuildOptions
from dvit_deploy.helpers.errors import BadInput
from dvit_deploy.helpers.fileio import manifest_path, sha256_file

pytestmark = pytest.mark.rtx
runner = CliRunner()


def _copy_export(export, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx = folder / name
    shutil.copy2(export.path, onnx)
    manifest = json.loads(Path(export.manifest_path).read_text())
    manifest["artifact"] = name
    manifest_path(onnx).write_text(json.dumps(manifest))
    return onnx


@pytest.fixture(scope="module")
def other_export(tmp_path_factory):
    """A second tiny model (ρ 0.5) whose file will share the first one's stem."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    folder = tmp_path_factory.mktemp("other_export")
    return export_onnx(load_model(model_name="tiny-deit", keep_ratio=0.5), folder / "tiny-r05.onnx", check_samples=2)


@pytest.fixture(scope="module")
def fp16_engine(tiny_export, tmp_path_factory):
    """One TensorRT-RTX fp16 engine (sm 8.6) built from the shared tiny export."""
    out = tmp_path_factory.mktemp("rtx_fp16") / "tiny-fp16.engine"
    result = build_job.run_build(build_job.open_onnx(tiny_export.path), BuildOptions(target="rtx", precision="fp16", output=out,
                                                            compute_capabilities=("8.6",)))
    return result.engine_path


def test_trtexec_naming_keeps_both_manifests(tiny_export, tmp_path):
    onnx = _copy_export(tiny_export, tmp_path / "m", "m.onnx")
    result = runner.invoke(app, ["build", str(onnx), "--target", "rtx", "-o", str(tmp_path / "m" / "m.engine")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["m.engine", "m.engine.json", "m.onnx", "m.onnx.json"]
    source, engine = open_artifact(onnx), open_artifact(tmp_path / "m" / "m.engine")  # sha256 checked, both
    assert engine.model == source.model and engine.engine.onnx_sha256 == sha256_file(onnx)
    assert engine.engine.onnx_manifest == str((tmp_path / "m" / "m.onnx.json").resolve())


def test_trtexec_naming_beside_a_0_1_manifest(tiny_export, tmp_path):
    """An ONNX exported by 0.1 has m.json: it stays the ONNX's, untouched, and the engine gets m.engine.json."""
    onnx = _copy_export(tiny_export, tmp_path, "m.onnx")
    manifest_path(onnx).rename(tmp_path / "m.json")
    before = (tmp_path / "m.json").read_bytes()
    result = build_job.run_build(build_job.open_onnx(onnx), BuildOptions(target="rtx", output=tmp_path / "m.engine"))
    assert result.manifest_path == tmp_path / "m.engine.json"
    assert (tmp_path / "m.json").read_bytes() == before
    assert open_artifact(onnx).model == open_artifact(tmp_path / "m.engine").model
    assert result.manifest.onnx_manifest == str((tmp_path / "m.json").resolve())


def test_fp16_graphs_of_two_models_with_one_stem_are_not_shared(tiny_export, other_export, tmp_path):
    first = _copy_export(tiny_export, tmp_path / "a", "m.onnx")
    second = _copy_export(other_export, tmp_path / "b", "m.onnx")
    out = tmp_path / "engines"
    built = {}
    for onnx, name in ((first, "x.engine"), (second, "y.engine")):  # no --force: nothing is replaced
        built[name] = build_job.run_build(build_job.open_onnx(onnx), BuildOptions(target="rtx", precision="fp16", output=out / name))
    assert sorted(p.name for p in out.iterdir()) == [
        "x-fp16mixed.onnx", "x-fp16mixed.onnx.json", "x.engine", "x.engine.json",
        "y-fp16mixed.onnx", "y-fp16mixed.onnx.json", "y.engine", "y.engine.json"]
    for (onnx, name) in ((first, "x.engine"), (second, "y.engine")):
        engine = open_artifact(out / name)
        graph = out / name.replace(".engine", "-fp16mixed.onnx")
        assert built[name].fp16_onnx == graph
        assert json.loads(manifest_path(out / name).read_text())["source_onnx"]["built_from"] == str(graph)
        derived = open_artifact(graph)  # its own manifest, sha256 checked
        assert derived.manifest.derived_from.sha256 == sha256_file(onnx) and derived.precision == "fp16"
        assert engine.model == open_artifact(onnx).model
    # The graph an engine points at is never replaced by another model's build without --force.
    before = sha256_file(out / "x-fp16mixed.onnx")
    with pytest.raises(BadInput, match="already exists"):
        build_job.run_build(build_job.open_onnx(second), BuildOptions(target="rtx", precision="fp16", output=out / "x.engine"))
    assert sha256_file(out / "x-fp16mixed.onnx") == before


def test_an_interrupted_fp16_build_leaves_no_graph_behind(tiny_export, tmp_path, monkeypatch):
    from dvit_deploy.cli.failures import Terminated
    from dvit_deploy.engines import trt_build

    out = tmp_path / "engines"
    seen = []

    def terminated(plan, onnx_path, **kwargs):
        seen.append(Path(onnx_path))
        assert Path(onnx_path).is_file() and Path(onnx_path).parent != out  # staged, not yet published
        raise Terminated()

    monkeypatch.setattr(trt_build, "build_engine", terminated)
    with pytest.raises(Terminated):
        build_job.run_build(build_job.open_onnx(tiny_export.path), BuildOptions(target="rtx", precision="fp16", output=out / "x.engine"))
    assert seen and not seen[0].exists()
    assert list(out.iterdir()) == []  # no graph, no manifest, no temporary folder


def test_rtx_bundle_records_the_engines_precision(fp16_engine, tmp_path):
    from dvit_deploy.jobs import ship

    result = ship.make_bundle([fp16_engine], "rtx", output=tmp_path / "bundle", archive=False)
    bundle = json.loads((result.folder / "bundle.json").read_text())
    assert bundle["precision"] == "fp16" and bundle["engines"][0]["precision"] == "fp16"
    assert bundle["models"][0]["precision"] == "fp16"  # what the device runs for that model: the fp16 engine
    assert bundle["models"][0]["precision_detail"].startswith("fp16 (no device build")
    assert "device engine precision fp16 (no device build" in (result.folder / "README.md").read_text()


def _claims_turing(manifest_file: Path) -> None:
    data = json.loads(manifest_file.read_text())
    data["rtx"]["compute_capabilities"] = ["7.5"]
    manifest_file.write_text(json.dumps(data))


def test_an_engine_manifest_claiming_turing_is_refused_by_package_and_failed_by_verify(fp16_engine, tmp_path):
    from dvit_deploy.jobs import ship

    edited = tmp_path / "edited"
    edited.mkdir()
    shutil.copy2(fp16_engine, edited / fp16_engine.name)
    shutil.copy2(manifest_path(fp16_engine), manifest_path(edited / fp16_engine.name))
    _claims_turing(manifest_path(edited / fp16_engine.name))
    result = runner.invoke(app, ["package", str(edited / fp16_engine.name), "--target", "rtx", "-o",
                                 str(tmp_path / "b1")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "compute capability 7.5, which dvit build refuses" in result.stderr and "Turing" in result.stderr
    assert not (tmp_path / "b1").exists()
    # A bundle whose engine manifest was edited after packaging (and its sums redone): verify fails it.
    bundle = ship.make_bundle([fp16_engine], "rtx", output=tmp_path / "b2", archive=False).folder
    shipped = bundle / "engines" / manifest_path(fp16_engine).name
    _claims_turing(shipped)
    sums = (bundle / "SHA256SUMS").read_text().splitlines()
    rel = f"engines/{shipped.name}"
    (bundle / "SHA256SUMS").write_text("\n".join(
        f"{hashlib.sha256(shipped.read_bytes()).hexdigest()}  {rel}" if line.endswith("  " + rel) else line
        for line in sums) + "\n")
    report = ship.verify_bundle(bundle)
    failed = {c.name: c.detail for c in report.failures}
    assert list(failed) == [f"manifest {rel}"] and "which dvit build refuses" in failed[f"manifest {rel}"]


def test_commands_that_run_the_default_skip_engines_without_a_gpu(fp16_engine, tiny_export, tmp_path, monkeypatch):
    """An RTX engine built ahead of time on this CPU is the newest pruned artifact, but its default backend
    (TensorRT) needs a GPU: without one, `dvit validate` defaults to the export; with one, to the engine."""
    import os

    monkeypatch.chdir(tmp_path)
    onnx = _copy_export(tiny_export, tmp_path / "export", "tiny.onnx")
    (tmp_path / "engines").mkdir()
    engine = tmp_path / "engines" / fp16_engine.name
    shutil.copy2(fp16_engine, engine)
    shutil.copy2(manifest_path(fp16_engine), manifest_path(engine))
    os.utime(onnx, (1, 1))  # the engine is the newest
    monkeypatch.setattr("dvit_deploy.runtime.cuda_gpu_visible", lambda: False)
    result = runner.invoke(app, ["validate", "--samples", "2", "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "using export/tiny.onnx" in result.stderr
    monkeypatch.setattr("dvit_deploy.runtime.cuda_gpu_visible", lambda: True)
    result = runner.invoke(app, ["validate", "--samples", "2", "--batch", "2"])
    assert f"using engines/{engine.name}" in result.stderr
    monkeypatch.setattr("dvit_deploy.runtime.cuda_gpu_visible", lambda: False)
    onnx.unlink()
    result = runner.invoke(app, ["validate", "--samples", "2", "--batch", "2"])  # only the engine is left
    assert result.exit_code == 2
    assert "no .onnx artifact" in result.stderr and "the engines there need a CUDA GPU" in result.stderr
    result = runner.invoke(app, ["package", "--target", "x86-trt10", "-o", "b"])  # packaging runs nothing: engines stay
    assert f"using engines/{engine.name}" in result.stderr


def test_build_defaults_to_an_export_of_the_precision_it_builds(tiny_export, tmp_path, monkeypatch):
    """After `dvit quantize` the newest pruned export is the int8 one: `build --fp16` starts from the float
    export instead of refusing, and only `--int8` starts from the Q/DQ graph."""
    import os

    from dvit_deploy.artifact.store import default_artifact

    monkeypatch.chdir(tmp_path)
    onnx = _copy_export(tiny_export, tmp_path / "export", "tiny.onnx")
    int8 = _copy_export(tiny_export, tmp_path / "export", "tiny-int8.onnx")
    manifest = json.loads(manifest_path(int8).read_text())
    manifest["precision"] = "int8"
    manifest_path(int8).write_text(json.dumps(manifest))
    os.utime(onnx, (1, 1))  # the int8 one is the newest
    assert default_artifact((".onnx",), only=build_job.default_sources("int8"))[0] == int8
    assert default_artifact((".onnx",), only=build_job.default_sources("fp32"))[0] == int8  # a plain build: any
    for precision in ("fp16", "bf16", "tf32"):
        assert default_artifact((".onnx",), only=build_job.default_sources(precision))[0] == onnx
    result = runner.invoke(app, ["build", "--fp16", "--onnx-only"])
    assert result.exit_code == 0, result.output
    assert "using export/tiny.onnx" in result.stderr and (tmp_path / "engines" / "tiny-fp16mixed.onnx").is_file()
    assert default_artifact((".onnx",), only=build_job.default_sources("fp16"))[0].name == "tiny-fp16mixed.onnx"
    assert default_artifact((".onnx",), only=build_job.default_sources("bf16"))[0] == onnx  # fp16 graph: fp16 only
    int8.unlink()
    with pytest.raises(BadInput, match="no int8 \\(Q/DQ\\) ONNX with a manifest.*'dvit quantize'"):
        default_artifact((".onnx",), only=build_job.default_sources("int8"))
