#!/usr/bin/env python
"""GPU benchmark: DynamicViT / DynamicCNN / DynamicSwin sparse (ρ = 0.7) against the dense twin in torch
CUDA, eager and ``torch.compile``, fp16 and bf16, batch 1/32/64 — one command sized for a lent GPU.

    python benchmarks/bench_gpu.py --json $OUT/results-gpu.json          # H100: about 5.5 minutes
    python benchmarks/bench_gpu.py --device cpu --quick --json /tmp/q.json   # CPU smoke (CI), < 1 minute

Models are built by ``dvit_deploy.models.create_model`` (seeded random weights, real shapes: speed does
not depend on the values) and cast to the dtype (``model.to(dtype)``: every layer in fp16/bf16, as a
TensorRT fp16 engine would run, not autocast). Each call measured copies a pinned fp32 batch to the
GPU, casts it, runs the model (logits plus each stage's kept indices, ``WithKeptTokens``) and copies
the outputs back: the host wall time of that call is the **end-to-end** time, and CUDA events around
the forward alone give the **GPU** time. Sparse and dense are timed in interleaved rounds (the loop of
``dvit profile``), and every ratio comes with its per-round spread.

The kept-token sets of every sparse configuration are checked against PyTorch fp32 on CPU for a few
seeded inputs, as *sets*, near-tie aware (``dvit_deploy.helpers.compare``, the tolerance of the dtype).

Fitting the lent machine (15 minutes in all, 10 per command): eager runs first for every model, then
``torch.compile``. Compilation dominates, so with ``--compile-workers`` (default 8 on CUDA) each
(model, dtype) is compiled by its own child process, all in parallel, while this process computes the
CPU references; nothing is timed until they are ready, then this process measures eager and each worker,
one after the other, measures what it compiled (``bench_gpu_workers.py``). The batch
dimension is compiled dynamic (``--compile-shapes dynamic``: one graph for batch 1, one for every larger
batch; an unbacked batch would cover both but graph-breaks at Swin's ``torch.roll``) unless
``--compile-shapes static`` asks for one graph per batch. ``--budget-s`` stops
cleanly before the command's limit: a unit (model, dtype, mode) that would not fit is skipped and
listed, and the JSON is rewritten after every unit, so a killed run still leaves what it measured.

Needs only torch, timm, numpy and this repository (no rich, typer, matplotlib, onnx or openvino).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench_common, and this checkout's dvit_deploy

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_common import Budget, measure_rounds, pooled, ratio_spread, round_throughputs, torch_machine_info  # noqa: E402
from dvit_deploy.helpers.compare import Tolerance, boundary_margins, compare  # noqa: E402
from dvit_deploy.helpers.fileio import write_json_atomic  # noqa: E402
from dvit_deploy.jobs.flops import count_macs  # noqa: E402
from dvit_deploy.models import WithKeptTokens, create_model, get_variant, kept_patch_ids  # noqa: E402

SCHEMA = "dvit-deploy/bench-gpu/1"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
INPUT_SEED, CHECK_SEED = 1234, 7
FULL = {"models": "deit-s,lvvit-s,convnext-t,swin-t", "batches": "1,32,64", "dtypes": "fp16,bf16",
        "modes": "eager,compile", "rounds": 3, "round_s": 0.15, "warmup_s": 0.3, "check_inputs": 8}
QUICK = {"models": "deit-s,convnext-t", "batches": "1", "dtypes": "fp32", "modes": "eager", "rounds": 2,
         "round_s": 0.05, "warmup_s": 0.0, "check_inputs": 2}
COMPILE_GUESS_S = 45.0  # first compile unit's estimate, before one has been timed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help=f"smoke settings: {QUICK}")
    p.add_argument("--models", help=f"zoo names [{FULL['models']}]")
    p.add_argument("--ratio", type=float, default=0.7)
    p.add_argument("--batches", help=f"[{FULL['batches']}]")
    p.add_argument("--dtypes", help=f"fp16, bf16, fp32 [{FULL['dtypes']}; --quick: fp32 on CPU, fp16 on CUDA]")
    p.add_argument("--modes", help=f"eager, compile [{FULL['modes']}]")
    p.add_argument("--rounds", type=int)
    p.add_argument("--round-s", type=float, help="measured seconds per call and round")
    p.add_argument("--warmup-s", type=float)
    p.add_argument("--check-inputs", type=int, help="seeded inputs of the kept-set check (0: no check)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend ('eager': Dynamo only)")
    p.add_argument("--compile-shapes", default="dynamic", choices=["dynamic", "static"],
                   help="dynamic: one graph for batch 1, one for every larger batch; static: one per batch")
    p.add_argument("--compile-workers", type=int, default=None,
                   help="processes that compile in parallel, then measure one at a time [8 on CUDA, else 0]")
    p.add_argument("--compile-timeout-s", type=float, default=180.0, help="wait for the compile workers at most")
    p.add_argument("--budget-s", type=float, default=330.0, help="stop starting new units after this")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default; --quick on CPU: 1]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("benchmarks/results-gpu.json"))
    p.add_argument("--worker-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick and args.device != "cpu" and args.dtypes == "fp32":
        args.dtypes = "fp16"  # CPU has no fast half path (bf16 on AVX2 runs ~50x slower): fp32 there
    args.models, args.dtypes, args.modes = (_names(args.models), _names(args.dtypes), _names(args.modes))
    args.batches = [int(b) for b in _names(args.batches)]
    if args.threads is None and args.quick and args.device == "cpu":
        args.threads = 1  # a smoke run on shared cores: spinning OpenMP threads only slow it down
    if args.compile_workers is None:
        args.compile_workers = 8 if args.device.startswith("cuda") and "compile" in args.modes else 0
    bad = [d for d in args.dtypes if d not in DTYPES] + [m for m in args.modes if m not in ("eager", "compile")]
    if bad:
        p.error(f"unknown dtype/mode: {', '.join(bad)}")
    return args


def _names(text: str) -> list[str]:
    return [v.strip() for v in str(text).split(",") if v.strip()]


# ------------------------------------------------------------------------------------------------
# Models, inputs and the fp32 CPU reference


def cpu_pair(name: str, ratio: float, seed: int) -> dict[str, torch.nn.Module]:
    return {"sparse": create_model(name, ratio, seed=seed), "dense": create_model(name, dense=True, seed=seed)}


def images(name: str, count: int, seed: int) -> np.ndarray:
    v = get_variant(name)
    return np.random.default_rng(seed).standard_normal((count, v.in_chans, v.img_size, v.img_size), dtype=np.float32)


def kept_ids(name: str, indices: list[torch.Tensor]) -> list[np.ndarray]:
    v = get_variant(name)
    ids = kept_patch_ids([i.detach().cpu() for i in indices], v.num_patches, compose=not v.splits_tokens)
    return [i.numpy() for i in ids]


def cpu_reference(name: str, model: torch.nn.Module, inputs: np.ndarray) -> dict[str, Any]:
    """PyTorch fp32 on CPU: logits, kept patch ids per stage and each stage's keep-boundary margin."""
    with torch.inference_mode():
        logits, decisions = model.forward_with_decisions(torch.from_numpy(inputs))
    return {"logits": logits.numpy(), "kept": kept_ids(name, decisions.keep_indices),
            "margins": boundary_margins([s.numpy() for s in decisions.scores], model.schedule.counts)}


