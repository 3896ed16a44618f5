"""NVIDIA's real ONNX parser and builder on every graph flavour dvit exports (TensorRT-RTX, no GPU).

TensorRT-RTX (``tensorrt_rtx``, installed by ``[dev]``) compiles engines ahead of time without a
GPU, so these tests run NVIDIA's real parser and a real TensorRT builder on our graphs in CI.
What they prove: the parser accepts the graph (or refuses what doctor refuses), the builder accepts
the graph with its optimization profiles (dynamic batch, the ``keep_counts`` shape-tensor values)
and writes an engine. What they cannot prove: numerics or speed -- no engine runs here
(deserializing needs a CUDA driver; ``test_engine_does_not_deserialize_without_a_driver``).

Tiny configs cover every option; the real shapes (DeiT-S, DeiT-256, LV-ViT-S at rho 0.7, the dense
twin, ``--dynamic-keep`` with ``--token-outputs``, the fp16 mixed graph, int8 Q/DQ) are exported
once per module and marked ``slow`` as well. Nothing here is skipped when ``tensorrt_rtx`` is
installed; without it the tests fail (set DVIT_SKIP_RTX=1 to skip them on a machine without [dev]).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from dvit_deploy.helpers.fileio import manifest_path
from dvit_deploy.cli import app
from dvit_deploy.artifact.store import Artifact, open_artifact
from dvit_deploy.jobs import build as build_job
from dvit_deploy.engines.build_plan import BuildOptions
from dvit_deploy.engines.doctor import diagnose
from dvit_deploy.engines.targets import RTX_DEFAULT_COMPUTE_CAPABILITIES, RTX_ENGINE_MAGIC
from dvit_deploy.engines.trt_build import parse_onnx
from dvit_deploy.helpers.errors import BadInput, CheckFailed, DvitError

from .quantized_onnx import make_qdq_onnx

pytestmark = pytest.mark.rtx
BUILD_TIMES: dict[str, tuple[float, int]] = {}  # flavour -> (builder seconds, engine bytes): conftest prints them


# -- helpers --------------------------------------------------------------------------------------------------


def rtx_build(onnx_path: Path, out: Path, label: str, **options):
    result = build_job.run_build(build_job.open_onnx(onnx_path), BuildOptions(target="rtx", output=out, force=True, **options))
    BUILD_TIMES[label] = (result.seconds["build"], result.manifest.bytes)
    return result


def assert_engine(result, onnx_path: Path, *, dense: bool = False) -> dict:
    """The engine, its manifest and the parsed network agree with the ONNX the build came from."""
    m = result.manifest.to_json()
    assert json.loads(result.manifest_path.read_text()) == json.loads(json.dumps(m))  # what was written
    # The engine describes the ONNX's model, keep schedule included (typed, read back from disk).
    assert open_artifact(result.engine_path).model == open_artifact(onnx_path).model
    data = result.engine_path.read_bytes()
    assert len(data) > 1000 and data[:4] == RTX_ENGINE_MAGIC
    assert m["engine"]["bytes"] == len(data)
    assert m["tensorrt"]["flavour"] == "rtx" and m["tensorrt"]["module"] == "tensorrt_rtx"
    assert m["tensorrt"]["version"].startswith("1.") and m["tensorrt"]["strongly_typed"]
    assert m["gpu"]["name"] is None and not m["builder"]["flags"]  # strongly typed: no precision flags
    assert m["builder"]["timing_cache"] is None and m["inspector"] is None
    onnx_manifest = json.loads(manifest_path(onnx_path).read_text())
    net = m["network"]
    # One TopK per pruning stage, K = the stage's keep count (constant) or computed (--dynamic-keep),
    # and each TopK's indices feed exactly one Gather (the token gather).
    from dvit_deploy.export.graph import pruning_stages

    stages = len(onnx_manifest.get("keep_counts") or [])
    assert len(net["topk"]) == (0 if dense else stages)
    assert net["layer_counts"].get("TOPK", 0) == len(net["topk"])
    model = onnx.load(str(onnx_path), load_external_data=False)
    onnx_stages = pruning_stages(model)
    for topk, count, stage in zip(net["topk"], onnx_manifest.get("keep_counts") or [], onnx_stages):
        # The token Gather NVIDIA's network feeds from this TopK is the ONNX's own (layers keep node names).
        assert len(topk["gathers"]) == 1 and topk["gathers"] == stage.gathers, (topk, stage.gathers)
        assert topk["k"] == (None if onnx_manifest.get("dynamic_keep") else count)
    onnx_gathers = sum(1 for n in model.graph.node if n.op_type in ("Gather", "GatherElements", "GatherND"))
    # Every ONNX Gather is a GATHER layer; --dynamic-keep adds some (the parser slices the shape tensor).
    assert net["layer_counts"].get("GATHER", 0) >= onnx_gathers > 0
    # Network I/O == the manifest's I/O == the ONNX's I/O (names, dims with -1 for dynamic, dtypes).
    dtypes = {"float32": "float", "float16": "half", "int32": "int32", "int64": "int64"}
    for mode in ("inputs", "outputs"):
        got = [(t["name"], t["shape"], t["dtype"]) for t in m[mode]]
        want = [(t["name"], [d if isinstance(d, int) else -1 for d in t["shape"]], dtypes[t["dtype"]])
                for t in onnx_manifest[mode]]
        assert got == want, mode
    assert [t for t in m["io"] if t["mode"] == "input"] == m["inputs"]
    return m


# -- module-scoped exports (each made once) --------------------------------------------------------------------


def _export(folder: Path, name: str, model_name: str, keep_ratio: float | None = 0.7, **options) -> Path:
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    dense = keep_ratio is None
    loaded = load_model(model_name=model_name, keep_ratio=None if dense else keep_ratio, dense=dense)
    return Path(export_onnx(loaded, folder / f"{name}.onnx", check_samples=2, **options).path)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rtx_engines")


@pytest.fixture(scope="module")
def tiny_dynamic_keep(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("rtx_tiny_dk"), "tiny-dk", "tiny-deit", dynamic_keep=True, token_outputs=True)


@pytest.fixture(scope="module")
def tiny_lvvit(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("rtx_tiny_lv"), "tiny-lvvit", "tiny-lvvit")


@pytest.fixture(scope="module")
def tiny_fixed_batch(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("rtx_tiny_b2"), "tiny-b2", "tiny-deit", batch=2)


@pytest.fixture(scope="module")
def tiny_dense(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("rtx_tiny_dense"), "tiny-dense", "tiny-deit", keep_ratio=None)


@pytest.fixture(scope="module")
def tiny_qdq(tmp_path_factory, tiny_export):
    return make_qdq_onnx(Path(tiny_export.path), tmp_path_factory.mktemp("rtx_tiny_qdq") / "tiny-int8.onnx")


@pytest.fixture(scope="module")
def deit_s(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("rtx_deit_s"), "deit-s-0.7", "deit-s")


# -- tiny configs: every option ---------------------------------------------------------------------------------


def test_tiny_fp32_default_profile_and_compute_capabilities(tiny_export, out_dir):
    onnx_path = Path(tiny_export.path)
    result = rtx_build(onnx_path, out_dir / "tiny-rtx-fp32.engine", "tiny fp32")
    m = assert_engine(result, onnx_path)
    assert m["precision"] == "fp32" and m["builder"]["cleared_flags"] == ["TF32"]
    assert m["rtx"]["compute_capabilities"] == list(RTX_DEFAULT_COMPUTE_CAPABILITIES) and m["rtx"]["requested"] is None
    (images,) = m["profiles"]
    assert (images["min"][0], images["opt"][0], images["max"][0]) == (1, 32, 64)
    assert [t["name"] for t in m["outputs"]] == ["logits", "kept_tokens_stage1", "kept_tokens_stage2", "kept_tokens_stage3"]


def test_tiny_compute_capability_list_and_batch_range(tiny_export, out_dir):
    onnx_path = Path(tiny_export.path)
    result = rtx_build(onnx_path, out_dir / "tiny-cc.engine", "tiny fp32 sm86+sm120", compute_capabilities=["sm86", "12.0"],
                       min_batch=2, opt_batch=8, max_batch=16)
    m = assert_engine(result, onnx_path)
    assert m["rtx"]["compute_capabilities"] == ["8.6", "12.0"] and m["rtx"]["requested"] == ["8.6", "12.0"]
    assert (m["profiles"][0]["min"][0], m["profiles"][0]["max"][0]) == (2, 16)


def test_tiny_tf32_and_fp16_mixed_graph(tiny_export, out_dir):
    onnx_path = Path(tiny_export.path)
    tf32 = rtx_build(onnx_path, out_dir / "tiny-tf32.engine", "tiny tf32", precision="tf32")
    assert tf32.manifest.to_json()["builder"]["cleared_flags"] == [] and tf32.manifest.precision == "tf32"
    fp16 = rtx_build(onnx_path, out_dir / "tiny-rtx-fp16.engine", "tiny fp16", precision="fp16")
    m = assert_engine(fp16, onnx_path)
    assert m["builder"]["fp16_graph"] and fp16.fp16_onnx.is_file()
    assert m["source_onnx"]["built_from"] == str(fp16.fp16_onnx)


def test_tiny_dynamic_keep_shape_tensor_profile(tiny_dynamic_keep, out_dir):
    result = rtx_build(tiny_dynamic_keep, out_dir / "tiny-dk.engine", "tiny dynamic-keep", keep_range=(0.5, 0.9))
    m = assert_engine(result, tiny_dynamic_keep)
    keep = next(t for t in m["inputs"] if t["name"] == "keep_counts")
    assert keep["shape_tensor"] and keep["dtype"] == "int32" and keep["location"] == "host"
    (profile,) = [p for p in m["profiles"] if p["kind"] == "values"]
    assert (list(profile["min"]), list(profile["opt"]), list(profile["max"])) == (
        [98, 49, 24], [137, 96, 67], [176, 158, 142])


def test_tiny_lvvit_fixed_batch_and_dense(tiny_lvvit, tiny_fixed_batch, tiny_dense, out_dir):
    assert_engine(rtx_build(tiny_lvvit, out_dir / "tiny-lv.engine", "tiny lvvit"), tiny_lvvit)
    fixed = assert_engine(rtx_build(tiny_fixed_batch, out_dir / "tiny-b2.engine", "tiny batch 2"), tiny_fixed_batch)
    assert fixed["inputs"][0]["shape"][0] == 2 and fixed["profiles"][0]["min"][0] == 2
    dense = assert_engine(rtx_build(tiny_dense, out_dir / "tiny-dense.engine", "tiny dense"), tiny_dense, dense=True)
    assert dense["network"]["topk"] == []


def test_tiny_int8_qdq(tiny_qdq, out_dir):
    result = rtx_build(tiny_qdq, out_dir / "tiny-int8.engine", "tiny int8 Q/DQ", precision="int8")
    m = assert_engine(result, tiny_qdq)
    assert m["precision"] == "int8" and m["network"]["layer_counts"].get("DEQUANTIZE", 0) > 0


def test_int32_bias_qdq_is_refused_by_the_parser_and_by_doctor(tiny_export, tmp_path):
    """ORT's default (QuantizeBias on) int32 biases: TensorRT-RTX's parser refuses them; doctor says so first."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = [{"images": np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)}]

        def get_next(self):
            return self.items.pop() if self.items else None

    out = tmp_path / "bias.onnx"
    quantize_static(str(tiny_export.path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    parsed = parse_onnx(out, "rtx")
    assert not parsed.parsed and any("Int32" in e["desc"] and e.get("op") == "DequantizeLinear" for e in parsed.errors)
    report = diagnose(out, "rtx", real_parser=False)
    assert any(f.severity == "blocker" and "int32" in f.message and "QuantizeBias" in f.message for f in report.findings)
    assert not [f for f in diagnose(out, "trt-11", real_parser=False).blockers if f.check == "Q/DQ"]  # TRT 11: a warning


def test_turing_has_no_fp32_gemm(tiny_export, tiny_qdq, tmp_path):
    """NVIDIA's builder refuses our fp32 MatMuls for 7.5; dvit refuses it up front with the reason."""
    import tensorrt_rtx as trt

    from dvit_deploy.engines.trt_build import set_compute_capabilities

    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network()
    assert trt.OnnxParser(network, logger).parse_from_file(str(tiny_export.path))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, 3, 224, 224), (1, 3, 224, 224), (2, 3, 224, 224))
    config.add_optimization_profile(profile)
    set_compute_capabilities(trt, config, ("7.5",))
    assert builder.build_serialized_network(network, config) is None
    for onnx_path, precision in ((tiny_export.path, "fp32"), (tiny_export.path, "fp16"), (tiny_qdq, "int8")):
        with pytest.raises(BadInput, match="Turing.*no FP32 GEMM"):
            build_job.run_build(build_job.open_onnx(onnx_path), BuildOptions(target="rtx", output=tmp_path / "t.engine", precision=precision,
                                                    compute_capabilities=["7.5"]))


