"""INT8 explicit quantization (Q/DQ) of a dvit ONNX export with ONNX Runtime's ``quantize_static``.

The recipe is the one TensorRT's explicit quantization consumes and ONNX Runtime / OpenVINO run
with int8 kernels: QDQ format, int8 weights quantized symmetrically per output channel, int8
activations quantized symmetrically per tensor (zero points 0), on the inputs of MatMul, Gemm and
Conv only. Everything that decides which tokens survive stays in float by default: each stage's
predictor subgraph (found structurally, as ``export.graph.pruning_nodes`` does), TopK, Softmax and
LayerNormalization. The output passes the same checks as an export (onnx.checker, one TopK per
stage with the constant K, its indices feeding one Gather), and ONNX Runtime vs PyTorch fp32 is
judged by agreement (``compare.TOLERANCES['int8']``): top-1 on confidently classified inputs and
per-stage kept-set Jaccard.

Written like every artifact: into a temporary folder beside the destination, checked, then
renamed into place with its manifest; an existing output needs ``force``.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from ...artifact.context import RunContext
    from ...artifact.store import Artifact, ArtifactFilter

from ...artifact.manifest import DerivedFrom, OnnxManifest, QuantizationRecord, TensorRecord
from ...helpers.defaults import (QUANTIZE_CALIB_BATCH, QUANTIZE_CALIB_SAMPLES, QUANTIZE_METHOD,
                        QUANTIZE_PERCENTILE)
from ...helpers.errors import BadInput, CheckFailed, DvitError
from ...helpers.fileio import manifest_path, prepare_output, publish_artifact, sha256_file
from .calibration import CalibrationSource, data_reader
from .int8_check import DEFAULT_CHECK_SAMPLES, EXCLUDED_OP_TYPES, QuantizeCheck, _keep_feed, check_quantized
from .recipe import DEFAULT_TARGET, RecipeChoice, check_session_config, failure_line, select_recipe

QUANTIZED_OP_TYPES = ("MatMul", "Gemm", "Conv")
METHODS = ("entropy", "percentile", "minmax")
DEFAULT_METHOD = QUANTIZE_METHOD
DEFAULT_PERCENTILE = QUANTIZE_PERCENTILE
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 512, 128
DEFAULT_CALIB_SAMPLES = QUANTIZE_CALIB_SAMPLES
DEFAULT_CALIB_BATCH = QUANTIZE_CALIB_BATCH


@dataclass(frozen=True)
class QuantizeOptions:
    """How ``run_quantize`` quantizes and checks: calibration, what stays float, the recipe, the output.

    Checked when made (a bad value is refused with the CLI flag's name), so the CLI builds it once
    and every step reads it. ``recipe``: None or "auto" picks the one for ``target`` on this CPU's
    class (``quantize.recipe``); a RecipeChoice is one already chosen (e.g. by the CLI that printed it).
    ``output``: None is ``<name>-int8.onnx`` beside the source; an existing one needs ``force``.
    """

    calib_dir: Path | None = None  # a folder of images; None: seeded generated scenes
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    calib_batch: int = DEFAULT_CALIB_BATCH
    method: str = DEFAULT_METHOD
    percentile: float = DEFAULT_PERCENTILE
    include_predictor: bool = False  # also quantize the score predictors
    exclude_op_types: tuple[str, ...] = EXCLUDED_OP_TYPES  # op types kept in float
    check_samples: int = DEFAULT_CHECK_SAMPLES
    target: str = DEFAULT_TARGET
    recipe: str | RecipeChoice | None = None
    output: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        # Normalised here so that a frozen options object compares and prints the same however made.
        object.__setattr__(self, "exclude_op_types", tuple(self.exclude_op_types))
        for name in ("calib_dir", "output"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.method not in METHODS:
            raise BadInput(f"--method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if not 0.0 < self.percentile <= 100.0:
            raise BadInput(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.calib_batch < 1:
            raise BadInput(f"--calib-batch must be ≥ 1, got {self.calib_batch}")
        if self.check_samples < 1:
            raise BadInput(f"--check-samples must be ≥ 1, got {self.check_samples}")
        unknown = sorted(set(self.exclude_op_types) - set(EXCLUDED_OP_TYPES) - set(QUANTIZED_OP_TYPES))
        if unknown:
            raise BadInput(f"cannot keep op types {', '.join(unknown)} in float: --keep-float takes "
                           f"{', '.join(EXCLUDED_OP_TYPES + QUANTIZED_OP_TYPES)}")
        if set(QUANTIZED_OP_TYPES) <= set(self.exclude_op_types):
            raise BadInput(f"--keep-float {','.join(QUANTIZED_OP_TYPES)} keeps every op that computes in int8 in float: "
                           "the file would be no int8 model; keep the fp32 export or build fp16")

    def choice(self) -> RecipeChoice:
        """The recipe these options ask for (chosen now unless already chosen)."""
        if isinstance(self.recipe, RecipeChoice):
            return self.recipe
        return select_recipe(self.target, override=self.recipe)


@dataclass(frozen=True)
class KeptFloat:
    """The nodes left in float, and why (``excluded_nodes``); the manifest records it as ``excluded``."""

    op_types: tuple[str, ...]
    predictor_subgraph: bool  # the score predictors stay float
    predictor_nodes_per_stage: tuple[int, ...]
    depthwise_convs: int
    nodes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"op_types": list(self.op_types), "predictor_subgraph": self.predictor_subgraph,
                "predictor_nodes_per_stage": list(self.predictor_nodes_per_stage), "nodes": list(self.nodes)}


@dataclass
class QuantizeResult:
    path: Path
    manifest_path: Path
    manifest: "OnnxManifest"  # as written beside ``path``
    check: QuantizeCheck
    source: Path
    seconds: dict[str, float] = field(default_factory=dict)
    choice: RecipeChoice | None = None  # the recipe the graph was quantized with
    kept_float: KeptFloat | None = None

    @property
    def size_ratio(self) -> float:
        derived = self.manifest.derived_from
        source_bytes = derived.bytes if derived is not None else None
        return (self.manifest.bytes or 0) / max(1, source_bytes or 0)


def fp32_exports() -> "ArtifactFilter":
    """Quantize's filter on the one default-artifact rule: it starts from an fp32 ONNX in ./export only
    (not an fp16 or int8 graph, nor anything in ./engines), so among those the newest pruned one wins,
    else the newest one (the rule's dense fallback)."""
    from ...artifact.store import ArtifactFilter, export_dir

    folder = export_dir()
    return ArtifactFilter(
        accept=lambda path, manifest: path.parent == folder and manifest.precision == "fp32",
        what="fp32 ONNX export",
        refusal=f"no fp32 ONNX export with a manifest in {folder}; run 'dvit export' first or pass a path")


def default_source(context: "RunContext | None" = None) -> Path:
    """The newest fp32 pruned export in ./export (else the newest fp32 one); manifests read in ``context``."""
    from ...artifact.store import default_artifact

    return default_artifact((".onnx",), only=fp32_exports(), context=context)[0]


def default_output(source: Path) -> Path:
    return source.with_name(f"{source.stem}-int8.onnx")


def excluded_nodes(model, *, include_predictor: bool = False,
                   op_types: Sequence[str] = EXCLUDED_OP_TYPES) -> KeptFloat:
    """The nodes left in float, and why (per stage predictor nodes, op types, depthwise convs)."""
    from ...export.graph import pruning_nodes

    names: list[str] = []
    per_stage: list[int] = []
    if not include_predictor:
        for nodes in pruning_nodes(model):
            per_stage.append(len(nodes))
            names.extend(sorted(nodes))
    names.extend(n.name for n in model.graph.node if n.op_type in op_types)
    # ConvNeXt's depthwise 7x7 convs read the residual stream itself, which the predictors read too:
    # a Q/DQ on their input would round both (ORT rewires every consumer to the DequantizeLinear).
    # They are ~2% of the MACs, so they stay float and so do the stream and the predictors' inputs.
    depthwise = [n.name for n in model.graph.node if n.op_type == "Conv" and _group(n) > 1]
    names.extend(depthwise)
    return KeptFloat(op_types=tuple(op_types), predictor_subgraph=not include_predictor,
                     predictor_nodes_per_stage=tuple(per_stage), depthwise_convs=len(depthwise),
                     nodes=tuple(dict.fromkeys(n for n in names if n)))


def _group(node) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def quantize_onnx(source: "Artifact", output: str | Path | None = None,
                  options: QuantizeOptions = QuantizeOptions(), *, force: bool = False,
                  on_phase: Callable[[str], None] | None = None,
                  on_calib: Callable[[int, int], None] | None = None) -> QuantizeResult:
    """``run_quantize`` with ``output`` and ``force`` given beside the options (a fresh ``RunContext``)."""
    import dataclasses

    from ...artifact.context import RunContext

    if output is not None or force:
        options = dataclasses.replace(options, output=Path(output) if output is not None else options.output,
                                      force=force or options.force)
    return run_quantize(options, RunContext(), source, on_phase=on_phase, on_calib=on_calib)


def run_quantize(options: QuantizeOptions, context: "RunContext", source: "Artifact", *,
                 on_phase: Callable[[str], None] | None = None,
                 on_calib: Callable[[int, int], None] | None = None) -> QuantizeResult:
    """Quantize an opened fp32 dvit ONNX to INT8 Q/DQ, check it, write it with its manifest: ``dvit quantize``.

    ``source`` is opened by the caller (``open_artifact``, with quantize's default rule
    ``fp32_exports``: manifest and sha256 checked once). ``options.output`` defaults to ``<name>-int8.onnx``
    beside it; an existing one needs ``options.force``. ``on_calib(done, total)`` reports calibration
    progress (images). Raises ``CheckFailed`` (nothing written) when the quantized graph fails the
    structure check or disagrees with PyTorch beyond the int8 agreement thresholds.
    """
    from ...helpers.lazy import require

    phase = on_phase or (lambda name: None)
    source = source.in_context(context)  # its digest and the torch reference: this run's
    choice = options.choice()
    ort = require("onnxruntime", "gpu", "dvit quantize")
    typed = _fp32_source(source)
    phase("sha256 of the fp32 ONNX")
    from ...artifact.verify import cached_sha256

    source_sha = cached_sha256(source.path, source.context)  # hashed once per run: opening it already read it
    output = _destination(source.path, options.output, options.force)

    import onnx

    from ..data import data_config_of

    calib = CalibrationSource(data_config_of(typed.model), options.calib_samples, folder=options.calib_dir)
    model = onnx.load(str(source.path))
    input_name = next(i.name for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer})
    kept_float = excluded_nodes(model, include_predictor=options.include_predictor, op_types=options.exclude_op_types)
    del model
    seconds: dict[str, float] = {}

    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output.stem}.", dir=output.parent))
    try:
        tmp_onnx = tmp_dir / output.name
        phase(f"calibrate ({options.method}, {calib.samples} {calib.describe()['source']})")
        reader = _calibration_reader(calib, input_name, options.calib_batch, _keep_feed(typed.model), on_calib)
        start = time.perf_counter()
        _run_quantizer(source.path, tmp_onnx, reader, options, choice, kept_float)
        seconds["quantize"] = time.perf_counter() - start
        for stray in tmp_dir.iterdir():  # the calibrator's augmented model and similar leftovers
            if stray != tmp_onnx:
                shutil.rmtree(stray, ignore_errors=True) if stray.is_dir() else stray.unlink(missing_ok=True)
        _stamp(tmp_onnx, choice)

        start = time.perf_counter()
        check = check_quantized(tmp_onnx, typed, samples=options.check_samples, excluded=kept_float.nodes,
                                on_phase=phase, session_config=check_session_config(choice), context=source.context)
        seconds["check"] = time.perf_counter() - start
        if not check.passed:
            raise CheckFailed(failure_line(choice, check), check)

        phase("write")
        derived = DerivedFrom.of(source.path, output, sha256=source_sha)  # the one shape every writer uses
        quantization = _quantization_record(ort.__version__, tmp_onnx, options, choice, calib, kept_float, check,
                                            derived)
        written = _manifest(typed, output, tmp_onnx, check, quantization, derived).to_json()
        publish_artifact([(tmp_onnx, output)], output, written)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    # The result's manifest is the file's, read back (so that it is exactly what a reader of it gets).
    return QuantizeResult(output, manifest_path(output), OnnxManifest.from_json(written), check, source.path, seconds,
                          choice, kept_float)