def on_device(model: torch.nn.Module, dtype: str, device: str, mode: str, args) -> torch.nn.Module:
    module = WithKeptTokens(copy.deepcopy(model)).to(device=device, dtype=DTYPES[dtype]).eval()
    if mode == "compile":
        module = torch.compile(module, backend=args.compile_backend, dynamic=False)
    return module


def staged(module, host: torch.Tensor, dtype: str, device: str, args) -> torch.Tensor:
    x = host.to(device).to(DTYPES[dtype])
    if args.compile_shapes == "dynamic" and x.shape[0] > 1:
        torch._dynamo.mark_dynamic(x, 0)  # batch 1 is specialised anyway (0/1 rule): its own graph
    return x


def run_chunks(module, inputs: np.ndarray, chunk: int, dtype: str, device: str, args) -> tuple[np.ndarray, list]:
    """Outputs for ``inputs`` in batches of ``chunk`` (the last one padded): logits, per-stage indices."""
    logits, indices = [], []
    for start in range(0, len(inputs), chunk):
        part = inputs[start:start + chunk]
        padded = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)]) if len(part) < chunk else part
        x = staged(module, torch.from_numpy(padded), dtype, device, args)  # outside inference mode, as measured
        with torch.inference_mode():
            out = module(x)
        logits.append(out[0].float().cpu().numpy()[:len(part)])
        indices.append([o.cpu()[:len(part)] for o in out[1:]])
    stages = [torch.cat([ix[s] for ix in indices]) for s in range(len(indices[0]))]
    return np.concatenate(logits), stages


