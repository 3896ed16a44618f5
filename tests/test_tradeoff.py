"""`dvit tradeoff` on tiny models: the table and JSON, FLOPs and kept tokens falling with ρ, agreement,
the plot, an interrupted run keeping its finished rows, and fixed exports of a ConvNeXt (split family)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dvit_deploy.cli import app
from dvit_deploy.jobs.tradeoff import measure as tradeoff_measure
from dvit_deploy.jobs.tradeoff.result import TradeoffRow, mark_pareto, recommend

from .conftest import make_official_checkpoint

runner = CliRunner()
QUICK = ["--iterations", "2", "--warmup", "0", "--batch", "2"]
SYNSETS = ("n01440764", "n01443537", "n01484850")


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """A tiny DeiT checkpoint exported with --dynamic-keep and dense (its twin: the same weights), and a labelled
    folder in synset folders."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    folder = tmp_path_factory.mktemp("tradeoff")
    make_official_checkpoint(folder / "tiny.pth", "tiny-deit")
    export_onnx(load_model(folder / "tiny.pth", keep_ratio=0.7), folder / "export" / "tiny-dynkeep.onnx",
                dynamic_keep=True, check_samples=1)
    export_onnx(load_model(folder / "tiny.pth", dense=True), folder / "export" / "tiny-dense.onnx", check_samples=1)
    rng = np.random.default_rng(0)
    for synset in SYNSETS:
        (folder / "val" / synset).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / "val" / synset / f"{i}.JPEG",
                                                                                  format="JPEG")
    return folder