def _fp32_source(source: "Artifact") -> "OnnxManifest":
    """The source's typed manifest, refused unless it is a self-contained fp32 ONNX."""
    typed = source.onnx
    if source.path.suffix != ".onnx" or typed is None:
        raise BadInput(f"{source.name} is not an .onnx file")
    if typed.precision != "fp32":
        raise BadInput(f"{source.name} is a {typed.precision} graph; quantize the fp32 export it came from")
    if typed.external_data:
        raise BadInput(f"{source.name} keeps its weights in external data files; int8 quantization here supports "
                       "self-contained graphs (< 2 GB)")
    return typed


def _destination(source: Path, output: str | Path | None, force: bool) -> Path:
    """Where the int8 graph goes (default: ``<name>-int8.onnx`` beside the source), checked writable."""
    output = Path(output) if output is not None else default_output(source)
    if output.suffix != ".onnx":
        raise BadInput(f"output {output} must end in .onnx")
    if output.resolve() == source.resolve():
        raise BadInput("the output would overwrite the fp32 ONNX it is made from; choose another path")
    return prepare_output(output, force=force, kinds=(".onnx",))


def _calibration_reader(calib: CalibrationSource, input_name: str, batch: int, extra_feed: dict[str, Any],
                        on_calib: Callable[[int, int], None] | None):
    """quantize_static's data reader over ``calib``, reporting progress through ``on_calib``."""
    done = [0]
    real_streams = (sys.stdout, sys.stderr)  # progress must reach the user, not the quantizer's sink

    def on_batch(n: int) -> None:
        done[0] += n
        if on_calib is not None:
            with _streams(*real_streams):
                on_calib(done[0], calib.samples)

    if on_calib is not None:
        on_calib(0, calib.samples)
    return data_reader(calib, input_name, batch, extra_feed, on_batch)


