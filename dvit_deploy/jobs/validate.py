"""`dvit validate`: does every backend still compute what the PyTorch fp32 reference computes?

For each artifact the reference is rebuilt from its manifest (same checkpoint, or the same
seeded weights) and run in fp32 on the CPU. Each backend's logits are compared with it (max/mean
absolute difference, cosine similarity, top-1/top-5 agreement) and, when the backend can report
them, the kept tokens of every pruning stage as sets of original patch ids (Jaccard;
order-insensitive). Tolerances depend on the precision that ran (``compare.TOLERANCES``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..artifact.context import RunContext
from ..artifact.manifest import ModelRecord
from ..helpers.batching import Gathered, pad_batch
from ..helpers.compare import Comparison, Tolerance, compare
from ..helpers.defaults import VALIDATE_BATCH, VALIDATE_SAMPLES
from ..helpers.errors import BadInput, DvitError
from ..runtime import FILE_BACKENDS, default_backend, runner_for_artifact
from ..artifact.store import Artifact, open_artifact

DEFAULT_SAMPLES = VALIDATE_SAMPLES
DEFAULT_BATCH = VALIDATE_BATCH
VALIDATE_SEED = 20240607
SCHEMA = "dvit-deploy/validate/1"


@dataclass
class BackendResult:
    artifact: str
    backend: str
    status: str  # "passed", "failed", "skipped"
    executes: str | None = None
    precision: str | None = None
    fallback: str | None = None
    token_info: str = "none"  # "token outputs", "TopK outputs (in-memory copy)", "dense model", "none"
    comparison: Comparison | None = None
    reason: str | None = None  # why skipped
    tolerance: Tolerance | None = None
    notes: list[str] = field(default_factory=list)
    execution: dict[str, Any] = field(default_factory=dict)  # what ran (OpenVINO: precision, AMX/VNNI kernels)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        cmp = self.comparison
        return {
            "artifact": self.artifact,
            "backend": self.backend,
            "status": self.status,
            "passed": self.passed,
            "executes": self.executes,
            "precision": self.precision,
            "fallback": self.fallback,
            "token_info": self.token_info,
            "tolerance": None if self.tolerance is None else vars(self.tolerance),
            "reason": self.reason,
            "samples": None if cmp is None else cmp.samples,
            "logits": None if cmp is None else vars(cmp.logits),
            "stages": [] if cmp is None else [vars(s) for s in cmp.stages],
            "unexplained_flips": None if cmp is None else cmp.unexplained_flips,
            "failures": [] if cmp is None else cmp.failures,
            "judged_by": None if cmp is None else cmp.judged_by,
            "mean_jaccard": None if cmp is None else cmp.mean_jaccard,
            "execution": self.execution,
            "notes": self.notes + ([] if cmp is None else cmp.notes),
        }


@dataclass
class ValidateReport:
    inputs: str
    samples: int
    results: list[BackendResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the user asked for and did not get

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.status == "passed" for r in self.results)

    @property
    def failed(self) -> list[BackendResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def skipped(self) -> list[BackendResult]:
        return [r for r in self.results if r.status == "skipped"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "passed": self.passed,
            "inputs": self.inputs,
            "samples": self.samples,
            "reference": "PyTorch fp32 on CPU, rebuilt from each artifact's manifest",
            "results": [r.to_dict() for r in self.results],
            "notes": self.notes,
            "warnings": self.warnings,
        }


def default_artifacts() -> list[Path]:
    """The default artifact (``artifact.store.open_artifact``'s rule: the one every command uses)."""
    return [open_artifact(None).path]


def split_backend_spec(spec: str, precision: str | None) -> tuple[str, str | None]:
    """'openvino:bf16' -> ('openvino', 'bf16'); a plain name takes --precision (None: the artifact's)."""
    name, _, suffix = spec.partition(":")
    if suffix and precision is not None and suffix != precision:
        raise BadInput(f"--backend {spec} asks for {suffix} but --precision says {precision}")
    return name, suffix or precision


def default_backends(artifact: Path) -> list[str]:
    return [default_backend(artifact)]


@dataclass
class InputSource:
    """The validation inputs, made batch by batch (never all at once: 20000 DeiT inputs are 12 GB).

    Every pass (the reference, then each backend) regenerates the same batches: seeded inputs from the
    same seed (numpy draws them in the same order, whatever the batch size), images preprocessed again.
    """

    count: int
    description: str
    _seed: int | None = None
    _shape: tuple[int, ...] = ()
    _paths: list[Path] = field(default_factory=list)
    _data_config: dict[str, Any] = field(default_factory=dict)

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        from .data import preprocess_images

        rng = np.random.default_rng(self._seed) if self._seed is not None else None
        for start in range(0, self.count, batch):
            n = min(batch, self.count - start)
            if rng is not None:
                yield rng.standard_normal((n, *self._shape), dtype=np.float32)
            else:
                images = preprocess_images(self._paths[start:start + n], self._data_config)
                if images.shape[1:] != self._shape:
                    raise BadInput(f"preprocessed images are {images.shape[1:]}, the model takes {self._shape}")
                yield images


def load_inputs(model: ModelRecord, samples: int, images_dir: Path | None) -> InputSource:
    """Seeded normal inputs, or real images preprocessed with the model's data config (streamed)."""
    from .data import data_config_of, list_images

    shape = model.input_shape
    if images_dir is None:
        return InputSource(samples, f"seeded random (seed {VALIDATE_SEED})", _seed=VALIDATE_SEED, _shape=shape)

    found = list_images(images_dir, recursive=True)  # flat or class sub-folders, as eval reads
    paths = found[:samples]
    # Fewer images than --samples: all of them are used, and the report says so (never silently fewer).
    short = f" (--samples {samples} asked; the folder holds only {len(found)})" if len(found) < samples else ""
    return InputSource(len(paths), f"{len(paths)} image(s) from {images_dir}{short}", _shape=shape, _paths=paths,
                       _data_config=data_config_of(model))


def run_streamed(run: Callable[[np.ndarray], Any], source: InputSource, batch: int, *, fixed: bool = False) -> Gathered:
    """``run_batched`` over a streamed source: one batch of inputs in memory at a time."""
    gathered = Gathered()
    for chunk in source.batches(batch):
        padded, real = pad_batch(chunk, batch if fixed else None)
        gathered.add(run(padded), real)
    return gathered


def _reference(model: ModelRecord, source: InputSource, batch: int, cache: dict[Any, Any],
               context: RunContext) -> dict[str, Any]:
    """PyTorch fp32 logits, kept ids and boundary margins of the artifact's model (cached per model), rebuilt in
    the artifact's run ``context`` (its moved checkpoint)."""
    import torch

    from ..export.check import reference_outputs
    from ..models.checkpoint import load_model_from_record

    if model.variant is None:
        raise BadInput("the manifest records no model ('variant'): cannot rebuild the PyTorch reference")
    key = model.identity  # one reference per model, shared by its exports (batch layouts, precisions)
    if key not in cache:
        loaded = load_model_from_record(model, context=context)
        parts = [reference_outputs(loaded, torch.from_numpy(chunk), batch) for chunk in source.batches(batch)]
        stages = len(parts[0]["kept"])
        cache[key] = (loaded, {
            "logits": np.concatenate([p["logits"] for p in parts]),
            "kept": [np.concatenate([p["kept"][s] for p in parts]) for s in range(stages)],
            "margins": [np.concatenate([p["margins"][s] for p in parts]) for s in range(len(parts[0]["margins"]))],
        })
    return cache[key][1]


def validate(
    artifact_paths: Sequence[Path | Artifact] | None = None,
    *,
    backends: Sequence[str] | None = None,
    samples: int = DEFAULT_SAMPLES,
    batch: int = DEFAULT_BATCH,
    images_dir: Path | None = None,
    device: str = "cpu",
    precision: str | None = None,
    on_phase: Callable[[str], None] | None = None,
    keep_ratio: float | None = None,
) -> ValidateReport:
    """Validate each artifact on each backend against the PyTorch fp32 reference.

    ``keep_ratio``: run --dynamic-keep artifacts (a --keep-ladder engine: one of its rungs) at that ρ,
    the reference rebuilt at the same ρ (``Artifact.at_keep_ratio``)."""
    from ..helpers.errors import MissingDependency

    if samples < 1:
        raise BadInput(f"--samples must be ≥ 1, got {samples}")
    if batch < 1:
        raise BadInput(f"--batch must be ≥ 1, got {batch}")
    phase = on_phase or (lambda name: None)
    given = list(artifact_paths) if artifact_paths else [None]  # None: the default artifact
    report = ValidateReport(inputs="", samples=samples)
    cache: dict[Any, Any] = {}
    for item in given:
        # Opened (manifest and sha256 checked) once, then handed to every backend's runner.
        opened = item if isinstance(item, Artifact) else open_artifact(None if item is None else Path(item))
        if keep_ratio is not None:
            opened = opened.at_keep_ratio(keep_ratio)
        artifact, model = opened.path, opened.model
        source = load_inputs(model, samples, images_dir)
        report.inputs = source.description
        if source.count < samples and images_dir is not None:
            report.warnings.append(f"validated {source.count} image(s), fewer than --samples {samples}: {images_dir} "
                                   f"holds only {source.count}")
        report.samples = source.count
        fixed = model.batch
        run_batch = fixed if fixed else min(batch, source.count)
        phase(f"{artifact.name}: PyTorch fp32 reference")
        ref = _reference(model, source, run_batch, cache, opened.context)
        pruned = not model.dense
        for spec in backends or default_backends(artifact):
            backend, backend_precision = split_backend_spec(spec, precision)
            result = BackendResult(artifact=str(artifact), backend=backend, status="skipped")
            report.results.append(result)
            if backend not in FILE_BACKENDS:
                raise BadInput(f"unknown backend '{backend}'; known: {', '.join(FILE_BACKENDS)}")
            if artifact.suffix not in FILE_BACKENDS[backend]:
                result.reason = f"{backend} cannot run {artifact.suffix} files"
                continue
            phase(f"{artifact.name}: {backend}")
            options: dict[str, Any] = {"device": device, "precision": backend_precision}
            if backend in ("onnxruntime", "openvino"):
                options["topk_outputs"] = True  # kept tokens even without token outputs
            try:
                runner = runner_for_artifact(opened, backend, **options)
                with runner:
                    info = runner.describe()
                    outputs = run_streamed(runner.run, source, run_batch, fixed=bool(fixed))
            except MissingDependency as exc:
                result.reason = str(exc)
                continue
            result.executes = str(info.get("executes", backend))
            result.precision = runner.precision
            result.fallback = runner.fallback
            result.notes.extend(runner.report_notes())
            # what the runner says about the CPU and its kernels is for the human report too; a FALLBACK
            # is printed on its own line from ``fallback``
            report.notes.extend(f"{artifact.name} on {backend} {runner.precision}: {n}" for n in runner.notes)
            test_kept = outputs.kept if pruned else None
            if not pruned:
                result.token_info = "dense model"
            elif test_kept is None:
                result.token_info = "none"
                report.notes.append(f"{artifact.name} on {backend}: no kept-token information "
                                    "(the artifact has no token outputs); logits checked only")
            else:
                declared = bool(opened.manifest.token_output_names)
                result.token_info = ("token outputs" if declared or backend == "torch"
                                     else "TopK outputs (in-memory copy)")
            for key in ("inference_precision", "amx_used", "vnni_used", "predictor_f32_ops", "gemm_precisions",
                        "gemm_kernels", "cpu_class", "cpu", "kernels", "executed_op_types", "session_config"):
                if key in info:  # reduced-precision backends say what actually executed
                    result.execution[key] = info[key]
            try:
                result.tolerance = Tolerance.for_precision(runner.precision)
            except KeyError:
                raise DvitError(f"no tolerance defined for precision '{runner.precision}'") from None
            result.comparison = compare(
                ref["logits"], outputs.logits, result.tolerance,
                ref_kept=ref["kept"] if test_kept is not None else None,
                test_kept=test_kept,
                ref_margins=ref["margins"],
            )
            result.status = "passed" if result.comparison.passed else "failed"
            report.notes.extend(f"{artifact.name} on {backend} {runner.precision}: {n}" for n in result.comparison.notes)
    return report

