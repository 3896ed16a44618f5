"""The engine-specific steps of ``dvit build``: the fp16 mixed-precision graph and the staged engine files.
``jobs.build.run`` orders them (option checks, doctor, plan, build, manifest); the option checks live in
``build_options`` (re-exported here: ``resolve_precision``, ``check_timing_cache``, ``check_output`` ...).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from ..artifact.manifest import DerivedFrom, OnnxManifest
from ..helpers.defaults import FP16_CHECK_SAMPLES
from ..helpers.errors import CheckFailed
from ..helpers.fileio import manifest_path, prepare_output, publish_artifact, sha256_file, write_bytes_atomic, write_json_atomic
from ..artifact.store import Artifact
from .build_options import (BuildOptions, check_output, check_timing_cache, onnx_record,  # noqa: F401 - re-exported
                            qdq_node_count, require_qdq, resolve_precision, same_file)
from .fp16 import Fp16Result, compare_with_fp32, convert_to_mixed_precision, fixed_batch
from .targets import parser_target_for

FP16_SUFFIX = "-fp16mixed"


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