def check_kept(name: str, module, ref: dict[str, Any], inputs: np.ndarray, dtype: str, device: str, args
               ) -> dict[str, Any]:
    logits, stages = run_chunks(module, inputs, min(args.batches), dtype, device, args)
    result = compare(ref["logits"], logits, Tolerance.for_precision(dtype), ref_kept=ref["kept"],
                     test_kept=kept_ids(name, stages), ref_margins=ref["margins"])
    # The headline: no kept set differs where fp32's own keep boundary was clear (near-tie aware). The
    # dtype's full verdict (``passed``: agreement rules for bf16) is kept too; seeded random weights give
    # flat predictor scores (boundary margins ~1e-4), so bf16 rounding flips many near-ties there.
    margins = np.concatenate([np.asarray(m, dtype=np.float64) for m in ref["margins"]])
    return {"kept_sets_ok": result.unexplained_flips == 0, "passed": result.passed, "judged_by": result.judged_by,
            "samples": result.samples, "tie_margin": Tolerance.for_precision(dtype).tie_margin,
            "median_boundary_margin": float(np.median(margins)),
            "mean_jaccard": result.mean_jaccard, "unexplained_flips": result.unexplained_flips,
            "near_tie_flips": sum(s.near_tie_flips for s in result.stages),
            "stages": [vars(s) for s in result.stages], "top1_agreement": result.logits.top1_agreement,
            "max_abs_logit_diff": result.logits.max_abs, "failures": result.failures, "notes": result.notes}


# ------------------------------------------------------------------------------------------------
# Timing one (model, dtype, mode) unit


def timed_call(module, host: torch.Tensor, dtype: str, device: str, args, events: list):
    """One end-to-end inference per call (host fp32 → device, cast, forward, outputs → host); on CUDA
    the forward's start/end events are appended to ``events``."""
    cuda = device.startswith("cuda")
    x = staged(module, host, dtype, device, args)
    buffer = torch.empty(host.shape, dtype=torch.float32, device=device)

    def call() -> None:
        with torch.inference_mode():
            if cuda:
                buffer.copy_(host, non_blocking=True)
                x.copy_(buffer)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = module(x)
                end.record()
                events.append((start, end))
            else:
                x.copy_(host)
                out = module(x)
            for o in out:
                o.cpu()  # the device → host copy synchronises
    return call


def event_ms(events: list, measurements: list, before: int) -> list[list[float]]:
    """Per round, the CUDA-event ms of the measured calls (the warm-up calls are skipped)."""
    i, rounds = before, []
    for m in measurements:
        i += m.warmup_iterations
        rounds.append([a.elapsed_time(b) for a, b in events[i:i + len(m.samples_ms)]])
        i += len(m.samples_ms)
    return rounds


