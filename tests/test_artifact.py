"""The opened artifact (``artifact.store.open_artifact``): one default rule, one read, typed fields,
and manifests written by earlier versions still read."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from dvit_deploy.artifact.context import RunContext
from dvit_deploy.artifact.manifest import ENGINE_SCHEMA, ONNX_SCHEMA, DerivedFrom, OnnxManifest
from dvit_deploy.artifact.store import Artifact, ArtifactFilter, default_artifact, open_artifact
from dvit_deploy.helpers.errors import BadInput
from dvit_deploy.helpers.fileio import manifest_path, sha256_file


def _copy_as(source: Path, target: Path, **changes) -> Path:
    """A copy of ``source`` with its manifest edited (and its sha256 kept true)."""
    shutil.copy2(source, target)
    manifest = json.loads(manifest_path(source).read_text())
    manifest.update(artifact=target.name, **changes)
    manifest_path(target).write_text(json.dumps(manifest))
    return target


def test_open_artifact_types_the_manifest_and_says_the_sha256_was_checked(exported, tiny_export):
    opened = open_artifact(exported)
    assert isinstance(opened, Artifact) and opened.path == exported and opened.picked_because is None
    assert opened.sha256_checked is True
    assert opened.kind == "onnx" and opened.precision == "fp32" and opened.engine is None
    assert opened.model.keep_counts == tuple(tiny_export.manifest.to_json()["keep_counts"])
    assert opened.model.keep_ratio == pytest.approx(0.7) and opened.model.dense is False
    assert opened.onnx.sha256 == sha256_file(exported)
    assert opened.manifest.schema == ONNX_SCHEMA


def test_default_is_picked_with_its_reason(exported):
    told = []
    opened = open_artifact(None, (".onnx",), on_picked=lambda path, why: told.append((path, why)))
    assert opened.path == exported and told == [(exported, opened.picked_because)]
    assert "newest pruned .onnx artifact" in opened.picked_because


def test_a_changed_artifact_is_refused_or_opened_unchecked_under_no_verify(exported):
    with exported.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BadInput, match="does not match its manifest"):
        open_artifact(exported)
    warnings = []
    context = RunContext(verify=False, on_warning=warnings.append)
    opened = open_artifact(exported, context=context)
    assert opened.sha256_checked is False and len(warnings) == 1 and "--no-verify" in warnings[0]
    assert opened.context is context  # later steps on it (a re-check, its twin) keep the run's policy
    assert opened.verified().sha256_checked is False and len(warnings) == 2
    with pytest.raises(BadInput, match="does not match its manifest"):  # the policy is the run's, not global
        open_artifact(exported)


def test_quantize_default_is_the_one_rule_with_an_fp32_export_filter(exported, workdir):
    from dvit_deploy.jobs.quantize import default_source

    later = time.time() + 10
    int8 = _copy_as(exported, workdir / "export" / "tiny-int8.onnx", precision="int8")
    (workdir / "engines").mkdir()
    in_engines = _copy_as(exported, workdir / "engines" / "tiny-copy.onnx")
    for path, when in ((int8, later), (in_engines, later + 5)):
        os.utime(path, (when, when))
    assert default_artifact((".onnx",))[0] == in_engines  # the plain rule: the newest pruned, any folder
    assert default_source() == exported  # quantize's filter: fp32, in ./export only
    only_int8 = ArtifactFilter(accept=lambda path, manifest: manifest.precision == "int8", what="int8 ONNX")
    assert open_artifact(None, (".onnx",), only=only_int8).path == int8
    nothing = ArtifactFilter(accept=lambda path, manifest: False, what="bf16 ONNX")
    with pytest.raises(BadInput, match="no bf16 ONNX with a manifest in ./export or ./engines"):
        open_artifact(None, (".onnx",), only=nothing)
    shutil.rmtree(workdir / "export")
    with pytest.raises(BadInput, match="no fp32 ONNX export with a manifest in .*export; run 'dvit export'"):
        default_source()


# A manifest as the previous version wrote it for the fp16 mixed-precision graph: no schema
# constant of its own, and ``derived_from`` with an absolute path and no size.
OLD_FP16_MANIFEST = {
    "variant": "tiny-deit", "kind": "onnx", "precision": "fp16", "batch": None, "dense": False,
    "keep_ratio": 0.7, "keep_counts": [6, 4, 3], "num_patches": 9, "opset": 18,
    "config": {"img_size": 48, "patch_size": 16, "in_chans": 3, "num_classes": 10},
    "onnx": {"sha256": None, "bytes": 1234, "external_data": [], "external_data_sha256": {}},
    "derived_from": {"path": "/old/home/export/tiny.onnx", "sha256": "ab" * 32,
                     "transform": "dvit_deploy.engines.fp16.convert_to_mixed_precision"},
}


def test_a_manifest_written_by_the_previous_version_still_reads(tmp_path):
    graph = tmp_path / "tiny-fp16mixed.onnx"
    graph.write_bytes(b"not checked: the old manifest records no sha256")
    manifest_path(graph).write_text(json.dumps(OLD_FP16_MANIFEST))
    opened = open_artifact(graph)
    assert opened.sha256_checked is False  # nothing recorded to check against
    typed = opened.onnx
    assert typed.precision == "fp16" and typed.model.keep_counts == (6, 4, 3) and typed.model.img_size == 48
    assert typed.bytes == 1234 and typed.opset == 18 and typed.quantization is None
    old = typed.derived_from
    assert old == DerivedFrom(path="/old/home/export/tiny.onnx", artifact="tiny.onnx", sha256="ab" * 32, bytes=None,
                              transform="dvit_deploy.engines.fp16.convert_to_mixed_precision")
    assert old.source_path(graph) == Path("/old/home/export/tiny.onnx")  # an absolute path is kept as it is


def test_the_one_derived_from_shape_is_relative_and_round_trips(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "engines").mkdir()
    source = tmp_path / "export" / "tiny.onnx"
    source.write_bytes(b"12345")
    derived = tmp_path / "engines" / "tiny-fp16mixed.onnx"
    record = DerivedFrom.of(source, derived, sha256="cd" * 32)
    assert record.to_json() == {"path": "../export/tiny.onnx", "artifact": "tiny.onnx", "sha256": "cd" * 32,
                                "bytes": 5}
    assert DerivedFrom.from_json(record.to_json()) == record
    assert record.source_path(derived).resolve() == source.resolve()
    # An int8 manifest keeps it inside its quantization section.
    typed = OnnxManifest.from_json({"precision": "int8", "quantization": {"derived_from": record.to_json()}})
    assert typed.derived_from == record and typed.quantization is not None


def test_the_writers_use_the_schema_constants():
    from dvit_deploy.engines import build_plan

    assert build_plan.ENGINE_SCHEMA is ENGINE_SCHEMA
    assert ONNX_SCHEMA == "dvit-deploy/onnx-manifest/1" and ENGINE_SCHEMA == "dvit-deploy/engine-manifest/1"


def test_profile_reads_each_manifest_once(exported, monkeypatch):
    from dvit_deploy.artifact.context import RunContext
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.jobs.profile import ProfileOptions, ProfileSettings, plan_profile, run_profile
    from dvit_deploy.jobs.profile.measure import ProfileRun

    reads = []
    real_read_text = Path.read_text

    def counting(self, *args, **kwargs):
        if self.name == manifest_path(exported).name:
            reads.append(self)
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    options = ProfileOptions(backend="onnxruntime", batches=(1,),
                             settings=ProfileSettings(warmup_s=0.0, iterations=2, min_iterations=1, rounds=1))
    context = RunContext()
    plan = plan_profile([open_artifact(exported)], options, context)
    assert plan.runs == [ProfileRun(plan.runs[0].artifact, "sparse")] and plan.runs[0].artifact.path == exported
    report = run_profile(plan, options, context)
    assert len(reports := report.results) == 1 and reports[0].keep_counts == list(plan.runs[0].artifact.model.keep_counts)
    assert reports[0].keep_ratio == pytest.approx(0.7) and reports[0].stats.count == 2
    assert len(reads) == 1, reads  # opened once by the caller; plan, measure and the runner use that Artifact


# Manifests as dvit-deploy 0.1 wrote them before the typed writers (a842b90): a tiny Swin export and
# its TensorRT-RTX engine, built ahead of time. That engine writer copied a hand-listed key set that
# left out ``keep_schedule``, so the file says nothing about the (linear) schedule.
OLD_MANIFESTS = Path(__file__).parent / "data" / "manifests-0.1"


def _old(name: str) -> dict:
    return json.loads((OLD_MANIFESTS / name).read_text())


def test_an_onnx_manifest_written_by_0_1_reads_typed_and_writes_back_every_field():
    from dvit_deploy.artifact.manifest import OnnxManifest, check_manifest

    data = _old("tiny-swin.onnx.json")
    check_manifest(data, "tiny-swin.json")
    typed = OnnxManifest.from_json(data)
    assert typed.model.variant == "tiny-swin" and typed.model.family == "swin"
    assert typed.model.keep_schedule == "linear" and typed.model.stage_ratios == (0.9, 0.7, 0.5)
    assert typed.model.keep_counts == (14, 11, 8) and typed.model.dynamic_batch is True
    assert typed.opset == 18 and typed.sha256 == data["onnx"]["sha256"] and typed.bytes == data["onnx"]["bytes"]
    assert typed.token_output_names == ("kept_tokens_stage1", "kept_tokens_stage2", "kept_tokens_stage3")
    assert typed.precision == "fp32" and typed.quantization is None and typed.derived_from is None
    written = typed.to_json()
    assert {k: written[k] for k in data} == data  # nothing lost or changed
    assert OnnxManifest.from_json(written).to_json() == written  # and stable


def test_an_engine_manifest_written_by_0_1_reads_its_linear_schedule_from_the_family():
    from dvit_deploy.artifact.manifest import EngineManifest, check_manifest

    data = _old("tiny-swin-rtx.engine.json")
    check_manifest(data, "tiny-swin-rtx.json")
    assert "keep_schedule" not in data  # the omission this test is about
    typed = EngineManifest.from_json(data)
    assert typed.model.keep_schedule == "linear"  # not geometric: ConvNeXt/Swin are linear
    assert typed.flavour == "rtx" and typed.is_rtx and typed.rtx_compute_capabilities == ("8.9",)
    assert typed.compute_capability is None and typed.gpu is None  # built ahead of time, no GPU
    assert typed.tensorrt == data["tensorrt"]["version"] and typed.sha256 == data["engine"]["sha256"]
    assert typed.onnx_sha256 == data["source_onnx"]["sha256"] and typed.precision == "fp32"
    images = typed.profile("images")
    assert images is not None and images.kind == "shape" and images.max[1:] == (3, 64, 64)
    assert [t.name for t in typed.io][:1] == ["images"]
    written = typed.to_json()
    assert written["keep_schedule"] == "linear"  # written explicitly from now on
    assert {k: written[k] for k in data} == data
    assert EngineManifest.from_json(written).to_json() == written


def test_a_manifest_without_schema_or_schedule_reads_as_a_geometric_vit():
    from dvit_deploy.artifact.manifest import OnnxManifest

    typed = OnnxManifest.from_json({"variant": "deit-s", "keep_counts": [137, 96, 67], "keep_ratio": 0.7})
    assert typed.schema is None and typed.model.keep_schedule == "geometric" and typed.model.num_patches == 196
    assert typed.to_json()["schema"] == ONNX_SCHEMA and typed.to_json()["keep_schedule"] == "geometric"


PACKAGE = Path(__file__).resolve().parents[1] / "dvit_deploy"
_MANIFEST = r"[A-Za-z_]*manifest[A-Za-z_]*"
RAW_KEY_READ = re.compile(_MANIFEST + r"""(\.get\(|\[["'][^"']+["']\](?!\s*=[^=]))""")
DICT_SIGNATURE = re.compile(_MANIFEST + r": (dict|Mapping)\b")
RAW_JSON = re.compile(r"\.raw\b")


def _outside_artifact():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "artifact" not in path.relative_to(PACKAGE).parts[:1]:
            yield path, path.read_text().splitlines()


def test_code_outside_artifact_reads_typed_fields_not_manifest_keys():
    """Issue 15's seam: between layers an artifact travels as an ``Artifact``; its manifest is read,
    checked and typed once in artifact/, and nowhere else indexed as a dict or passed as one."""
    reads, signatures = [], []
    for path, lines in _outside_artifact():
        for n, line in enumerate(lines, 1):
            where = f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
            if RAW_KEY_READ.search(line):
                reads.append(where)
            if DICT_SIGNATURE.search(line):
                signatures.append(where)
    assert not reads, "read the typed manifest's fields instead:\n" + "\n".join(reads)
    assert not signatures, "take an Artifact or a typed manifest instead:\n" + "\n".join(signatures)


def test_every_read_of_a_manifests_raw_json_says_why():
    """The raw JSON stays reachable (``manifest.raw``) for writers passing untyped sections on and for
    showing a section verbatim; each such use outside artifact/ carries a comment just above it."""
    unexplained = []
    for path, lines in _outside_artifact():
        for n, line in enumerate(lines, 1):
            if RAW_JSON.search(line) and not any("#" in above for above in lines[max(0, n - 4):n]):
                unexplained.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert not unexplained, "\n".join(unexplained)


def test_manifests_named_the_0_1_way_are_still_read_and_new_ones_take_the_whole_file_name(workdir):
    """0.1 wrote x.json beside x.onnx / x.engine; writers now name it after the whole file (x.onnx.json), so an
    ONNX and its engine under trtexec's names (m.onnx, m.engine) keep one manifest each. Old names still read."""
    folder = workdir / "export"
    folder.mkdir()
    for name, artifact in (("tiny-swin.onnx.json", "tiny-swin.onnx"), ("tiny-swin-rtx.engine.json", "tiny-swin-rtx.engine")):
        (folder / artifact).write_bytes(b"graph or engine bytes")
        shutil.copy2(OLD_MANIFESTS / name, folder / Path(artifact).with_suffix(".json").name)  # 0.1's name
    onnx, engine = folder / "tiny-swin.onnx", folder / "tiny-swin-rtx.engine"
    assert manifest_path(onnx) == folder / "tiny-swin.json" and manifest_path(engine) == folder / "tiny-swin-rtx.json"
    assert open_artifact(onnx, verify=False).model.variant == "tiny-swin"
    assert open_artifact(engine, verify=False).engine.is_rtx
    assert default_artifact((".onnx",))[0] == onnx
    # A new artifact beside them takes the whole-name manifest; x.json describing another file is not its own.
    (folder / "tiny-swin.engine").write_bytes(b"engine")
    assert manifest_path(folder / "tiny-swin.engine") == folder / "tiny-swin.engine.json"
    assert manifest_path(folder / "fresh.onnx") == folder / "fresh.onnx.json"
    (folder / "tiny-swin.onnx.json").write_text((folder / "tiny-swin.json").read_text())
    assert manifest_path(onnx) == folder / "tiny-swin.onnx.json"  # the new name wins once written
