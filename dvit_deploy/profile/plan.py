"""What to profile: the given or default artifact, its dense twin (found, or exported on request), and the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..artifact.store import find_dense_twin, is_dense_twin  # noqa: F401 - re-exported: the twin rule
from .measure import ProfileReport, ProfileSettings, ProgressCallback, _options_for, attach_speedups, profile_artifacts

# --------------------------------------------------------------------------------------------
# What to profile


@dataclass
class ProfilePlan:
    runs: list[tuple[Path, str]]  # (artifact, role) in the order to run
    twins: dict[str, str]  # sparse artifact -> its dense twin
    notes: list[str] = field(default_factory=list)


def default_profile_artifact(backend: str | None = None) -> Path:
    """The default artifact (``artifact.store.default_artifact``) among the files ``backend`` runs."""
    from ..artifact.store import default_artifact
    from ..runtime import artifact_suffixes

    return default_artifact(artifact_suffixes(backend))[0]


def plan_profile(artifacts_given: Sequence[Path] | None, *, backend: str | None, dense_baseline: bool,
                 with_twins: bool = True, on_phase: Callable[[str], None] | None = None) -> ProfilePlan:
    """Artifacts to measure and the dense twin of each sparse one (found beside it, or exported
    when ``dense_baseline`` asks for a baseline that is missing)."""
    paths = [Path(p) for p in artifacts_given] if artifacts_given else [default_profile_artifact(backend)]
    plan = ProfilePlan(runs=[], twins={})
    seen: set[Path] = set()

    def add(path: Path, role: str) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            plan.runs.append((path, role))

    from ..artifact.store import load_manifest

    for path in paths:
        manifest = load_manifest(path)  # not found, no dvit manifest, or sha256 mismatch: one line, exit 2
        if manifest.get("dense"):
            add(path, "dense")
            continue
        add(path, "sparse")
        if not with_twins:
            continue
        twin = find_dense_twin(path, manifest)
        if twin is None and dense_baseline:
            from ..export.onnx_export import export_dense_twin  # the export layer makes the twin

            twin = export_dense_twin(path, manifest, on_phase)
            plan.notes.append(f"exported the dense twin of {path.name}: {twin}")
        elif twin is None:
            plan.notes.append(f"no dense twin of {path.name} beside it: pass --dense-baseline to export one")
        if twin is not None:
            plan.twins[str(path)] = str(twin)
    # Dense twins run after their sparse artifacts, and each only once.
    for sparse, dense in plan.twins.items():
        add(Path(dense), "dense")
    return plan


def run_profile(plan: ProfilePlan, *, backend: str | None, batches: Sequence[int], settings: ProfileSettings,
                device: str = "cpu", precision: str | None = None, options: dict[str, Any] | None = None,
                on_progress: ProgressCallback | None = None) -> ProfileReport:
    from ..runtime import default_backend

    settings.validate()
    report = ProfileReport(settings=settings, notes=list(plan.notes))
    by_backend: dict[str, list[tuple[Path, str]]] = {}
    for artifact, role in plan.runs:
        by_backend.setdefault(backend or default_backend(artifact), []).append((artifact, role))
    for chosen, runs in by_backend.items():
        report.results.extend(profile_artifacts(
            runs, chosen, batches, settings, device=device, precision=precision,
            options=_options_for(chosen, options or {}), on_progress=on_progress, notes=report.notes))
    attach_speedups(report.results, plan.twins)
    return report
