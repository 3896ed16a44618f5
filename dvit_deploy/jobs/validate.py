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
from ..artifact.store import Artifact
from ..helpers.comparator import Comparator, Outputs, ParityReport, gather
from ..helpers.compare import Tolerance
from ..helpers.defaults import VALIDATE_BATCH, VALIDATE_SAMPLES
from ..helpers.errors import BadInput, DvitError, MissingDependency
from ..runtime import FILE_BACKENDS, default_backend, open_runnable, runner_for_artifact

DEFAULT_SAMPLES = VALIDATE_SAMPLES
DEFAULT_BATCH = VALIDATE_BATCH
VALIDATE_SEED = 20240607
SCHEMA = "dvit-deploy/validate/1"


@dataclass(frozen=True)
class ValidateOptions:
    """What ``dvit validate`` checks, and how (its flags).

    ``backends``: names, or ``name:precision`` (``openvino:bf16``); None: the one that runs each artifact.
    ``precision``: for plain backend names (None: the artifact's). ``images_dir``: real images instead of
    seeded inputs. ``keep_ratio``: run --dynamic-keep artifacts (a --keep-ladder engine: one of its rungs) at
    that ρ, the reference rebuilt at the same ρ (``Artifact.at_keep_ratio``)."""

    backends: tuple[str, ...] | None = None
    samples: int = DEFAULT_SAMPLES
    batch: int = DEFAULT_BATCH
    images_dir: Path | None = None
    device: str = "cpu"
    precision: str | None = None
    keep_ratio: float | None = None

    def check(self) -> "ValidateOptions":
        if self.samples < 1:
            raise BadInput(f"--samples must be ≥ 1, got {self.samples}")
        if self.batch < 1:
            raise BadInput(f"--batch must be ≥ 1, got {self.batch}")
        return self


@dataclass
class BackendResult(ParityReport):
    """One artifact on one backend against the PyTorch fp32 reference (``comparison`` None: skipped)."""

    artifact: str = ""
    backend: str = ""
    status: str = "skipped"  # "passed", "failed", "skipped"
    executes: str | None = None
    precision: str | None = None
    fallback: str | None = None  # the runner's Fallback, as its reason
    token_info: str = "none"  # "token outputs", "TopK outputs (in-memory copy)", "dense model", "none"
    reason: str | None = None  # why skipped

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
    """The default artifact (``runtime.open_runnable``'s rule: the one every command that runs one uses)."""
    return [open_runnable(None).path]


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


def _reference(model: ModelRecord, source: InputSource, batch: int, cache: dict[Any, Outputs],
               context: RunContext) -> Outputs:
    """PyTorch fp32 logits, kept ids and boundary margins of the artifact's model (cached per model)."""
    from ..export.check import reference_run
    from ..models.checkpoint import load_model_from_record

    model.require_variant("rebuild the PyTorch reference")
    key = model.identity  # one reference per model, shared by its exports (batch layouts, precisions)
    if key not in cache:
        loaded = load_model_from_record(model, context=context)
        cache[key] = gather(reference_run(loaded), source.batches, batch)
    return cache[key]


@dataclass
class _Pass:
    """One artifact's validation inputs and PyTorch reference, shared by every backend checked on it."""

    opened: Artifact
    source: InputSource
    reference: Outputs
    batch: int


