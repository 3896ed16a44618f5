"""benchmarks/bench_gpu.py cannot rot: its CPU smoke mode runs here, and its torch.compile path runs on
tiny models (Dynamo only). No timing is asserted: only the JSON's structure and the kept-set check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dvit_deploy.jobs.flops import count_macs
from dvit_deploy.models import get_variant

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _check_rows(report: dict, models: list[str], modes: list[str], batches: list[int], dtype: str) -> None:
    rows = {(r["model"], r["mode"], r["batch"]): r for r in report["results"]}
    assert set(rows) == {(m, mode, b) for m in models for mode in modes for b in batches}
    for (model, _, _), r in rows.items():
        assert r["dtype"] == dtype
        v = get_variant(model)
        assert r["flops_bound"] == pytest.approx(count_macs(v).gmacs / count_macs(v, 0.7).gmacs, rel=1e-3)
        for role in ("sparse", "dense"):
            e2e = r[role]["end_to_end"]
            assert e2e["throughput_ips"] > 0 and e2e["iterations"] >= 2 * report["settings"]["rounds"]
            assert e2e["latency_ms"]["min"] <= e2e["latency_ms"]["median"] <= e2e["latency_ms"]["max"]
            assert "gpu_ms" not in r[role]  # CPU: no CUDA events
        spread = r["speedup_end_to_end"]
        assert len(spread["rounds"]) == report["settings"]["rounds"]
        assert spread["min"] <= spread["median"] <= spread["max"]


def _check_kept(report: dict, models: list[str], modes: list[str], samples: int) -> None:
    checks = {(c["model"], c["mode"]): c for c in report["checks"]}
    assert set(checks) == {(m, mode) for m in models for mode in modes}
    for (model, _), c in checks.items():
        # fp32 against the fp32 CPU reference: every kept set agrees (a near-tie flip at most)
        assert c["kept_sets_ok"] and c["unexplained_flips"] == 0, c
        assert c["samples"] == samples and c["judged_by"] == "logits"
        assert len(c["stages"]) == len(get_variant(model).pruning_loc)
        assert all(0.0 <= s["mean_jaccard"] <= 1.0 for s in c["stages"])


@pytest.mark.slow  # real shapes (DeiT-S, ConvNeXt-T at batch 1): ~10 s of CPU
def test_cpu_quick_smoke(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_gpu.py"), "--device", "cpu", "--quick",
                           "--json", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["schema"] == "dvit-deploy/bench-gpu/1" and report["status"] == "complete"
    machine = report["machine"]
    assert machine["gpu"] is None and machine["torch"] and machine["timm"]
    assert machine["load_before"]["cores"] >= 1 and "load_after" in machine
    assert [u["status"] for u in report["units"]] == ["done", "done"]
    _check_rows(report, ["deit-s", "convnext-t"], ["eager"], [1], "fp32")
    _check_kept(report, ["deit-s", "convnext-t"], ["eager"], samples=2)
    assert "kept sets deit-s eager fp32: ok" in proc.stdout


def test_compile_path_on_tiny_models(tmp_path):
    """torch.compile in this process (Dynamo only, no Inductor) with a dynamic batch: two graphs per model
    (batch 1, and one for every larger batch). Swin: an unbacked batch would graph-break at torch.roll;
    the dynamic one must not (no graph break, no recompilation). Same kept sets as the fp32 reference."""
    import bench_gpu

    out = tmp_path / "gpu.json"
    models = ["tiny-swin"]
    assert bench_gpu.main(["--device", "cpu", "--models", ",".join(models), "--batches", "1,2", "--dtypes", "fp32",
                           "--modes", "compile", "--compile-backend", "eager", "--rounds", "2", "--round-s", "0.01",
                           "--warmup-s", "0", "--check-inputs", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["status"] == "complete" and report["compile_workers"] is None
    compiled = [u for u in report["units"] if u["mode"] == "compile"]
    assert [(u["model"], u["status"], u["graphs"]) for u in compiled] == [(m, "done", 4) for m in models]
    _check_rows(report, models, ["compile"], [1, 2], "fp32")
    _check_kept(report, models, ["compile"], samples=3)


def test_budget_skips_units_and_says_so(tmp_path):
    import bench_gpu

    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--device", "cpu", "--models", "tiny-deit", "--batches", "1", "--dtypes", "fp32",
                           "--modes", "eager", "--check-inputs", "0", "--budget-s", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["status"] == "partial" and report["results"] == [] and report["checks"] == []
    assert [u["status"] for u in report["units"]] == ["skipped: budget"]


def test_compile_workers_compile_in_parallel_then_measure(tmp_path):
    """The GPU run's protocol on CPU: each (model, dtype) compiled in its own worker process, the main
    process measures eager, then each worker measures what it compiled; results merged into one JSON."""
    import bench_gpu

    out = tmp_path / "gpu.json"
    models = ["tiny-deit", "tiny-convnext"]
    assert bench_gpu.main(["--device", "cpu", "--models", ",".join(models), "--batches", "1,2", "--dtypes", "fp32",
                           "--modes", "eager,compile", "--compile-backend", "eager", "--compile-workers", "2",
                           "--rounds", "2", "--round-s", "0.01", "--warmup-s", "0", "--check-inputs", "2",
                           "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["status"] == "complete", report["units"]
    workers = report["compile_workers"]
    assert sorted(u for w in workers for u in w["units"]) == ["tiny-convnext:fp32", "tiny-deit:fp32"]
    assert all(w["state"] == "measured" and w["returncode"] == 0 for w in workers), workers
    compiled = {u["model"]: u for u in report["units"] if u["mode"] == "compile"}
    assert {m: (u["status"], u["graphs"]) for m, u in compiled.items()} == {m: ("done", 4) for m in models}
    assert all(u["prepare_s"] > 0 and u["measure_s"] > 0 for u in compiled.values())
    _check_rows(report, models, ["eager", "compile"], [1, 2], "fp32")
    _check_kept(report, models, ["eager", "compile"], samples=2)