def test_refusals_before_any_build_work(tiny_export, tmp_path):
    onnx_path = Path(tiny_export.path)
    with pytest.raises(BadInput, match="timing cache makes that step query"):
        build_job.run_build(build_job.open_onnx(onnx_path), BuildOptions(target="rtx", output=tmp_path / "a.engine", timing_cache=tmp_path / "t.cache"))
    with pytest.raises(BadInput, match="no Hopper"):
        build_job.run_build(build_job.open_onnx(onnx_path), BuildOptions(target="rtx", output=tmp_path / "a.engine", compute_capabilities=["9.0"]))
    with pytest.raises(BadInput, match="strongly typed: bf16"):
        build_job.run_build(build_job.open_onnx(onnx_path), BuildOptions(target="rtx", output=tmp_path / "a.engine", precision="bf16"))
    with pytest.raises(BadInput, match="do not apply to TensorRT-RTX"):
        build_job.run_build(build_job.open_onnx(onnx_path), BuildOptions(target="rtx", output=tmp_path / "a.engine", hardware_compat="ampere+"))
    assert not list(tmp_path.iterdir())


def test_cli_build_target_rtx_json(tiny_export, tmp_path):
    out = tmp_path / "cli.engine"
    result = CliRunner().invoke(app, ["build", str(tiny_export.path), "--target", "rtx", "--compute-capability", "8.9",
                                      "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{"):])
    assert payload["manifest"]["rtx"]["compute_capabilities"] == ["8.9"] and out.read_bytes()[:4] == RTX_ENGINE_MAGIC
    bad = CliRunner().invoke(app, ["build", str(tiny_export.path), "--target", "rtx", "--compute-capability", "8.7",
                                   "--output", str(tmp_path / "x.engine")])
    assert bad.exit_code == 2 and "no Hopper 9.0 or Jetson Orin 8.7" in bad.output and "Traceback" not in bad.output


