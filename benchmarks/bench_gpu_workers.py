"""bench_gpu.py's compile workers: compile in parallel, measure one at a time.

``torch.compile`` is what does not fit a lent GPU's minutes: each (model, dtype) unit traces four
graphs (sparse and dense, batch 1 and the dynamic batch) and Inductor compiles them. So each unit goes
to a child process that builds, compiles and computes its fp32 CPU reference, all in parallel with the
other workers, then says it is ready and waits (sleeping: no CPU, no GPU work). The main process waits
for every worker (or ``--compile-timeout-s``), measures eager itself on a quiet machine, then lets
the workers measure their compiled modules one after the other — nothing is traced twice and nothing
depends on a cache hit. Protocol: files in one folder (``ready-i.json``, ``go-i.json``, ``done-i.json``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

POLL_S = 0.05


def start(args, units: list[dict[str, str]], script: Path) -> list[dict[str, Any]]:
    count = min(args.compile_workers, len(units))
    folder = Path(tempfile.mkdtemp(prefix="dvit-bench-gpu-"))
    from dvit_deploy.models import get_variant

    # The variants travel with the job, so a worker also builds ones registered at run time (tests' tiny ones)
    (folder / "variants.json").write_text(json.dumps({u["model"]: get_variant(u["model"]).to_dict() for u in units}))
    threads = max(1, (os.cpu_count() or 1) // count)
    env = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    workers = []
    for w in range(count):
        mine = units[w::count]
        command = [sys.executable, str(script), "--worker-dir", str(folder), "--worker-index", str(w),
                   "--device", args.device, "--models", ",".join(u["model"] for u in mine),
                   "--dtypes", ",".join(u["dtype"] for u in mine), "--modes", "compile", "--compile-workers", "0",
                   "--batches", ",".join(map(str, args.batches)), "--ratio", str(args.ratio), "--seed", str(args.seed),
                   "--check-inputs", str(args.check_inputs), "--compile-backend", args.compile_backend,
                   "--compile-shapes", args.compile_shapes, "--rounds", str(args.rounds),
                   "--round-s", str(args.round_s), "--warmup-s", str(args.warmup_s)]
        command += ["--threads", str(args.threads or threads)]  # its CPU reference: no oversubscription
        log = folder / f"worker-{w}.log"
        with open(log, "wb") as out:  # its own session: the worker and its compile pool end together
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        workers.append({"index": w, "proc": proc, "folder": folder, "log": log, "start": time.monotonic(),
                        "units": mine, "state": "compiling"})
    return workers


def _stop(worker: dict[str, Any], state: str) -> None:
    if worker["proc"].poll() is None:
        os.killpg(worker["proc"].pid, signal.SIGKILL)  # the session this script started for that worker
        worker["proc"].wait()
    worker["state"] = state


def wait_ready(workers: list[dict[str, Any]], timeout_s: float) -> None:
    """Until every worker is ready (or failed), at most ``timeout_s``; the others are stopped."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    while time.monotonic() < deadline:
        for w in workers:
            if w["state"] == "compiling":
                if (w["folder"] / f"ready-{w['index']}.json").exists():
                    w["state"], w["ready_s"] = "ready", round(time.monotonic() - w["start"], 1)
                elif w["proc"].poll() is not None:
                    w["state"] = f"failed (exit {w['proc'].returncode})"
        if all(w["state"] != "compiling" for w in workers):
            return
        time.sleep(0.2)
    for w in workers:
        if w["state"] == "compiling":
            _stop(w, f"not compiled within {timeout_s:.0f}s")


def measure(worker: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    """Let a ready worker measure its units in at most ``seconds``; its per-unit results."""
    folder, index = worker["folder"], worker["index"]
    (folder / f"go-{index}.json").write_text(json.dumps({"seconds": seconds}))
    done = folder / f"done-{index}.json"
    deadline = time.monotonic() + seconds + 30
    while not done.exists() and worker["proc"].poll() is None and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if not done.exists():
        _stop(worker, "stopped while measuring")
        return []
    try:
        worker["proc"].wait(timeout=30)
    except subprocess.TimeoutExpired:
        _stop(worker, "measured, then stopped")
    worker["state"] = "measured"
    return json.loads(done.read_text())["units"]


def describe(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for w in workers:
        tail = w["log"].read_text(errors="replace").strip().splitlines()[-3:] if w["log"].exists() else []
        out.append({"units": [f"{u['model']}:{u['dtype']}" for u in w["units"]], "state": w["state"],
                    "ready_s": w.get("ready_s"), "returncode": w["proc"].returncode, "log_tail": tail})
    return out


def worker_main(args, api) -> int:
    """Child side: compile the units, compute their references, say ready, wait for go, measure."""
    from dvit_deploy.helpers.fileio import write_json_atomic

    from dvit_deploy.models import VARIANTS, VariantConfig, register_variant

    folder, index = Path(args.worker_dir), args.worker_index
    for name, config in json.loads((folder / "variants.json").read_text()).items():
        if name not in VARIANTS:
            register_variant(VariantConfig.from_dict(config))
    held = []
    for name, dtype in zip(args.models, args.dtypes):
        unit: dict[str, Any] = {"model": name, "dtype": dtype, "mode": "compile"}
        t0, g0 = time.perf_counter(), api._graph_count()
        try:
            pair = api.cpu_pair(name, args.ratio, args.seed)
            inputs = api.images(name, args.check_inputs, api.CHECK_SEED)
            ref = api.cpu_reference(name, pair["sparse"], inputs) if args.check_inputs else None
            modules = api.prepare_unit(unit, pair, inputs, args.device, args)
            unit["prepare_s"] = round(time.perf_counter() - t0, 1)
            held.append((unit, modules, ref, inputs, api._graph_count() - g0))
        except Exception as exc:  # noqa: BLE001 - reported in the unit, the other units go on
            unit.update(status="failed", error=api.error_line(exc))
            held.append((unit, None, None, None, 0))
        print(f"compiled {name} {dtype}: {unit.get('status', 'ok')} in {time.perf_counter() - t0:.1f}s", flush=True)
    write_json_atomic(folder / f"ready-{index}.json", {"units": [h[0] for h in held]})
    go = folder / f"go-{index}.json"
    while not go.exists():
        time.sleep(POLL_S)
    deadline = time.monotonic() + json.loads(go.read_text())["seconds"]
    results = []
    for unit, modules, ref, inputs, graphs in held:
        if modules is None:
            results.append({"unit": unit})
            continue
        if time.monotonic() + api.estimate_s({"mode": "eager"}, args, []) > deadline:
            unit["status"] = "skipped: budget"
            results.append({"unit": unit})
            continue
        t0, g0 = time.perf_counter(), api._graph_count()
        try:
            out = api.measure_unit(unit, modules, ref, inputs, args.device, args)
            unit.update(status="done", graphs=graphs + api._graph_count() - g0)
            results.append({"unit": unit, **out})
        except Exception as exc:  # noqa: BLE001
            unit.update(status="failed", error=api.error_line(exc))
            results.append({"unit": unit})
        unit["measure_s"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(folder / f"done-{index}.json", {"units": results})
    return 0
