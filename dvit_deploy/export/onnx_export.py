"""PyTorch -> ONNX with the post-export check always on, written atomically with a manifest.

The export uses torch's default (torch.export-based) exporter. Files are first written into a
temporary folder beside the destination, checked, and only then renamed into place together
with the manifest, so a failed or interrupted export never leaves an artifact behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import onnx
import torch

from .. import __version__
from ..helpers.errors import BadInput, CheckFailed
from ..artifact.manifest import ONNX_SCHEMA, ModelRecord, OnnxManifest, TensorRecord
from ..artifact.names import INPUT_NAME, LOGITS_NAME, TOKEN_OUTPUT_PREFIX, token_output_name  # noqa: F401
from ..helpers.fileio import errors_name, manifest_path, prepare_output, publish_artifact, sha256_file, temp_prefix
from ..models import WithKeptTokens
from ..models.checkpoint import LoadedModel
from ..artifact.store import Artifact, export_dir, onnx_name
from .check import CheckReport, check_export
from .dynamic_keep import KEEP_COUNTS_INPUT, check_dynamic_keep, export_dynamic_keep
from .exporter import EXPORTER_OPTIMIZE, export_program, light_optimize  # noqa: F401 - re-exported
from .graph import io_description, set_dvit_metadata
from .requests import check_request

# Opset 18 is what torch's exporter emits natively, and TensorRT 10.3 (JetPack 6) parses it.
from ..helpers.defaults import DEFAULT_OPSET, EXPORT_CHECK_SAMPLES, MAX_BATCH  # noqa: E402 - one source for the help text and the exporter
MIN_OPSET, MAX_OPSET = 18, 23
MAX_DYNAMIC_BATCH = MAX_BATCH
EXAMPLE_BATCH = 2  # batch sizes 0 and 1 would be specialised by torch.export
PROTOBUF_LIMIT = 2_000_000_000
MANIFEST_SCHEMA = ONNX_SCHEMA  # one schema constant per kind (artifact.manifest)

@dataclass
class ExportResult:
    path: Path
    manifest_path: Path
    manifest: OnnxManifest  # as written beside ``path``
    check: CheckReport
    seconds: dict[str, float] = field(default_factory=dict)


PhaseCallback = Callable[[str], None]


def export_onnx(
    loaded: LoadedModel,
    output: str | Path | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
    token_outputs: bool = False,
    force: bool = False,
    check_samples: int = EXPORT_CHECK_SAMPLES,
    on_phase: PhaseCallback | None = None,
    dynamic_keep: bool = False,
) -> ExportResult:
    """Export ``loaded.model`` to ONNX, check it against PyTorch, and write it with its manifest.

    ``batch=None`` exports a dynamic batch dimension. ``dynamic_keep=True`` adds the int32
    ``keep_counts`` input (see ``dynamic_keep.py``) so one graph serves several keep ratios. Raises ``CheckFailed`` (nothing written)
    when the ONNX graph does not reproduce PyTorch within tolerance.
    """
    validate_options(opset, batch)
    if token_outputs and loaded.dense:
        raise BadInput("--token-outputs needs a pruned model; a dense baseline keeps every token")
    if dynamic_keep and loaded.dense:
        raise BadInput("--dynamic-keep needs a pruned model; a dense baseline keeps every token")
    check_request(loaded.variant, dense=loaded.dense, stage_ratios=loaded.stage_ratios, dynamic_keep=dynamic_keep)
    if output is None:
        output = default_output(loaded.variant.name, loaded.dense, loaded.stage_ratios, batch=batch,
                                dynamic_keep=dynamic_keep)
    output = prepare_output(output, force=force, kinds=(".onnx",))
    if output.suffix != ".onnx":
        raise BadInput(f"output {output} must end in .onnx")

    tmp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix(output.stem), dir=output.parent))
    try:
        with errors_name(output.parent, tmp_dir):  # errors name the user's output, not the temporary folder
            return _export_into(loaded, output, tmp_dir, opset=opset, batch=batch, token_outputs=token_outputs,
                                force=force, check_samples=check_samples, phase=on_phase or (lambda name: None),
                                dynamic_keep=dynamic_keep)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _export_into(loaded: LoadedModel, output: Path, tmp_dir: Path, *, opset: int, batch: int | None,
                 token_outputs: bool, force: bool, check_samples: int, phase: Callable[[str], None],
                 dynamic_keep: bool) -> "ExportResult":
    seconds: dict[str, float] = {}
    tmp_onnx = tmp_dir / output.name
    start = time.perf_counter()
    phase("export")
    if dynamic_keep:
        external = False
        _export_dynamic_keep(loaded, tmp_onnx, opset=opset, batch=batch, token_outputs=token_outputs)
    else:
        external = _export(loaded, tmp_onnx, opset=opset, batch=batch, token_outputs=token_outputs)
    seconds["export"] = time.perf_counter() - start

    start = time.perf_counter()
    if dynamic_keep:
        report = check_dynamic_keep(tmp_onnx, loaded, batch=batch, samples=check_samples, on_phase=phase)
    else:
        report = check_export(tmp_onnx, loaded, batch=batch, samples=check_samples, on_phase=phase)
    seconds["check"] = time.perf_counter() - start
    if not report.passed:
        raise CheckFailed("post-export check failed: " + "; ".join(report.failures), report)

    phase("write")
    manifest = _manifest(loaded, output, tmp_onnx, opset, batch, token_outputs, external, report,
                         dynamic_keep=dynamic_keep)
    # Data file first, then the graph, then the manifest.
    moves = [(item, output.parent / item.name) for item in sorted(tmp_dir.iterdir(), key=lambda p: p.suffix == ".onnx")]
    # Without --force, no-clobber: of two exports racing to one path, one wins and the other says so.
    written = manifest.to_json()
    publish_artifact(moves, output, written, replace=force)
    # The result's manifest is the file's, read back (so that it is exactly what a reader of it gets).
    return ExportResult(output, manifest_path(output), OnnxManifest.from_json(written), report, seconds)


def default_output(variant: str, dense: bool, stage_ratios: Sequence[float] | None, *, batch: int | None,
                   dynamic_keep: bool) -> Path:
    """``./export/<variant>-r<ρ>[-b<batch>].onnx``: where an export goes when no --output is given."""
    ratio = None if dense or not stage_ratios else stage_ratios[0]
    return export_dir() / onnx_name(variant, dense, ratio, batch=batch, dynamic_keep=dynamic_keep)


def validate_options(opset: int, batch: int | None) -> None:
    """Option checks that need no model, so the CLI can run them before loading one."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise BadInput(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    if batch is not None and not 1 <= batch <= MAX_DYNAMIC_BATCH:
        raise BadInput(f"--batch must be between 1 and {MAX_DYNAMIC_BATCH}, got {batch}")


