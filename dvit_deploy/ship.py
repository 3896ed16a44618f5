"""Shipping: device bundles, Triton model repositories, and verifying what arrived.

A bundle is a folder (and the same folder as ``.tar.gz``) holding the ONNX model, any engines,
their manifests, a device README, ``build_on_device.sh`` (the ``trtexec`` commands that build the
engine on the device itself: an x86 host cannot build a Jetson engine) and ``SHA256SUMS`` in
``sha256sum -c`` format. ``bundle.json`` describes the bundle for ``dvit verify``.

Engine manifests are written by ``dvit build``; this module only reads them, defensively, so a
field it does not find is reported as unknown rather than guessed.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import __version__
from .artifact.manifest import verify_artifact
from .errors import BadInput, CheckFailed
from .fileio import (atomic_path, current_umask, is_same_or_parent_of_cwd, manifest_path, read_json, sha256_file,
                     write_json_atomic)

BUNDLE_SCHEMA = "dvit-deploy/bundle/1"
BUNDLE_MANIFEST = "bundle.json"
CHECKSUMS = "SHA256SUMS"
DEFAULT_BUNDLES_DIR = "bundles"
ENGINE_SUFFIXES = (".engine", ".plan")
DEFAULT_PROFILE = (1, 8, 32)  # min / opt / max batch when the ONNX batch is dynamic
DEFAULT_QUEUE_DELAY_US = 100


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    arch: str  # "aarch64" or "x86_64"
    tensorrt: str  # the TensorRT version the target runs
    max_opset: int  # highest ONNX opset its TensorRT parser accepts
    strongly_typed: bool  # TensorRT 11: no --fp16 builder flag; precision comes from the graph
    trtexec: str  # where trtexec usually lives on the target
    compute_capability: str | None = None  # fixed for an embedded GPU, None for discrete GPUs

    @property
    def tensorrt_major(self) -> int:
        return int(self.tensorrt.split(".")[0])


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("jetson-orin", "Jetson AGX/NX/Nano Orin, JetPack 6 (TensorRT 10.3)", "aarch64", "10.3", 20, False,
               "/usr/src/tensorrt/bin/trtexec", "8.7"),
        Target("x86-trt10", "x86-64 server or workstation GPU with TensorRT 10.x", "x86_64", "10", 20, False,
               "trtexec"),
        Target("x86-trt11", "x86-64 GPU with TensorRT 11.x (strongly typed builds only)", "x86_64", "11", 25, True,
               "trtexec"),
    )
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise BadInput(f"unknown target '{name}'; known: {', '.join(TARGETS)}") from None


# --------------------------------------------------------------------------------------------
# Artifacts going into a bundle


@dataclass
class OnnxItem:
    path: Path
    manifest: dict[str, Any]

    @property
    def files(self) -> list[Path]:
        data = [self.path.parent / name for name in (self.manifest.get("onnx") or {}).get("external_data", [])]
        return [self.path, *data, manifest_path(self.path)]


@dataclass
class EngineItem:
    path: Path
    manifest: dict[str, Any]
    source: OnnxItem | None

    @property
    def files(self) -> list[Path]:
        return [self.path, manifest_path(self.path)]


def _find(manifest: Mapping[str, Any], *keys: str) -> Any:
    """First present value among dotted keys (engine manifests are read defensively)."""
    for key in keys:
        value: Any = manifest
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value not in (None, ""):
            return value
    return None


def engine_facts(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The engine-manifest fields shipping needs, None where the manifest does not say."""
    return {
        "tensorrt": _str(_find(manifest, "tensorrt.version", "tensorrt_version", "versions.tensorrt", "tensorrt")),
        "gpu": _str(_find(manifest, "gpu.name", "gpu_name", "device.name", "gpu")),
        "compute_capability": _find(manifest, "gpu.compute_capability", "compute_capability",
                                    "device.compute_capability"),
        "precision": _find(manifest, "precision", "build.precision"),
        "sha256": _find(manifest, "engine.sha256", "sha256", "engine_sha256"),
        "onnx_sha256": _find(manifest, "source_onnx.sha256", "onnx.sha256", "onnx_sha256", "source.sha256"),
        "onnx_manifest": _find(manifest, "source_onnx.manifest", "onnx_manifest", "onnx.manifest", "source.manifest"),
        "onnx_path": _find(manifest, "source_onnx.path", "onnx.path", "onnx_path", "source.path", "source_onnx"),
        "profiles": _find(manifest, "profiles", "optimization_profiles", "build.profiles"),
        "io": _find(manifest, "io", "io_tensors", "tensors"),
    }


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, Mapping):
        return None
    if isinstance(value, (list, tuple)):  # compute capability as [major, minor]
        return ".".join(str(v) for v in value)
    return str(value)


def _resolve_near(base: Path, name: Any) -> Path | None:
    if not isinstance(name, str):
        return None
    path = Path(name)
    candidates = [path] if path.is_absolute() else [base / path, base / path.name, Path.cwd() / path]
    return next((c for c in candidates if c.is_file()), None)


def _load_onnx(path: Path) -> OnnxItem:
    if not path.is_file():
        raise BadInput(f"ONNX model {path} not found")
    manifest = read_json(manifest_path(path), what=f"manifest of {path.name}")
    if manifest.get("kind") not in (None, "onnx"):
        raise BadInput(f"{manifest_path(path)} is not an ONNX manifest (kind {manifest.get('kind')!r})")
    verify_artifact(path, manifest)
    for name in (manifest.get("onnx") or {}).get("external_data", []):
        if not (path.parent / name).is_file():
            raise BadInput(f"external weights {name} of {path.name} not found beside it")
    return OnnxItem(path, manifest)


