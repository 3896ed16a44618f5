"""Ladder engines: ``dvit build --keep-ladder 0.5,0.6,0.7,0.8,0.9`` on a ``--dynamic-keep`` ONNX.

A ``--dynamic-keep`` graph takes its per-stage keep counts as a shape-tensor input. Built with one
optimization profile over a ρ range (``--keep-range``) those counts are runtime shapes inside the
engine: every shape after a TopK is data-dependent, which can cost TensorRT its fused attention
kernels (REFERENCE.md: NVIDIA/TensorRT #2850, #4410, #3665). A ladder engine has one optimization
profile per ρ instead, each with ``keep_counts`` pinned (min = opt = max = the counts of that ρ,
``artifact.keep``'s one rule), times the batch range: every profile sees static token counts, as a
fixed export does, and one file still serves every rung.

What is decided here, without TensorRT: the rungs and their profiles (``ladder_profiles``, used by
``build_plan.plan_profiles``), and which profile serves a request (``rung_for``, used by the
TensorRT runner); ``trt_build.build_engine`` makes one ``IOptimizationProfile`` per profile index.
"""

from __future__ import annotations

import math
from typing import Sequence

from ..artifact.keep import KeepSchedule
from ..artifact.manifest import RATIO_TOLERANCE, EngineManifest, LadderRung, ModelRecord, OnnxManifest
from ..artifact.store import Artifact
from ..helpers.errors import BadInput
from .build_plan import DEFAULT_IMAGE_INPUT, BuildOptions, InputProfile, batch_range, onnx_record


def rungs_text(ratios: Sequence[float]) -> str:
    return ", ".join(f"{r:g}" for r in ratios)


def ladder_rungs(keep_ladder: Sequence[float], model: ModelRecord) -> tuple[LadderRung, ...]:
    """The rungs of ``keep_ladder`` for ``model`` (a --dynamic-keep export), by ascending ρ: profile
    i pins the counts of the i-th lowest ρ. One BadInput line for a ladder that cannot be built."""
    keep_input = model.keep_input
    if not model.dynamic_keep or not keep_input:
        raise BadInput("--keep-ladder needs an ONNX exported with --dynamic-keep (a fixed export's keep counts are "
                       "already constants: build one engine per ρ, or re-export with --dynamic-keep)")
    ratios = [float(r) for r in keep_ladder]
    if not ratios:
        raise BadInput("--keep-ladder takes one or more ratios, e.g. 0.5,0.6,0.7,0.8,0.9")
    bad = [r for r in ratios if math.isnan(r) or not 0 < r <= 1]
    if bad:
        raise BadInput(f"--keep-ladder ratios must lie in (0, 1], got {rungs_text(bad)}")
    ratios.sort()
    repeated = [b for a, b in zip(ratios, ratios[1:]) if b - a < RATIO_TOLERANCE]
    if repeated:
        raise BadInput(f"--keep-ladder names ρ {repeated[0]:g} twice")
    stages = len(model.pruning_locations or keep_input.get("shape") or ())
    rungs, seen = [], {}
    for index, ratio in enumerate(ratios):
        try:
            counts = KeepSchedule.from_ratio(ratio, stages, model.num_patches, model.keep_schedule).counts
        except ValueError as exc:
            raise BadInput(f"--keep-ladder {ratio:g}: {exc}") from None
        if counts in seen:
            raise BadInput(f"--keep-ladder: ρ {seen[counts]:g} and {ratio:g} keep the same tokens {list(counts)} "
                           f"({model.num_patches} patches): one profile would serve both, drop one")
        seen[counts] = ratio
        rungs.append(LadderRung(index, ratio, tuple(counts)))
    return tuple(rungs)


def ladder_profiles(source: OnnxManifest | Artifact, options: BuildOptions) -> tuple[InputProfile, ...]:
    """One optimization profile per rung: the image batch range (the same in each) and the rung's
    ``keep_counts`` values pinned (min = opt = max), as flat records tagged with their profile index."""
    onnx = onnx_record(source)
    rungs = ladder_rungs(options.keep_ladder or (), onnx.model)
    images = (onnx.inputs or (DEFAULT_IMAGE_INPUT,))[0]
    lo, opt, hi = batch_range(options.min_batch, options.opt_batch, options.max_batch, images.shape)
    rest = tuple(int(d) for d in images.shape[1:])
    keep_name = str(onnx.model.keep_input["name"])
    profiles: list[InputProfile] = []
    for rung in rungs:
        profiles.append(InputProfile(images.name, "shape", (lo, *rest), (opt, *rest), (hi, *rest),
                                     profile=rung.profile, keep_ratio=rung.keep_ratio))
        profiles.append(InputProfile(keep_name, "values", rung.counts, rung.counts, rung.counts,
                                     profile=rung.profile, keep_ratio=rung.keep_ratio))
    return tuple(profiles)


def profile_groups(profiles: Sequence[InputProfile]) -> list[list[InputProfile]]:
    """The flat profile records grouped by optimization profile, in index order (one group unless a ladder)."""
    groups: dict[int, list[InputProfile]] = {}
    for item in profiles:
        groups.setdefault(item.profile, []).append(item)
    return [groups[i] for i in sorted(groups)]


def rung_for(engine: EngineManifest, *, keep_ratio: float | None = None,
             counts: Sequence[int] | None = None) -> LadderRung:
    """The rung (optimization profile) of a ladder engine that serves ``keep_ratio`` (or ``counts``);
    one BadInput line naming the rungs for anything else (``EngineManifest.rung_for``)."""
    return engine.rung_for(keep_ratio=keep_ratio, counts=counts)


def default_rung(engine: EngineManifest) -> LadderRung:
    """The rung a ladder engine runs when no ρ is asked for: the export's ρ if it is a rung, else the highest."""
    rungs = engine.ladder
    ratio = engine.model.keep_ratio
    on = [r for r in rungs if ratio is not None and abs(r.keep_ratio - ratio) <= RATIO_TOLERANCE]
    return on[0] if on else rungs[-1]


__all__ = ("LadderRung", "default_rung", "ladder_profiles", "ladder_rungs", "profile_groups", "rung_for",
           "rungs_text")
