#!/usr/bin/env python
"""CPU benchmark: every zoo architecture, sparse (ρ = 0.7) against its dense twin, one table.

DeiT-256/S/B, LV-ViT-S/M, ConvNeXt-T/S/B and Swin-T/S/B (seeded random weights, real shapes: speed
does not depend on the values), on ONNX Runtime fp32, OpenVINO f32 and the best agreeing int8
configuration (``zoo_int8.py``: ``dvit quantize``'s two recipes × ORT/OpenVINO, judged by ``dvit
validate``'s int8 rule; which one won is in the row, and an architecture where none agrees says so),
at batch 1, 16 and 64.

* One pair of runners (sparse and its dense twin, one backend) is loaded at a time, so memory stays
  that of one model (the earlier eight-runner runs were OOM-killed at batch 64).
* Each ratio comes from ``--rounds`` interleaved rounds (dense, sparse; then sparse, dense; ...;
  timing loop of ``dvit profile``): the table gives the median of the per-round ratios with their
  min–max, and the JSON a 95 % bootstrap interval too. Two runs agree when their intervals overlap.
* Each row gives sparse/dense and its fraction of the FLOPs bound (dense GMACs / sparse GMACs,
  ``dvit_deploy.jobs.flops``, predictors counted).
* The JSON records the CPU class and flags (``dvit_deploy.helpers.cpu``) and the load average before,
  at every row and after, and the CPU that *other* processes used (``bench_common.others``: all CPU time
  minus this process's own). A row during which others used more than 0.5 per core is marked **loaded**,
  and so is the run: a loaded run is not a result. (The load average alone cannot judge: a 2-thread
  measurement on 2 cores drives it to ~2 by itself.)

    python benchmarks/bench_zoo.py --json benchmarks/results-zoo.json --plot benchmarks/results-zoo.png
    python benchmarks/bench_zoo.py --models deit-s,convnext-t,swin-t --batches 1,16      # ~15 quiet minutes
    python benchmarks/bench_zoo.py --estimate                                            # runtime only
    python benchmarks/bench_zoo.py --quick                                               # smoke: DeiT-256, b1
    python benchmarks/bench_zoo.py --prepare-only        # exports, int8 files and their agreement only

Exports, int8 files and agreement verdicts are cached in ``--workdir`` (default ``benchmarks/.artifacts``,
git-ignored): re-runs reuse them, so after ``--prepare-only`` a run only measures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from bench_common import (load_snapshot, measure_rounds, others, pooled, ratio_spread,  # noqa: E402
                          round_throughputs)
from dvit_deploy.helpers.cpu import cpu_info  # noqa: E402
from dvit_deploy.helpers.errors import BadInput  # noqa: E402
from dvit_deploy.helpers.fileio import write_json_atomic  # noqa: E402
from dvit_deploy.jobs.flops import count_macs  # noqa: E402
from dvit_deploy.models import get_variant  # noqa: E402

SCHEMA = "dvit-deploy/bench-zoo/1"
ZOO = ("deit-256", "deit-s", "deit-b", "lvvit-s", "lvvit-m", "convnext-t", "convnext-s", "convnext-b",
       "swin-t", "swin-s", "swin-b")
LEAD_SUBSET = "deit-s,convnext-t,swin-t"  # with --batches 1,16: about 15 quiet minutes on 2 cores
QUICK = {"models": "deit-256", "batches": "1", "rounds": 2, "round_s": 0.2, "warmup_s": 0.2, "agreement": 8}
FULL = {"models": ",".join(ZOO), "batches": "1,16,64", "rounds": 5, "round_s": 1.5, "warmup_s": 1.0, "agreement": 32}
# Effective fp32 rates on a quiet 2-core AVX2 EPYC (REFERENCE.md: ORT ~73 %, OpenVINO ~88 % of a
# 117 GFLOP/s sgemm), for --estimate only.
# int8: the best agreeing configuration, ~2× OpenVINO f32 (DeiT-S on AVX-512 VNNI: 75 vs 27 img/s).
ASSUMED_GFLOPS = {"onnxruntime": 85.0, "openvino": 100.0, "int8": 200.0}
EXPORT_S_PER_GMAC = 6.0  # one-time export + check, seconds per dense GMAC (rough, 2 cores)
# one-time int8 preparation per model (4 quantized files, 8 agreement verdicts), seconds per dense GMAC
INT8_PREPARE_S_PER_GMAC = 60.0  # from DeiT-S: ~1 min per quantized file in a quiet window


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help=f"zoo names [{FULL['models']}]")
    p.add_argument("--batches", help=f"[{FULL['batches']}]")
    p.add_argument("--backends", default="onnxruntime,openvino,int8",
                   help="onnxruntime, openvino and/or int8 (the best agreeing int8 configuration)")
    p.add_argument("--ratio", type=float, default=0.7)
    p.add_argument("--rounds", type=int, help=f"interleaved rounds per ratio [{FULL['rounds']}]")
    p.add_argument("--round-s", type=float, help=f"measured seconds per model and round [{FULL['round_s']}]")
    p.add_argument("--warmup-s", type=float, help=f"[{FULL['warmup_s']}]")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads [backend's default]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=HERE / ".artifacts", help="export cache (git-ignored)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None, help="PNG: sparse/dense per model, batch and backend")
    p.add_argument("--quick", action="store_true", help=f"smoke settings: {QUICK}")
    p.add_argument("--agreement", type=int, help=f"inputs for each int8 agreement verdict [{FULL['agreement']}]")
    p.add_argument("--int8-recipes", default="all",
                   help="int8 candidates: all (both recipes), auto (the one dvit quantize picks for this CPU class) "
                        "or a comma-separated list")
    p.add_argument("--estimate", action="store_true", help="print the estimated runtime and exit")
    p.add_argument("--prepare-only", action="store_true",
                   help="export, quantize and judge int8 agreement (cached in --workdir); measure nothing")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = [m for m in args.models if m not in ZOO] + [b for b in args.backends if b not in ASSUMED_GFLOPS]
    if unknown:
        p.error(f"unknown model/backend: {', '.join(unknown)}")
    from zoo_int8 import recipes_for

    try:
        args.int8_recipes = recipes_for(args.int8_recipes)
    except ValueError as exc:
        p.error(str(exc))
    return args


def flops_bound(name: str, ratio: float) -> float:
    variant = get_variant(name)
    return count_macs(variant).gmacs / count_macs(variant, ratio).gmacs


# ------------------------------------------------------------------------------------------------
# Runtime estimate


def estimate(args) -> dict[str, Any]:
    """Seconds per model from GMACs and assumed rates: exports and int8 preparation (first run only, or
    ``--prepare-only``) + warm-up + rounds (+ the int8 screening round)."""
    from zoo_int8 import RECIPES, candidates

    per_model, total, exports = {}, 0.0, 0.0
    for name in args.models:
        variant = get_variant(name)
        gmacs = {"dense": count_macs(variant).gmacs, "sparse": count_macs(variant, args.ratio).gmacs}
        seconds = 0.0
        for backend in args.backends:
            rate = ASSUMED_GFLOPS[backend]
            for batch in args.batches:
                for role in ("dense", "sparse"):
                    call = 2 * gmacs[role] * batch / rate
                    seconds += max(args.warmup_s, call) + args.rounds * max(args.round_s, call) + call
            if backend == "int8":  # one screening round of every candidate's sparse model
                call = 2 * gmacs["sparse"] * screening_batch(args.batches) / rate
                seconds += len(candidates(args.int8_recipes)) * (max(args.warmup_s, call) + max(args.round_s, call) + call)
        export = EXPORT_S_PER_GMAC * (gmacs["dense"] + gmacs["sparse"])
        if "int8" in args.backends:
            export += (INT8_PREPARE_S_PER_GMAC * gmacs["dense"] * args.agreement / 32
                       * len(args.int8_recipes) / len(RECIPES))
        per_model[name] = {"measure_s": round(seconds), "export_s_first_run": round(export)}
        total += seconds
        exports += export
    return {"per_model": per_model, "measure_s": round(total), "exports_first_run_s": round(exports),
            "assumed_gflops": ASSUMED_GFLOPS}


def screening_batch(batches: list[int]) -> int:
    return 16 if 16 in batches else min(batches)


# ------------------------------------------------------------------------------------------------
# Measuring one pair on one backend


def fits(pair: dict[str, Any], backend: str, batch: int) -> str | None:
    """None when the pair fits in memory at ``batch``, else why not (the row is skipped, not killed)."""
    from dvit_deploy.runtime.memory import MemoryNeed, check_fits, per_image_bytes, weight_bytes

    needs = [(a.name, MemoryNeed(weight_bytes(a, backend), per_image_bytes(a.model), batch)) for a in pair.values()]
    try:
        check_fits(needs, what=f"batch {batch} on {backend}", option="--batches")
    except BadInput as exc:
        return str(exc)
    return None


def measure_pair(name: str, pair: dict[str, Any], backend: str, args, rows: list, skipped: list,
                 int8: dict[str, Any] | None = None) -> None:
    """Sparse/dense rows of one pair on one backend; ``int8``: the pair is the int8 column's winner
    (rows say ``backend: int8`` and which configuration ran)."""
    import contextlib

    from dvit_deploy.jobs.profile import seeded_batch
    from dvit_deploy.runtime import runner_for_artifact

    bound = flops_bound(name, args.ratio)
    options: dict[str, Any] = {"intra_op_threads": args.threads} if args.threads else {}
    if int8 is not None:
        options["precision"] = None  # the file's own
    column = backend if int8 is None else "int8"
    with contextlib.ExitStack() as stack:
        runners = {role: stack.enter_context(runner_for_artifact(a, backend, device="cpu", **options))
                   for role, a in pair.items()}
        executes = runners["sparse"].describe().get("executes", backend)
        for batch in args.batches:
            problem = fits(pair, backend, batch)
            if problem:
                skipped.append({"model": name, "backend": column, "batch": batch, "reason": problem})
                continue
            load = load_snapshot()
            calls = {role: runners[role].timed_call(seeded_batch(batch, pair[role])) for role in ("dense", "sparse")}
            measured = measure_rounds(calls, rounds=args.rounds, round_s=args.round_s, warmup_s=args.warmup_s)
            tput = {role: round_throughputs(ms, batch) for role, ms in measured.items()}
            ratio = ratio_spread(tput["sparse"], tput["dense"])
            rows.append({
                "model": name, "backend": column, "executes": executes, "batch": batch,
                **({} if int8 is None else {"int8_config": int8}),
                "flops_bound": round(bound, 4), "ratio": ratio,
                "fraction_of_bound": {k: None if ratio[k] is None else round(ratio[k] / bound, 4)
                                      for k in ("median", "min", "max")},
                "dense": pooled(measured["dense"], batch), "sparse": pooled(measured["sparse"], batch),
                "load_at_start": load, "others": (busy := others(load, load_snapshot())), "loaded": busy["loaded"],
            })
            print(f"{name:<11}{_column(column, int8):<24} b{batch:<3} sparse/dense {_spread(ratio).replace(chr(92), '')}  bound {bound:.2f}×"
                  f"{'  (loaded)' if busy['loaded'] else ''}", flush=True)


def _column(column: str, int8: dict[str, Any] | None) -> str:
    from zoo_int8 import label

    return column if int8 is None else f"int8 ({label(int8['recipe'], int8['backend'])})"


def _spread(r: dict[str, Any]) -> str:
    return "—" if r["median"] is None else f"{r['median']:.2f}× \\[{r['min']:.2f}–{r['max']:.2f}]"


# ------------------------------------------------------------------------------------------------
# The run


def run(args) -> dict[str, Any]:
    from bench_cpu import ensure_export  # benchmarks/bench_cpu.py: the export cache
    from dvit_deploy.artifact.store import as_artifact
    from dvit_deploy.jobs.profile import machine_info

    args.workdir.mkdir(parents=True, exist_ok=True)
    if not (args.workdir / ".gitignore").exists():
        (args.workdir / ".gitignore").write_text("*\n")
    before = load_snapshot()
    started = time.time()
    report: dict[str, Any] = {
        "schema": SCHEMA, "status": "running",
        "machine": {**machine_info(), "cpu": cpu_info().to_dict(), "load_before": before},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": [], "skipped": [], "int8_candidates": {},
    }
    for name in args.models:
        paths = {"dense": ensure_export(args.workdir, name, None, args.seed),
                 "sparse": ensure_export(args.workdir, name, args.ratio, args.seed)}
        pair = {role: as_artifact(path) for role, path in paths.items()}
        if "int8" in args.backends:
            print(f"{name}: int8 files and agreement ({args.agreement} inputs)", flush=True)
            report["int8_candidates"][name] = prepare_int8(paths, args.agreement, args.int8_recipes)
        for backend in [] if args.prepare_only else args.backends:
            try:
                if backend == "int8":
                    measure_int8(name, report["int8_candidates"][name], args, report)
                else:
                    measure_pair(name, pair, backend, args, report["rows"], report["skipped"])
            except Exception as exc:  # noqa: BLE001 - a missing backend or a failed load skips this pair only
                report["skipped"].append({"model": name, "backend": backend, "batch": None,
                                          "reason": f"{type(exc).__name__}: {str(exc).strip()[:300]}"})
            if args.json is not None:  # partial results survive an interrupted run
                write_json_atomic(args.json, {**report, "seconds": round(time.time() - started, 1)})
    after = load_snapshot()
    report["machine"]["load_after"] = after
    report["machine"]["others"] = whole = others(before, after)
    # Loaded when other processes used more than the threshold over the run or during any row (the load
    # average counts this benchmark's own threads, so it is recorded, not judged).
    report["status"] = "loaded" if whole["loaded"] or any(r.get("loaded") for r in report["rows"]) else "quiet"
    if args.prepare_only:
        report["status"] = "prepared"
    report["seconds"] = round(time.time() - started, 1)
    return report


def prepare_int8(paths: dict[str, Path], samples: int, recipes: tuple[str, ...]) -> list[dict[str, Any]]:
    from zoo_int8 import prepare

    return prepare(paths, samples, recipes=recipes)


def measure_int8(name: str, found: list[dict[str, Any]], args, report: dict[str, Any]) -> None:
    """The int8 column: screen the agreeing candidates, measure the winner's pair; or a row saying none agrees."""
    from bench_common import measure_rounds as rounds_of
    from zoo_int8 import screen

    from dvit_deploy.artifact.store import as_artifact
    from dvit_deploy.jobs.profile import seeded_batch

    best = screen(found, screening_batch(args.batches), args, seeded_batch, rounds_of)
    if best is None:
        for batch in args.batches:
            report["rows"].append({"model": name, "backend": "int8", "batch": batch, "none_agrees": True,
                                   "flops_bound": round(flops_bound(name, args.ratio), 4),
                                   "ratio": {"median": None, "min": None, "max": None},
                                   "why_not": {f"{c['recipe']}/{c['backend']}": c["why_not"] for c in found}})
        print(f"{name:<11}{'int8':<24} no int8 configuration agrees", flush=True)
        return
    config = {"recipe": best["recipe"], "backend": best["backend"], "screening_batch": best.get("screening_batch"),
              "screening_img_s": {f"{c['recipe']}/{c['backend']}": c.get("screening_img_s") for c in found
                                  if c["agrees"]}}
    pair = {role: as_artifact(Path(best["files"][role])) for role in ("dense", "sparse")}
    measure_pair(name, pair, best["backend"], args, report["rows"], report["skipped"], int8=config)


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sparse/dense throughput, ρ = {report['settings']['ratio']} — median \\[min–max] of "
                  f"{report['settings']['rounds']} rounds; run {report['status'].upper()}", title_justify="left")
    for col in ("model", "backend", "batch", "dense img/s", "sparse img/s", "sparse/dense", "bound", "of bound"):
        table.add_column(col)
    for r in report["rows"]:
        if r.get("none_agrees"):
            table.add_row(r["model"], "int8", str(r["batch"]), "—", "—", "no int8 configuration agrees",
                          f"{r['flops_bound']:.2f}×", "—")
            continue
        table.add_row(r["model"], _column(r["backend"], r.get("int8_config")), str(r["batch"]),
                      f"{r['dense']['throughput_ips']:.2f}",
                      f"{r['sparse']['throughput_ips']:.2f}", _spread(r["ratio"]), f"{r['flops_bound']:.2f}×",
                      "—" if r["fraction_of_bound"]["median"] is None else f"{r['fraction_of_bound']['median']:.0%}")
    Console(width=max(Console().width, 120)).print(table)
    for s in report["skipped"]:
        print(f"skipped {s['model']} {s['backend']} batch {s['batch']}: {s['reason']}")