def measure_batch(modules: dict, name: str, batch: int, dtype: str, device: str, args) -> dict[str, Any]:
    host = torch.from_numpy(images(name, batch, INPUT_SEED))
    if device.startswith("cuda"):
        host = host.pin_memory()
    events = {role: [] for role in modules}
    calls = {role: timed_call(m, host, dtype, device, args, events[role]) for role, m in modules.items()}
    first = {}
    for role, call in calls.items():  # the first call compiles (torch.compile) or warms up
        t0 = time.perf_counter()
        call()
        first[role] = round(time.perf_counter() - t0, 3)
    measured = measure_rounds(calls, rounds=args.rounds, round_s=args.round_s, warmup_s=args.warmup_s,
                              min_iterations=2)
    row: dict[str, Any] = {"batch": batch}
    throughputs, gpu_rounds = {}, {}
    for role, ms in measured.items():
        throughputs[role] = round_throughputs(ms, batch)
        row[role] = {"first_call_s": first[role], "end_to_end": pooled(ms, batch)}
        if events[role]:
            per_round = event_ms(events[role], ms, 1)
            gpu_rounds[role] = [float(np.median(r)) for r in per_round if r]
            flat = [v for r in per_round for v in r]
            row[role]["gpu_ms"] = {"median": round(float(np.median(flat)), 4), "min": round(min(flat), 4),
                                   "mean": round(float(np.mean(flat)), 4), "samples": len(flat)}
    row["speedup_end_to_end"] = ratio_spread(throughputs["sparse"], throughputs["dense"])
    if gpu_rounds:
        row["speedup_gpu"] = ratio_spread(gpu_rounds["dense"], gpu_rounds["sparse"])
    return row


def prepare_unit(unit: dict, pair: dict, check_inputs: np.ndarray, device: str, args) -> dict[str, Any]:
    """The unit's two modules on the device; with ``torch.compile``, compiled now (one call at every
    batch and at the check's chunk size), so that the measurement only runs compiled code."""
    name, dtype, mode = unit["model"], unit["dtype"], unit["mode"]
    modules = {role: on_device(m, dtype, device, mode, args) for role, m in pair.items()}
    if mode == "compile":
        sizes = list(dict.fromkeys([*args.batches, min(args.batches)] if len(check_inputs) else args.batches))
        for batch in sizes:
            for module in modules.values():
                x = staged(module, torch.from_numpy(images(name, batch, INPUT_SEED)), dtype, device, args)
                with torch.inference_mode():  # the input is made outside it, as in timed_call: same guards
                    module(x)
    return modules


def measure_unit(unit: dict, modules: dict, ref: dict | None, check_inputs: np.ndarray, device: str, args
                 ) -> dict[str, Any]:
    name, dtype = unit["model"], unit["dtype"]
    rows = [measure_batch(modules, name, batch, dtype, device, args) for batch in args.batches]
    check = check_kept(name, modules["sparse"], ref, check_inputs, dtype, device, args) if len(check_inputs) else None
    return {"rows": rows, "check": check}


def release(modules: dict, mode: str, device: str) -> None:
    modules.clear()
    if mode == "compile":
        torch._dynamo.reset()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def run_unit(unit: dict, pair: dict, ref: dict | None, check_inputs: np.ndarray, device: str, args
             ) -> dict[str, Any]:
    """Prepare (compile), measure and check one unit in this process."""
    graphs_before = _graph_count()
    t0 = time.perf_counter()
    modules = prepare_unit(unit, pair, check_inputs, device, args)
    try:
        prepared_s = round(time.perf_counter() - t0, 1)
        out = measure_unit(unit, modules, ref, check_inputs, device, args)
        # Dynamo graphs this unit compiled: 2 per model with dynamic shapes (batch 1, larger batches);
        # more means a graph break or a recompilation (the JSON shows it, the log says where)
        graphs = _graph_count() - graphs_before if unit["mode"] == "compile" else None
        return {**out, "graphs": graphs, "prepare_s": prepared_s}
    finally:
        release(modules, unit["mode"], device)


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


# ------------------------------------------------------------------------------------------------
# Compile settings


