"""`dvit build` as a library call: option checks, doctor, (fp16 graph), plan, TensorRT build, manifest.

``run(BuildOptions(...), RunContext(), open_onnx(path))`` does what the command does. The engine-specific steps
stay in ``engines/`` (``build_options`` for every option check, ``build`` for the fp16 graph and the staged
engine files, ``build_plan`` for the plan and manifest, ``trt_build`` for the TensorRT calls); this module only
orders them.

Order matters for users without TensorRT: the readiness report runs first, so a machine without a GPU still
learns whether the graph will parse before being told what to install. Option mistakes come before both.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..artifact.context import RunContext
from ..artifact.store import Artifact, ArtifactFilter, engines_dir, open_artifact
from ..artifact.verify import cached_sha256
from ..engines.build_options import BuildOptions, check_options, keep_range_flag, precision_from_flags
from ..helpers.errors import BadInput, CheckFailed
from ..helpers.fileio import manifest_path, prepare_output, sha256_file, temp_prefix, write_bytes_atomic, write_json_atomic
from ..helpers.lazy import available

if TYPE_CHECKING:
    from ..artifact.manifest import EngineManifest, OnnxManifest
    from ..engines.doctor import DoctorReport

__all__ = ("BuildOptions", "BuildResult", "check_options", "default_sources", "keep_range_flag", "open_onnx", "precision_from_flags", "run",
           "run_build")


@dataclass
class BuildResult:
    engine_path: Path | None
    manifest_path: Path | None
    manifest: "EngineManifest | OnnxManifest"  # as written: the engine's, or the fp16 graph's (--onnx-only)
    doctor: "DoctorReport"
    fp16_onnx: Path | None = None
    fp16: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # post-build problems that did not cost the engine

    @property
    def artifact(self) -> Artifact:
        """What was written, as an opened artifact (the engine, or the fp16 graph of --onnx-only)."""
        path = self.engine_path if self.engine_path is not None else self.fp16_onnx
        return Artifact(path, self.manifest, False)

    def to_json(self) -> dict[str, Any]:
        """``dvit build --json``."""
        return {"passed": True, "engine": None if self.engine_path is None else str(self.engine_path),
                "fp16_onnx": None if self.fp16_onnx is None else str(self.fp16_onnx),
                "seconds": self.seconds, "doctor": self.doctor.to_dict(), "manifest": self.manifest.to_json(),
                "warnings": self.warnings}

    def summary_rows(self) -> list[tuple[str, str]]:
        """The engine's summary (``dvit build``'s table): product, GPUs, precision, profiles, build time."""
        engine = self.manifest
        gpu_row = (("GPUs", f"sm {', '.join(engine.rtx_compute_capabilities)} ({engine.rtx_source}); built without a GPU")
                   if engine.is_rtx else ("GPU", f"{engine.gpu} (sm {engine.compute_capability})"))
        return [(engine.product, (engine.tensorrt or "?") + (" (strongly typed)" if engine.strongly_typed else "")),
                gpu_row,
                ("precision", engine.precision),
                ("profiles", "; ".join(f"{p.name} {p.min}..{p.max} (opt {p.opt})" for p in engine.profiles
                                       if p.profile == 0 and not (engine.ladder and p.kind == "values"))),
                *([("keep ladder", f"{len(engine.ladder)} profiles, keep_counts pinned: " + "; ".join(
                    f"ρ {r.keep_ratio:g} → {list(r.counts)}" for r in engine.ladder))] if engine.ladder else []),
                ("build time", f"{self.seconds.get('build', 0):.1f} s")]

    def fp16_summary(self) -> str:
        """The fp16 graph's conversion and its parity with the fp32 graph, in one line (``dvit build``)."""
        parity = self.fp16["parity_vs_fp32_onnx"]
        flips = ", ".join(f"stage {s['stage']}: {s['exact_match']:.0%} identical" for s in parity["stages"])
        return (f"fp16 graph: {self.fp16['fp16_nodes']} fp16 nodes, {self.fp16['casts_inserted']} casts; "
                f"vs fp32 ONNX max |Δlogit| {parity['logits']['max_abs']:.2e}, kept tokens {flips or 'n/a'}")

    def engine_notes(self) -> list[str]:
        """Where the engine runs (``dvit build``'s notes under its table)."""
        engine = self.manifest
        if engine.is_rtx:
            return [f"a TensorRT-RTX engine JIT-compiles on its first run on an RTX GPU (sm {engine.rtx_covers}) "
                    f"and keeps {engine.runtime_cache} beside it; it needs TensorRT-RTX {engine.tensorrt} there",
                    "this build proves NVIDIA's parser and builder accept the graph and profiles, not numerics or speed"]
        return [f"engines are tied to this GPU and TensorRT {engine.tensorrt}; "
                "other machines rebuild (or use --hardware-compat / --version-compatible)"]


