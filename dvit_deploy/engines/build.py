"""The engine-specific steps of ``dvit build``: the precision an ONNX builds as, the output and timing-cache
checks, the fp16 mixed-precision graph, and the staged engine files. ``jobs.build.run_build`` orders them
(option checks, doctor, plan, build, manifest).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from ..artifact.manifest import ENGINE_SUFFIXES, DerivedFrom, OnnxManifest
from ..helpers.defaults import FP16_CHECK_SAMPLES
from ..helpers.errors import BadInput, CheckFailed
from ..helpers.fileio import manifest_path, prepare_output, publish_artifact, sha256_file, write_bytes_atomic, write_json_atomic
from ..artifact.store import Artifact
from .build_plan import BuildOptions, onnx_record
from .doctor import QDQ_OPS
from .fp16 import Fp16Result, compare_with_fp32, convert_to_mixed_precision, fixed_batch
from .targets import parser_target_for

FP16_SUFFIX = "-fp16mixed"


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
    model = onnx.load(str(onnx_path), load_external_data=False)
    return sum(1 for node in model.graph.node if node.op_type in QDQ_OPS)


def require_qdq(onnx_path: Path) -> None:
    """``--int8`` builds an explicitly quantized graph; there is no implicit calibration (gone in TensorRT 11)."""
    if not qdq_node_count(onnx_path):
        raise BadInput(f"--int8 needs an explicitly quantized ONNX (QuantizeLinear/DequantizeLinear nodes); "
                       f"{onnx_path.name} has none. Quantize it first (dvit quantize) and build the -int8.onnx; "
                       "TensorRT calibration is not used (TensorRT 11 removed it)")


def doctor_target_for(trt_version: str | None, requested: str | None) -> str:
    """The doctor target matching an installed TensorRT: its major.minor, not just the major
    (``targets.parser_target_for``), unless ``--target`` asked for one."""
    return requested or parser_target_for(trt_version)


def convert_fp16(source: Artifact, final: Path, *, check_samples: int = FP16_CHECK_SAMPLES
                 ) -> tuple[Fp16Result, bytes, OnnxManifest]:
    """Convert to mixed precision and compare with the fp32 graph in ORT; nothing is written.

    Returns the graph's bytes and the manifest it gets once it is ``final``: the source's
    (``OnnxManifest.with_changes``): the same model, precision fp16, these bytes' digest, the one
    ``derived_from`` shape (relative to ``final``'s folder) and the conversion report."""
    onnx_path, typed = source.path, onnx_record(source)
    model = onnx.load(str(onnx_path))
    result = convert_to_mixed_precision(model)
    try:
        onnx.checker.check_model(result.model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise CheckFailed(f"fp16 graph fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    from ..export.check import seeded_images

    shape = typed.model.input_shape
    count = max(check_samples, 2)
    batch = fixed_batch(model)
    if batch:  # a fixed-batch graph only takes whole batches
        count = batch * -(-count // batch)
    images = seeded_images(count, shape).numpy()
    extra = {}
    if typed.model.dynamic_keep and typed.model.keep_input:
        extra[typed.model.keep_input["name"]] = np.asarray(typed.model.keep_counts, dtype=np.int32)
    comparison = compare_with_fp32(model, result.model, images, extra_inputs=extra,
                                   num_patches=typed.model.num_patches)
    report = {**result.to_dict(), "parity_vs_fp32_onnx": comparison.to_dict()}
    if not comparison.passed:
        raise CheckFailed("fp16 graph does not match the fp32 graph: " + "; ".join(comparison.failures), report)
    data = result.model.SerializeToString()
    written = typed.with_changes(
        artifact=final.name, precision="fp16", quantization=None, fp16_conversion=report,
        sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), external_data=(), external_data_sha256={},
        # The one derived_from shape (artifact.manifest.DerivedFrom): path relative to this file.
        derived_from=DerivedFrom.of(onnx_path, final, sha256=sha256_file(onnx_path),
                                    transform="dvit_deploy.engines.fp16.convert_to_mixed_precision"))
    return result, data, written


def write_fp16_onnx(source: Artifact, output: Path, *, force: bool,
                    check_samples: int = FP16_CHECK_SAMPLES) -> tuple[Fp16Result, OnnxManifest]:
    """``--onnx-only``: convert, check, then write the graph and its manifest (``convert_fp16``)."""
    output = prepare_output(output, force=force, kinds=(".onnx",))
    result, data, written = convert_fp16(source, output, check_samples=check_samples)
    write_bytes_atomic(output, data)
    write_json_atomic(manifest_path(output), written.to_json())
    return result, written


def fp16_graph_path(engine_path: Path) -> Path:
    """The mixed-precision graph a strongly typed fp16 build parses, kept beside its engine and named after
    it (``x.engine`` -> ``x-fp16mixed.onnx``): owned by that engine, never shared by another model's build
    that happens to have the same ONNX stem."""
    return engine_path.with_name(f"{engine_path.stem}{FP16_SUFFIX}.onnx")


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


def build_engine_files(plan: Any, opened: Artifact, engine_path: Path, fp16_path: Path | None, staging: Path, *,
                       options: BuildOptions, phase: Callable[[str], None], seconds: dict[str, float]
                       ) -> tuple[Any, dict[str, Any] | None]:
    """Build the engine; for a strongly typed fp16 build, first the mixed-precision graph in ``staging``.

    That graph is moved to ``fp16_path`` (with its manifest) only when the engine exists, just before the
    engine is written: a failed, interrupted (Ctrl-C, SIGTERM) or refused build leaves neither behind, and an
    earlier engine's graph is never replaced by one whose build did not finish. Without ``force`` it is
    published without clobbering, so of two builds racing to one output exactly one wins."""
    from .trt_build import build_engine

    fp16_info = onnx_record(opened).fp16_conversion if fp16_path is None else None
    staged, fp16_manifest = None, None
    if fp16_path is not None:
        phase("fp16 graph for the strongly typed build")
        _, data, fp16_manifest = convert_fp16(opened, fp16_path)
        staged = staging / fp16_path.name
        staged.write_bytes(data)
        fp16_info = fp16_manifest.fp16_conversion

    def write_engine(data: bytes) -> None:
        if staged is None:
            write_bytes_atomic(engine_path, data)
            return
        publish_artifact([(staged, fp16_path)], fp16_path, fp16_manifest.to_json(), replace=options.force)
        try:
            write_bytes_atomic(engine_path, data)
        except BaseException:  # no engine: its graph goes too
            fp16_path.unlink(missing_ok=True)
            manifest_path(fp16_path).unlink(missing_ok=True)
            raise

    start = time.perf_counter()
    # The engine is written the moment it exists, before inspection (build_engine calls this).
    built = build_engine(plan, staged or opened.path, on_phase=phase, verbose=options.verbose, write_engine=write_engine)
    seconds["build"] = time.perf_counter() - start
    return built, None if fp16_info is None else dict(fp16_info)