def plot(report: dict[str, Any], path: Path) -> Path:
    """One panel per backend: sparse/dense per model and batch, min–max bars, the FLOPs bound marked."""
    from dvit_deploy.helpers.lazy import require

    matplotlib = require("matplotlib", "viz", "--plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in report["rows"] if r["ratio"]["median"] is not None]
    backends = list(dict.fromkeys(r["backend"] for r in measured)) or ["none"]
    models = list(dict.fromkeys(r["model"] for r in measured))
    batches = sorted({r["batch"] for r in measured})
    fig, axes = plt.subplots(len(backends), 1, figsize=(max(6, 1.1 * len(models) + 2), 3.2 * len(backends)),
                             squeeze=False)
    width = 0.8 / max(1, len(batches))
    for ax, backend in zip(axes[:, 0], backends):
        rows = {(r["model"], r["batch"]): r for r in measured if r["backend"] == backend}
        for j, batch in enumerate(batches):
            xs = [i + (j - (len(batches) - 1) / 2) * width for i, m in enumerate(models) if (m, batch) in rows]
            rs = [rows[(m, batch)]["ratio"] for m in models if (m, batch) in rows]
            ax.bar(xs, [r["median"] for r in rs], width, label=f"batch {batch}",
                   yerr=[[r["median"] - r["min"] for r in rs], [r["max"] - r["median"] for r in rs]], capsize=2)
        for i, m in enumerate(models):
            bound = next((r["flops_bound"] for r in measured if r["model"] == m), None)
            if bound:
                ax.hlines(bound, i - 0.45, i + 0.45, colors="k", linestyles="--", linewidth=1)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(models)), models, fontsize=8)
        ax.set_ylabel("sparse / dense")
        ax.set_title(f"{backend} (dashed: FLOPs bound)", fontsize=9)
        ax.legend(fontsize=7)
    cpu = report["machine"]["cpu"]
    fig.suptitle(f"ρ = {report['settings']['ratio']}, {cpu['class']} ({cpu['model']}), run {report['status']}",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.estimate:
        e = estimate(args)
        for name, v in e["per_model"].items():
            print(f"{name:<11} measure ~{v['measure_s'] / 60:5.1f} min   exports + int8 (first run) "
                  f"~{v['export_s_first_run'] / 60:4.1f} min")
        print(f"total: measure ~{e['measure_s'] / 60:.0f} min, exports + int8 files and agreement on a first run "
              f"(or --prepare-only) ~{e['exports_first_run_s'] / 60:.0f} min (assumed GFLOP/s {e['assumed_gflops']}, "
              "2 quiet cores)")
        return 0
    report = run(args)
    if args.json is not None:
        write_json_atomic(args.json, report)
    if args.prepare_only:
        for name, found in report["int8_candidates"].items():
            print(f"{name:<11} int8 agrees: {', '.join(c['recipe'] + '/' + c['backend'] for c in found if c['agrees']) or 'none'}")
        return 0
    if args.plot is not None:
        plot(report, args.plot)
    print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
