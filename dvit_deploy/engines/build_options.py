"""Every check of ``dvit build``'s options, in one place, each run as early as what it needs is known.

* the flags alone: ``precision_from_flags`` (the CLI's ``--fp16/--bf16/--tf32/--int8``) and ``BuildOptions``
  itself when made (``keep_ladder`` with ``keep_range``);
* against the ONNX, before the doctor runs: ``check_options`` (the graph's own precision, ``onnx_only``, Q/DQ
  nodes for int8, output and timing-cache paths, compute capabilities);
* against the installed TensorRT: ``check_against_tensorrt`` (``make_plan`` runs it once TensorRT is imported).

torch-free and onnx-free at import (the Q/DQ count loads onnx when it runs).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..artifact.manifest import ENGINE_SUFFIXES, OnnxManifest
from ..artifact.store import Artifact, typed_manifest
from ..helpers.defaults import (BUILD_HARDWARE_COMPAT, BUILD_PRECISION, DEFAULT_OPT_LEVEL, DEFAULT_WORKSPACE_MB)
from ..helpers.errors import BadInput
from ..helpers.fileio import manifest_path
from .targets import (BUILD_FLAVOURS, HARDWARE_COMPAT, HARDWARE_COMPAT_LEVELS, HARDWARE_COMPAT_SINCE, BuildFlavour,
                      PrecisionStrategy, build_flavour, compute_capability_list, parse_trt_version, precision_strategy)


@dataclass(frozen=True)
class BuildOptions:
    """What ``dvit build`` was asked for: every option of ``jobs.build.run`` and ``make_plan``, with its
    default written once (``defaults.py``). The CLI makes one from its flags. What the options alone decide
    is checked when made; ``check_options`` checks them against the ONNX, ``check_against_tensorrt`` against
    the installed TensorRT."""

    precision: str = BUILD_PRECISION  # fp32, tf32, fp16, bf16 or int8 (an explicitly quantized ONNX)
    output: str | Path | None = None  # the engine (or --onnx-only graph) path; None: ./engines/<name>
    target: str | None = None  # a doctor (parser) target, or "rtx" for a TensorRT-RTX engine
    force: bool = False
    onnx_only: bool = False  # with fp16: write and check the mixed-precision ONNX only
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    keep_range: tuple[float, float] | None = None  # the ρ range of a --dynamic-keep engine
    keep_ladder: tuple[float, ...] | None = None  # one profile per ρ, keep counts pinned (engines/ladder.py)
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    optimization_level: int = DEFAULT_OPT_LEVEL
    hardware_compat: str = BUILD_HARDWARE_COMPAT
    version_compatible: bool = False
    timing_cache: str | Path | None = None
    strongly_typed: bool = False
    int8_fp16: bool = False  # --int8 --fp16: INT8 with FP16 fallback (TensorRT 10, weakly typed)
    verbose: bool = False  # TensorRT's verbose log
    compute_capabilities: tuple[str, ...] | None = None  # TensorRT-RTX: GPUs the engine is compiled for

    def __post_init__(self) -> None:
        if self.compute_capabilities is not None and not isinstance(self.compute_capabilities, tuple):
            object.__setattr__(self, "compute_capabilities", tuple(self.compute_capabilities))  # a CLI list
        if self.keep_ladder is not None and not isinstance(self.keep_ladder, tuple):
            object.__setattr__(self, "keep_ladder", tuple(self.keep_ladder))
        if self.keep_ladder is not None and self.keep_range is not None:  # checked when made: options alone decide
            raise BadInput("--keep-ladder and --keep-range exclude each other: a ladder pins each ρ's keep counts in "
                           "a profile of its own, a range makes them a runtime shape in one profile; pass one")

    @property
    def flavour(self) -> BuildFlavour:
        """TensorRT-RTX when ``target`` is its parser target (``rtx``), else TensorRT."""
        return build_flavour(next((f.name for f in BUILD_FLAVOURS.values()
                                   if f.parser_target and f.parser_target == self.target), "tensorrt"))

    def with_changes(self, **changes: Any) -> "BuildOptions":
        return dataclasses.replace(self, **changes)


def precision_from_flags(*, fp16: bool = False, bf16: bool = False, tf32: bool = False,
                         int8: bool = False) -> tuple[str, bool]:
    """The precision the flags ask for, and whether it is INT8 with FP16 fallback (``--int8 --fp16``)."""
    if int8 and (bf16 or tf32):
        raise BadInput("--int8 combines with --fp16 only (FP16 fallback for the layers outside Q/DQ pairs)")
    if not int8 and sum((fp16, bf16, tf32)) > 1:
        raise BadInput("choose one of --fp16, --bf16, --tf32")
    precision = "int8" if int8 else "fp16" if fp16 else "bf16" if bf16 else "tf32" if tf32 else "fp32"
    return precision, bool(int8 and fp16)


def keep_range_flag(values: Sequence[float] | None, text: str | None) -> tuple[float, float] | None:
    """``--keep-range LOW,HIGH`` (``text``, parsed into ``values``): two ratios, or None when not given."""
    if values is not None and len(values) != 2:
        raise BadInput(f"--keep-range takes two ratios LOW,HIGH, got '{text}'")
    return None if values is None else (values[0], values[1])


def check_options(source: Artifact, options: BuildOptions) -> tuple[BuildOptions, bool]:
    """Every option check that needs no TensorRT, against ``source``, before the doctor runs; returns the
    options as resolved (precision, timing cache path) and whether ``source`` already is the fp16 graph.

    The checks that need the installed TensorRT's version (``--hardware-compat`` levels, the flavour's
    precision rules) are ``check_against_tensorrt``'s, run by ``make_plan`` once TensorRT is imported."""
    if source.path.suffix != ".onnx":
        raise BadInput(f"{source.path} is not an .onnx file")
    onnx_only, kind = options.onnx_only, options.flavour
    precision, already_fp16 = resolve_precision(onnx_record(source), options.precision)
    if onnx_only and already_fp16:
        raise BadInput(f"{source.path.name} already is the mixed-precision fp16 graph; build it without --onnx-only")
    if onnx_only and precision != "fp16":
        raise BadInput("--onnx-only writes the mixed-precision graph TensorRT 11 builds from: use it with --fp16")
    if precision == "int8":
        require_qdq(source.path)
    check_output(options.output, source.path, onnx_only=onnx_only)
    timing_cache = options.timing_cache
    if timing_cache is not None and not onnx_only:
        if kind.timing_cache_refusal:
            raise BadInput(f"--timing-cache: {kind.timing_cache_refusal}")
        timing_cache = check_timing_cache(timing_cache)
    compute_capability_list(kind, options.compute_capabilities)  # a bad value is refused before any work
    check_values(options)
    from .build_plan import DEFAULT_IMAGE_INPUT, batch_range

    images = (onnx_record(source).inputs or (DEFAULT_IMAGE_INPUT,))[0]
    batch_range(options.min_batch, options.opt_batch, options.max_batch, images.shape)
    return options.with_changes(precision=precision, timing_cache=timing_cache), already_fp16