def run(options: ValidateOptions, context: RunContext, artifacts: Sequence[Artifact], *,
        on_phase: Callable[[str], None] | None = None) -> ValidateReport:
    """Validate each opened artifact on each backend against the PyTorch fp32 reference."""
    options.check()
    phase = on_phase or (lambda name: None)
    report = ValidateReport(inputs="", samples=options.samples)
    cache: dict[Any, Outputs] = {}
    for opened in artifacts:
        opened = opened.in_context(context)  # the reference rebuilds in this run (its moved checkpoint)
        if options.keep_ratio is not None:
            opened = opened.at_keep_ratio(options.keep_ratio)
        artifact, model = opened.path, opened.model
        source = load_inputs(model, options.samples, options.images_dir)
        report.inputs = source.description
        if source.count < options.samples and options.images_dir is not None:
            report.warnings.append(f"validated {source.count} image(s), fewer than --samples {options.samples}: "
                                   f"{options.images_dir} holds only {source.count}")
        report.samples = source.count
        run_batch = model.batch if model.batch else min(options.batch, source.count)
        phase(f"{artifact.name}: PyTorch fp32 reference")
        checked = _Pass(opened, source, _reference(model, source, run_batch, cache, context), run_batch)
        for spec in options.backends or default_backends(artifact):
            backend, backend_precision = split_backend_spec(spec, options.precision)
            result = BackendResult(artifact=str(artifact), backend=backend, status="skipped")
            report.results.append(result)
            if backend not in FILE_BACKENDS:
                raise BadInput(f"unknown backend '{backend}'; known: {', '.join(FILE_BACKENDS)}")
            if artifact.suffix not in FILE_BACKENDS[backend]:
                result.reason = f"{backend} cannot run {artifact.suffix} files"
                continue
            phase(f"{artifact.name}: {backend}")
            _check_backend(checked, result, report, device=options.device, precision=backend_precision)
    return report


def _check_backend(checked: _Pass, result: BackendResult, report: ValidateReport, *, device: str,
                   precision: str | None) -> None:
    """Run ``result.backend`` over the inputs and compare it with the reference (skipped when its package
    is missing)."""
    opened, name, backend = checked.opened, checked.opened.path.name, result.backend
    try:
        # kept tokens even without token outputs (the in-memory TopK copy, where the backend has one)
        with runner_for_artifact(opened, backend, device=device, precision=precision, topk_outputs=True) as runner:
            described = runner.description()
            tested = gather(runner.run, checked.source.batches, checked.batch, fixed=bool(opened.model.batch))
    except MissingDependency as exc:
        result.reason = str(exc)
        return
    result.executes, result.precision = described.executes, runner.precision
    result.fallback = None if described.fallback is None else described.fallback.reason
    result.notes.extend(runner.report_notes())
    # what the runner says about the CPU and its kernels is for the human report too; a fallback is
    # printed on its own line from ``fallback``
    report.notes.extend(f"{name} on {backend} {runner.precision}: {n}" for n in runner.notes)
    if opened.model.dense:
        result.token_info, tested = "dense model", Outputs(tested.logits)
    elif tested.kept is None:
        result.token_info = "none"
        report.notes.append(f"{name} on {backend}: no kept-token information "
                            "(the artifact has no token outputs); logits checked only")
    else:
        declared = bool(opened.manifest.token_output_names)
        result.token_info = "token outputs" if declared or backend == "torch" else "TopK outputs (in-memory copy)"
    result.execution.update(described.execution)  # reduced-precision backends say what actually executed
    try:
        tolerance = Tolerance.for_precision(runner.precision)
    except KeyError:
        raise DvitError(f"no tolerance defined for precision '{runner.precision}'") from None
    comparison = result.record(Comparator(tolerance).compare(checked.reference, tested), tolerance)
    result.status = "passed" if comparison.passed else "failed"
    report.notes.extend(f"{name} on {backend} {runner.precision}: {n}" for n in comparison.notes)


def validate(artifact_paths: Sequence[str | Path] | None = None, *,
             on_phase: Callable[[str], None] | None = None, context: RunContext | None = None,
             **options: Any) -> ValidateReport:
    """``run`` for paths (each opened here, in ``context``; none: the default artifact) with ``ValidateOptions``'
    fields as keywords: the Python API's shortcut. Opened artifacts go to ``run``."""
    if "backends" in options and options["backends"] is not None:
        options["backends"] = tuple(options["backends"])
    context = context or RunContext()
    opened = [open_runnable(None if item is None else Path(item), context=context)
              for item in (list(artifact_paths) if artifact_paths else [None])]
    return run(ValidateOptions(**options), context, opened, on_phase=on_phase)


run_validate = run  # the ``run_<command>`` name the other commands' jobs use
