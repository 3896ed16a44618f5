"""Runner layer: backend listing, opening runners, ORT vs torch outputs, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from dvit_deploy.artifact.store import Artifact
from dvit_deploy.helpers.errors import BadInput, MissingDependency
from dvit_deploy.runtime import BACKENDS, available_backends, open_runner, runner_class, runner_for_artifact


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).standard_normal((3, 3, 224, 224), dtype=np.float32)


@pytest.fixture(scope="module")
def plain_export(tmp_path_factory):
    """A tiny export WITHOUT token outputs (kept tokens only via in-memory TopK outputs)."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    folder = tmp_path_factory.mktemp("plain")
    return export_onnx(load_model(model_name="tiny-deit", keep_ratio=0.7), folder / "plain.onnx", check_samples=2)


def test_available_backends_lists_every_backend():
    statuses = {s.name: s for s in available_backends()}
    assert set(statuses) == set(BACKENDS)
    assert statuses["torch"].available and "torch" in statuses["torch"].detail
    assert statuses["onnxruntime"].available and "CPUExecutionProvider" in statuses["onnxruntime"].detail
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert not statuses["tensorrt"].available
        assert "dvit-deploy[tensorrt]" in statuses["tensorrt"].detail


def test_unknown_backend_and_missing_package(tiny_export):
    with pytest.raises(BadInput, match="unknown backend"):
        open_runner("tflite", Artifact.of(tiny_export.path, tiny_export.manifest))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises((MissingDependency, BadInput)) as info:
            runner_for_artifact(tiny_export.path, "tensorrt")
        assert "tensorrt" in str(info.value)


def test_default_backend_from_suffix(tiny_export):
    runner = runner_for_artifact(tiny_export.path)
    assert runner.backend == "onnxruntime" and runner_class("torch").backend == "torch"


def test_ort_and_torch_agree_with_original_patch_ids(tiny_export, images):
    with runner_for_artifact(tiny_export.path) as ort_runner:
        info = ort_runner.describe()
        ort_out = ort_runner.run(images)
    with runner_for_artifact(tiny_export.path, "torch") as torch_runner:
        torch_out = torch_runner.run(images)
    assert info["provider"] == "CPUExecutionProvider" and info["fallback"] is None
    assert ort_out.logits.shape == torch_out.logits.shape == (3, 10)
    assert np.abs(ort_out.logits - torch_out.logits).max() < 1e-3
    counts = tiny_export.manifest.to_json()["keep_counts"]
    assert [k.shape for k in ort_out.kept] == [(3, c) for c in counts]
    for stage, (a, b) in enumerate(zip(ort_out.kept, torch_out.kept)):
        assert a.max() < 196 and a.min() >= 0
        assert all(set(x) == set(y) for x, y in zip(a, b)), f"stage {stage + 1}"
        if stage:  # original ids: every later stage keeps a subset of the earlier one
            assert all(set(x) <= set(p) for x, p in zip(a, ort_out.kept[stage - 1]))


def test_ort_topk_outputs_without_token_outputs(plain_export, images):
    with runner_for_artifact(plain_export.path) as runner:
        assert runner.run(images).kept is None
    with runner_for_artifact(plain_export.path, topk_outputs=True) as runner:
        out = runner.run(images)
    assert [k.shape[1] for k in out.kept] == plain_export.manifest.to_json()["keep_counts"]


def test_torch_cpu_refuses_low_precision(tiny_export):
    with pytest.raises(BadInput, match="only on CUDA"):
        runner_for_artifact(tiny_export.path, "torch", precision="fp16").load()


def test_ort_refuses_precision_the_graph_lacks(tiny_export):
    with pytest.raises(BadInput, match="fp32 graph"):
        runner_for_artifact(tiny_export.path, precision="fp16").load()


def test_ort_missing_cuda_provider_is_loud(tiny_export):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA; the CPU-build refusal cannot be shown")
    with pytest.raises(MissingDependency, match="dvit-deploy\\[gpu\\]"):
        runner_for_artifact(tiny_export.path, device="cuda").load()


def test_ort_options_and_threads(tiny_export, images):
    with runner_for_artifact(tiny_export.path, intra_op_threads=1, graph_optimization="basic",
                             providers="cpu") as runner:
        info = runner.describe()
        call = runner.timed_call(images)
        assert call() is None
    assert info["intra_op_threads"] == 1 and info["graph_optimization"] == "basic"
    with pytest.raises(BadInput, match="graph optimization"):
        runner_for_artifact(tiny_export.path, graph_optimization="max")