def check_values(options: BuildOptions) -> None:
    """The range checks of the numeric and named options, the same for every TensorRT version."""
    if options.hardware_compat not in HARDWARE_COMPAT:
        raise BadInput(f"--hardware-compat must be one of {', '.join(HARDWARE_COMPAT)}, got '{options.hardware_compat}'")
    if not 0 <= options.optimization_level <= 5:
        raise BadInput(f"--opt-level must be between 0 and 5, got {options.optimization_level}")
    if options.workspace_mb < 1:
        raise BadInput(f"--workspace must be at least 1 MB, got {options.workspace_mb}")


def check_against_tensorrt(options: BuildOptions, trt_version: str) -> tuple[tuple[str, ...], PrecisionStrategy]:
    """The checks that need the installed TensorRT's version (``make_plan`` runs them once TensorRT is imported):
    the flavour's rules, hardware-compatibility levels, optimization level and workspace. Returns the checked
    compute capabilities and how the precision is obtained."""
    kind = options.flavour
    precision, timing_cache = options.precision, options.timing_cache
    hardware_compat, version_compatible = options.hardware_compat, options.version_compatible
    version = parse_trt_version(trt_version)
    major = version[0]
    ccs = compute_capability_list(kind, options.compute_capabilities)  # refuses what no build may target (Turing)
    if kind.timing_cache_refusal and timing_cache is not None:
        raise BadInput(f"--timing-cache: {kind.timing_cache_refusal}")
    if not kind.hardware_compat and (hardware_compat != "none" or version_compatible):
        raise BadInput(f"--hardware-compat/--version-compatible do not apply to {kind.product}: its engines are "
                       "portable across the GPUs of --compute-capability (default: "
                       f"{', '.join(kind.default_compute_capabilities)})")
    if kind.always_strongly_typed and precision == "bf16":
        raise BadInput(f"{kind.product} is strongly typed: bf16 needs a bf16 graph, and dvit converts graphs to "
                       "fp16 only; build --fp16 (the mixed-precision graph) or fp32")
    if kind.always_strongly_typed and options.int8_fp16:
        raise BadInput(f"--int8 --fp16 (INT8 with FP16 fallback) is a TensorRT 10 weakly typed build; {kind.product} "
                       "is strongly typed and takes every layer's precision from the Q/DQ graph: build --int8 alone")
    strategy = precision_strategy(precision, kind.precision_major(major), strongly_typed=options.strongly_typed,
                                  fp16_fallback=options.int8_fp16)
    check_values(options)
    since = HARDWARE_COMPAT_SINCE[hardware_compat]
    if kind.hardware_compat and version[:2] < since:
        raise BadInput(f"--hardware-compat {hardware_compat} needs TensorRT >= {since[0]}.{since[1]} "
                       f"(HardwareCompatibilityLevel.{HARDWARE_COMPAT_LEVELS[hardware_compat]} was added in "
                       f"{since[0]}.{since[1]}); this machine has TensorRT {trt_version}: use ampere+ (any GPU "
                       "with sm >= 8.0) or none")
    return ccs, strategy


