"""Classify image files with any backend, and recover which patches each stage kept.

``run(PredictOptions(images=...), context, artifact)``: the artifact's manifest supplies the preprocessing
(timm data config) and the class count; ImageNet names come from timm for 1000-class models. With
``viz`` the kept patches of every stage are drawn to a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..artifact.manifest import ModelRecord
from ..artifact.store import Artifact
from ..helpers.batching import run_batched
from ..helpers.defaults import PREDICT_BATCH
from ..helpers.errors import BadInput
from ..runtime import default_backend, runner_for_artifact
from .data import class_names, data_config_of, denormalize, preprocess_images

if TYPE_CHECKING:
    from ..artifact.context import RunContext

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


def viz_path(path: Path, force: bool = False) -> Path:
    """Where ``--viz`` draws: a PNG that may be written (``--force`` replaces only a picture dvit drew)."""
    from ..helpers.fileio import prepare_output

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise BadInput(f"--viz writes a PNG picture: give a path ending in .png, not {path.name}")
    return prepare_output(path, force=force, kinds=(".png",))


@dataclass(frozen=True)
class PredictOptions:
    """What ``dvit predict`` is asked: the images, the backend (``name:precision`` picks a precision; None: from
    the artifact's suffix), how many classes per image, and whether to recover (``want_kept``) or draw (``viz``,
    a path checked by ``viz_path``) each stage's kept patches."""

    images: tuple[Path, ...] = ()
    backend: str | None = None
    top_k: int = 5
    want_kept: bool = False
    viz: Path | None = None
    device: str = "cpu"
    batch: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(Path(p) for p in self.images))
        if self.viz is not None:
            object.__setattr__(self, "viz", Path(self.viz))

    @property
    def kept_wanted(self) -> bool:
        return self.want_kept or self.viz is not None


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
    viz: Path | None = None  # the kept-patch picture, when one was drawn

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.artifact), "backend": self.backend, "runner": self.runner,
                "keep_counts": list(self.model.keep_counts),
                "predictions": [p.to_dict() for p in self.predictions], "notes": self.notes,
                "viz": None if self.viz is None else str(self.viz)}


def run(options: PredictOptions, context: "RunContext", artifact: Artifact, *,
        on_phase: Callable[[str], None] | None = None) -> PredictResult:
    """Top-k classes per image of the opened ``artifact``; with ``want_kept`` (or ``viz``) also each stage's
    kept patch ids (or BadInput)."""
    phase = on_phase or (lambda name: None)
    result = _predict(options, artifact.in_context(context), phase)
    if options.viz is not None:
        phase("draw")
        _draw(result, options.viz)
        result.viz = options.viz
    return result


def _predict(options: PredictOptions, opened: Artifact, phase: Callable[[str], None]) -> PredictResult:
    if options.top_k < 1:
        raise BadInput(f"--top must be ≥ 1, got {options.top_k}")
    if options.batch < 1:
        raise BadInput(f"--batch must be ≥ 1, got {options.batch}")
    phase("preprocess")
    path, model, want_kept = opened.path, opened.model, options.kept_wanted
    backend = options.backend or default_backend(path)
    if want_kept and model.dense:
        raise BadInput(f"{path.name} is a dense model: it keeps every token, so there is nothing to visualise")
    images = list(options.images)
    batch_images = preprocess_images(images, data_config_of(model))
    fixed = model.batch

    runner_options: dict[str, Any] = {}
    backend, _, spec_precision = backend.partition(":")  # "openvino:bf16": one backend at one precision
    if backend in ("onnxruntime", "openvino") and want_kept:
        runner_options["topk_outputs"] = True  # recover kept tokens even from an artifact without token outputs
    phase(f"run ({backend})")
    with runner_for_artifact(opened, backend, device=options.device, precision=spec_precision or None,
                             **runner_options) as runner:
        outputs = run_batched(runner.run, batch_images, fixed if fixed else options.batch, fixed=bool(fixed))
        described = runner.describe()
    notes = runner.report_notes()
    logits, kept = outputs.logits, outputs.kept
    if want_kept and kept is None:
        raise BadInput(f"{path.name} has no token outputs, and the {backend} backend cannot recover which tokens "
                       f"were kept: {TOKEN_OUTPUTS_HINT}")
    predictions = _top_classes(images, logits, kept, model, options.top_k)
    return PredictResult(path, backend, described, predictions, batch_images, kept, model, notes)


def _top_classes(images: Sequence[Path], logits: np.ndarray, kept: list[np.ndarray] | None, model: ModelRecord,
                 top_k: int) -> list[Prediction]:
    names = class_names(num_classes_of(model, logits))
    probs = softmax(logits.astype(np.float64))
    k = min(top_k, probs.shape[1])
    predictions = []
    for i, image in enumerate(images):
        order = np.argsort(-probs[i])[:k]
        top = [ClassScore(int(c), names[c] if c < len(names) else f"class {c}", float(probs[i, c])) for c in order]
        predictions.append(Prediction(Path(image), top, [int(s.shape[1]) for s in kept] if kept else []))
    return predictions


def _draw(result: PredictResult, path: Path) -> None:
    """The kept patches of every stage, one row per image, titled with its top class."""
    from .viz import save_keep_figure

    grid, patch = grid_of(result.model)
    titles = [f"{p.image.name}\n{p.top[0].name} ({p.top[0].probability:.0%})" for p in result.predictions]
    save_keep_figure(path, denormalize(result.images, data_config_of(result.model)), result.kept or [],
                     grid=grid, patch=patch, row_titles=titles,
                     title=f"{result.model.variant or ''} kept tokens ({result.backend}, {result.artifact.name})")