def test_torch_threads_restored(tiny_export, images):
    import torch

    before = torch.get_num_threads()
    with runner_for_artifact(tiny_export.path, "torch", intra_op_threads=1) as runner:
        assert torch.get_num_threads() == 1
        assert runner.describe()["intra_op_threads"] == 1
        runner.timed_call(images)()
    assert torch.get_num_threads() == before


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_torch_cuda_fp16_close(tiny_export, images):
    with runner_for_artifact(tiny_export.path, "torch") as ref:
        expected = ref.run(images).logits
    with runner_for_artifact(tiny_export.path, "torch", device="cuda", precision="fp16") as runner:
        got = runner.run(images)
        assert isinstance(runner.timed_call(images)(), float)
    assert np.abs(got.logits - expected).max() < 0.1


def test_device_names_are_validated(tiny_export):
    from dvit_deploy.runtime.base import check_cuda_index, device_index

    for bad in ("cuda:x", "cuda:", "cuda:-1", "gpu", "CUDA", "cpu:0"):
        with pytest.raises(BadInput, match="device must be cpu, cuda or cuda:N"):
            open_runner("onnxruntime", Artifact.of(tiny_export.path, tiny_export.manifest), device=bad)
    assert [device_index(d) for d in ("cpu", "cuda", "cuda:0", "cuda:3")] == [None, 0, 0, 3]
    assert check_cuda_index("cuda:1", 2) == 1
    with pytest.raises(BadInput, match=r"device 'cuda:2' requested but torch sees 2 CUDA GPU\(s\): cuda:0..cuda:1"):
        check_cuda_index("cuda:2", 2)
    with pytest.raises(BadInput, match="torch sees no CUDA GPU"):
        check_cuda_index("cuda", 0)