def onnx_record(source: OnnxManifest | Artifact) -> OnnxManifest:
    """The typed ONNX manifest of an opened ONNX (or the manifest itself)."""
    return typed_manifest(source, OnnxManifest)


def resolve_precision(source: OnnxManifest | Artifact, precision: str) -> tuple[str, bool]:
    """The precision to build, and whether the ONNX already is the mixed-precision fp16 graph.

    A ``*-fp16mixed.onnx`` (manifest precision fp16) is built as fp16 as it is: recording it as
    fp32, or converting it a second time, would both be wrong.
    """
    recorded = onnx_record(source).precision
    if recorded == "int8":
        if precision not in ("fp32", "int8"):
            raise BadInput(f"the ONNX is explicitly quantized (int8 Q/DQ); it builds as int8, not {precision}")
        return "int8", False
    if recorded != "fp16":
        return precision, False
    if precision not in ("fp32", "fp16"):
        raise BadInput(f"the ONNX is already an fp16 mixed-precision graph; it builds as fp16, not {precision}")
    return "fp16", True


def check_timing_cache(path: str | Path) -> Path:
    """Refuse an unusable --timing-cache before building: it is only written after the engine."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise BadInput(f"--timing-cache {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise BadInput(f"--timing-cache {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise BadInput(f"--timing-cache {path}: folder {path.parent} is not writable")
    return path


def qdq_node_count(onnx_path: Path) -> int:
    """QuantizeLinear/DequantizeLinear nodes in the graph (weights not loaded)."""
    import onnx

    from .doctor import QDQ_OPS

    model = onnx.load(str(onnx_path), load_external_data=False)
    return sum(1 for node in model.graph.node if node.op_type in QDQ_OPS)


def require_qdq(onnx_path: Path) -> None:
    """``--int8`` builds an explicitly quantized graph; there is no implicit calibration (gone in TensorRT 11)."""
    if not qdq_node_count(onnx_path):
        raise BadInput(f"--int8 needs an explicitly quantized ONNX (QuantizeLinear/DequantizeLinear nodes); "
                       f"{onnx_path.name} has none. Quantize it first (dvit quantize) and build the -int8.onnx; "
                       "TensorRT calibration is not used (TensorRT 11 removed it)")


def check_output(output: Path | None, source: Path, *, onnx_only: bool) -> None:
    """Refuse, before any work, an output that is not of the kind build writes or that would replace its source
    (the ONNX itself, or its manifest) -- ``--force`` included: it replaces earlier outputs, never the input."""
    if output is None:
        return
    output = Path(output).expanduser()
    if same_file(output, source) or same_file(manifest_path(output), manifest_path(source)):
        raise BadInput(f"--output {output} would replace the ONNX it is built from ({source}) or its manifest; "
                       "choose another output name")
    kinds = (".onnx",) if onnx_only else ENGINE_SUFFIXES
    if output.suffix.lower() not in kinds:
        what = "the mixed-precision ONNX (--onnx-only)" if onnx_only else "an engine"
        raise BadInput(f"--output {output}: dvit build writes {what}; give a {' or '.join(kinds)} file name")


def same_file(a: Path, b: Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


__all__ = ("BuildOptions", "check_against_tensorrt", "check_options", "check_output", "check_timing_cache",
           "keep_range_flag", "onnx_record", "precision_from_flags", "qdq_node_count", "require_qdq", "resolve_precision", "same_file")