def _load_engine(path: Path) -> EngineItem:
    if not path.is_file():
        raise BadInput(f"engine {path} not found")
    manifest = read_json(manifest_path(path), what=f"manifest of {path.name}")
    verify_artifact(path, manifest)
    facts = engine_facts(manifest)
    source = None
    onnx_manifest = _resolve_near(path.parent, _str(facts["onnx_manifest"]))
    onnx_path = _resolve_near(path.parent, _str(facts["onnx_path"]))
    if onnx_path is None and onnx_manifest is not None:
        linked = read_json(onnx_manifest, what="linked ONNX manifest")
        onnx_path = _resolve_near(onnx_manifest.parent, linked.get("artifact"))
    if onnx_path is not None and onnx_path.suffix == ".onnx":
        source = _load_onnx(onnx_path)
    return EngineItem(path, manifest, source)


def collect_artifacts(paths: Iterable[Path]) -> tuple[list[OnnxItem], list[EngineItem]]:
    """ONNX models and engines to ship; an engine brings the ONNX it was built from."""
    onnx_items: dict[Path, OnnxItem] = {}
    engines: list[EngineItem] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.suffix == ".onnx":
            item = _load_onnx(path)
            onnx_items.setdefault(path.resolve(), item)
        elif path.suffix in ENGINE_SUFFIXES:
            engine = _load_engine(path)
            engines.append(engine)
            if engine.source is not None:
                onnx_items.setdefault(engine.source.path.resolve(), engine.source)
        elif not path.exists():
            raise BadInput(f"artifact {path} not found")
        else:
            raise BadInput(f"{path.name} is neither an ONNX model (.onnx) nor a TensorRT engine (.engine/.plan)")
    if not onnx_items and not engines:
        raise BadInput("nothing to package: give an ONNX model or an engine")
    return list(onnx_items.values()), engines


def check_target(target: Target, onnx_items: list[OnnxItem], engines: list[EngineItem]) -> list[str]:
    """Refuse what cannot work on the target; return notes for what merely needs care."""
    notes = []
    for item in onnx_items:
        opset = item.manifest.get("opset")
        if isinstance(opset, int) and opset > target.max_opset:
            raise BadInput(f"{item.path.name} uses ONNX opset {opset}, but TensorRT {target.tensorrt} on {target.name} "
                           f"parses opsets up to {target.max_opset}: re-export with --opset {min(18, target.max_opset)}")
    for engine in engines:
        facts = engine_facts(engine.manifest)
        version = _str(facts["tensorrt"])
        if version is None:
            notes.append(f"{engine.path.name}: its manifest does not record the TensorRT version; "
                         f"the device rebuilds it if it does not load")
        elif not _same_tensorrt(version, target.tensorrt):
            raise BadInput(f"{engine.path.name} was built with TensorRT {version}, but {target.name} runs TensorRT "
                           f"{target.tensorrt}: ship the ONNX and build on the device (build_on_device.sh)")
        cc = _str(facts["compute_capability"])
        if target.compute_capability and cc and cc != target.compute_capability:
            raise BadInput(f"{engine.path.name} was built for compute capability {cc} ({facts['gpu'] or 'unknown GPU'}), "
                           f"but {target.name} has {target.compute_capability}: engines are specific to the GPU; "
                           f"ship the ONNX and build on the device")
    return notes


def _same_tensorrt(version: str, wanted: str) -> bool:
    """'10.3.0.30' matches '10.3' and '10'; engines do not load across TensorRT releases."""
    return version == wanted or version.startswith(wanted + ".")


# --------------------------------------------------------------------------------------------
# trtexec commands and the device script