@pytest.fixture
def here(tiny_set, tmp_path, monkeypatch):
    shutil.copytree(tiny_set / "export", tmp_path / "export")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, ["tradeoff", *args, *QUICK, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_labelled_folder_gives_accuracy_and_flops_and_tokens_fall_with_rho(here, tiny_set):
    data = _json(["export/tiny-dynkeep.onnx", "--images", str(tiny_set / "val")])
    assert data["complete"] and data["mode"] == "dynamic-keep" and data["metric"] == "top1"
    assert data["reference"] == "dense" and "6 labelled image(s)" in data["inputs"]
    sparse = sorted((r for r in data["rows"] if r["role"] == "sparse"), key=lambda r: r["keep_ratio"])
    dense = next(r for r in data["rows"] if r["role"] == "dense")
    assert [r["keep_ratio"] for r in sparse] == [0.5, 0.6, 0.7, 0.8, 0.9]
    macs = [r["macs"] for r in sparse]
    assert macs == sorted(macs) and len(set(macs)) == 5 and dense["macs"] > macs[-1]
    assert [r["keep_counts"] for r in sparse][2] == [137, 96, 67]  # int(196·0.7^k), as a fixed export at 0.7
    for lower, higher in zip(sparse, sparse[1:]):
        assert all(a < b for a, b in zip(lower["keep_counts"], higher["keep_counts"]))
        assert all(a <= b for a, b in zip(lower["tokens_per_stage"], higher["tokens_per_stage"]))
        assert sum(lower["tokens_per_stage"]) < sum(higher["tokens_per_stage"])
    assert dense["tokens_per_stage"] == [197] and dense["agreement"] == 1.0
    for row in data["rows"]:
        assert row["images"] == 6 and 0 <= row["top1"] <= row["top5"] <= 1 and 0 <= row["agreement"] <= 1
        assert row["throughput_ips"] > 0 and row["batch"] == 2
    rec = data["recommendation"]
    assert rec["metric"] == "top1" and rec["keep_range"][1] == 0.9 and set(rec["drop_points"]) == {r["label"] for r in sparse}
    assert any(r["pareto"] for r in data["rows"])


def test_agreement_at_the_top_rho_against_itself_is_one_and_the_table_and_plot(here):
    result = runner.invoke(app, ["tradeoff", "export/tiny-dynkeep.onnx", "--keep-ratios", "0.9,0.5", "--reference",
                                 "top", "--samples", "8", "--plot", "curve.png", "-o", "t.json", *QUICK])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "kept tokens/stage" in line)
    for column in ("ρ", "GMACs", "img/s", "ms/batch", "agreement %", "drop pt"):
        assert column in header
    assert "top-1 %" not in header  # no labels: no accuracy column
    assert "seeded random inputs" in result.stdout and "recommended keep range: ρ" in result.stdout
    assert [line.split()[0] for line in result.stdout.splitlines() if line.strip().startswith(("ρ=", "dense"))] == \
        ["ρ=0.9", "ρ=0.5", "dense"]
    data = json.loads((here / "t.json").read_text())
    rows = {r["label"]: r for r in data["rows"]}
    assert data["reference_row"] == "ρ=0.9" and rows["ρ=0.9"]["agreement"] == 1.0
    assert rows["ρ=0.5"]["images"] == 8 and rows["ρ=0.5"]["agreement"] in {i / 8 for i in range(9)}
    assert data["recommendation"]["drop_points"]["ρ=0.9"] == 0.0
    png = (here / "curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    with Image.open(here / "curve.png") as img:
        assert img.size[0] > 400 and img.size[1] > 300


@pytest.mark.parametrize("signal_kind, code", [("ctrl-c", 130), ("sigterm", 143)])
def test_an_interrupted_run_keeps_its_finished_rows(here, monkeypatch, signal_kind, code):
    from dvit_deploy.cli.failures import Terminated

    real, calls = tradeoff_measure.measure_point, []

    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt() if signal_kind == "ctrl-c" else Terminated()
        return real(*args, **kwargs)

    monkeypatch.setattr(tradeoff_measure, "measure_point", stopping)
    result = runner.invoke(app, ["tradeoff", "export/tiny-dynkeep.onnx", "--samples", "4", "-o", "t.json", "--json",
                                 *QUICK])
    assert result.exit_code == code, result.output
    kept = json.loads((here / "t.json").read_text())
    assert not kept["complete"] and kept["rows_planned"] == 6
    assert [r["label"] for r in kept["rows"]] == ["dense", "ρ=0.9"]  # the reference first, then from the top
    assert json.loads(result.stdout)["rows"] == kept["rows"]  # --json prints the same finished rows
    assert ("interrupted" if code == 130 else "terminated") in result.stderr


def test_fixed_exports_of_a_split_model(tmp_path, monkeypatch):
    """ConvNeXt refuses --dynamic-keep: fixed exports at several ρ, found beside the one given."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    monkeypatch.chdir(tmp_path)
    for ratio in (0.9, 0.5):
        export_onnx(load_model(model_name="tiny-convnext", keep_ratio=ratio), tmp_path / "export" / f"cx-r{ratio}.onnx",
                    check_samples=1)
    data = _json(["export/cx-r0.5.onnx", "--samples", "4"])
    assert data["mode"] == "fixed exports" and data["reference"] == "top" and data["metric"] == "agreement"
    assert any("1 other fixed export(s)" in n and "cx-r0.9.onnx" in n for n in data["notes"])
    rows = sorted(data["rows"], key=lambda r: r["keep_ratio"])
    assert [r["keep_ratio"] for r in rows] == [0.5, 0.9]
    assert [r["keep_counts"] for r in rows] == [[8, 4, 1], [14, 11, 8]]  # int(16·[ρ, ρ−0.2, ρ−0.4])
    assert [r["tokens_per_stage"] for r in rows] == [[16, 8, 4, 1], [16, 14, 11, 8]]
    assert rows[0]["macs"] < rows[1]["macs"]
    assert all(Path(r["artifact"]).name == f"cx-r{r['keep_ratio']}.onnx" for r in rows)
    assert rows[1]["agreement"] == 1.0 and rows[0]["agreement"] in {i / 4 for i in range(5)}
    only = _json(["export/cx-r0.9.onnx", "export/cx-r0.5.onnx", "--samples", "4", "--keep-ratios", "0.5"])
    assert [r["keep_ratio"] for r in only["rows"]] == [0.5]


def _row(ratio: float | None, ips: float, top1: float) -> TradeoffRow:
    return TradeoffRow(label="dense" if ratio is None else f"ρ={ratio:g}", role="dense" if ratio is None else "sparse",
                       keep_ratio=ratio, artifact="a.onnx", keep_counts=[], tokens_per_stage=[], macs=10**9, batch=1,
                       throughput_ips=ips, latency_ms_mean=1.0, latency_ms_median=1.0, cv_percent=0.0, images=100,
                       top1=top1)


def test_the_keep_range_stops_at_the_first_rho_over_the_drop_and_pareto_marks_the_front():
    rows = [_row(0.5, 500, 0.700), _row(0.6, 400, 0.796), _row(0.7, 300, 0.790), _row(0.8, 200, 0.797),
            _row(0.9, 150, 0.799), _row(None, 100, 0.801)]
    rec = recommend([r for r in rows if r.role == "sparse"], "top1", 0.5)
    # 0.6 is within 0.5 points of the top (0.799) but 0.7 below it is not: the range must not skip a hole.
    assert (rec.low, rec.high) == (0.8, 0.9)
    assert rec.drops["ρ=0.7"] == pytest.approx(0.9) and rec.drops["ρ=0.5"] == pytest.approx(9.9)
    mark_pareto(rows, "top1")
    assert [r.label for r in rows if r.pareto] == ["ρ=0.5", "ρ=0.6", "ρ=0.8", "ρ=0.9", "dense"]
    assert recommend([r for r in rows if r.role == "sparse"], "top1", 10).low == 0.5


def test_a_dynamic_keep_point_is_the_fixed_schedule_of_its_rho(here):
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.jobs.flops import count_macs, macs_for_model
    from dvit_deploy.models import get_variant

    artifact = open_artifact(here / "export" / "tiny-dynkeep.onnx")
    for ratio in (0.5, 0.8):
        moved = artifact.at_keep_ratio(ratio)
        assert moved.path == artifact.path and moved.model.dynamic_keep
        fixed = count_macs(get_variant("tiny-deit"), ratio)
        assert moved.model.keep_counts == fixed.keep_counts
        assert macs_for_model(moved.model).total_macs == fixed.total_macs
    assert artifact.model.keep_ratio == 0.7  # the opened artifact itself is unchanged


def test_a_seeded_dense_twin_is_timed_but_not_compared(tmp_path, monkeypatch, tiny_export):
    """Seeded dense and pruned models draw other random weights: the dense point keeps its speed, not an agreement."""
    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "export").mkdir()
    for f in (tiny_export.path, tiny_export.manifest_path):  # the shared seeded tiny DeiT at ρ 0.7
        shutil.copy2(f, tmp_path / "export" / f.name)
    export_onnx(load_model(model_name="tiny-deit", dense=True), tmp_path / "export" / "seeded-dense.onnx",
                check_samples=1)
    data = _json([f"export/{tiny_export.path.name}", "--samples", "4"])
    assert data["reference"] == "top" and any("not comparable" in n for n in data["notes"])
    dense = next(r for r in data["rows"] if r["role"] == "dense")
    assert dense["agreement"] is None and dense["throughput_ips"] > 0 and not dense["pareto"]
    assert [r["label"] for r in data["rows"]] == ["ρ=0.7", "dense"]
