"""The OpenVINO backend: fp32 / bf16 / int8 on the same ONNX, what it reports, and the CLI plumbing.

Nothing here depends on the CPU's features: bf16 may fall back to f32 (no AVX512_BF16/AMX) and is
then reported as such; kept tokens are compared with the near-tie rule; no speed is asserted.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("openvino")

from dvit_deploy.helpers.fileio import manifest_path
from dvit_deploy.cli import app  # noqa: E402
from dvit_deploy.helpers.compare import TOLERANCES, compare  # noqa: E402
from dvit_deploy.helpers.errors import BadInput  # noqa: E402
from dvit_deploy.runtime import available_backends, runner_for_artifact  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """tiny.onnx (token outputs), plain.onnx (no token outputs) and plain-int8.onnx, in <tmp>/export."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.jobs.quantize import QuantizeOptions, quantize_onnx

    root = tmp_path_factory.mktemp("openvino") / "export"
    loaded = load_model(model_name="tiny-deit", keep_ratio=0.7)
    tokens = export_onnx(loaded, root / "tiny.onnx", token_outputs=True, check_samples=2).path
    plain = export_onnx(loaded, root / "plain.onnx", check_samples=2).path
    int8 = quantize_onnx(open_artifact(plain), options=QuantizeOptions(method="minmax", calib_samples=8,
                                                                       check_samples=8)).path
    return {"tokens": tokens, "plain": plain, "int8": int8, "loaded": loaded}


def reference(loaded, images):
    import torch

    from dvit_deploy.export.check import reference_outputs

    return reference_outputs(loaded, torch.from_numpy(images), 4)


def images(n=8, seed=3):
    return np.random.default_rng(seed).standard_normal((n, 3, 224, 224), dtype=np.float32)


def test_listed_as_available():
    status = {s.name: s for s in available_backends()}["openvino"]
    assert status.available and "openvino" in status.detail


@pytest.mark.parametrize("which", ["tokens", "plain"])
def test_fp32_matches_pytorch_with_kept_tokens(exports, which):
    x = images()
    ref = reference(exports["loaded"], x)
    with runner_for_artifact(exports[which], "openvino", precision="fp32", topk_outputs=True) as r:
        out = r.run(x)
        info = r.describe()
    assert info["inference_precision"] == "f32" and info["executes"].startswith("openvino ")
    assert out.kept is not None and [k.shape[1] for k in out.kept] == [137, 96, 67]
    cmp = compare(ref.logits, out.logits, TOLERANCES["fp32"], ref_kept=ref.kept, test_kept=out.kept,
                  ref_margins=ref.margins)
    assert cmp.passed, cmp.failures


def test_bf16_reports_what_ran_and_is_judged_by_agreement(exports):
    x = images()
    ref = reference(exports["loaded"], x)
    with runner_for_artifact(exports["plain"], "openvino", precision="bf16", topk_outputs=True) as r:
        out = r.run(x)
        info = r.describe()
    assert info["precision"] == "bf16"
    assert info["inference_precision"] in ("bf16", "f32")  # f32 on CPUs without bf16 support
    if info["inference_precision"] == "f32":
        assert r.fallback is not None and r.fallback.running == "f32" and info["fallback"] == r.fallback.reason
        assert r.report_notes()[-1] == f"FALLBACK: {r.fallback.reason}"
    for key in ("device_name", "amx_available", "vnni_available", "amx_used", "cpu_flags", "gemm_kernels"):
        assert key in info
    cmp = compare(ref.logits, out.logits, TOLERANCES["bf16"], ref_kept=ref.kept, test_kept=out.kept,
                  ref_margins=ref.margins)
    assert cmp.judged_by == "agreement"
    assert cmp.mean_jaccard is not None and cmp.mean_jaccard > 0.8


def test_int8_runs_quantized_kernels(exports):
    x = images()
    ref = reference(exports["loaded"], x)
    with runner_for_artifact(exports["int8"], "openvino", precision=None, topk_outputs=True) as r:  # None: the graph's own
        out = r.run(x)
        info = r.describe()
    assert r.precision == "int8" and "int8" in info["executes"]
    assert info["int8_kernels"] and set(info["gemm_precisions"]) & {"i8", "u8"}
    cmp = compare(ref.logits, out.logits, TOLERANCES["int8"], ref_kept=ref.kept, test_kept=out.kept,
                  ref_margins=ref.margins)
    assert cmp.mean_jaccard > 0.8


@pytest.mark.parametrize("which, precision, message", [
    ("int8", "bf16", "int8 Q/DQ graph"),
    ("plain", "int8", "dvit quantize"),
    ("plain", "fp16", "runs fp32, bf16, int8"),
])
def test_precision_mismatch_refused(exports, which, precision, message):
    with pytest.raises(BadInput, match=message):
        runner_for_artifact(exports[which], "openvino", precision=precision).load()