def _ort_extra_options(options: QuantizeOptions) -> dict[str, Any]:
    """quantize_static's extra options for the recipe (symmetric int8, Q/DQ on the GEMMs' inputs only)."""
    extra_options: dict[str, Any] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        # Q/DQ only on the inputs of the GEMMs: biases stay float (what TensorRT fuses) and no
        # GEMM output is rounded before Softmax, LayerNorm or the residual adds.
        "QuantizeBias": False,
        "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OP_TYPES),
    }
    if options.method == "percentile":
        extra_options["CalibPercentile"] = options.percentile
    if options.method in ("entropy", "percentile"):
        extra_options["CalibTensorRangeSymmetric"] = True
    # Entropy: ORT's defaults (128 bins, 128 quantized bins) leave the KL search a single candidate, the
    # full range, i.e. min-max; _entropy_ranges searches thresholds over a finer histogram instead.
    return extra_options


def _run_quantizer(source: Path, tmp_onnx: Path, reader, options: QuantizeOptions, choice: RecipeChoice,
                   kept_float: KeptFloat) -> None:
    """Calibrate and quantize ``source`` into ``tmp_onnx`` with ORT's quantize_static, its output silenced."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibrate_method = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                        "minmax": CalibrationMethod.MinMax}[options.method]
    sink = io.StringIO()
    cache_path = None
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _quiet_logging():
            if options.method == "entropy":
                # quantize_static does not pass histogram sizes on to its calibrator: calibrate here and
                # hand the ranges over through its calibration cache.
                cache_path = _entropy_ranges(source, tmp_onnx.parent, reader)
                if cache_path is not None:
                    reader = None
            quantize_static(
                str(source), str(tmp_onnx), reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                per_channel=True,
                reduce_range=choice.recipe.reduce_range,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(kept_float.nodes),
                calibrate_method=calibrate_method,
                calibration_providers=["CPUExecutionProvider"],
                extra_options=_ort_extra_options(options),
                **({"calibration_cache_path": str(cache_path)} if cache_path is not None else {}),
            )
    except DvitError:
        raise
    except Exception as exc:  # ORT's quantizer raises many types
        raise DvitError(f"quantize_static failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc


def _quantization_record(tool_version: str, tmp_onnx: Path, options: QuantizeOptions, choice: RecipeChoice,
                         calib: CalibrationSource, kept_float: KeptFloat, check: QuantizeCheck,
                         derived: DerivedFrom) -> QuantizationRecord:
    """The manifest's ``quantization`` section: tool, recipe, calibration, what stayed float, Q/DQ counts."""
    method = options.method
    return QuantizationRecord.from_json({
        "tool": "onnxruntime.quantization.quantize_static",
        "tool_version": tool_version,
        "format": "QDQ",
        "opset": _opset(tmp_onnx),
        "op_types_quantized": list(QUANTIZED_OP_TYPES),
        "weights": {"dtype": "int8", "scheme": "symmetric", "granularity": "per-channel",
                    "axis": {"MatMul": 1, "Gemm": 0, "Conv": 0}, "zero_point": 0,
                    "range": list(choice.recipe.weight_range)},
        "activations": {"dtype": "int8", "scheme": "symmetric", "granularity": "per-tensor", "zero_point": 0},
        "per_channel": True,
        "reduce_range": choice.recipe.reduce_range,
        "recipe": choice.to_dict(),
        "cpu": choice.cpu.to_dict(),
        "calibration": {**calib.describe(), "method": method,
                        "percentile": options.percentile if method == "percentile" else None,
                        "histogram_bins": [ENTROPY_BINS, ENTROPY_QUANTIZED_BINS] if method == "entropy" else None,
                        "batch": options.calib_batch},
        "excluded": kept_float.to_json(),
        "qdq": check.qdq,
        "derived_from": derived.to_json(),
    })