def _export(loaded: LoadedModel, path: Path, *, opset: int, batch: int | None, token_outputs: bool) -> bool:
    """Run torch's exporter into ``path``; return whether weights went to an external file."""
    module = WithKeptTokens(loaded.model) if token_outputs else loaded.model
    module.eval()
    variant = loaded.variant
    example = torch.randn(batch or EXAMPLE_BATCH, variant.in_chans, variant.img_size, variant.img_size)
    outputs = [LOGITS_NAME] + [token_output_name(s + 1) for s in range(len(loaded.keep_counts))] * token_outputs
    param_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    external = param_bytes > PROTOBUF_LIMIT
    kwargs: dict[str, Any] = dict(opset_version=opset, input_names=[INPUT_NAME], output_names=outputs)
    if batch is None:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},)
    export_program(module, (example,), path, external_data=external, failure="ONNX export failed", **kwargs)
    _stamp_metadata(path, loaded, external)
    return external


def _export_dynamic_keep(loaded: LoadedModel, path: Path, *, opset: int, batch: int | None,
                         token_outputs: bool) -> None:
    param_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    if param_bytes > PROTOBUF_LIMIT:
        raise BadInput("--dynamic-keep supports models under 2 GB (one self-contained file)")
    outputs = [LOGITS_NAME] + [token_output_name(s + 1) for s in range(len(loaded.keep_counts))] * token_outputs
    export_dynamic_keep(loaded, path, opset=opset, batch=batch, token_outputs=token_outputs,
                        input_name=INPUT_NAME, output_names=outputs, max_batch=MAX_DYNAMIC_BATCH)
    _stamp_metadata(path, loaded, False)