def test_refuses_cuda_and_non_onnx(exports, tmp_path):
    with pytest.raises(BadInput, match="CPU"):
        runner_for_artifact(exports["plain"], "openvino", device="cuda")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    manifest_path(engine).write_text("{}")
    with pytest.raises(BadInput, match="cannot run"):
        runner_for_artifact(engine, "openvino")


def test_timed_call_and_profile_cli(exports):
    with runner_for_artifact(exports["plain"], "openvino", intra_op_threads=1) as r:
        call = r.timed_call(images(2))
        call()
        assert r.describe()["intra_op_threads"] == 1
    result = runner.invoke(app, ["profile", str(exports["plain"]), "--backend", "openvino", "--batch", "2",
                                 "--iterations", "2", "--warmup", "0", "--rounds", "1", "--no-baseline", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    assert row["backend"] == "openvino" and row["precision"] == "fp32" and row["executes"].startswith("openvino")


def test_validate_cli_backend_precision_specs(exports):
    result = runner.invoke(app, ["validate", str(exports["plain"]), "--backend", "openvino",
                                 "--backend", "openvino:bf16", "-n", "8", "--json"])
    assert result.exit_code in (0, 1), result.output
    rows = json.loads(result.stdout)["results"]
    assert [(r["backend"], r["precision"]) for r in rows] == [("openvino", "fp32"), ("openvino", "bf16")]
    assert rows[0]["status"] == "passed" and rows[0]["judged_by"] == "logits"
    assert rows[1]["judged_by"] == "agreement" and rows[1]["execution"]["inference_precision"] in ("bf16", "f32")
    assert rows[0]["token_info"] == "TopK outputs (in-memory copy)" and len(rows[1]["stages"]) == 3
    conflict = runner.invoke(app, ["validate", str(exports["plain"]), "--backend", "openvino:bf16",
                                   "--precision", "fp32"])
    assert conflict.exit_code == 2 and "--precision" in conflict.output


def test_predict_and_eval_cli(exports, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(2):
            arr = np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / cls / f"{i}.png")
    viz = tmp_path / "kept.png"
    result = runner.invoke(app, ["predict", str(folder / "a" / "0.png"), "-a", str(exports["plain"]),
                                 "-b", "openvino:bf16", "--viz", str(viz), "--json"])
    assert result.exit_code == 0, result.output
    assert viz.is_file() and json.loads(result.stdout)["runner"]["precision"] == "bf16"
    result = runner.invoke(app, ["eval", "--data", str(folder), "-a", str(exports["int8"]), "-b", "openvino", "--json"])
    assert result.exit_code == 0, result.output
    scores = {s["backend"]: s for s in json.loads(result.stdout)["results"]}
    assert scores["openvino"]["executes"].startswith("openvino") and scores["openvino"]["agreement"] is not None


def test_openvino_errors_keep_their_cause():
    from dvit_deploy.runtime.openvino_runner import ov_error_cause

    exc = RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\n"
                       "Exception from src/inference/src/dev/plugin.cpp:54:\n"
                       "Check '!getSupportedPrimitiveDescriptors().empty()' failed at src/plugins/intel_cpu/src/node.cpp:345:\n"
                       "Supported primitive descriptors list is empty for node: node_Softmax_63 type: Softmax\n\n")
    assert ov_error_cause(exc) == "Supported primitive descriptors list is empty for node: node_Softmax_63 type: Softmax"


def test_fallback_is_reported_by_validate_and_profile_human_and_json(exports):
    """bf16 runs as bf16 where the CPU has it and as f32 elsewhere: whichever happened, validate and
    profile say so in their JSON and, when it fell back, on stderr as a FALLBACK line."""
    from dvit_deploy.helpers.cpu import cpu_info

    args = ["validate", str(exports["plain"]), "--backend", "openvino:bf16", "-n", "4"]
    as_json = runner.invoke(app, args + ["--json"])
    assert as_json.exit_code in (0, 1), as_json.output
    row = json.loads(as_json.stdout)["results"][0]
    used = row["execution"]["inference_precision"]
    assert row["execution"]["cpu_class"] == cpu_info().cpu_class
    assert (row["fallback"] is not None) == (used != "bf16")
    human = runner.invoke(app, args)
    assert ("FALLBACK:" in human.stderr) == (used != "bf16"), human.stderr
    if used != "bf16":
        assert f"uses {used}" in row["fallback"] and "FALLBACK:" in as_json.stderr

    profile = ["profile", str(exports["plain"]), "--backend", "openvino", "--precision", "bf16", "--batch", "2",
               "--iterations", "2", "--warmup", "0", "--rounds", "1", "--no-baseline"]
    prof_json = runner.invoke(app, profile + ["--json"])
    assert prof_json.exit_code == 0, prof_json.output
    data = json.loads(prof_json.stdout)
    assert (data["results"][0]["fallback"] is not None) == (used != "bf16")
    assert any("FALLBACK:" in w for w in data["warnings"]) == (used != "bf16")
    prof_human = runner.invoke(app, profile)
    assert prof_human.exit_code == 0, prof_human.output
    assert ("FALLBACK:" in prof_human.stderr) == (used != "bf16"), prof_human.stderr
