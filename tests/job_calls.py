"""The predict and eval jobs called as the Python API does: options in, an opened artifact, a fresh RunContext."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from dvit_deploy.artifact.context import RunContext
from dvit_deploy.artifact.store import open_artifact
from dvit_deploy.jobs import evaluate as evaluate_job
from dvit_deploy.jobs import predict as predict_job


def predict(images: Sequence[Path], path: Path, backend: str | None = None, **options: Any) -> predict_job.PredictResult:
    return predict_job.run(predict_job.PredictOptions(images=tuple(images), backend=backend, **options), RunContext(),
                           open_artifact(path))


def evaluate(data: Path, path: Path, backends: Sequence[str] = (), **options: Any) -> evaluate_job.EvalResult:
    return evaluate_job.run(evaluate_job.EvalOptions(data=data, backends=tuple(backends), **options), RunContext(),
                            open_artifact(path))
