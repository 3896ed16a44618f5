"""What to profile: the given or default artifact, its dense twin (found, or exported on request), and the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ...artifact.store import Artifact, as_artifact, find_dense_twin, open_artifact
from .measure import ProfileOptions, ProfileReport, ProfileRun, ProgressCallback, attach_speedups, profile_artifacts

# --------------------------------------------------------------------------------------------
# What to profile


@dataclass
class ProfilePlan:
    runs: list[ProfileRun]  # in the order to run
    twins: dict[str, str]  # sparse artifact -> its dense twin
    notes: list[str] = field(default_factory=list)


def default_profile_artifact(backend: str | None = None) -> Path:
    """The default artifact (``artifact.store.open_artifact``'s rule) among the files ``backend`` runs."""
    from ...runtime import artifact_suffixes

    return open_artifact(None, artifact_suffixes(backend)).path


def plan_profile(artifacts_given: Sequence[Artifact | Path] | None, options: ProfileOptions,
                 on_phase: Callable[[str], None] | None = None) -> ProfilePlan:
    """Artifacts to measure and the dense twin of each sparse one (found beside it, or exported
    when ``options.dense_baseline`` asks for a baseline that is missing; none with ``with_twins`` off)."""
    from ...runtime import artifact_suffixes

    # Each artifact is opened (not found, no dvit manifest, or sha256 mismatch: one line, exit 2) once,
    # by the CLI or here; the plan carries it to the measurement and the runners.
    opened = ([as_artifact(p) for p in artifacts_given] if artifacts_given
              else [open_artifact(None, artifact_suffixes(options.backend))])
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


def run_profile(plan: ProfilePlan, options: ProfileOptions,
                on_progress: ProgressCallback | None = None) -> ProfileReport:
    """Measure the plan's runs as ``options`` says, each backend's runs interleaved, with speed-ups."""
    from ...runtime import default_backend

    options.validate()
    report = ProfileReport(settings=options.settings, notes=list(plan.notes))
    by_backend: dict[str, list[ProfileRun]] = {}
    for run in plan.runs:
        by_backend.setdefault(options.backend or default_backend(run.artifact.path), []).append(run)
    for chosen, runs in by_backend.items():
        report.results.extend(profile_artifacts(
            runs, chosen, options.batches, options.settings, device=options.device, precision=options.precision,
            options=options.runner_options(chosen), on_progress=on_progress, notes=report.notes))
    attach_speedups(report.results, plan.twins)
    return report