def _entropy_ranges(source: Path, tmp_dir: Path, reader) -> Path | None:
    """KL-divergence ranges over an ENTROPY_BINS histogram, saved as quantize_static's calibration cache.

    None when this onnxruntime has no calibration cache (quantize_static then calibrates itself).
    """
    from onnxruntime.quantization import calibrate

    if not hasattr(calibrate, "save_tensors_data"):
        return None
    calibrator = calibrate.create_calibrator(
        source, list(QUANTIZED_OP_TYPES), augmented_model_path=str(tmp_dir / "augmented.onnx"),
        calibrate_method=calibrate.CalibrationMethod.Entropy, providers=["CPUExecutionProvider"],
        extra_options={"symmetric": True, "num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS})
    calibrator.collect_data(reader)
    ranges = calibrator.compute_data()
    del calibrator
    path = tmp_dir / "calibration-cache.json"
    calibrate.save_tensors_data(ranges, path)
    return path


@contextlib.contextmanager
def _streams(stdout, stderr):
    """sys.stdout/stderr put back for a moment inside ``redirect_stdout``/``redirect_stderr``."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def _quiet_logging():
    """ORT's quantizer logs through the root logger; keep the CLI's stderr ours."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _stamp(path: Path, choice: RecipeChoice) -> None:
    """Keep the fp32 graph's dvit metadata and say what this one is."""
    import onnx

    from ...export.graph import set_dvit_metadata

    model = onnx.load(str(path))
    entries = {e.key: e.value for e in model.metadata_props}
    entries["dvit.precision"] = "int8"
    lo, hi = choice.recipe.weight_range
    entries["dvit.quantization"] = (f"QDQ int8, symmetric per-channel weights in [{lo}, {hi}], symmetric activations "
                                    f"(recipe {choice.recipe.name} for {choice.target})")
    set_dvit_metadata(model, entries)
    onnx.save(model, str(path))


def _manifest(source: "OnnxManifest", output: Path, tmp_onnx: Path, check: QuantizeCheck,
              quantization: QuantizationRecord, derived: DerivedFrom) -> "OnnxManifest":
    """The int8 graph's manifest: the source's (same model, preprocessing) with this file's I/O, digest,
    check and quantization, derived from the source once."""
    import onnx

    from ...export.graph import io_description
    from ...export.onnx_export import versions

    model = onnx.load(str(tmp_onnx), load_external_data=False)
    io_record = io_description(model)
    # Sections dvit does not type pass through from the source; this file's own replace them. Its
    # ``onnx`` record is its own too (self-contained: no data files), not the source's.
    raw = {**source.raw, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "onnx": {"external_data_sha256": {}}, "check": check.to_dict(), "versions": versions()}
    return source.with_changes(
        artifact=output.name,
        precision="int8",
        opset=quantization.opset or source.opset,
        inputs=TensorRecord.all_from(io_record["inputs"]),
        outputs=TensorRecord.all_from(io_record["outputs"]),
        sha256=sha256_file(tmp_onnx),
        bytes=tmp_onnx.stat().st_size,
        external_data=(),
        external_data_sha256={},
        quantization=quantization,
        derived_from=derived,
        raw=raw,
    )