def configure_compile(args) -> None:
    """Inductor's on-disk caches (a re-run on a warm machine reuses them), and Dynamo's graph limit."""
    import tempfile

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "dvit-bench-gpu-inductor"))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    import torch._dynamo

    # static shapes: one graph per batch and check chunk; the default limit (8) would fall back to eager
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * len(args.batches) + 8)


def compile_units(args) -> list[dict[str, str]]:
    """fp16 for every model, then bf16: a budget that runs short loses the second dtype first."""
    return [{"model": m, "dtype": d, "mode": "compile"} for d in args.dtypes for m in args.models]


# ------------------------------------------------------------------------------------------------
# The run


def estimate_s(unit: dict, args, compile_seen: list[float]) -> float:
    measuring = len(args.batches) * (2 * args.warmup_s + 2 * args.rounds * args.round_s + 1.0) + 2.0
    if unit["mode"] == "eager":
        return measuring
    return compile_seen[-1] if compile_seen else COMPILE_GUESS_S + measuring


def flops_bound(name: str, ratio: float) -> float:
    variant = get_variant(name)
    return round(count_macs(variant).gmacs / count_macs(variant, ratio).gmacs, 4)


def error_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def record(report: dict[str, Any], unit: dict, out: dict[str, Any], ratio: float) -> None:
    """A measured unit's rows and kept-set check, into the report."""
    key = {k: unit[k] for k in ("model", "mode", "dtype")}
    bound = flops_bound(unit["model"], ratio)
    report["results"] += [{**key, "flops_bound": bound, **row} for row in out["rows"]]
    if out.get("check") is not None:
        report["checks"].append({**key, **out["check"]})


