"""profile_ov_split: OpenVINO runtime nodes traced back to the ONNX file, booked to classes and fusion
patterns, and the accounting of the gap to the FLOPs bound (pure parts on hand-made nodes; one run of
the script on the tiny ConvNeXt pair compiled by dvit's OpenVINO runner). No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import profile_ov_split as pos  # noqa: E402

ONNX_TYPES = {"node_MatMul_1": "MatMul", "node_linear": "Add", "node_gelu": "Mul", "node_mul_20": "Mul",
              "node_topk": "TopK", "node_index_select": "Gather", "node_ScatterND_3": "ScatterND",
              "node_cat": "Concat", "node_conv_p": "Conv",
              "node_select": "Gather"}
PRUNING = {"node_topk", "node_index_select", "node_ScatterND_3", "node_conv_p"}


def _node(name, layer, originals, primitive="jit", precision="f32"):
    return {"name": name, "type": layer, "primitive": primitive, "precision": precision, "originals": originals}


NODES = [
    _node("images", "Input", ["images"]),
    _node("fc1", "FullyConnected", ["node_MatMul_1/transpose_b", "node_linear", "node_gelu"], "brgemm_avx512_f32"),
    _node("fc2", "FullyConnected", ["node_mul_20"], "gemm_mlas_f32"),
    _node("ln", "RMS", ["MVN_24"]),
    _node("reorder", "Reorder", []),
    _node("pred", "Convolution", ["node_conv_p/WithoutBiases"], "brgconv_avx512_1x1_f32"),
    _node("topk", "TopK", ["node_topk"], precision="f32,i32,i32"),
    _node("idx", "Eltwise", ["node_topk"], precision="i32"),
    _node("gather", "Gather", ["node_index_select"]),
    _node("scatter", "ScatterNDUpdate", ["node_ScatterND_3"]),
    _node("cat", "Concatenation", ["node_cat"]),
    _node("qkv", "Gather", ["node_select"]),
    _node("out", "Output", ["logits"]),
]


def test_origins_labels_roles_and_classes():
    assert pos.onnx_origin("node_MatMul_1/transpose_b", ONNX_TYPES) == "node_MatMul_1"
    assert pos.onnx_origin("MVN_24", ONNX_TYPES) is None
    assert pos.origin_label("node_gelu", ONNX_TYPES) == "Mul:gelu"
    assert pos.origin_label("node_MatMul_1", ONNX_TYPES) == "MatMul"
    assert pos.origin_label("node_mul_20", ONNX_TYPES) == "Mul"
    assert pos.origin_label("MVN_24", ONNX_TYPES) == "ov:MVN"
    traced = {n["name"]: n for n in pos.trace_nodes(NODES, ONNX_TYPES, PRUNING)}
    assert set(traced) == {"fc1", "fc2", "ln", "reorder", "pred", "topk", "idx", "gather", "scatter", "cat", "qkv"}
    assert traced["fc1"]["onnx_ops"] == ["MatMul", "Add:linear", "Mul:gelu"]
    assert pos.pattern(traced["fc1"]) == "FullyConnected[MatMul+Add:linear+Mul:gelu]"
    assert (traced["fc1"]["role"], traced["fc1"]["klass"]) == ("trunk", "gemm")
    assert (traced["ln"]["role"], traced["ln"]["klass"]) == ("inserted", "norm")
    assert (traced["reorder"]["role"], traced["reorder"]["klass"]) == ("inserted", "reorder/convert")
    assert (traced["pred"]["role"], traced["pred"]["klass"]) == ("pruning", "predictor")
    assert traced["topk"]["klass"] == traced["idx"]["klass"] == traced["gather"]["klass"] == "split select/scatter"
    assert traced["scatter"]["klass"] == "split select/scatter" and traced["cat"]["klass"] == "layout"
    assert (traced["qkv"]["role"], traced["qkv"]["klass"]) == ("trunk", "gather/scatter (trunk)")
    # a Snippets Subgraph is attention when it fused a MatMul or Softmax, element-wise work otherwise
    assert pos.node_class("Subgraph", "trunk", "f32", ["MatMul", "Add", "Softmax"]) == "attention subgraph"
    assert pos.node_class("Subgraph", "trunk", "f32", ["Add"]) == "eltwise"


def test_summary_patterns_and_accounting_add_up():
    ms = {"fc1": 6.0, "fc2": 2.0, "ln": 0.5, "reorder": 0.5, "pred": 0.4, "topk": 0.1, "idx": 0.05,
          "gather": 0.2, "scatter": 0.15, "cat": 0.1, "qkv": 0.0}
    traced = pos.trace_nodes(NODES, ONNX_TYPES, PRUNING)
    sparse = pos.summarise(traced, ms, batch=2)
    assert sparse["ms_per_image"] == pytest.approx(5.0)
    assert sum(c["share"] for c in sparse["by_class"].values()) == pytest.approx(1.0, abs=1e-3)
    assert sparse["by_class"]["gemm"] == {"ms_per_image": 4.0, "share": 0.8, "nodes": 2}
    machinery = sparse["split_machinery"]
    assert machinery["ScatterNDUpdate (pruning)"]["ms_per_image"] == pytest.approx(0.075)
    assert "FullyConnected (trunk)" not in machinery and machinery["Concatenation (trunk)"]["nodes"] == 1
    example = sparse["patterns"]["FullyConnected[MatMul+Add:linear+Mul:gelu]"]["example"]
    assert example == {"node": "fc1", "kernel": "brgemm_avx512_f32",
                       "fused": ["node_MatMul_1/transpose_b", "node_linear", "node_gelu"]}
    kernels = pos.kernel_times(traced, ms, 2)
    assert kernels["gemm: FullyConnected:gemm_mlas_f32"] == {"ms_per_image": 1.0, "nodes": 1}

    dense_nodes = [n for n in NODES if n["name"] in ("fc1", "fc2", "ln", "reorder")]
    dense_nodes.append(_node("ln2", "RMS", ["MVN_30"]))
    dense = pos.summarise(pos.trace_nodes(dense_nodes, ONNX_TYPES, PRUNING),
                          {"fc1": 10.0, "fc2": 4.0, "ln": 0.5, "ln2": 0.5, "reorder": 1.0}, batch=2)
    diff = pos.compare_patterns(dense["patterns"], sparse["patterns"])
    assert diff["lost_in_sparse"] == {"RMS[ov:MVN]": {"dense_nodes": 2, "sparse_nodes": 1}}
    assert diff["new_in_sparse"]["ScatterNDUpdate[ScatterND]"]["sparse_nodes"] == 1
    bound = 1.25
    acc = pos.account(dense, sparse, bound)
    assert acc["ideal_sparse_ms"] == pytest.approx(dense["ms_per_image"] / bound)
    assert sum(r["excess_ms"] for r in acc["by_class"].values()) == pytest.approx(acc["gap_ms"], abs=1e-3)
    assert acc["by_class"]["predictor"]["dense_ms"] == 0.0 and acc["by_class"]["predictor"]["shrink"] is None
    assert acc["by_class"]["predictor"]["allowed_ms"] == 0.0  # no trunk bound: the predictor gets no allowance
    # with the trunk's own FLOPs ratio, the predictor is allowed its FLOPs' share of the dense time
    split = pos.account(dense, sparse, bound, trunk_bound=1.5)
    assert split["by_class"]["predictor"]["allowed_ms"] == pytest.approx(8.0 * (1 / 1.25 - 1 / 1.5), abs=1e-4)
    assert split["by_class"]["gemm"]["allowed_ms"] == pytest.approx(7.0 / 1.5, abs=1e-4)
    assert sum(r["excess_ms"] for r in split["by_class"].values()) == pytest.approx(split["gap_ms"], abs=1e-3)
    # if only the GEMMs shrank: dense gemm 7.0 of 8.0 ms/image at the trunk ratio, the predictor its allowance,
    # norm and reorder (1.0) as in dense
    attainable = 7.0 / 1.5 + 8.0 * (1 / 1.25 - 1 / 1.5) + 1.0
    assert split["dense_gemm_share"] == pytest.approx(7.0 / 8.0, abs=1e-4)
    assert split["gemm_only_bound"] == pytest.approx(8.0 / attainable, abs=1e-3)
    assert split["gemm_only_bound"] < bound
    assert split["fraction_of_gemm_only_bound"] == pytest.approx((8.0 / 5.0) / (8.0 / attainable), abs=1e-3)
    assert acc["profiled_ratio"] == pytest.approx(8.0 / 5.0) and acc["totals"] == "node sum"
    # with wall times, the time outside the nodes is one more class and the totals are wall times
    walled = pos.account({**dense, "wall_ms_per_image": 9.0}, {**sparse, "wall_ms_per_image": 6.0}, bound)
    assert walled["totals"] == "wall" and walled["profiled_ratio"] == pytest.approx(1.5)
    assert walled["by_class"][pos.OUTSIDE]["dense_ms"] == pytest.approx(1.0)
    assert walled["by_class"][pos.OUTSIDE]["excess_ms"] == pytest.approx(1.0 - 1.0 / bound, abs=1e-4)
    assert sum(r["excess_ms"] for r in walled["by_class"].values()) == pytest.approx(walled["gap_ms"], abs=1e-3)


@pytest.fixture(scope="module")
def tiny_pair_dir(tiny_convnext_pair):
    pytest.importorskip("openvino")
    return tiny_convnext_pair


def test_tiny_convnext_pair_on_openvino(tiny_pair_dir, tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert pos.main(["--models", "tiny-convnext", "--runs", "2", "--rounds", "1", "--round-s", "0.05",
                     "--workdir", str(tiny_pair_dir), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == pos.SCHEMA and report["machine"]["cpu"]["flags"]
    row = report["rows"][0]
    assert (row["model"], row["batch"]) == ("tiny-convnext", 1)
    dense, sparse = row["dense"], row["sparse"]
    assert "openvino" in sparse["executes"] and "f32" in sparse["executes"]
    assert not {"predictor", "split select/scatter"} & set(dense["by_class"])
    assert {"predictor", "split select/scatter", "gemm"} <= set(sparse["by_class"])
    assert any(k.startswith(("ScatterNDUpdate", "Gather")) for k in sparse["split_machinery"])
    assert any(k.startswith("ScatterNDUpdate[") for k in row["fusion_diff"]["new_in_sparse"])
    acc = row["accounting"]
    assert acc["bound"] > 1.0
    assert sum(r["excess_ms"] for r in acc["by_class"].values()) == pytest.approx(acc["gap_ms"], abs=0.01)
    assert row["interleaved"]["ratio"]["median"] > 0
    assert "tiny-convnext b1" in capsys.readouterr().out


def test_static_batch_compile_gives_the_same_logits(tiny_pair_dir):
    import ab_ov_static_batch as ab
    from bench_cpu import ensure_export

    from dvit_deploy.artifact.store import as_artifact

    pair = {"dense": as_artifact(ensure_export(tiny_pair_dir, "tiny-convnext", None, 0)),
            "sparse": as_artifact(ensure_export(tiny_pair_dir, "tiny-convnext", 0.7, 0))}
    row = ab.measure(pair, batch=2, rounds=1, round_s=0.05, threads=None)
    assert row["static_arm_fixed_batch"] == {"dense": True, "sparse": True}
    assert set(row["logits_max_abs_diff_static_vs_dynamic"]) == {"dense", "sparse"}
    assert max(row["logits_max_abs_diff_static_vs_dynamic"].values()) < 1e-3
    assert set(row["throughput"]) == {"dense/dynamic", "dense/static", "sparse/dynamic", "sparse/static"}
    assert all(r["median"] > 0 for r in row["sparse_over_dense"].values())


def test_int8_pair_is_quantized_and_runs_int8_kernels(tiny_pair_dir, tmp_path):
    out = tmp_path / "profile-int8.json"
    assert pos.main(["--models", "tiny-convnext", "--int8", "s8s8", "--runs", "2", "--rounds", "0",
                     "--workdir", str(tiny_pair_dir), "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["precision"] == "int8"
    assert row["files"] == {"dense": "tiny-convnext-dense-seed0-int8-s8s8.onnx",
                            "sparse": "tiny-convnext-r0.7-seed0-int8-s8s8.onnx"}
    assert "int8" in row["sparse"]["executes"]
    for role in ("dense", "sparse"):  # OpenVINO read the Q/DQ pairs (kernel names vary with the CPU: not asserted)
        assert any("QuantizeLinear" in k for k in row[role]["patterns"])
    assert "predictor" in row["sparse"]["by_class"]
    acc = row["accounting"]
    assert acc["fraction_of_gemm_only_bound"] == pytest.approx(acc["profiled_ratio"] / acc["gemm_only_bound"], abs=2e-3)
