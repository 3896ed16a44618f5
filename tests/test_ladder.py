"""Ladder engines (``dvit build --keep-ladder``): one optimization profile per ρ, keep counts pinned.

Three layers of evidence:

* the plan, the manifest and the runner's rung choice, decided without TensorRT;
* NVIDIA's API surface (10.3, 10.13, 11.4 and TensorRT-RTX 1.7, ``tests/fake_tensorrt.py``): the
  builder calls per profile and the runner's ``set_optimization_profile_async`` per rung;
* TensorRT-RTX's real builder (``rtx`` marker, no GPU): the engine builds with one profile per rung,
  and the builder config holds each profile's pinned ``keep_counts`` (read back from TensorRT).
  No engine runs here: deserializing needs a CUDA driver.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dvit_deploy.artifact.manifest import EngineManifest
from dvit_deploy.artifact.store import Artifact, open_artifact
from dvit_deploy.cli import app
from dvit_deploy.helpers.fileio import manifest_path
from dvit_deploy.jobs import build as build_job
from dvit_deploy.engines import build_plan as plans
from dvit_deploy.engines import trt_build
from dvit_deploy.engines.build_plan import BuildOptions
from dvit_deploy.engines.ladder import default_rung, ladder_rungs, rung_for
from dvit_deploy.helpers.errors import BadInput, DvitError
from dvit_deploy.runtime.trt_runner import keep_counts_feed

from . import fake_cuda
from .fake_tensorrt import install_engine, make_fake
from .test_tensorrt_api import GPU, RTX_GPU, engine_io

LADDER = (0.5, 0.6, 0.7, 0.8, 0.9)
COUNTS = {0.5: [98, 49, 24], 0.6: [117, 70, 42], 0.7: [137, 96, 67], 0.8: [156, 125, 100], 0.9: [176, 158, 142]}


@pytest.fixture(scope="module")
def dk_export(tmp_path_factory):
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    folder = tmp_path_factory.mktemp("ladder_dk")
    export_onnx(load_model(model_name="tiny-deit", keep_ratio=0.7), folder / "dk.onnx", dynamic_keep=True,
                check_samples=2)
    return folder / "dk.onnx"


def plan_for(onnx: Path, **options):
    return plans.make_plan(open_artifact(onnx), BuildOptions(**options), trt_version="10.13.3.9", gpu_name=GPU.name)


# -- the plan and the manifest (no TensorRT) -------------------------------------------------------------------


def test_plan_has_one_pinned_profile_per_rung_times_the_batch_range(dk_export):
    plan = plan_for(dk_export, keep_ladder=(0.9, 0.5, 0.7, 0.6, 0.8), min_batch=2, opt_batch=4, max_batch=8)
    assert sorted({p.profile for p in plan.profiles}) == [0, 1, 2, 3, 4]
    for index, rho in enumerate(LADDER):  # ascending ρ: profile i is the i-th lowest
        images, keep = [p for p in plan.profiles if p.profile == index]
        assert images.kind == "shape" and (images.min[0], images.opt[0], images.max[0]) == (2, 4, 8)
        assert keep.kind == "values" and keep.name == "keep_counts" and keep.keep_ratio == images.keep_ratio == rho
        assert list(keep.min) == list(keep.opt) == list(keep.max) == COUNTS[rho]


@pytest.mark.parametrize("options, match", [
    ({"keep_ladder": (0.5, 0.9), "keep_range": (0.5, 0.9)}, "--keep-ladder and --keep-range exclude each other"),
    ({"keep_ladder": (0.5, 0.5)}, "names ρ 0.5 twice"),
    ({"keep_ladder": (0.0, 0.5)}, r"must lie in \(0, 1\], got 0"),
    ({"keep_ladder": ()}, "one or more ratios"),
    ({"keep_ladder": (0.7, 0.701)}, r"ρ 0.7 and 0.701 keep the same tokens \[137, 96, 67\]"),
])
def test_ladder_refusals(dk_export, options, match):
    with pytest.raises(BadInput, match=match):
        plan_for(dk_export, **options)


def test_a_ladder_on_a_fixed_export_is_refused(tiny_export):
    with pytest.raises(BadInput, match="--keep-ladder needs an ONNX exported with --dynamic-keep"):
        plan_for(Path(tiny_export.path), keep_ladder=LADDER)


def ladder_manifest(dk_export: Path, ladder=LADDER) -> EngineManifest:
    plan = plan_for(dk_export, keep_ladder=ladder)
    source = open_artifact(dk_export)
    return plans.engine_manifest(plan, source, engine_path=Path("x.engine"), engine_sha256="0" * 64, engine_bytes=1,
                                 onnx_sha256="0" * 64, built_from=dk_export, trt_version="10.13.3.9", device=GPU,
                                 io_tensors=[], build_seconds=1.0, inspector_file=None, doctor=None)


def test_manifest_records_each_profile_rho_and_counts_and_reads_back(dk_export):
    manifest = ladder_manifest(dk_export)
    data = json.loads(json.dumps(manifest.to_json()))
    keep = [p for p in data["profiles"] if p["kind"] == "values"]
    assert [(p["profile"], p["keep_ratio"], p["min"]) for p in keep] == [(i, r, COUNTS[r]) for i, r in enumerate(LADDER)]
    again = EngineManifest.from_json(data)
    assert [(r.profile, r.keep_ratio, list(r.counts)) for r in again.ladder] == [
        (i, r, COUNTS[r]) for i, r in enumerate(LADDER)]
    assert again.profile_count == 5 and again.to_json()["profiles"] == data["profiles"]


def test_manifests_before_ladders_read_as_one_profile():
    old = Path(__file__).parent / "data" / "manifests-0.1" / "tiny-swin-rtx.engine.json"
    data = json.loads(old.read_text())
    manifest = EngineManifest.from_json(data)
    assert manifest.ladder == () and manifest.profile_count == 1
    assert manifest.profiles[0].profile == 0 and manifest.profiles[0].keep_ratio is None
    assert [p.to_json() for p in manifest.profiles] == data["profiles"]  # written back in the old layout


def test_runner_feed_takes_only_rungs(dk_export):
    manifest = ladder_manifest(dk_export)
    assert keep_counts_feed(manifest, None).tolist() == COUNTS[0.7]  # the export's ρ is a rung
    assert keep_counts_feed(manifest, 0.9).tolist() == COUNTS[0.9]
    with pytest.raises(BadInput, match=r"^keep ratio 0.65 is not on this engine's ladder; its rungs are ρ "
                                       r"0.5, 0.6, 0.7, 0.8, 0.9 \(rebuild with --keep-ladder to add one\)$"):
        keep_counts_feed(manifest, 0.65)
    with pytest.raises(BadInput, match=r"keep counts \[137, 96, 66\] are on no rung .*0.5, 0.6, 0.7, 0.8, 0.9"):
        rung_for(manifest, counts=[137, 96, 66])
    high = ladder_manifest(dk_export, (0.5, 0.9))
    assert default_rung(high).keep_ratio == 0.9  # the export's 0.7 is no rung: the highest
    assert ladder_rungs((0.8, 0.6), open_artifact(dk_export).model)[0].counts == tuple(COUNTS[0.6])


def test_cli_refusals_exit_2_in_one_line(dk_export, tiny_export, tmp_path):
    runner = CliRunner()
    both = runner.invoke(app, ["build", str(dk_export), "--target", "rtx", "--keep-ladder", "0.5,0.9",
                               "--keep-range", "0.5,0.9", "-o", str(tmp_path / "x.engine")])
    assert both.exit_code == 2 and "--keep-ladder and --keep-range exclude each other" in both.output
    fixed = runner.invoke(app, ["build", str(tiny_export.path), "--target", "rtx", "--keep-ladder", "0.5,0.9",
                                "-o", str(tmp_path / "y.engine")])
    assert fixed.exit_code == 2 and "needs an ONNX exported with --dynamic-keep" in fixed.output
    assert "Traceback" not in both.output + fixed.output
    assert not (tmp_path / "x.engine").exists() and not (tmp_path / "y.engine").exists()


# -- NVIDIA's API surface: TensorRT 10.3 / 10.13 / 11.4 and TensorRT-RTX 1.7 ------------------------------------


def _remember_profiles(fake) -> None:
    """SCAFFOLDING: an IOptimizationProfile answers get_shape_input with what set_shape_input stored, and the
    builder config counts the profiles added (TensorRT's documented behaviour; the fake stores nothing)."""
    def set_values(profile, name, low, opt, high):
        profile._state.setdefault("values", {})[name] = [list(low), list(opt), list(high)]

    def add(config, profile):
        config._state["profiles"] = config._state.get("profiles", 0) + 1
        return config._state["profiles"] - 1

    fake.behave("IOptimizationProfile.set_shape_input", set_values)
    fake.behave("IOptimizationProfile.get_shape_input", lambda profile, name: profile._state["values"][name])
    fake.behave("IBuilderConfig.add_optimization_profile", add)
    fake.behave("IBuilderConfig.num_optimization_profiles", lambda config: config._state.get("profiles", 0))


def is_rtx(fake) -> bool:
    return fake.__version__.startswith("1.")  # TensorRT-RTX 1.x; TensorRT 10.x / 11.x


@pytest.fixture(params=("10.3", "10.13", "11.4", "rtx-1.7"))
def trt(request, monkeypatch):
    fake = make_fake(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx" if is_rtx(fake) else "tensorrt", fake)
    monkeypatch.setattr(trt_build, "cuda_device", lambda index=0: GPU)
    _remember_profiles(fake)
    return fake


def fake_build(trt, dk_export: Path, tmp_path: Path, ladder=LADDER):
    install_engine(trt, engine_io(json.loads(manifest_path(dk_export).read_text()), token_outputs=False))
    rtx = is_rtx(trt)
    return build_job.run_build(build_job.open_onnx(dk_export), BuildOptions(output=tmp_path / "l.engine", force=True, keep_ladder=ladder,
                                                   target="rtx" if rtx else None))


def test_builder_calls_one_profile_per_rung(trt, dk_export, tmp_path):
    result = fake_build(trt, dk_export, tmp_path)
    assert len(trt.called("Builder.create_optimization_profile")) == 5
    assert len(trt.called("IBuilderConfig.add_optimization_profile")) == 5
    assert [c[1] for c in trt.called("IOptimizationProfile.set_shape_input")] == [
        ("keep_counts", tuple(COUNTS[r]), tuple(COUNTS[r]), tuple(COUNTS[r])) for r in LADDER]
    assert [c[1][0] for c in trt.called("IOptimizationProfile.set_shape")] == ["images"] * 5
    assert [(r.profile, r.keep_ratio) for r in result.manifest.ladder] == list(enumerate(LADDER))
    if is_rtx(trt):  # the read-back goes into the manifest's network section
        held = result.manifest.to_json()["network"]["optimization_profiles"]
        assert [(h["index"], h["values"]["keep_counts"][0]) for h in held] == [(i, COUNTS[r]) for i, r in enumerate(LADDER)]


def test_builder_refuses_a_profile_tensorrt_rejects(trt, dk_export, tmp_path):
    trt.behave("IBuilderConfig.add_optimization_profile", lambda config, profile: -1)
    with pytest.raises(DvitError, match=r"refused optimization profile 0 \(ρ 0.5\)"):
        fake_build(trt, dk_export, tmp_path)
    assert not trt.called("Builder.build_serialized_network")


def _ladder_runner(trt, dk_export, tmp_path, monkeypatch, profiles=5, **options):
    from dvit_deploy.runtime.trt_runner import TensorRTRunner

    rtx = is_rtx(trt)
    name, cc = RTX_GPU if rtx else (GPU.name, GPU.compute_capability)
    fake_cuda.install(monkeypatch, name=name, cc=cc)
    result = fake_build(trt, dk_export, tmp_path)
    trt.behave("ICudaEngine.num_optimization_profiles", lambda engine: profiles)
    trt.calls.clear()
    return TensorRTRunner(Artifact.of(result.engine_path, result.manifest), device="cuda", **options)


def switches(trt) -> list[int]:
    return [c[1][0] for c in trt.called("IExecutionContext.set_optimization_profile_async")]


def test_runner_selects_the_profile_of_each_rho(trt, dk_export, tmp_path, monkeypatch):
    images = np.zeros((2, 3, 224, 224), np.float32)
    with _ladder_runner(trt, dk_export, tmp_path, monkeypatch, keep_ratio=0.8) as runner:
        assert switches(trt) == [3] and runner._host_inputs["keep_counts"].tolist() == COUNTS[0.8]
        runner.run(images)
        runner.run(images, keep_counts=np.asarray(COUNTS[0.8]))  # same rung: no switch
        assert switches(trt) == [3]
        runner.run(images, keep_counts=np.asarray(COUNTS[0.5]))
        assert switches(trt) == [3, 0] and runner._host_inputs["keep_counts"].tolist() == COUNTS[0.5]
        # after a switch the image shape is set again before the next enqueue
        order = [c[0] for c in trt.calls if c[0].startswith("IExecutionContext.")]
        last = len(order) - 1 - order[::-1].index("IExecutionContext.set_optimization_profile_async")
        assert "IExecutionContext.set_input_shape" in order[last:]
        with pytest.raises(BadInput, match=r"on no rung of this engine's ladder \(ρ 0.5, 0.6, 0.7, 0.8, 0.9"):
            runner.run(images, keep_counts=np.asarray([100, 50, 25]))
        assert switches(trt) == [3, 0] and runner.describe()["optimization_profile"] == 0


def test_runner_refuses_a_rho_off_the_ladder_before_loading(trt, dk_export, tmp_path, monkeypatch):
    with pytest.raises(BadInput, match=r"keep ratio 0.75 is not on this engine's ladder; its rungs are ρ 0.5, 0.6"):
        _ladder_runner(trt, dk_export, tmp_path, monkeypatch, keep_ratio=0.75)
    assert not trt.called("Runtime.deserialize_cuda_engine")


def test_runner_refuses_an_engine_whose_profiles_differ_from_its_manifest(trt, dk_export, tmp_path, monkeypatch):
    with pytest.raises(BadInput, match="has 1 optimization profile.* manifest lists a ladder of 5"):
        _ladder_runner(trt, dk_export, tmp_path, monkeypatch, profiles=1).load()


def test_runner_reports_a_refused_profile_switch(trt, dk_export, tmp_path, monkeypatch):
    trt.behave("IExecutionContext.set_optimization_profile_async", lambda context, index, stream: False)
    with pytest.raises(DvitError, match=r"refused optimization profile 2 \(ρ 0.7\)"):
        _ladder_runner(trt, dk_export, tmp_path, monkeypatch).load()


# -- TensorRT-RTX's real builder (no GPU) ---------------------------------------------------------------------


@pytest.mark.rtx
def test_rtx_builds_a_ladder_engine(dk_export, tmp_path):
    from dvit_deploy.engines.targets import RTX_ENGINE_MAGIC

    ladder = (0.5, 0.7, 0.9)
    result = build_job.run_build(build_job.open_onnx(dk_export), BuildOptions(target="rtx", output=tmp_path / "ladder.engine", force=True,
                                                     keep_ladder=ladder, max_batch=4, opt_batch=2))
    assert result.engine_path.read_bytes()[:4] == RTX_ENGINE_MAGIC
    written = json.loads(result.manifest_path.read_text())
    # What NVIDIA's builder config held after add_optimization_profile: 3 profiles, indices 0..2, values pinned.
    held = written["network"]["optimization_profiles"]
    assert [(h["index"], h["keep_ratio"], h["values"]["keep_counts"]) for h in held] == [
        (i, r, [COUNTS[r]] * 3) for i, r in enumerate(ladder)]
    engine = open_artifact(result.engine_path).engine
    assert engine.profile_count == 3
    assert [(r.profile, r.keep_ratio, list(r.counts)) for r in engine.ladder] == [
        (i, r, COUNTS[r]) for i, r in enumerate(ladder)]
    images = [p for p in engine.profiles if p.name == "images"]
    assert [(p.min[0], p.opt[0], p.max[0]) for p in images] == [(1, 2, 4)] * 3
    keep = next(t for t in written["inputs"] if t["name"] == "keep_counts")
    assert keep["shape_tensor"] and keep["location"] == "host"
    with pytest.raises(BadInput, match=r"keep ratio 0.6 is not on this engine's ladder; its rungs are ρ 0.5, 0.7, 0.9"):
        keep_counts_feed(engine, 0.6)
    assert keep_counts_feed(engine, 0.9).tolist() == COUNTS[0.9]


# -- validate / profile --keep-ratio on a --dynamic-keep artifact ---------------------------------------------


def test_validate_keep_ratio_runs_the_artifact_and_the_reference_at_rho(dk_export):
    from dvit_deploy.jobs.validate import validate

    report = validate([dk_export], samples=4, batch=2, keep_ratio=0.5, backends=["onnxruntime"])
    (result,) = report.results
    assert result.passed, result.to_dict()
    # the kept tokens were compared per stage at ρ 0.5's counts: 98, 49, 24 ids per image
    assert [s.stage for s in result.comparison.stages] == [1, 2, 3]
    assert open_artifact(dk_export).at_keep_ratio(0.5).model.keep_counts == tuple(COUNTS[0.5])


def test_keep_ratio_refusals(dk_export, tiny_export):
    with pytest.raises(BadInput, match="--keep-ratio 0.5 needs a --dynamic-keep artifact"):
        open_artifact(Path(tiny_export.path)).at_keep_ratio(0.5)
    with pytest.raises(BadInput, match=r"--keep-ratio 1.5: keep ratio must be in \(0, 1\]"):
        open_artifact(dk_export).at_keep_ratio(1.5)
    engine = Artifact.of("x.engine", ladder_manifest(dk_export))
    assert engine.at_keep_ratio(0.6).model.keep_counts == tuple(COUNTS[0.6])
    assert keep_counts_feed(engine.at_keep_ratio(0.6).engine, None).tolist() == COUNTS[0.6]
    with pytest.raises(BadInput, match="keep ratio 0.65 is not on this engine's ladder; its rungs are ρ 0.5, 0.6"):
        engine.at_keep_ratio(0.65)


def test_profile_keep_ratio_cli(dk_export, tmp_path):
    result = CliRunner().invoke(app, ["profile", str(dk_export), "--keep-ratio", "0.5", "--iterations", "2",
                                      "--warmup", "0", "--batch", "1", "--no-baseline", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{"):])
    (row,) = data["results"]
    assert row["keep_ratio"] == 0.5 and row["keep_counts"] == COUNTS[0.5]
    bad = CliRunner().invoke(app, ["validate", str(dk_export), "--keep-ratio", "0", "-n", "1"])
    assert bad.exit_code == 2 and "keep ratio must be in (0, 1]" in bad.output


# -- dvit serve on a ladder engine: ρ moves on the rungs ------------------------------------------------------


def test_serve_spec_of_a_ladder_engine(dk_export, tmp_path):
    from dvit_deploy.jobs.serve.spec import ServeOptions, ServeSpec, make_spec

    engine = Artifact.of(tmp_path / "l.engine", ladder_manifest(dk_export, (0.5, 0.6, 0.8, 0.9)))
    spec = make_spec(engine, ServeOptions(backend="tensorrt", precision="fp32"))
    assert spec.keep_range == (0.5, 0.9) and spec.rungs == (0.5, 0.6, 0.8, 0.9)
    assert spec.keep_ratio == 0.9  # the export's 0.7 is no rung: the highest
    assert spec.counts_for(0.6) == tuple(COUNTS[0.6])
    with pytest.raises(BadInput, match=r"keep_ratio 0.7 is not on this engine's ladder; it serves ρ 0.5, 0.6, 0.8, 0.9"):
        spec.counts_for(0.7)
    assert ServeSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    narrow = make_spec(engine, ServeOptions(backend="tensorrt", precision="fp32", keep_range=(0.55, 0.85)))
    assert narrow.rungs == (0.6, 0.8) and narrow.keep_ratio == 0.8
    with pytest.raises(BadInput, match=r"--keep-range 0.65,0.75 holds no rung of l.engine's ladder"):
        make_spec(engine, ServeOptions(backend="tensorrt", precision="fp32", keep_range=(0.65, 0.75)))
    onnx = make_spec(open_artifact(dk_export), ServeOptions(backend="onnxruntime", precision="fp32"))
    assert onnx.rungs is None and onnx.counts_for(0.65)  # any ρ in the range: not a ladder


def test_a_ladder_engine_gives_the_slo_controller_its_rungs(dk_export, tmp_path):
    """--slo-ms on a ladder engine: the controller's grid is the engine's rungs inside --keep-range."""
    from dvit_deploy.jobs.serve.slo import rungs_of
    from dvit_deploy.jobs.serve.spec import ServeOptions, make_spec

    engine = Artifact.of(tmp_path / "l.engine", ladder_manifest(dk_export, (0.5, 0.6, 0.8, 0.9)))
    whole = make_spec(engine, ServeOptions(backend="tensorrt", precision="fp32", slo_ms=100.0), token_outputs=False)
    assert rungs_of(whole) == (0.5, 0.6, 0.8, 0.9) and whole.keep_range == (0.5, 0.9)
    part = make_spec(engine, ServeOptions(backend="tensorrt", precision="fp32", slo_ms=100.0, keep_range=(0.55, 0.85)),
                     token_outputs=False)
    assert rungs_of(part) == (0.6, 0.8)


def test_handler_runs_ladder_rungs_only(dk_export, tmp_path):
    from dvit_deploy.jobs.serve.handler import Request, RequestHandler
    from dvit_deploy.jobs.serve.spec import ServeOptions, make_spec
    from dvit_deploy.runtime.base import RunOutput

    class Recorder:  # stands in for the TensorRT runner: records the counts of each call
        def __init__(self):
            self.counts = []

        def run(self, images, keep_counts=None):
            self.counts.append(keep_counts.tolist())
            return RunOutput(logits=np.zeros((len(images), 10), np.float32), kept=None, extra={})

    engine = Artifact.of(tmp_path / "l.engine", ladder_manifest(dk_export, (0.5, 0.6, 0.8, 0.9)))
    spec = make_spec(engine, ServeOptions(backend="tensorrt", precision="fp32"), token_outputs=False)
    runner = Recorder()
    handler = RequestHandler(runner, spec)
    batch = np.zeros((1, 3, 224, 224), np.float32)
    default = handler.handle([Request(batch)])[0]  # the export's 0.7 is no rung: the highest rung
    asked = [handler.handle([Request(batch, np.full((1, 1), r, np.float32))])[0] for r in (0.8, 0.6)]
    assert [float(a.outputs["keep_ratio"][0, 0]) for a in [default, *asked]] == pytest.approx([0.9, 0.8, 0.6])
    refused = handler.handle([Request(batch, np.full((1, 1), 0.7, np.float32))])[0]
    assert "not on this engine's ladder" in refused.error
    assert runner.counts == [COUNTS[0.9], COUNTS[0.8], COUNTS[0.6]]


# -- dvit doctor: are the keep counts static per profile, per export flavour ----------------------------------


def test_doctor_says_whether_keep_counts_are_static_per_profile(dk_export, tiny_export):
    dynamic = CliRunner().invoke(app, ["doctor", str(dk_export), "--json"])
    fixed = CliRunner().invoke(app, ["doctor", str(tiny_export.path), "--json"])
    assert dynamic.exit_code == 0 and fixed.exit_code == 0, dynamic.output + fixed.output
    dynamic, fixed = (json.loads(r.stdout[r.stdout.index("{"):]) for r in (dynamic, fixed))
    assert dynamic["keep_counts"] == {"flavour": "dynamic-keep", "source": ["keep_counts"],
                                      "static_per_profile": {"--keep-range": False, "--keep-ladder": True}}
    assert fixed["keep_counts"] == {"flavour": "fixed", "source": "constants", "static_per_profile": {"build": True}}
    (line,) = [f["message"] for f in dynamic["findings"] if f["check"] == "keep counts"]
    assert "--keep-range: NOT static per profile" in line and "--keep-ladder" in line and "#4410" in line
    (line,) = [f["message"] for f in fixed["findings"] if f["check"] == "keep counts"]
    assert line.startswith("static: the 3 TopK K are constants")