def open_onnx(onnx_path: str | Path | None, context: RunContext | None = None) -> Artifact:
    """The ONNX to build (given, or ``open_artifact``'s default among .onnx files), opened once in ``context``."""
    path = Path(onnx_path) if onnx_path is not None else None
    if path is not None and path.suffix != ".onnx":  # refused before the manifest is read, as always
        raise BadInput(f"{path} is not an .onnx file")
    opened = open_artifact(path, (".onnx",), context=context)
    if opened.path.suffix != ".onnx":
        raise BadInput(f"{opened.path} is not an .onnx file")
    return opened


def run_build(source: Artifact, options: BuildOptions = BuildOptions(), *,
              on_phase: Callable[[str], None] | None = None) -> BuildResult:
    """``run`` with a fresh ``RunContext`` (the Python API before the context existed)."""
    return run(options, RunContext(), source, on_phase=on_phase)


def default_sources(precision: str) -> ArtifactFilter | None:
    """Build's filter on the default-artifact rule: an ``--int8`` build starts from a quantized (Q/DQ) export,
    an fp16 one from a float export (fp32, or the fp16 mixed-precision graph), bf16/tf32 from an fp32 one (an
    int8 graph only builds as int8, the fp16 graph only as fp16); a plain build takes any."""
    if precision == "fp32":
        return None
    if precision == "int8":
        return ArtifactFilter(accept=lambda path, manifest: manifest.precision == "int8",
                              what="int8 (Q/DQ) ONNX", refusal="no int8 (Q/DQ) ONNX with a manifest in ./export or "
                              "./engines; run 'dvit quantize' first or pass a path")
    if precision == "fp16":  # the fp32 export, or the mixed-precision fp16 graph as it is
        return ArtifactFilter(accept=lambda path, manifest: manifest.precision != "int8", what="float ONNX")
    return ArtifactFilter(accept=lambda path, manifest: manifest.precision == "fp32", what="fp32 ONNX")


def run(options: BuildOptions, context: RunContext, source: Artifact, *,
        on_phase: Callable[[str], None] | None = None) -> BuildResult:
    """Check the options, run the doctor, then write the fp16 graph (``--onnx-only``) or build the engine.

    ``source``: the opened ONNX (``open_onnx``); nothing here opens another artifact, so ``context`` is only
    handed on. ``options.target``: a doctor (parser) target, or ``rtx`` for a
    TensorRT-RTX engine (any machine, no GPU). Raises ``BadInput``, ``CheckFailed`` (doctor blockers, fp16
    parity) or ``MissingDependency`` (no TensorRT); nothing is left behind by a failed build.
    """
    phase = on_phase or (lambda name: None)
    options, already_fp16 = check_options(source, options)
    from ..engines.doctor import diagnose
    from ..engines import build as steps
    from ..engines.trt_build import import_tensorrt

    kind = options.flavour
    trt_version = None
    if kind.name == "tensorrt" and available("tensorrt") and not options.onnx_only:
        trt_version = str(import_tensorrt().__version__)

    phase("readiness check (dvit doctor)")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    # The builder runs NVIDIA's parser itself (its errors name their nodes), so doctor stays static here.
    report = diagnose(source.path, kind.parser_target or steps.doctor_target_for(trt_version, options.target),
                      real_parser=False)
    seconds["doctor"] = time.perf_counter() - start
    if not report.passed:
        raise CheckFailed(f"{len(report.blockers)} blocker(s) for {report.target.name}: "
                          + "; ".join(f.message for f in report.blockers[:3]), report)
    if options.onnx_only:
        return _write_fp16_graph(source, options, report, seconds, phase)
    return _build_engine(source, options, report, seconds, phase, already_fp16=already_fp16)


