"""profile_ort_split: ORT's per-node profile of a split pair traced to op types and pruning nodes on ORT's
optimized graph, booked to classes, and the accounting against the FLOPs bound (pure parts on hand-made
nodes; one run on the tiny ConvNeXt pair, fp32 and int8). No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import profile_ort_split as pors  # noqa: E402


def test_classes_and_summary():
    assert pors.node_class("FusedMatMul", False) == "gemm"
    assert pors.node_class("Conv", True) == "predictor"
    assert pors.node_class("TopK", True) == pors.node_class("ScatterND", True) == "split select/scatter"
    assert pors.node_class("LayerNormalization", False) == "norm"
    assert pors.node_class("ReorderInput", False) == "layout"
    node_ms = {"fc": 12.0, "ln": 2.0, "pred": 1.0, "topk": 0.4}
    op_types = {"fc": "MatMul", "ln": "LayerNormalization", "pred": "Conv", "topk": "TopK"}
    summary = pors.summarise(node_ms, op_types, {"pred", "topk"}, runs=2, batch=2, wall_ms=8.0)
    assert summary["ms_per_image"] == pytest.approx(3.85) and summary["profiled_wall_ms_per_image"] == 4.0
    assert summary["by_class"]["gemm"] == {"ms_per_image": 3.0, "share": pytest.approx(6.0 / 7.7, abs=1e-4), "nodes": 1}
    assert summary["by_class"]["predictor"]["ms_per_image"] == 0.25
    assert summary["by_class"]["split select/scatter"]["ms_per_image"] == 0.1


@pytest.fixture(scope="module")
def tiny_pair_dir(tiny_convnext_pair):
    pytest.importorskip("onnxruntime")
    return tiny_convnext_pair


@pytest.mark.parametrize("int8", [False, True])
def test_tiny_convnext_pair(tiny_pair_dir, tmp_path, int8, capsys):
    out = tmp_path / "profile.json"
    argv = ["--models", "tiny-convnext", "--runs", "2", "--workdir", str(tiny_pair_dir), "--json", str(out)]
    assert pors.main(argv + (["--int8", "s8s8"] if int8 else [])) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == pors.SCHEMA and report["machine"]["cpu"]["flags"] and "per_core" in report["others"]
    row = report["rows"][0]
    assert (row["model"], row["batch"], row["precision"]) == ("tiny-convnext", 1, "int8" if int8 else "fp32")
    assert ("int8" in row["files"]["sparse"]) == int8
    dense, sparse = row["dense"], row["sparse"]
    # every profiled node was found in ORT's optimized graph, and the pruning nodes were traced there
    assert dense["unknown_nodes"] == [] and sparse["unknown_nodes"] == []
    assert not {"predictor", "split select/scatter"} & set(dense["by_class"])
    assert {"predictor", "split select/scatter", "gemm"} <= set(sparse["by_class"])
    acc = row["accounting"]
    assert acc["totals"] == "node sum" and acc["bound"] > 1.0
    assert acc["shrinking_classes"] == ["gemm", "activation"]
    assert sum(r["excess_ms"] for r in acc["by_class"].values()) == pytest.approx(acc["gap_ms"], abs=0.01)
    assert acc["fraction_of_gemm_only_bound"] == pytest.approx(acc["profiled_ratio"] / acc["gemm_only_bound"], abs=2e-3)
    assert "tiny-convnext b1" in capsys.readouterr().out