def _batch_profile(manifest: Mapping[str, Any], profile: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """(min, opt, max) batch for a dynamic-batch model; None for a fixed batch."""
    if manifest.get("dynamic_batch") is False or manifest.get("batch"):
        return None
    low, opt, high = profile
    if not 1 <= low <= opt <= high:
        raise BadInput(f"batch profile must satisfy 1 <= min <= opt <= max, got {low}/{opt}/{high}")
    return profile


def _profile_args(manifest: Mapping[str, Any], profile: tuple[int, int, int]) -> list[str]:
    """trtexec --min/opt/maxShapes from the same profiles ``dvit build`` declares.

    A shape-tensor input (the ``keep_counts`` of a --dynamic-keep export) takes its min/opt/max
    *values* in the same ``name:AxBxC`` syntax; a fixed-shape model with no such input needs none.
    """
    from .engines.manifest import make_profiles

    batches = _batch_profile(manifest, profile)
    low, opt, high = batches if batches is not None else (None, None, None)
    profiles = make_profiles(dict(manifest), min_batch=low, opt_batch=opt, max_batch=high)
    if batches is None and not any(p.kind == "values" for p in profiles):
        return []

    def spec(which: str) -> str:
        return ",".join(f"{p.name}:{'x'.join(str(v) for v in getattr(p, which))}" for p in profiles)

    return [f"--minShapes={spec('min')}", f"--optShapes={spec('opt')}", f"--maxShapes={spec('max')}"]


def engine_name(onnx_item: OnnxItem, target: Target, precision: str) -> str:
    return f"{onnx_item.path.stem}-{target.name}-{precision}.engine"


def _quantized(manifest: Mapping[str, Any]) -> bool:
    """An explicitly quantized (Q/DQ, int8) ONNX, as ``dvit quantize`` writes it."""
    return manifest.get("precision") == "int8"


def built_precision(onnx_item: OnnxItem, target: Target, precision: str) -> str:
    """The precision the device build really produces (it names the engine)."""
    if _quantized(onnx_item.manifest):
        return "int8"
    return "fp32" if target.strongly_typed else precision


def trtexec_command(onnx_item: OnnxItem, target: Target, *, precision: str, profile: tuple[int, int, int],
                    onnx_rel: str, engine_rel: str, cache_rel: str) -> list[str]:
    """The trtexec argument list that builds the engine for ``onnx_item`` on the target.

    Flags follow ``dvit build``: TF32 is off (``--noTF32``) for every precision, so an "fp32" engine
    is exact fp32; TensorRT 10 takes ``--fp16``/``--bf16`` (weakly typed) and ``--int8`` for an
    explicitly quantized (Q/DQ) ONNX (``--int8 --fp16`` with bundle precision fp16: FP16 fallback
    outside the Q/DQ pairs); TensorRT 11 has none of those flags: ``--stronglyTyped`` (documented
    in 11.x as the default, kept for clarity) and the graph's own types, Q/DQ included. Every flag is
    checked against trtexec's documented options per target (``tests/data/trtexec-flags.json``).
    """
    args = ['"$TRTEXEC"', f"--onnx={onnx_rel}", f"--saveEngine={engine_rel}"]
    args += _profile_args(onnx_item.manifest, profile)
    if not target.strongly_typed:
        if _quantized(onnx_item.manifest):
            args.append("--int8")  # explicit quantization in a weakly typed build needs the INT8 flag
            if precision == "fp16":
                args.append("--fp16")
        elif precision == "fp16":
            args.append("--fp16")
        elif precision == "bf16":
            args.append("--bf16")
    args.append("--noTF32")  # trtexec allows TF32 unless told; dvit build clears it
    if target.strongly_typed:
        args.append("--stronglyTyped")
    args += [f"--timingCacheFile={cache_rel}", "--skipInference"]
    return args


def _image_input(manifest: Mapping[str, Any]) -> tuple[str, tuple[int, int, int]]:
    """Name and (C, H, W) of the image input, from the manifest (its I/O, else the model config)."""
    inputs = manifest.get("inputs") or []
    name = inputs[0].get("name", "images") if inputs else "images"
    shape = list(inputs[0].get("shape") or []) if inputs else []
    if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return name, (shape[1], shape[2], shape[3])
    config = manifest.get("config") or {}
    size = int(config.get("img_size", 224))
    return name, (int(config.get("in_chans", 3)), size, size)


def trtexec_benchmark(manifest: Mapping[str, Any], engine_rel: str, profile: tuple[int, int, int]) -> list[str]:
    """``trtexec --loadEngine`` for an engine built from this ONNX: the image shape (the profile's opt
    batch, or the fixed batch) and, for a --dynamic-keep model, the ``keep_counts`` *values* (a
    shape-tensor input: without them trtexec would fill it with ones)."""
    name, (c, h, w) = _image_input(manifest)
    batches = _batch_profile(manifest, profile)
    n = batches[1] if batches is not None else int(manifest.get("batch") or 1)
    shapes = [f"{name}:{n}x{c}x{h}x{w}"]
    keep = manifest.get("keep_input")
    if manifest.get("dynamic_keep") and keep and manifest.get("keep_counts"):
        shapes.append(f"{keep['name']}:{'x'.join(str(int(v)) for v in manifest['keep_counts'])}")
    args = ['"$TRTEXEC"', f"--loadEngine={engine_rel}"]
    if batches is not None or len(shapes) > 1:
        args.append("--shapes=" + ",".join(shapes))
    return args


def _bash_line(args: list[str]) -> str:
    # $TRTEXEC stays unquoted-expandable; everything else is quoted for the shell.
    return " \\\n    ".join(a if a.startswith("\"$") else shlex.quote(a) for a in args)


def build_script(onnx_items: list[OnnxItem], target: Target, *, precision: str, profile: tuple[int, int, int],
                 triton_models: Mapping[str, str]) -> str:
    """``build_on_device.sh``: verify checksums, then build each engine with trtexec, on the device."""
    lines = [
        "#!/usr/bin/env bash",
        f"# Build the TensorRT engine(s) of this bundle on the {target.name} device itself:",
        "# engines are specific to the GPU and TensorRT version, and an x86 host cannot build",
        "# an aarch64 (Jetson) engine. Generated by dvit-deploy " + __version__ + ".",
        f"# Target: {target.description}.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "",
        f'TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo {shlex.quote(target.trtexec)})}}"',
        'if [ ! -x "$TRTEXEC" ] && ! command -v "$TRTEXEC" >/dev/null 2>&1; then',
        '    echo "trtexec not found; set TRTEXEC=/path/to/trtexec (JetPack: /usr/src/tensorrt/bin/trtexec)" >&2',
        "    exit 2",
        "fi",
        "",
        "echo 'checking file integrity (SHA256SUMS)'",
        f"sha256sum --quiet -c {CHECKSUMS}",
        "mkdir -p engines",
        "",
    ]
    if target.strongly_typed:
        lines += [
            f"# TensorRT {target.tensorrt} is strongly typed: the --fp16/--bf16 builder flags are gone and each",
            "# layer runs in the precision the ONNX graph declares. This builds the FP32 graph as shipped;",
            "# for FP16, convert the ONNX to FP16 first (e.g. ModelOpt AutoCast) and build that file.",
        ]
    elif precision != "fp32":
        lines.append(f"# --{precision}: TensorRT may pick {precision.upper()} kernels where faster (TensorRT 10 builder flag).")
    hints = []
    for item in onnx_items:
        onnx_rel = f"model/{item.path.name}"
        engine_rel = f"engines/{engine_name(item, target, built_precision(item, target, precision))}"
        hints.append(" ".join(trtexec_benchmark(item.manifest, engine_rel, profile)).replace('"$TRTEXEC"', "$TRTEXEC"))
        args = trtexec_command(item, target, precision=precision, profile=profile, onnx_rel=onnx_rel,
                               engine_rel=engine_rel, cache_rel="engines/timing.cache")
        lines += [f"echo 'building {engine_rel}'", _bash_line(args), ""]
        model_name = triton_models.get(item.path.name)
        if model_name:
            lines += [
                "# Install the engine into the Triton repository with its prepared config.",
                "if [ -d triton ]; then",
                f"    mkdir -p triton/{model_name}/1",
                f"    cp {shlex.quote(engine_rel)} triton/{model_name}/1/model.plan",
                f"    cp device/triton/{model_name}.config.pbtxt triton/{model_name}/config.pbtxt",
                "fi",
                "",
            ]
    lines.append("echo 'done; benchmark with:'")
    lines += [f'echo "  {hint}"' for hint in hints]
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Triton model repository

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64",
                "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
_TRT_TYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT64": "int64", "INT32": "int32",
              "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}


def triton_model_name(stem: str, kind: str) -> str:
    """Triton model names become folder names: keep letters, digits, '-' and '_'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{stem}-{kind}")


def _triton_dtype(dtype: Any) -> str:
    name = str(dtype or "").strip()
    name = _TRT_TYPES.get(name.upper().replace("DATATYPE.", ""), name.lower())
    if name not in TRITON_TYPES:
        raise BadInput(f"tensor data type '{dtype}' has no Triton equivalent")
    return TRITON_TYPES[name]


def _tensor_block(tensors: list[Mapping[str, Any]], batched: bool,
                  shape_tensors: frozenset[str] | set[str] = frozenset()) -> list[str]:
    lines = []
    for i, tensor in enumerate(tensors):
        shape = list(tensor.get("shape") or [])
        dims = shape[1:] if batched else shape
        dims_text = ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in dims)
        sep = "," if i < len(tensors) - 1 else ""
        lines += ["  {", f'    name: "{tensor["name"]}"', f"    data_type: {_triton_dtype(tensor.get('dtype'))}",
                  f"    dims: [ {dims_text} ]"]
        if tensor["name"] in shape_tensors:
            lines.append("    is_shape_tensor: true")
        lines.append("  }" + sep)
    return lines


def triton_config(name: str, platform: str, inputs: list[Mapping[str, Any]], outputs: list[Mapping[str, Any]], *,
                  max_batch_size: int, preferred: list[int], queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                  gpu: bool, shape_tensors: frozenset[str] | set[str] = frozenset()) -> str:
    """A Triton ``config.pbtxt``. ``max_batch_size`` 0: Triton does not batch, every tensor lists its
    full dims (-1 for a dynamic batch). ``shape_tensors``: TensorRT shape-tensor inputs
    (``is_shape_tensor: true``, tensorrt_plan only)."""
    batched = max_batch_size > 0
    lines = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {max_batch_size}", "input ["]
    lines += _tensor_block(inputs, batched, shape_tensors) + ["]", "output ["]
    lines += _tensor_block(outputs, batched) + ["]"]
    if batched:
        sizes = ", ".join(str(b) for b in sorted(set(preferred)) if 1 <= b <= max_batch_size)
        lines += ["dynamic_batching {"]
        if sizes:
            lines.append(f"  preferred_batch_size: [ {sizes} ]")
        lines += [f"  max_queue_delay_microseconds: {queue_delay_us}", "}"]
    if gpu:
        lines += ["instance_group [", "  {", "    count: 1", "    kind: KIND_GPU", "  }", "]"]
    return "\n".join(lines) + "\n"


def _engine_io(engine: EngineItem) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """Inputs/outputs from the engine manifest (its dtypes are what the engine really uses)."""
    io = engine_facts(engine.manifest)["io"]
    items = io if isinstance(io, list) else None
    if isinstance(io, Mapping) and ("inputs" in io or "outputs" in io):
        ins = [dict(t) for t in io.get("inputs", [])]
        outs = [dict(t) for t in io.get("outputs", [])]
        return (ins, outs) if ins and outs else None
    if items:
        ins = [dict(t) for t in items if str(t.get("mode", t.get("io_mode", ""))).upper().endswith("INPUT")]
        outs = [dict(t) for t in items if str(t.get("mode", t.get("io_mode", ""))).upper().endswith("OUTPUT")]
        return (ins, outs) if ins and outs else None
    return None


def _engine_max_batch(engine: EngineItem) -> int | None:
    profiles = engine_facts(engine.manifest)["profiles"]
    if not isinstance(profiles, list) or not profiles:
        return None
    best = None
    for profile in profiles:
        if isinstance(profile, Mapping) and profile.get("name") not in (None, "images"):
            continue  # another input's profile (e.g. a keep-ratio value), not the batch
        shapes = profile.get("shapes", profile) if isinstance(profile, Mapping) else None
        entry = shapes.get("images") if isinstance(shapes, Mapping) else None
        entry = entry if isinstance(entry, Mapping) else (profile if isinstance(profile, Mapping) else {})
        high = entry.get("max")
        if isinstance(high, list) and high and isinstance(high[0], int):
            best = max(best or 0, high[0])
    return best


def _has_batch_dim(tensor: Mapping[str, Any]) -> bool:
    """Whether the tensor's first dim is the (dynamic) batch: a name or -1, not a fixed size."""
    shape = list(tensor.get("shape") or [])
    return bool(shape) and not (isinstance(shape[0], int) and shape[0] > 0)


def _onnx_triton(item: OnnxItem, profile: tuple[int, int, int], gpu: bool, platform: str,
                 name: str, io: tuple[list, list] | None = None, max_batch: int | None = None) -> str:
    """Triton config for an ONNX (or its engine). Triton batches only when *every* input has the batch
    as its first dim: a --dynamic-keep model's ``keep_counts`` (shape [stages]) has none, so it gets
    ``max_batch_size: 0`` with full dims (``images`` [-1, 3, H, W]); on tensorrt_plan ``keep_counts`` is
    a shape tensor (``is_shape_tensor: true``)."""
    dynamic = _batch_profile(item.manifest, profile) is not None
    inputs, outputs = io or (item.manifest.get("inputs") or [], item.manifest.get("outputs") or [])
    if not inputs or not outputs:
        raise BadInput(f"manifest of {item.path.name} lists no inputs/outputs; re-export with this dvit-deploy")
    batched = dynamic and all(_has_batch_dim(t) for t in inputs)
    high = (max_batch or profile[2]) if batched else 0
    keep = (item.manifest.get("keep_input") or {}).get("name") if item.manifest.get("dynamic_keep") else None
    shape_tensors = ({t["name"] for t in inputs if t.get("shape_tensor") or t["name"] == keep}
                     if platform == "tensorrt_plan" else set())
    return triton_config(name, platform, inputs, outputs, max_batch_size=high,
                         preferred=[profile[1], high] if batched else [], gpu=gpu, shape_tensors=shape_tensors)


# --------------------------------------------------------------------------------------------
# Bundles


@dataclass
class BundleResult:
    folder: Path
    archive: Path | None
    target: str
    files: list[str]
    triton_models: list[str]
    build_commands: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["folder"] = str(self.folder)
        data["archive"] = None if self.archive is None else str(self.archive)
        return data


def default_bundle_dir(onnx_items: list[OnnxItem], engines: list[EngineItem], target: Target) -> Path:
    stem = onnx_items[0].path.stem if onnx_items else engines[0].path.stem
    return Path.cwd() / DEFAULT_BUNDLES_DIR / f"{stem}-{target.name}"


def _device_readme(target: Target, onnx_items: list[OnnxItem], engines: list[EngineItem], precision: str,
                   profile: tuple[int, int, int], triton_names: list[str]) -> str:
    lines = [f"# DynamicViT bundle for {target.name}", "",
             f"Target: {target.description}. Made by dvit-deploy {__version__} on "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d')}.", "", "## Contents", ""]
    for item in onnx_items:
        m = item.manifest
        counts = "dense" if m.get("dense") else "/".join(str(c) for c in m.get("keep_counts", []))
        batch = "dynamic batch" if _batch_profile(m, profile) else f"batch {m.get('batch')}"
        lines.append(f"- `model/{item.path.name}`: {m.get('variant', '?')}, kept tokens per stage {counts}, "
                     f"opset {m.get('opset', '?')}, {batch}, token outputs {'yes' if m.get('token_outputs') else 'no'}; "
                     f"manifest `model/{manifest_path(item.path).name}`.")
    for engine in engines:
        facts = engine_facts(engine.manifest)
        lines.append(f"- `engines/{engine.path.name}`: TensorRT {facts['tensorrt'] or '?'}, "
                     f"{facts['precision'] or '?'}, built on {_str(facts['gpu']) or 'an unknown GPU'} "
                     f"(compute capability {_str(facts['compute_capability']) or '?'}).")
    if triton_names:
        lines.append(f"- `triton/`: a Triton Inference Server model repository ({', '.join(triton_names)}).")
    data_config = (onnx_items[0].manifest.get("data_config") if onnx_items else None) or {}
    lines += ["", "## Input", ""]
    if data_config:
        lines.append(f"`images`: float32 NCHW {list(data_config.get('input_size', []))}, RGB; resize "
                     f"({data_config.get('interpolation')}, crop_pct {data_config.get('crop_pct')}), centre crop, "
                     f"normalise with mean {list(data_config.get('mean', []))} and std {list(data_config.get('std', []))}.")
    lines += ["", "## On the device", "", "1. Check the files arrived intact:", "", "   ```", f"   sha256sum -c {CHECKSUMS}",
              "   ```", "   (or `dvit verify .` where dvit-deploy is installed.)", "",
              "2. Build the engine here, on the device (engines are specific to the GPU and TensorRT version):", "",
              "   ```", "   ./build_on_device.sh", "   ```", "",
              f"   It runs `trtexec` with the input shapes (batch {profile[0]}/{profile[1]}/{profile[2]} "
              f"min/opt/max for dynamic batch), precision {precision}, and a timing cache "
              "(`engines/timing.cache`, which makes rebuilds fast). Set `TRTEXEC=` if trtexec is not on PATH."]
    if target.strongly_typed:
        lines.append("   TensorRT 11 is strongly typed: there is no --fp16 flag; the script builds the graph's own "
                     "precision (FP32). Convert the ONNX to FP16 first for an FP16 engine.")
    benchmarks = [" ".join(trtexec_benchmark(item.manifest, f"engines/{engine_name(item, target, built_precision(item, target, precision))}",
                                             profile)).replace('"$TRTEXEC"', "trtexec") for item in onnx_items]
    benchmarks = benchmarks or ["trtexec --loadEngine=engines/<engine>"]
    lines += ["", "3. Benchmark (shapes and, for --dynamic-keep, the keep_counts values from the manifest):", "",
              "   ```", *[f"   {b}" for b in benchmarks], "   ```"]
    if triton_names:
        lines += ["", "4. Serve with Triton:", "", "   ```", "   tritonserver --model-repository=$PWD/triton", "   ```",
                  "   `build_on_device.sh` also installs the engine it builds into `triton/` "
                  "(platform tensorrt_plan) when a prepared config exists in `device/triton/`."]
    lines += ["", "Files are listed with their SHA-256 in `SHA256SUMS`; `bundle.json` describes the bundle.", ""]
    return "\n".join(lines)


def make_bundle(
    artifacts: list[Path],
    target_name: str,
    *,
    output: Path | None = None,
    triton: bool = False,
    precision: str = "fp16",
    profile: tuple[int, int, int] = DEFAULT_PROFILE,
    archive: bool = True,
    force: bool = False,
    on_phase: Callable[[str], None] | None = None,
) -> BundleResult:
    """Write the bundle folder (and ``<folder>.tar.gz``) atomically: built in a temp dir, then renamed."""
    phase = on_phase or (lambda name: None)
    target = get_target(target_name)
    if precision not in ("fp32", "fp16", "bf16"):
        raise BadInput(f"--precision must be fp32, fp16 or bf16, got '{precision}'")
    phase("collect")
    onnx_items, engines = collect_artifacts(artifacts)
    notes = check_target(target, onnx_items, engines)
    for item in onnx_items:
        _batch_profile(item.manifest, profile)  # validates the profile early
    folder = (Path(output).expanduser() if output else default_bundle_dir(onnx_items, engines, target)).absolute()
    if is_same_or_parent_of_cwd(folder):
        raise BadInput(f"refusing to use {folder} as the bundle folder: it is the current folder or one of its "
                       "parents, which the bundle would replace; give a new folder with --output")
    tar_path = folder.with_name(folder.name + ".tar.gz")
    check_bundle_outputs(folder, tar_path if archive else None, force=force)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create {folder.parent}: {exc.strerror}") from None

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        phase("copy")
        (tmp / "model").mkdir()
        for item in onnx_items:
            for f in item.files:
                shutil.copy2(f, tmp / "model" / f.name)
        if engines:
            (tmp / "engines").mkdir()
            for engine in engines:
                for f in engine.files:
                    shutil.copy2(f, tmp / "engines" / f.name)

        triton_names: list[str] = []
        pending: dict[str, str] = {}
        if triton:
            phase("triton")
            triton_names, pending = _write_triton(tmp, onnx_items, engines, profile)

        phase("device files")
        (tmp / "README.md").write_text(_device_readme(target, onnx_items, engines, precision, profile, triton_names))
        script = tmp / "build_on_device.sh"
        script.write_text(build_script(onnx_items, target, precision=precision, profile=profile, triton_models=pending))
        script.chmod(0o755)
        bundle_manifest = {
            "schema": BUNDLE_SCHEMA,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dvit_deploy": __version__,
            "target": asdict(target),
            "precision": precision,
            "batch_profile": list(profile),
            "models": [{"onnx": f"model/{i.path.name}", "manifest": f"model/{manifest_path(i.path).name}",
                        "variant": i.manifest.get("variant"), "keep_counts": i.manifest.get("keep_counts")}
                       for i in onnx_items],
            "engines": [{"engine": f"engines/{e.path.name}", "manifest": f"engines/{manifest_path(e.path).name}",
                         "source_onnx": None if e.source is None else f"model/{e.source.path.name}",
                         **{k: _str(v) for k, v in engine_facts(e.manifest).items() if k in ("tensorrt", "gpu",
                                                                                             "compute_capability",
                                                                                             "precision")}}
                        for e in engines],
            "triton_models": triton_names,
        }
        write_json_atomic(tmp / BUNDLE_MANIFEST, bundle_manifest)

        phase("checksums")
        files = write_checksums(tmp)
        # Never ship what `dvit verify` would reject (a file changed while it was copied, a bug of ours).
        own_check = _verify_folder(tmp, check_engines=False)
        if not own_check.passed:
            failed = own_check.failures[0]
            raise CheckFailed(f"the new bundle fails its own verification ({failed.name}: {failed.detail}); "
                              "nothing was written")

        _swap_into_place(tmp, folder)
        tmp = None  # type: ignore[assignment]
        written_archive = None
        if archive:
            phase("archive")
            with atomic_path(tar_path) as tmp_tar:
                with tarfile.open(tmp_tar, "w:gz") as tar:
                    tar.add(folder, arcname=folder.name)
            written_archive = tar_path
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return BundleResult(folder, written_archive, target.name, files, triton_names,
                        build_commands=len(onnx_items), notes=notes)


def _write_triton(root: Path, onnx_items: list[OnnxItem], engines: list[EngineItem],
                  profile: tuple[int, int, int]) -> tuple[list[str], dict[str, str]]:
    repo = root / "triton"
    repo.mkdir()
    names: list[str] = []
    pending: dict[str, str] = {}  # onnx file name -> Triton model the device build installs
    for item in onnx_items:
        name = triton_model_name(item.path.stem, "onnx")
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(_onnx_triton(item, profile, gpu=False, platform="onnxruntime_onnx",
                                                               name=name))
        # One self-contained file: Triton's onnxruntime backend loads model.onnx (+ external data beside it).
        for f in item.files[:-1]:
            shutil.copy2(f, repo / name / "1" / ("model.onnx" if f == item.path else f.name))
        names.append(name)
        # A tensorrt_plan config prepared for the engine the device will build.
        trt_name = triton_model_name(item.path.stem, "trt")
        (root / "device" / "triton").mkdir(parents=True, exist_ok=True)
        (root / "device" / "triton" / f"{trt_name}.config.pbtxt").write_text(
            _onnx_triton(item, profile, gpu=True, platform="tensorrt_plan", name=trt_name))
        pending[item.path.name] = trt_name
    for engine in engines:
        stem = engine.path.stem
        name = triton_model_name(stem, "trt")
        reference = engine.source
        io = _engine_io(engine)
        if reference is None and io is None:
            raise BadInput(f"cannot write a Triton config for {engine.path.name}: its manifest records no I/O tensors "
                           "and no source ONNX")
        carrier = reference or OnnxItem(engine.path, {"dynamic_batch": True})
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(
            _onnx_triton(carrier, profile, gpu=True, platform="tensorrt_plan", name=name, io=io,
                         max_batch=_engine_max_batch(engine)))
        shutil.copy2(engine.path, repo / name / "1" / "model.plan")
        names.append(name)
    return names, pending


def is_bundle_folder(folder: Path) -> bool:
    """A folder written by ``dvit package``: it holds our ``bundle.json``."""
    manifest = folder / BUNDLE_MANIFEST
    if not manifest.is_file():
        return False
    try:
        return read_json(manifest, what="bundle manifest").get("schema") == BUNDLE_SCHEMA
    except BadInput:
        return False


def check_bundle_outputs(folder: Path, tar_path: Path | None, *, force: bool) -> None:
    """What ``--force`` may replace: a previous bundle folder (it holds our bundle.json) and its archive.

    Anything else — a folder that is not a bundle, a file where the folder goes — is refused, with or
    without ``--force`` (the current folder, its parents and ``/`` are refused before this).
    """
    if folder.exists() or folder.is_symlink():
        if not force:
            raise BadInput(f"output {folder} already exists; pass --force to replace it")
        if folder.is_symlink() or not folder.is_dir():
            raise BadInput(f"refusing to replace {folder}: it is not a folder; --force replaces only a previous "
                           f"bundle folder (one holding {BUNDLE_MANIFEST})")
        if not is_bundle_folder(folder):
            raise BadInput(f"refusing to replace {folder}: it is not a dvit bundle (no {BUNDLE_MANIFEST}); "
                           "--force replaces only a previous bundle folder")
    if tar_path is not None and (tar_path.exists() or tar_path.is_symlink()):
        if not force:
            raise BadInput(f"output {tar_path} already exists; pass --force to replace it")
        if tar_path.is_symlink() or not tar_path.is_file() or not tarfile.is_tarfile(tar_path):
            raise BadInput(f"refusing to replace {tar_path}: it is not a bundle archive; --force replaces only a "
                           "previous .tar.gz bundle")


def _swap_into_place(tmp: Path, folder: Path) -> None:
    """Rename the finished temp folder into place; an old bundle goes only once the new one is in.

    The old bundle is parked as ``.<name>.old-<pid>`` for the instant of the swap and removed in a
    ``finally``; parked folders left by a process that was killed (SIGKILL) are removed next time.
    """
    for stale in folder.parent.glob(f".{glob.escape(folder.name)}.old-*"):
        if stale.is_dir() and is_bundle_folder(stale):
            shutil.rmtree(stale, ignore_errors=True)
    old = None
    try:
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except OSError:
            if old is not None:
                os.replace(old, folder)
                old = None
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    os.chmod(folder, 0o777 & ~current_umask())


def _bundle_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(root: Path) -> list[str]:
    """``SHA256SUMS`` in ``sha256sum -c`` format (hash, two spaces, relative path) for every file."""
    files = _bundle_files(root)
    lines = [f"{sha256_file(root / rel)}  {rel}" for rel in files]
    (root / CHECKSUMS).write_text("\n".join(lines) + "\n")
    return files


# --------------------------------------------------------------------------------------------
# Verify


@dataclass
class VerifyCheck:
    name: str
    status: str  # "ok", "failed", "skipped", "warning"
    detail: str = ""


@dataclass
class VerifyReport:
    bundle: str
    checks: list[VerifyCheck] = field(default_factory=list)

    @property
    def failures(self) -> list[VerifyCheck]:
        return [c for c in self.checks if c.status == "failed"]

    @property
    def passed(self) -> bool:
        return not self.failures

    def add(self, name: str, status: str, detail: str = "") -> None:
        self.checks.append(VerifyCheck(name, status, detail))

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def verify_bundle(path: Path, *, check_engines: bool = True) -> VerifyReport:
    """Checksums, manifest consistency and (with TensorRT) engine compatibility of a bundle.

    Malformed bundles (no SHA256SUMS/bundle.json, unreadable archive) raise BadInput (exit 2);
    tampered or missing files are failed checks in the report (exit 1 from the CLI).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInput(f"bundle {path} not found")
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise BadInput(f"{path} is neither a bundle folder nor a .tar.gz bundle")
        with tempfile.TemporaryDirectory(prefix="dvit-verify-") as tmp:
            root = _extract(path, Path(tmp))
            report = _verify_folder(root, check_engines)
            report.bundle = str(path)
            return report
    return _verify_folder(path, check_engines)


def _extract(archive: Path, dest: Path) -> Path:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                    raise BadInput(f"{archive} holds an unsafe entry '{m.name}'; refusing to extract it")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadInput(f"cannot read bundle archive {archive}: {exc}") from None
    tops = [p for p in dest.iterdir()]
    return tops[0] if len(tops) == 1 and tops[0].is_dir() else dest


def read_checksums(root: Path) -> dict[str, str]:
    sums = root / CHECKSUMS
    if not sums.is_file():
        raise BadInput(f"{root} is not a dvit bundle: {CHECKSUMS} is missing")
    entries = {}
    for lineno, line in enumerate(sums.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line)
        if not match:
            raise BadInput(f"{sums}:{lineno} is not a 'sha256  path' line")
        rel = match.group(2)
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise BadInput(f"{sums}:{lineno} names a path outside the bundle: {rel}")
        entries[rel] = match.group(1).lower()
    return entries


def _verify_folder(root: Path, check_engines: bool) -> VerifyReport:
    report = VerifyReport(str(root))
    if not root.is_dir():
        raise BadInput(f"bundle {root} is not a folder")
    sums = read_checksums(root)
    bundle = read_json(root / BUNDLE_MANIFEST, what="bundle manifest")
    if bundle.get("schema") != BUNDLE_SCHEMA:
        raise BadInput(f"{root / BUNDLE_MANIFEST} has schema {bundle.get('schema')!r}, expected {BUNDLE_SCHEMA}")

    # 1. Checksums of every listed file; unlisted files are reported, not failed (a device build adds engines).
    bad, missing = [], []
    actual: dict[str, str] = {}
    for rel, expected in sums.items():
        file = root / rel
        if not file.is_file():
            missing.append(rel)
            continue
        actual[rel] = sha256_file(file)
        if actual[rel] != expected:
            bad.append(rel)
    if bad:
        report.add("checksums", "failed", "modified: " + ", ".join(bad))
    if missing:
        report.add("files present", "failed", "missing: " + ", ".join(missing))
    if not bad and not missing:
        report.add("checksums", "ok", f"{len(sums)} files match {CHECKSUMS}")
    unlisted = [rel for rel in _bundle_files(root) if rel not in sums]
    if unlisted:
        report.add("unlisted files", "warning", ", ".join(unlisted[:5]) + (" ..." if len(unlisted) > 5 else ""))

    # 2. Manifests agree with the files they describe.
    for model in bundle.get("models", []):
        _verify_onnx_entry(root, model, report)
    engine_files = []
    for engine in bundle.get("engines", []):
        engine_files.extend(_verify_engine_entry(root, engine, report))
    _verify_triton(root, bundle.get("triton_models", []), report)

    # 3. Engines against this machine's TensorRT.
    if engine_files and check_engines:
        _engine_compatibility(engine_files, report)
    elif engine_files:
        report.add("engine compatibility", "skipped", "not requested")
    return report


def _verify_onnx_entry(root: Path, model: Mapping[str, Any], report: VerifyReport) -> None:
    rel_onnx, rel_manifest = model.get("onnx"), model.get("manifest")
    if not isinstance(rel_onnx, str) or not isinstance(rel_manifest, str):
        raise BadInput(f"{BUNDLE_MANIFEST} has a model entry without onnx/manifest paths")
    onnx_file, manifest_file = root / rel_onnx, root / rel_manifest
    if not onnx_file.is_file() or not manifest_file.is_file():
        report.add(f"manifest {rel_manifest}", "failed", f"{rel_onnx if not onnx_file.is_file() else rel_manifest} missing")
        return
    try:
        manifest = read_json(manifest_file)
    except BadInput as exc:
        report.add(f"manifest {rel_manifest}", "failed", str(exc))
        return
    problems = []
    if manifest.get("artifact") not in (None, onnx_file.name):
        problems.append(f"describes {manifest.get('artifact')}, not {onnx_file.name}")
    record = manifest.get("onnx") or {}
    if record.get("sha256") and record["sha256"] != sha256_file(onnx_file):
        problems.append(f"sha256 of {rel_onnx} differs from the manifest")
    if record.get("bytes") is not None and record["bytes"] != onnx_file.stat().st_size:
        problems.append(f"size of {rel_onnx} differs from the manifest")
    for name, digest in (record.get("external_data_sha256") or {}).items():
        data = onnx_file.parent / name
        if not data.is_file():
            problems.append(f"external weights {name} missing")
        elif sha256_file(data) != digest:
            problems.append(f"sha256 of {name} differs from the manifest")
    if model.get("keep_counts") is not None and manifest.get("keep_counts") != model.get("keep_counts"):
        problems.append("keep counts differ between bundle.json and the manifest")
    report.add(f"manifest {rel_manifest}", "failed" if problems else "ok",
               "; ".join(problems) if problems else f"matches {rel_onnx}")


def _verify_engine_entry(root: Path, engine: Mapping[str, Any], report: VerifyReport) -> list[Path]:
    rel_engine, rel_manifest = engine.get("engine"), engine.get("manifest")
    if not isinstance(rel_engine, str) or not isinstance(rel_manifest, str):
        raise BadInput(f"{BUNDLE_MANIFEST} has an engine entry without engine/manifest paths")
    engine_file, manifest_file = root / rel_engine, root / rel_manifest
    if not engine_file.is_file() or not manifest_file.is_file():
        report.add(f"manifest {rel_manifest}", "failed", "engine or manifest missing")
        return []
    try:
        facts = engine_facts(read_json(manifest_file))
    except BadInput as exc:
        report.add(f"manifest {rel_manifest}", "failed", str(exc))
        return []
    problems, unknown = [], []
    if facts["sha256"] is None:
        unknown.append("engine sha256")
    elif str(facts["sha256"]) != sha256_file(engine_file):
        problems.append(f"sha256 of {rel_engine} differs from its manifest")
    source = engine.get("source_onnx")
    if isinstance(source, str) and (root / source).is_file():
        if facts["onnx_sha256"] is None:
            unknown.append("source ONNX sha256")
        elif str(facts["onnx_sha256"]) != sha256_file(root / source):
            problems.append(f"engine was built from a different ONNX than {source}")
    detail = "; ".join(problems) if problems else f"matches {rel_engine}"
    if unknown and not problems:
        detail += f" (manifest lacks {', '.join(unknown)})"
    report.add(f"manifest {rel_manifest}", "failed" if problems else "ok", detail)
    return [engine_file]


def _verify_triton(root: Path, names: list[str], report: VerifyReport) -> None:
    for name in names:
        config = root / "triton" / name / "config.pbtxt"
        if not config.is_file():
            report.add(f"triton {name}", "failed", "config.pbtxt missing")
            continue
        text = config.read_text(errors="replace")
        platform = re.search(r'platform:\s*"([^"]+)"', text)
        expected_file = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}.get(
            platform.group(1) if platform else "")
        problems = []
        if expected_file is None:
            problems.append("unknown or missing platform")
        elif not (root / "triton" / name / "1" / expected_file).is_file():
            problems.append(f"1/{expected_file} missing for platform {platform.group(1)}")
        if f'name: "{name}"' not in text:
            problems.append("config name differs from its folder")
        report.add(f"triton {name}", "failed" if problems else "ok", "; ".join(problems) or platform.group(1))


def _engine_compatibility(engine_files: list[Path], report: VerifyReport) -> None:
    """Ask the engines layer whether each engine may be deserialized on this machine's TensorRT/GPU."""
    from .runtime import package_present

    if not package_present("tensorrt"):
        report.add("engine compatibility", "skipped", "engine compatibility not checked: tensorrt not installed")
        return
    try:
        import tensorrt

        from .engines import compatibility_problem
        from .engines.trt_build import cuda_device

        device = cuda_device()
    except Exception as exc:  # no GPU, broken TensorRT install, older engines layer
        report.add("engine compatibility", "skipped",
                   f"engine compatibility not checked: {str(exc).splitlines()[0][:160]}")
        return
    for engine_file in engine_files:
        manifest = read_json(manifest_path(engine_file))
        problem = compatibility_problem(manifest, trt_version=tensorrt.__version__, device=device)
        report.add(f"engine {engine_file.name} on this device", "failed" if problem else "ok",
                   problem or f"TensorRT {tensorrt.__version__} on {device.name}")
