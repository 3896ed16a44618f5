"""The int8 column of ``bench_zoo.py``: the best agreeing int8 configuration of each architecture.

Candidates: the two recipes ``dvit quantize`` knows (``s8s8``, ``s8s8-reduce-range``: ``jobs.quantize``,
written through ``bench_limits.ensure_int8``, i.e. ``quantize_onnx`` with its own check) × the two CPU
backends (ONNX Runtime, OpenVINO), each for the sparse model and its dense twin.

A candidate *agrees* when both of its files pass ``dvit validate``'s judgement against PyTorch fp32 on
that backend (``jobs.validate``, int8 tolerance: top-1 ≥ 99 % on confidently classified inputs, kept-set
Jaccard ≥ 0.95 with the near-tie rule; the dense twin has no kept sets, so top-1 only). Agreement depends
on the CPU's int8 kernels (int16 saturation without VNNI), so it is cached per CPU class and file hash in
``<file>.agreement-<class>-<backend>-n<inputs>.json`` beside the file: ``--prepare-only`` fills the cache, the
measuring run reads it.

The *best* agreeing candidate is the fastest sparse model in one short interleaved screening round at
the screening batch (16 when measured, else the smallest); its sparse/dense pair is then measured like
the fp32 backends. An architecture where no candidate agrees gets a row that says so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

RECIPES = ("s8s8", "s8s8-reduce-range")
BACKENDS = ("onnxruntime", "openvino")
ROLES = ("dense", "sparse")


def recipes_for(choice: str) -> tuple[str, ...]:
    """``all``: both recipes; ``auto``: only the one ``dvit quantize`` picks for this CPU class (on VNNI/AMX
    the reduce-range recipe guards against an int16 saturation those CPUs do not have, and halves the
    preparation time); or a comma-separated list, where ``<recipe>+predictor`` also quantizes the score
    predictors (``dvit quantize --quantize-predictor``)."""
    if choice == "all":
        return RECIPES
    if choice == "auto":
        from dvit_deploy.helpers.cpu import cpu_info
        from dvit_deploy.jobs.quantize import CPU_RECIPES

        return (CPU_RECIPES[cpu_info().cpu_class][0],)
    from bench_limits import PREDICTOR_SUFFIX  # ensure_int8's: the predictors quantized too

    picked = tuple(r for r in choice.split(",") if r)
    unknown = [r for r in picked if r.removesuffix(PREDICTOR_SUFFIX) not in RECIPES]
    if unknown or not picked:
        raise ValueError(f"unknown int8 recipe(s): {', '.join(unknown) or choice!r} (known: {', '.join(RECIPES)}, "
                         f"each also as <recipe>{PREDICTOR_SUFFIX} (predictors quantized too), all, auto)")
    return picked


def candidates(recipes: tuple[str, ...] = RECIPES) -> list[tuple[str, str]]:
    return [(recipe, backend) for recipe in recipes for backend in BACKENDS]


def label(recipe: str, backend: str) -> str:
    return f"{'ORT' if backend == 'onnxruntime' else 'OpenVINO'} {recipe}"


def ensure_quantized(fp32: Path, recipe: str) -> dict[str, Any]:
    """{"path": the int8 file} or {"error": why quantize refused (its own check failed)}."""
    from bench_limits import ensure_int8  # benchmarks/bench_limits.py: dvit quantize, cached beside fp32

    from dvit_deploy.helpers.errors import DvitError

    try:
        return {"path": ensure_int8(fp32, recipe)}
    except DvitError as exc:
        return {"error": f"dvit quantize ({recipe}): {str(exc).strip().splitlines()[0][:300]}"}


def _cache_path(int8: Path, backend: str, samples: int | None) -> Path:
    """Where a verdict is cached (``samples`` None: the first version's name, without the input count)."""
    from dvit_deploy.helpers.cpu import cpu_info

    count = "" if samples is None else f"-n{samples}"
    return int8.with_name(f"{int8.name}.agreement-{cpu_info().cpu_class}-{backend}{count}.json")


# Verdicts judged before the OpenVINO runner's int8 Conv rewrite (runtime.openvino_graph: OpenVINO 2026.4.1
# scaled bias-less int8 Convs twice) are stale for files that have such a Conv (ConvNeXt): judged again.
OPENVINO_GRAPH_REVISION = 1


def _stale(cached: dict[str, Any], int8: Path, backend: str) -> bool:
    if backend != "openvino" or cached.get("openvino_graph", 0) >= OPENVINO_GRAPH_REVISION:
        return False
    import onnx

    from dvit_deploy.runtime.openvino_graph import int8_convs_without_bias

    return bool(int8_convs_without_bias(onnx.load(str(int8))))


def agreement(int8: Path, backend: str, samples: int) -> dict[str, Any]:
    """``dvit validate``'s verdict on one int8 file and backend, cached (same file hash, samples and CPU class).
    A missing verdict is computed for every backend at once (one PyTorch reference for both)."""
    from dvit_deploy.helpers.fileio import manifest_path, read_json, write_json_atomic
    from dvit_deploy.jobs.validate import validate

    sha = read_json(manifest_path(int8))["onnx"]["sha256"]
    for cache in (_cache_path(int8, backend, samples), _cache_path(int8, backend, None)):
        cached = read_json(cache) if cache.exists() else {}
        if cached.get("sha256") == sha and cached.get("samples") == samples and not _stale(cached, int8, backend):
            return cached
    started = time.time()
    report = validate([int8], backends=list(BACKENDS), samples=samples)
    seconds = round(time.time() - started, 1)
    verdicts = {}
    for result in report.results:
        cmp = result.comparison
        verdicts[result.backend] = verdict = {
            "sha256": sha, "samples": samples, "backend": result.backend, "status": result.status,
            "passed": result.passed, "reason": result.reason, "executes": result.executes,
            "top1_confident": None if cmp is None else cmp.logits.top1_agreement_confident,
            "confident_samples": None if cmp is None else cmp.logits.confident_samples,
            "mean_jaccard": None if cmp is None else cmp.mean_jaccard,
            "judged_jaccard": None if cmp is None else cmp.judged_jaccard,
            "failures": [] if cmp is None else list(cmp.failures),
            "seconds_all_backends": seconds,
            "openvino_graph": OPENVINO_GRAPH_REVISION,
        }
        write_json_atomic(_cache_path(int8, result.backend, samples), verdict)
    return verdicts[backend]


def prepare(pair: dict[str, Path], samples: int, log: Callable[[str], None] = print,
            recipes: tuple[str, ...] = RECIPES) -> list[dict[str, Any]]:
    """Quantize both files with every recipe and judge every candidate; one entry per candidate."""
    quantized = {(role, recipe): ensure_quantized(pair[role], recipe) for role in ROLES for recipe in recipes}
    found = []
    for recipe, backend in candidates(recipes):
        entry: dict[str, Any] = {"recipe": recipe, "backend": backend, "files": {}, "agreement": {}}
        for role in ROLES:
            q = quantized[(role, recipe)]
            if "error" in q:
                entry["agreement"][role] = {"passed": False, "status": "not written", "failures": [q["error"]]}
                continue
            entry["files"][role] = str(q["path"])
            entry["agreement"][role] = agreement(q["path"], backend, samples)
        entry["agrees"] = all(entry["agreement"].get(role, {}).get("passed") for role in ROLES)
        why = "" if entry["agrees"] else "; ".join(
            f"{role}: {'; '.join(a.get('failures') or [a.get('reason') or a.get('status', '?')])}"
            for role, a in entry["agreement"].items() if not a.get("passed"))
        entry["why_not"] = why or None
        log(f"  int8 {label(recipe, backend)}: {'agrees' if entry['agrees'] else 'does not agree — ' + why[:160]}")
        found.append(entry)
    return found


def screen(found: list[dict[str, Any]], batch: int, args, seeded_batch, measure_rounds) -> dict[str, Any] | None:
    """The fastest agreeing sparse int8 candidate in one interleaved round at ``batch`` (None if none agrees)."""
    import contextlib

    from dvit_deploy.artifact.store import as_artifact
    from dvit_deploy.runtime import runner_for_artifact

    agreeing = [c for c in found if c["agrees"]]
    if not agreeing:
        return None
    if len(agreeing) == 1:
        return {**agreeing[0], "screening_img_s": None}
    options = {"intra_op_threads": args.threads} if args.threads else {}
    with contextlib.ExitStack() as stack:
        calls = {}
        for c in agreeing:
            artifact = as_artifact(Path(c["files"]["sparse"]))
            runner = stack.enter_context(runner_for_artifact(artifact, c["backend"], device="cpu", precision=None,
                                                             **options))
            calls[(c["recipe"], c["backend"])] = runner.timed_call(seeded_batch(batch, artifact.model))
        measured = measure_rounds(calls, rounds=1, round_s=args.round_s, warmup_s=args.warmup_s)
    speed = {key: batch * len(m[0].samples_ms) / m[0].wall_s for key, m in measured.items()}
    for c in agreeing:
        c["screening_img_s"] = round(speed[(c["recipe"], c["backend"])], 3)
    best = max(agreeing, key=lambda c: c["screening_img_s"])
    return {**best, "screening_batch": batch}
