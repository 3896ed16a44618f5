"""Classify image files with any backend, and recover which patches each stage kept.

The artifact's manifest supplies the preprocessing (timm data config) and the class count;
ImageNet names come from timm for 1000-class models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..artifact.manifest import ModelRecord
from ..helpers.defaults import PREDICT_BATCH
from .data import class_names, data_config_of, preprocess_images
from ..helpers.errors import BadInput
from ..runtime import default_backend, runner_for_artifact
from ..helpers.batching import run_batched
from ..artifact.store import Artifact, open_artifact

DEFAULT_BATCH = PREDICT_BATCH
TOKEN_OUTPUTS_HINT = "re-export with 'dvit export --token-outputs' (or use --backend torch/onnxruntime)"


def num_classes_of(model: ModelRecord, logits: np.ndarray | None = None) -> int:
    """The model's class count as its config records it, else the logits' width (else ImageNet's 1000)."""
    if "num_classes" in model.config:
        return model.num_classes
    return int(logits.shape[1]) if logits is not None else 1000


def grid_of(model: ModelRecord) -> tuple[int, int]:
    """(patch grid side, patch size in pixels) of the model input."""
    return model.img_size // model.patch_size, model.patch_size


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class ClassScore:
    index: int
    name: str
    probability: float


@dataclass
class Prediction:
    image: Path
    top: list[ClassScore]
    kept_counts: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"image": str(self.image), "kept_per_stage": self.kept_counts,
                "top": [{"index": c.index, "name": c.name, "probability": c.probability} for c in self.top]}


@dataclass
class PredictResult:
    artifact: Path
    backend: str
    runner: dict[str, Any]
    predictions: list[Prediction]
    images: np.ndarray  # the preprocessed batch (N, 3, H, W)
    kept: list[np.ndarray] | None  # per stage (N, K_s) original patch ids
    model: ModelRecord  # the artifact's model, as its manifest records it
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.artifact), "backend": self.backend, "runner": self.runner,
                "keep_counts": list(self.model.keep_counts),
                "predictions": [p.to_dict() for p in self.predictions], "notes": self.notes}


def resolve_artifact(artifact: Path | Artifact | None, backend: str | None = None) -> Artifact:
    """The given artifact, or the default one among the files ``backend`` runs (``open_artifact``'s
    rule, the one every command uses), opened with its manifest checked."""
    if isinstance(artifact, Artifact):
        return artifact
    from ..runtime import artifact_suffixes

    return open_artifact(artifact, artifact_suffixes(backend))


def predict(
    images: Sequence[Path],
    artifact: Path | Artifact | None = None,
    backend: str | None = None,
    *,
    top_k: int = 5,
    want_kept: bool = False,
    device: str = "cpu",
    batch: int = DEFAULT_BATCH,
    on_phase: Callable[[str], None] | None = None,
) -> PredictResult:
    """Top-k classes per image; with ``want_kept`` also each stage's kept patch ids (or BadInput)."""
    phase = on_phase or (lambda name: None)
    if top_k < 1:
        raise BadInput(f"--top must be ≥ 1, got {top_k}")
    if batch < 1:
        raise BadInput(f"--batch must be ≥ 1, got {batch}")
    phase("preprocess")
    opened = resolve_artifact(artifact, backend)
    path, model = opened.path, opened.model
    backend = backend or default_backend(path)
    if want_kept and model.dense:
        raise BadInput(f"{path.name} is a dense model: it keeps every token, so there is nothing to visualise")
    batch_images = preprocess_images(list(images), data_config_of(model))
    fixed = model.batch

    options: dict[str, Any] = {}
    backend, _, spec_precision = backend.partition(":")  # "openvino:bf16": one backend at one precision
    if backend in ("onnxruntime", "openvino") and want_kept:
        options["topk_outputs"] = True  # recover kept tokens even from an artifact without token outputs
    phase(f"run ({backend})")
    with runner_for_artifact(opened, backend, device=device, precision=spec_precision or None, **options) as runner:
        outputs = run_batched(runner.run, batch_images, fixed if fixed else batch, fixed=bool(fixed))
        described = runner.describe()
    notes = runner.report_notes()
    logits, kept = outputs.logits, outputs.kept
    if want_kept and kept is None:
        raise BadInput(f"{path.name} has no token outputs, and the {backend} backend cannot recover which tokens "
                       f"were kept: {TOKEN_OUTPUTS_HINT}")

    names = class_names(num_classes_of(model, logits))
    probs = softmax(logits.astype(np.float64))
    k = min(top_k, probs.shape[1])
    predictions = []
    for i, image in enumerate(images):
        order = np.argsort(-probs[i])[:k]
        top = [ClassScore(int(c), names[c] if c < len(names) else f"class {c}", float(probs[i, c])) for c in order]
        predictions.append(Prediction(Path(image), top, [int(s.shape[1]) for s in kept] if kept else []))
    return PredictResult(path, backend, described, predictions, batch_images, kept, model, notes)