def test_torch_refuses_a_gpu_index_torch_does_not_see(tiny_export, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(BadInput, match="device 'cuda:1' requested but torch sees 1 CUDA GPU"):
        runner_for_artifact(tiny_export.path, "torch", device="cuda:1").load()


def test_ort_unknown_provider_is_bad_input(tiny_export):
    with pytest.raises(BadInput) as info:
        runner_for_artifact(tiny_export.path, providers="cdua")
    assert "unknown ONNX Runtime provider 'cdua'" in str(info.value)
    assert "cpu, cuda, tensorrt, trt" in str(info.value)
    assert runner_for_artifact(tiny_export.path, providers="CPUExecutionProvider").requested_providers == [
        "CPUExecutionProvider"]


def test_ort_gpu_providers_get_the_device_index(tiny_export, monkeypatch):
    import onnxruntime as ort
    import torch

    seen = []

    def fake_session(source, options, providers):
        seen.extend(providers)
        raise RuntimeError("not loading for real")

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    with pytest.raises(BadInput, match="not loading for real"):
        runner_for_artifact(tiny_export.path, device="cuda:1", providers="trt,cuda", cuda_graph=True).load()
    assert seen == [("TensorrtExecutionProvider", {"device_id": "1", "trt_cuda_graph_enable": "1"}),
                    ("CUDAExecutionProvider", {"device_id": "1", "enable_cuda_graph": "1"})]
    with pytest.raises(BadInput, match="torch sees 2 CUDA GPU"):
        runner_for_artifact(tiny_export.path, device="cuda:2").load()


def test_torch_threads_restored_when_load_fails(tiny_export):
    import torch

    before = torch.get_num_threads()
    manifest = {k: v for k, v in tiny_export.manifest.to_json().items() if k != "variant"}
    with pytest.raises(BadInput, match="no 'variant'"):
        open_runner("torch", Artifact.of(tiny_export.path, manifest), intra_op_threads=1 if before != 1 else 2).load()
    assert torch.get_num_threads() == before


def test_runners_take_an_opened_artifact(tiny_export, images, tmp_path):
    """open_runner and every Runner take the Artifact a job opened; a path or a dict is refused."""
    with pytest.raises(TypeError, match="open_runner takes an opened Artifact"):
        open_runner("onnxruntime", tiny_export.path)
    with pytest.raises(TypeError, match="takes an opened Artifact"):
        runner_class("onnxruntime")(tiny_export.path)
    with pytest.raises(BadInput, match="the onnxruntime backend needs an .onnx artifact"):
        runner_class("onnxruntime")(None)
    opened = Artifact.of(tiny_export.path, tiny_export.manifest)
    runner = open_runner("onnxruntime", opened, precision=None)  # None: the artifact's own precision
    assert runner.artifact is opened and runner.path == tiny_export.path and runner.precision == "fp32"
    # A model held only in memory: torch rebuilds it from the record; no file is read.
    placeholder = tmp_path / "never-written.onnx"
    with open_runner("torch", Artifact.of(placeholder, tiny_export.manifest)) as torch_runner:
        assert torch_runner.describe()["artifact"] == str(placeholder)
        assert torch_runner.outputs[0].shape == ("batch", opened.model.num_classes)
        out = torch_runner.run(images)
    with runner_for_artifact(tiny_export.path, "torch") as reference:
        np.testing.assert_allclose(out.logits, reference.run(images).logits, rtol=1e-5, atol=1e-5)


def test_memory_estimate_reads_typed_records(tmp_path):
    from dvit_deploy.artifact.manifest import ModelRecord
    from dvit_deploy.runtime.memory import per_image_bytes, weight_bytes

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x" * 10)
    (tmp_path / "m.onnx.data").write_bytes(b"y" * 5)
    recorded = Artifact.of(onnx, {"onnx": {"bytes": 100, "external_data": ["m.onnx.data"]}})
    assert weight_bytes(recorded, "onnxruntime") == (100 + 5) * 2  # the recorded size, plus external data
    assert weight_bytes(Artifact.of(onnx, {}), "openvino") == 10 * 3  # none recorded: the file's size
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"z" * 7)
    assert weight_bytes(Artifact.of(engine, {}), "tensorrt") == 7 * 2
    small, large = (ModelRecord.from_json({"config": {"img_size": s, "patch_size": 16}, "num_patches": (s // 16) ** 2})
                    for s in (224, 384))
    assert per_image_bytes(large) > 2 * per_image_bytes(small)  # more patches: more activations


def test_callers_read_the_declared_runner_interface_not_getattr():
    """notes, fallback and has_token_info are declared on Runner: no caller guesses them with getattr."""
    import re
    from pathlib import Path

    import dvit_deploy
    from dvit_deploy.runtime.base import Runner

    root = Path(dvit_deploy.__file__).parent
    pattern = re.compile(r"getattr\((?:self\.)?(?:runner|r)\b")
    hits = [f"{path.relative_to(root)}:{n}" for path in root.rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
    assert {"notes", "fallback", "topk_outputs"} <= set(Runner.__annotations__)
    assert {"has_token_info", "report_notes", "description"} <= set(dir(Runner))


def test_description_is_typed_and_describe_is_its_dict(tiny_export, plain_export):
    import dataclasses

    from dvit_deploy.runtime.base import RunnerDescription

    with runner_for_artifact(tiny_export.path, intra_op_threads=1) as runner:
        described = runner.description()
        info = runner.describe()
    assert isinstance(described, RunnerDescription) and dataclasses.is_dataclass(described)
    with pytest.raises(dataclasses.FrozenInstanceError):
        described.executes = "x"  # type: ignore[misc]
    assert described.executes.startswith("onnxruntime ") and described.executes.endswith("CPUExecutionProvider")
    assert described.fallback is None and described.token_info and described.intra_op_threads == 1
    assert described.to_dict() == info and info["executes"] == described.executes
    with runner_for_artifact(plain_export.path, "torch") as torch_runner:
        torch_described = torch_runner.description()
    assert torch_described.executes.startswith("torch ") and torch_described.token_info


def test_topk_outputs_has_one_default_on_every_backend(plain_export):
    import inspect

    from dvit_deploy.runtime.base import Runner

    base = inspect.signature(Runner.__init__).parameters["topk_outputs"].default
    assert base is False
    for backend in BACKENDS:
        params = inspect.signature(runner_class(backend).__init__).parameters
        assert params["topk_outputs"].default is base if "topk_outputs" in params else any(
            p.kind is p.VAR_KEYWORD for p in params.values()), backend
    for backend in ("onnxruntime", "openvino", "torch"):
        assert runner_for_artifact(plain_export.path, backend).topk_outputs is False, backend


def test_fallback_is_typed_not_a_string_prefix():
    import re
    from pathlib import Path

    import dvit_deploy
    from dvit_deploy.runtime.base import Fallback

    fallback = Fallback("CUDAExecutionProvider", "CPUExecutionProvider", "asked for cuda, running on cpu")
    assert str(fallback) == fallback.reason and fallback.line == "FALLBACK: asked for cuda, running on cpu"
    root = Path(dvit_deploy.__file__).parent
    made = [f"{path.relative_to(root)}:{n}" for path in (root / "runtime").rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"[\"']FALLBACK", line)]
    assert made == ["runtime/base.py:" + str(next(n for n, line in enumerate(
        (root / "runtime" / "base.py").read_text().splitlines(), 1) if 'f"FALLBACK: ' in line))]
    parsed = [str(path) for path in root.rglob("*.py") if re.search(r"startswith\([\"']FALLBACK|[\"']FALLBACK:?[\"'] in ",
                                                                       path.read_text())]
    assert parsed == []
