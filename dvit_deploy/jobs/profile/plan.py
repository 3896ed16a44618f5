"""What to profile: the opened artifacts, their dense twins (found, or exported on request), and the run.

``run(options, context, artifacts)`` plans and measures; ``plan_profile`` and ``run_profile`` are its two steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ...artifact.store import Artifact, find_dense_twin, open_artifact
from ...helpers.errors import BadInput
from .measure import ProfileOptions, ProfileReport, ProfileRun, ProgressCallback, attach_speedups, profile_artifacts

if TYPE_CHECKING:
    from ...artifact.context import RunContext

# --------------------------------------------------------------------------------------------
# What to profile


@dataclass
class ProfilePlan:
    runs: list[ProfileRun]  # in the order to run
    twins: dict[str, str]  # sparse artifact -> its dense twin
    notes: list[str] = field(default_factory=list)


def run(options: ProfileOptions, context: "RunContext", artifacts: Sequence[Artifact], *,
        on_phase: Callable[[str], None] | None = None,
        on_progress: ProgressCallback | None = None) -> ProfileReport:
    """Measure the opened ``artifacts`` (and their dense twins) as ``options`` says: ``plan_profile``, then
    ``run_profile``. ``on_phase`` hears the planning phases (exporting a twin), ``on_progress`` the measurement."""
    options.validate()
    artifacts = [a.in_context(context) for a in artifacts]  # twins and the torch reference: this run's
    return run_profile(plan_profile(artifacts, options, context, on_phase=on_phase), options, context,
                       on_progress=on_progress)


def plan_profile(artifacts: Sequence[Artifact], options: ProfileOptions, context: "RunContext",
                 on_phase: Callable[[str], None] | None = None) -> ProfilePlan:
    """Artifacts to measure and the dense twin of each sparse one (found beside it, or exported
    when ``options.dense_baseline`` asks for a baseline that is missing; none with ``with_twins`` off)."""
    if not artifacts:
        raise BadInput("nothing to profile: give an artifact (the CLI picks the default one)")
    # Each artifact was opened (manifest read and checked, sha256 verified) once, by the caller; the plan carries
    # it to the measurement and the runners.
    opened = list(artifacts)
    plan = ProfilePlan(runs=[], twins={})
    seen: set[Path] = set()
    runs_of: dict[str, Artifact] = {}  # a twin's sparse artifact: the twin is opened in its run

    def add(artifact: Artifact, role: str) -> None:
        key = artifact.path.resolve()
        if key not in seen:
            seen.add(key)
            plan.runs.append(ProfileRun(artifact, role))

    if options.keep_ratio is not None:  # dense twins found below keep their own (no) ρ
        opened = [a if a.model.dense else a.at_keep_ratio(options.keep_ratio) for a in opened]
    for artifact in opened:
        path = artifact.path
        if artifact.model.dense:
            add(artifact, "dense")
            continue
        add(artifact, "sparse")
        if not options.with_twins:
            continue
        twin = find_dense_twin(artifact)
        if twin is None and options.dense_baseline:
            from ...export.onnx_export import export_dense_twin  # the export layer makes the twin

            twin = export_dense_twin(artifact, on_phase)
            plan.notes.append(f"exported the dense twin of {path.name}: {twin}")
        elif twin is None:
            plan.notes.append(f"no dense twin of {path.name} beside it: pass --dense-baseline to export one")
        if twin is not None:
            plan.twins[str(path)] = str(twin)
            runs_of[str(path)] = artifact
    # Dense twins run after their sparse artifacts, and each only once.
    for sparse, dense in plan.twins.items():
        if Path(dense).resolve() not in seen:
            add(open_artifact(dense, context=runs_of[sparse].context), "dense")
    return plan


def run_profile(plan: ProfilePlan, options: ProfileOptions, context: "RunContext",
                on_progress: ProgressCallback | None = None) -> ProfileReport:
    """Measure the plan's runs as ``options`` says, each backend's runs interleaved, with speed-ups."""
    from ...runtime import default_backend

    options.validate()
    report = ProfileReport(settings=options.settings, notes=list(plan.notes))
    by_backend: dict[str, list[ProfileRun]] = {}
    for item in plan.runs:
        by_backend.setdefault(options.backend or default_backend(item.artifact.path), []).append(item)
    for chosen, runs in by_backend.items():
        report.results.extend(profile_artifacts(runs, chosen, options, on_progress=on_progress, notes=report.notes))
    attach_speedups(report.results, plan.twins)
    return report