def test_default_output_name(tiny_export, workdir):
    result = build_job.run_build(build_job.open_onnx(tiny_export.path), BuildOptions(target="rtx"))
    assert result.engine_path == workdir / "engines" / "tiny-rtx-fp32.engine" and result.manifest_path.is_file()


# -- doctor and the real parser agree ------------------------------------------------------------------------


def _graph(nodes, inputs, outputs, inits=(), opset=18) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _topk(k: int, n: int = 6000) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    return _graph([helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk")], [vi("x", TensorProto.FLOAT, [1, n])],
                  [vi("v", TensorProto.FLOAT, [1, k]), vi("i", TensorProto.INT64, [1, k])],
                  [numpy_helper.from_array(np.array([k], np.int64), "k")])


def _float_k() -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("ReduceMax", ["f"], ["fm"], keepdims=0), helper.make_node("Cast", ["fm"], ["kk"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["kk", "one"], ["k"]), helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk")]
    return _graph(nodes, [vi("x", TensorProto.FLOAT, [1, 100]), vi("f", TensorProto.FLOAT, [3])],
                  [vi("v", TensorProto.FLOAT, [1, None]), vi("i", TensorProto.INT64, [1, None])],
                  [numpy_helper.from_array(np.array([1], np.int64), "one")])


def _op(op: str, opset: int = 18) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    return _graph([helper.make_node(op, ["x"], ["y"], name="node0")], [vi("x", TensorProto.FLOAT, [4])],
                  [vi("y", TensorProto.FLOAT if op != "NonZero" else TensorProto.INT64, [4] if op != "NonZero" else [1, None])],
                  opset=opset)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_doctor_blockers_are_refused_by_nvidia_too(tmp_path):
    """Every blocker doctor raises on these graphs is a refusal by NVIDIA's parser or builder."""
    import tensorrt_rtx as trt

    cases = {"topk-k-5000": _topk(5000), "topk-float-k": _float_k(), "nonzero": _op("NonZero"), "det": _op("Det")}
    for name, model in cases.items():
        path = _save(model, tmp_path / f"{name}.onnx")
        report = diagnose(path, "rtx", real_parser=True)
        assert report.blockers, name
        parsed = parse_onnx(path, "rtx")
        if name == "topk-k-5000":
            # The parser takes it; the builder refuses K > 3840 (so doctor's blocker stands).
            assert parsed.parsed
            logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
            builder = trt.Builder(logger)
            network = builder.create_network()
            assert trt.OnnxParser(network, logger).parse_from_file(str(path))
            assert builder.build_serialized_network(network, builder.create_builder_config()) is None
            assert not [f for f in report.findings if f.check == "NVIDIA parser" and f.severity == "blocker"]
        else:
            assert not parsed.parsed and parsed.errors, name
            node = "topk" if name == "topk-float-k" else "node0"
            assert any(e["node_name"] == node for e in parsed.errors)
            parser_findings = [f for f in report.blockers if f.check == "NVIDIA parser"]
            assert parser_findings and all(f"'{node}'" in f.message for f in parser_findings), name
    # K = 3840 is within the limit: doctor passes and the builder builds.
    ok = _save(_topk(3840), tmp_path / "topk-3840.onnx")
    assert diagnose(ok, "rtx", real_parser=True).passed


def test_opset_difference_is_recorded(tmp_path):
    """TensorRT-RTX's parser reads any opset a node claims; doctor keeps TensorRT 11's documented range
    (targets.py: ``enforces_opset=False``), so this is a recorded difference, not an agreement."""
    path = _save(_op("Relu", opset=30), tmp_path / "opset30.onnx")
    report = diagnose(path, "rtx", real_parser=True)
    assert [f.check for f in report.blockers] == ["opset"] and parse_onnx(path, "rtx").parsed
    assert report.target.enforces_opset is False


def test_every_graph_doctor_passes_the_parser_parses(tiny_export, tiny_dynamic_keep, tiny_lvvit, tiny_fixed_batch,
                                                    tiny_dense, tiny_qdq):
    for path in (Path(tiny_export.path), tiny_dynamic_keep, tiny_lvvit, tiny_fixed_batch, tiny_dense, tiny_qdq):
        report = diagnose(path, "rtx", real_parser=True)
        assert report.passed, (path.name, [f.message for f in report.blockers])
        assert report.real_parser["parsed"] and report.real_parser["topk_layers"] == len(
            json.loads(manifest_path(path).read_text()).get("keep_counts") or [])


def test_doctor_cli_reports_the_parser_error_with_its_node(tmp_path):
    path = _save(_op("NonZero"), tmp_path / "nz.onnx")
    result = CliRunner().invoke(app, ["doctor", str(path), "--target", "rtx", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["real_parser"]["errors"][0]["node_name"] == "node0"
    assert any(f["check"] == "NVIDIA parser" and "NonZero 'node0'" in f["message"] for f in report["findings"])


# -- no engine runs here ------------------------------------------------------------------------------------


def test_engine_does_not_deserialize_without_a_driver(tiny_export, out_dir):
    """The one-line refusal of the runner, and the fact behind it: deserializing needs a CUDA driver."""
    import tensorrt_rtx as trt
    import torch

    from dvit_deploy.runtime.trt_runner import TensorRTRunner

    result = rtx_build(Path(tiny_export.path), out_dir / "run.engine", "tiny fp32 (runner)")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: this test is about machines without one")
    with pytest.raises(DvitError, match=r"TensorRT-RTX engine: it runs on an RTX GPU .*cudaError 35") as info:
        TensorRTRunner(Artifact.of(result.engine_path, result.manifest)).load()
    assert "\n" not in str(info.value)

    class Capture(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages = []

        def log(self, severity, message):
            self.messages.append(message)

    logger = Capture()
    assert trt.Runtime(logger).deserialize_cuda_engine(result.engine_path.read_bytes()) is None
    assert any("cudaError 35" in m for m in logger.messages)


def test_parser_rejection_names_the_node(tmp_path):
    path = _save(_op("Det"), tmp_path / "det.onnx")
    manifest_path(path).write_text(json.dumps({"kind": "onnx", "artifact": path.name}))
    from dvit_deploy.engines.build_plan import make_plan
    from dvit_deploy.engines.trt_build import build_engine

    plan = make_plan(Artifact.of(path, {"inputs": [{"name": "x", "shape": [4]}]}),
                     BuildOptions(target="rtx", precision="fp32"), trt_version="1.7.1", gpu_name="")
    with pytest.raises(CheckFailed, match=r"TensorRT-RTX's ONNX parser rejected det.onnx: node 0 \(Det 'node0'\)"):
        build_engine(plan, path)


# -- real shapes (slow) ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_deit_s_fp32_fp16_int8(deit_s, out_dir, tmp_path_factory):
    m = assert_engine(rtx_build(deit_s, out_dir / "deit-s-rtx-fp32.engine", "DeiT-S fp32"), deit_s)
    assert [t["k"] for t in m["network"]["topk"]] == [137, 96, 67]
    fp16 = assert_engine(rtx_build(deit_s, out_dir / "deit-s-rtx-fp16.engine", "DeiT-S fp16 mixed", precision="fp16"),
                         deit_s)
    assert fp16["builder"]["fp16_graph"] and fp16["engine"]["bytes"] < m["engine"]["bytes"]
    qdq = make_qdq_onnx(deit_s, tmp_path_factory.mktemp("rtx_deit_s_int8") / "deit-s-0.7-int8.onnx")
    int8 = assert_engine(rtx_build(qdq, out_dir / "deit-s-rtx-int8.engine", "DeiT-S int8 Q/DQ", precision="int8"), qdq)
    assert int8["engine"]["bytes"] < fp16["engine"]["bytes"]


@pytest.mark.slow
def test_deit_s_dense_twin(deit_s, out_dir):
    from dvit_deploy.export.onnx_export import export_dense_twin

    from dvit_deploy.artifact.store import open_artifact

    twin = export_dense_twin(open_artifact(deit_s))
    m = assert_engine(rtx_build(twin, out_dir / "deit-s-dense-rtx-fp32.engine", "DeiT-S dense twin"), twin, dense=True)
    assert m["network"]["topk"] == [] and m["dense"]


@pytest.mark.slow
def test_deit_s_dynamic_keep_with_token_outputs(tmp_path_factory, out_dir):
    path = _export(tmp_path_factory.mktemp("rtx_deit_s_dk"), "deit-s-dk", "deit-s", dynamic_keep=True, token_outputs=True)
    m = assert_engine(rtx_build(path, out_dir / "deit-s-dk.engine", "DeiT-S dynamic-keep + token outputs",
                                keep_range=(0.5, 0.9)), path)
    keep = next(t for t in m["inputs"] if t["name"] == "keep_counts")
    assert keep["shape_tensor"] and keep["dtype"] == "int32"
    assert [t["name"] for t in m["outputs"]][1:] == ["kept_tokens_stage1", "kept_tokens_stage2", "kept_tokens_stage3"]


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["deit-256", "lvvit-s"])
def test_other_variants(model_name, tmp_path_factory, out_dir):
    path = _export(tmp_path_factory.mktemp(f"rtx_{model_name}"), f"{model_name}-0.7", model_name)
    assert_engine(rtx_build(path, out_dir / f"{model_name}.engine", f"{model_name} fp32"), path)


@pytest.mark.parametrize("model_name", ["tiny-convnext", "tiny-swin"])
def test_split_models_fp32_and_fp16(model_name, tmp_path_factory, out_dir):
    """ConvNeXt/Swin graphs (TopK over all N positions, two Gathers and one ScatterND per Ada block) go
    through NVIDIA's parser and builder: one TopK per predictor position with K = N, and one SCATTER
    layer per ONNX ScatterND (the write-back is not folded away or refused)."""
    path = _export(tmp_path_factory.mktemp(f"rtx_{model_name}"), f"{model_name}-0.7", model_name)
    onnx_manifest = json.loads(manifest_path(path).read_text())
    model = onnx.load(str(path), load_external_data=False)
    scatters = sum(1 for n in model.graph.node if n.op_type == "ScatterND")
    assert scatters > 0
    for precision in ("fp32", "fp16"):
        result = rtx_build(path, out_dir / f"{model_name}-{precision}.engine", f"{model_name} {precision}",
                           precision=precision)
        data = result.engine_path.read_bytes()
        assert len(data) > 1000 and data[:4] == RTX_ENGINE_MAGIC
        written = result.manifest.to_json()
        net = written["network"]
        assert len(net["topk"]) == len(onnx_manifest["keep_counts"]) == net["layer_counts"]["TOPK"]
        assert all(t["k"] == onnx_manifest["num_patches"] for t in net["topk"])
        assert net["layer_counts"].get("SCATTER", 0) == scatters
        assert [t.name for t in result.manifest.inputs] == ["images"]
        assert [t.name for t in result.manifest.outputs] == [t["name"] for t in onnx_manifest["outputs"]]
        # The engine reads back with the export's linear keep schedule (it used to read as geometric).
        engine_model = open_artifact(result.engine_path).model
        assert onnx_manifest["keep_schedule"] == "linear" == engine_model.keep_schedule
        assert engine_model == open_artifact(path).model


# -- package --target rtx + verify -----------------------------------------------------------------------------


def test_package_rtx_bundle_and_verify(tiny_dynamic_keep, tiny_export, out_dir, tmp_path):
    from dvit_deploy.jobs import ship

    engine = rtx_build(tiny_dynamic_keep, out_dir / "pkg-dk.engine", "tiny dynamic-keep (bundle)",
                       compute_capabilities=["8.6", "8.9"]).engine_path
    result = ship.make_bundle([engine], "rtx", output=tmp_path / "bundle", precision="fp32")
    assert result.build_commands == 0 and "run_on_device.sh" in result.files
    assert "engines/pkg-dk.engine" in result.files and "model/tiny-dk.onnx" in result.files
    script = (result.folder / "run_on_device.sh").read_text()
    assert "--loadEngine=engines/pkg-dk.engine" in script and '"$TENSORRT_RTX"' in script
    assert "--shapes=images:8x3x224x224,keep_counts:137x96x67" in script
    assert "--runtimeCacheFile=engines/pkg-dk.runtime-cache" in script
    bundle = json.loads((result.folder / "bundle.json").read_text())
    assert bundle["target"]["flavour"] == "rtx" and bundle["engines"][0]["compute_capabilities"] == ["8.6", "8.9"]
    assert "sm 8.6, 8.9" in script and "compute capability 8.6, 8.9" in (result.folder / "README.md").read_text()
    report = ship.verify_bundle(result.archive)
    assert report.passed, report.to_dict()
    checks = {c.name: c.status for c in report.checks}
    assert checks["engine pkg-dk.engine format"] == "ok" and checks["run script"] == "ok"
    assert checks["engine compatibility"] == "skipped"  # no GPU here; the RTX machine checks it
    # A tampered header fails verify (checksums and format both).
    blob = (result.folder / "engines" / "pkg-dk.engine").read_bytes()
    (result.folder / "engines" / "pkg-dk.engine").write_bytes(b"xxxx" + blob[4:])
    report = ship.verify_bundle(result.folder)
    failed = {c.name for c in report.failures}
    assert "engine pkg-dk.engine format" in failed and "checksums" in failed


def test_package_rtx_refuses_what_it_cannot_ship(tiny_export, tmp_path):
    from dvit_deploy.jobs import ship

    with pytest.raises(BadInput, match="ships TensorRT-RTX engines; build one"):
        ship.make_bundle([Path(tiny_export.path)], "rtx", output=tmp_path / "b1")
    result = CliRunner().invoke(app, ["package", str(tiny_export.path), "--target", "rtx", "-o", str(tmp_path / "b2")])
    assert result.exit_code == 2 and "dvit build --target rtx" in result.output