def _stamp_metadata(path: Path, loaded: LoadedModel, external: bool) -> None:
    """Record what the graph is inside it too, for tools that see only the .onnx."""
    model = onnx.load(str(path), load_external_data=False)
    meta = {
        "dvit.variant": loaded.variant.name,
        "dvit.dense": str(loaded.dense).lower(),
        "dvit.keep_counts": ",".join(map(str, loaded.keep_counts)),
        "dvit.keep_schedule": loaded.variant.schedule_kind,
        "dvit.pruning_locations": ",".join(map(str, loaded.variant.pruning_loc)) if not loaded.dense else "",
        "dvit.version": __version__,
    }
    set_dvit_metadata(model, meta)
    onnx.save(model, str(path))


def _manifest(loaded: LoadedModel, output: Path, tmp_onnx: Path, opset: int, batch: int | None,
              token_outputs: bool, external: bool, report: CheckReport, *, dynamic_keep: bool = False) -> OnnxManifest:
    """The export's manifest: the model record (what rebuilds it), the graph's I/O and digests, the check."""
    model = onnx.load(str(tmp_onnx), load_external_data=False)
    io_record = io_description(model)
    data_files = [p.name for p in tmp_onnx.parent.iterdir() if p.suffix != ".onnx"]
    keep_input = None
    if dynamic_keep:
        keep_input = {"name": KEEP_COUNTS_INPUT, "dtype": "int32", "shape": [loaded.variant.num_stages],
                      "meaning": "per-stage kept token counts int(num_patches * rho**k)"}
    record = dataclasses.replace(ModelRecord.from_json(loaded.record()), batch=batch, dynamic_batch=batch is None,
                                 token_outputs=token_outputs, dynamic_keep=dynamic_keep, keep_input=keep_input,
                                 data_config=loaded.variant.data_config())
    return OnnxManifest(
        model=record,
        artifact=output.name,
        precision="fp32",
        inputs=TensorRecord.all_from(io_record["inputs"]),
        outputs=TensorRecord.all_from(io_record["outputs"]),
        quantization=None,
        fp16_conversion=None,
        # What the typed fields do not cover, in the order a reader meets it: header, then the sections
        # (``onnx.external_data_sha256`` is written even when empty, as it always was).
        raw={"schema": MANIFEST_SCHEMA, "kind": "onnx", "artifact": output.name,
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "onnx": {"external_data_sha256": {}}, "check": report.to_dict(), "versions": versions()},
        opset=opset,
        sha256=sha256_file(tmp_onnx),
        bytes=tmp_onnx.stat().st_size,
        external_data=tuple(data_files) if external else (),
        external_data_sha256={n: sha256_file(tmp_onnx.parent / n) for n in data_files},
        derived_from=None,
    )


def versions() -> dict[str, str]:
    import timm

    found = {"dvit_deploy": __version__, "python": platform.python_version(), "torch": torch.__version__,
             "onnx": onnx.__version__, "timm": timm.__version__}
    with contextlib.suppress(ImportError):
        import onnxruntime

        found["onnxruntime"] = onnxruntime.__version__
    return found


def export_dense_twin(artifact: "Artifact", on_phase: Callable[[str], None] | None = None) -> Path:
    """Export the dense baseline of the model ``artifact`` was exported from, beside it."""
    from ..models.checkpoint import load_model_from_record

    path, onnx = artifact.path, artifact.onnx
    if onnx is None:
        raise BadInput(f"{path.name} has no dense twin beside it and only ONNX twins can be exported "
                       "here: export and build the dense baseline the same way (--dense), then pass both")
    dense = dataclasses.replace(onnx.model, dense=True, stage_ratios=None, keep_ratio=None, keep_counts=())
    loaded = load_model_from_record(dense, context=artifact.context)  # the run's moved checkpoint, if any
    batch = onnx.model.batch
    output = path.parent / onnx_name(loaded.variant.name, True, None, batch=batch)
    if output.exists():  # a dense export of a different model already has the usual name
        output = path.with_name(f"{path.stem}-dense-twin.onnx")
    result = export_onnx(loaded, output, opset=onnx.opset or DEFAULT_OPSET, batch=batch,
                         force=output.exists(), on_phase=on_phase)
    return result.path