def _write_fp16_graph(source: Artifact, options: BuildOptions, report: "DoctorReport", seconds: dict[str, float],
                      phase: Callable[[str], None]) -> BuildResult:
    """``--onnx-only``: the checked mixed-precision graph and its manifest, no TensorRT."""
    from ..engines import build as steps

    phase("fp16 graph + ONNX Runtime check")
    start = time.perf_counter()
    folder = engines_dir() if options.output is None else Path(options.output).parent
    out = Path(options.output) if options.output is not None else folder / f"{source.path.stem}{steps.FP16_SUFFIX}.onnx"
    steps.check_output(out, source.path, onnx_only=True)
    _, written = steps.write_fp16_onnx(source, out, force=options.force)
    seconds["fp16"] = time.perf_counter() - start
    return BuildResult(None, None, written, report, out, dict(written.fp16_conversion or {}), seconds)


def _build_engine(source: Artifact, options: BuildOptions, report: "DoctorReport", seconds: dict[str, float],
                  phase: Callable[[str], None], *, already_fp16: bool) -> BuildResult:
    """Plan, (fp16 graph,) engine, manifest, then the extras (layer report, timing cache)."""
    from ..engines import build as steps
    from ..engines import build_plan as plans
    from ..engines import trt_build

    kind, force, output = options.flavour, options.force, options.output
    trt = trt_build.import_tensorrt(kind.name)  # MissingDependency (exit 2) names the extra to install
    device = trt_build.cuda_device() if kind.needs_gpu_to_build else None  # TensorRT-RTX compiles ahead of time
    plan = plans.make_plan(source, options, trt_version=trt.__version__,
                           gpu_name=device.name if device is not None else "")
    folder = engines_dir() if output is None else Path(output).parent
    engine_path = prepare_output(Path(output) if output is not None else folder / plan.engine_name, force=force)
    fp16_path = steps.fp16_graph_path(engine_path) if plan.fp16_graph and not already_fp16 else None
    if fp16_path is not None:  # checked now: it is written only once the engine exists
        if steps.same_file(fp16_path, source.path):
            raise BadInput(f"the fp16 graph of {engine_path.name} would be named {fp16_path.name}, which is the ONNX "
                           "it is built from; choose another output name")
        prepare_output(fp16_path, force=force, kinds=(".onnx",), create=False)
    with tempfile.TemporaryDirectory(prefix=temp_prefix(engine_path.name), dir=engine_path.parent) as staging:
        built, fp16_info = steps.build_engine_files(plan, source, engine_path, fp16_path, Path(staging), options=options,
                                                    phase=phase, seconds=seconds)
    built_from = source.path if fp16_path is None else fp16_path

    phase("write manifest")
    inspector_path = engine_path.with_suffix(".layers.json")
    inspector_file = inspector_path.name if built.inspector_json is not None else None
    manifest = plans.engine_manifest(plan, source, plans.BuildRecord(
        engine_path=engine_path, engine_sha256=sha256_file(engine_path), engine_bytes=len(built.serialized),
        onnx_sha256=cached_sha256(source.path, source.context), built_from=built_from, trt_version=trt.__version__, device=device,
        io_tensors=built.io_tensors, build_seconds=seconds["build"], inspector_file=inspector_file,
        doctor=report.to_dict(), network=built.network, fp16_conversion=fp16_info, warnings=built.warnings))
    write_json_atomic(manifest_path(engine_path), manifest.to_json())
    # Extras after the manifest: an engine is never left without it.
    if built.inspector_json is not None:
        write_bytes_atomic(inspector_path, built.inspector_json.encode())
    if built.timing_cache is not None and plan.timing_cache:
        write_bytes_atomic(Path(plan.timing_cache), built.timing_cache)
    return BuildResult(engine_path, manifest_path(engine_path), manifest, report, fp16_path, fp16_info, seconds,
                       list(built.warnings))