def main(argv: list[str] | None = None) -> int:
    import bench_gpu_workers as workers_mod

    args = parse_args(argv)
    if "compile" in args.modes:
        configure_compile(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker_dir:
        return workers_mod.worker_main(args, sys.modules[__name__])
    budget = Budget(args.budget_s)
    device = args.device
    units = [{"model": m, "dtype": d, "mode": "eager"} for m in args.models for d in args.dtypes] \
        if "eager" in args.modes else []
    units += compile_units(args) if "compile" in args.modes else []
    report: dict[str, Any] = {"schema": SCHEMA, "status": "running", "machine": torch_machine_info(device),
                              "settings": {k: v for k, v in vars(args).items() if k != "json"} | {"json": str(args.json)},
                              "compile_workers": None, "units": units, "results": [], "checks": []}
    save(report, args, budget)
    use_workers = bool(args.compile_workers and "compile" in args.modes)
    workers = workers_mod.start(args, compile_units(args), Path(__file__).resolve()) if use_workers else []
    pairs = {name: cpu_pair(name, args.ratio, args.seed) for name in args.models}
    checks = {name: images(name, args.check_inputs, CHECK_SEED) for name in args.models}
    refs = {name: cpu_reference(name, pairs[name]["sparse"], checks[name]) if args.check_inputs else None
            for name in args.models}
    if workers:  # nothing is timed while they compile
        workers_mod.wait_ready(workers, min(args.compile_timeout_s, budget.left() - 30))
        report["compile_workers"] = workers_mod.describe(workers)
        log(f"compile workers: {[(w['units'], w['state'], w['ready_s']) for w in report['compile_workers']]}")
    compile_seen: list[float] = []
    for unit in units:
        if unit["mode"] == "compile" and workers:
            continue  # measured by its worker below
        if not budget.fits(estimate_s(unit, args, compile_seen)):
            unit["status"] = "skipped: budget"
            continue
        t0 = time.perf_counter()
        try:
            out = run_unit(unit, pairs[unit["model"]], refs[unit["model"]], checks[unit["model"]], device, args)
            unit.update(status="done", graphs=out["graphs"], prepare_s=out["prepare_s"])
            record(report, unit, out, args.ratio)
        except Exception as exc:  # noqa: BLE001 - one unit failing must not lose the others
            unit.update(status="failed", error=error_line(exc))
        unit["seconds"] = round(time.perf_counter() - t0, 1)
        if unit["mode"] == "compile":
            compile_seen.append(unit["seconds"])
        log(f"{unit['model']} {unit['dtype']} {unit['mode']}: {unit['status']} in {unit['seconds']}s "
            f"({budget.left():.0f}s of budget left)")
        save(report, args, budget)
    for w in workers:
        measure_worker(report, units, w, budget, args, workers_mod)
        save(report, args, budget)
    if workers:
        report["compile_workers"] = workers_mod.describe(workers)
    report["status"] = "complete" if all(u.get("status") == "done" for u in units) else "partial"
    save(report, args, budget)
    print_summary(report)
    return 0


def measure_worker(report: dict[str, Any], units: list[dict], worker: dict, budget: Budget, args, workers_mod
                   ) -> None:
    """Let one compile worker measure its units (if it is ready and the budget allows), then merge."""
    def mine(unit: dict) -> bool:
        return unit["mode"] == "compile" and any(unit["model"] == u["model"] and unit["dtype"] == u["dtype"]
                                                 for u in worker["units"])

    if worker["state"] != "ready" or not budget.fits(estimate_s({"mode": "eager"}, args, [])):
        reason = worker["state"] if worker["state"] != "ready" else "budget"
        for unit in filter(mine, units):
            unit["status"] = f"skipped: {reason}"
        if worker["state"] == "ready":
            workers_mod._stop(worker, "not measured: budget")
        return
    for res in workers_mod.measure(worker, budget.left() - budget.margin_s):
        done = res["unit"]
        for unit in units:
            if mine(unit) and unit["model"] == done["model"] and unit["dtype"] == done["dtype"]:
                unit.update(done)
        if done.get("status") == "done":
            record(report, done, res, args.ratio)
        log(f"{done['model']} {done['dtype']} compile (worker): {done.get('status')} "
            f"({budget.left():.0f}s of budget left)")
    for unit in filter(mine, units):
        unit.setdefault("status", f"skipped: worker {worker['state']}")


def save(report: dict[str, Any], args, budget: Budget) -> None:
    from bench_common import load_snapshot

    report["elapsed_s"] = round(budget.elapsed(), 1)
    report["machine"]["load_after"] = load_snapshot()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, report)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _spread(s: dict | None) -> str:
    if not s or s.get("median") is None:
        return "—"
    return f"{s['median']:.2f}× [{s['min']:.2f}–{s['max']:.2f}]"


def print_summary(report: dict[str, Any]) -> None:
    gpu = report["machine"]["gpu"]
    print(f"sparse/dense (ρ = {report['settings']['ratio']}), {gpu['name'] if gpu else 'CPU'}, "
          f"median [min–max over rounds]; status {report['status']}")
    print(f"{'model':<11}{'mode':<8}{'dtype':<6}{'batch':>6}  {'end-to-end':<22}{'GPU time':<22}bound")
    for r in report["results"]:
        print(f"{r['model']:<11}{r['mode']:<8}{r['dtype']:<6}{r['batch']:>6}  {_spread(r['speedup_end_to_end']):<22}"
              f"{_spread(r.get('speedup_gpu')):<22}{r['flops_bound']:.2f}×")
    for c in report["checks"]:
        print(f"kept sets {c['model']} {c['mode']} {c['dtype']}: {'ok' if c['kept_sets_ok'] else 'DIFFER'} "
              f"(Jaccard {c['mean_jaccard']:.4f}, {c['unexplained_flips']} unexplained / {c['near_tie_flips']} near-tie "
              f"flips of {c['samples']} inputs; {c['judged_by']} verdict {'pass' if c['passed'] else 'fail'})")
    for u in report["units"]:
        if u.get("status") != "done":
            print(f"{u['model']} {u['dtype']} {u['mode']}: {u.get('status')} {u.get('error', '')}")


if __name__ == "__main__":
    raise SystemExit(main())
