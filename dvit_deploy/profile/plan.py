"""What to profile: the given or default artifact, its dense twin (found, or exported on request), and the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..artifact.store import Artifact, find_dense_twin, is_dense_twin, open_artifact  # noqa: F401 - twin rule re-exported
from .measure import ProfileReport, ProfileRun, ProfileSettings, ProgressCallback, _options_for, attach_speedups, profile_artifacts

# --------------------------------------------------------------------------------------------
# What to profile


@dataclass
class ProfilePlan:
    runs: list[ProfileRun]  # in the order to run
    twins: dict[str, str]  # sparse artifact -> its dense twin
    notes: list[str] = field(default_factory=list)


def default_profile_artifact(backend: str | None = None) -> Path:
    """The default artifact (``artifact.store.open_artifact``'s rule) among the files ``backend`` runs."""
    from ..runtime import artifact_suffixes

    return open_artifact(None, artifact_suffixes(backend)).path


def plan_profile(artifacts_given: Sequence[Path] | None, *, backend: str | None, dense_baseline: bool,
                 with_twins: bool = True, on_phase: Callable[[str], None] | None = None) -> ProfilePlan:
    """Artifacts to measure and the dense twin of each sparse one (found beside it, or exported
    when ``dense_baseline`` asks for a baseline that is missing)."""
    from ..runtime import artifact_suffixes

    # Each artifact is opened (not found, no dvit manifest, or sha256 mismatch: one line, exit 2) once
    # here; the plan carries it to the measurement and the runners.
    opened = ([open_artifact(p) for p in artifacts_given] if artifacts_given
              else [open_artifact(None, artifact_suffixes(backend))])
    plan = ProfilePlan(runs=[], twins={})
    seen: set[Path] = set()

    def add(artifact: Artifact, role: str) -> None:
        key = artifact.path.resolve()
        if key not in seen:
            seen.add(key)
            plan.runs.append(ProfileRun(artifact, role))

    for artifact in opened:
        path = artifact.path
        if artifact.model.dense:
            add(artifact, "dense")
            continue
        add(artifact, "sparse")
        if not with_twins:
            continue
        twin = find_dense_twin(artifact)
        if twin is None and dense_baseline:
            from ..export.onnx_export import export_dense_twin  # the export layer makes the twin

            twin = export_dense_twin(artifact, on_phase)
            plan.notes.append(f"exported the dense twin of {path.name}: {twin}")
        elif twin is None:
            plan.notes.append(f"no dense twin of {path.name} beside it: pass --dense-baseline to export one")
        if twin is not None:
            plan.twins[str(path)] = str(twin)
    # Dense twins run after their sparse artifacts, and each only once.
    for sparse, dense in plan.twins.items():
        if Path(dense).resolve() not in seen:
            add(open_artifact(dense), "dense")
    return plan


def run_profile(plan: ProfilePlan, *, backend: str | None, batches: Sequence[int], settings: ProfileSettings,
                device: str = "cpu", precision: str | None = None, options: dict[str, Any] | None = None,
                on_progress: ProgressCallback | None = None) -> ProfileReport:
    from ..runtime import default_backend

    settings.validate()
    report = ProfileReport(settings=settings, notes=list(plan.notes))
    by_backend: dict[str, list[ProfileRun]] = {}
    for run in plan.runs:
        by_backend.setdefault(backend or default_backend(run.artifact.path), []).append(run)
    for chosen, runs in by_backend.items():
        report.results.extend(profile_artifacts(
            runs, chosen, batches, settings, device=device, precision=precision,
            options=_options_for(chosen, options or {}), on_progress=on_progress, notes=report.notes))
    attach_speedups(report.results, plan.twins)
    return report
