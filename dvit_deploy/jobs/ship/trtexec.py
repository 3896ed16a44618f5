"""``trtexec`` commands and ``build_on_device.sh``: how a bundle's engines are built on the device.

An x86 host cannot build a Jetson engine, and engines are specific to the GPU and TensorRT
version, so a bundle carries the commands instead. Their flags are the TensorRT target table's
(``engines.targets``: the same precision decision as ``dvit build``, spelled for trtexec) and the
profiles are those ``dvit build`` declares (``engines.build_plan.make_profiles``); every flag is
checked against trtexec's documented options per target (``tests/data/trtexec-flags.json``).
"""

from __future__ import annotations

import shlex
from typing import Mapping

from ...artifact.manifest import AnyManifest, ModelRecord, OnnxManifest
from ... import __version__
from ...engines.build_plan import make_profiles
from ...engines.targets import (DevicePrecision, DeviceTarget, PrecisionStrategy, device_precision, engine_file_name,
                               trtexec_flags)
from ...helpers.errors import BadInput
from .layout import CHECKSUMS, OnnxItem


def _batch_profile(model: ModelRecord, profile: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """(min, opt, max) batch for a dynamic-batch model; None for a fixed batch."""
    if model.fixed_batch:
        return None
    low, opt, high = profile
    if not 1 <= low <= opt <= high:
        raise BadInput(f"batch profile must satisfy 1 <= min <= opt <= max, got {low}/{opt}/{high}")
    return profile


def _profile_args(manifest: OnnxManifest, profile: tuple[int, int, int]) -> list[str]:
    """trtexec --min/opt/maxShapes from the same profiles ``dvit build`` declares.

    A shape-tensor input (the ``keep_counts`` of a --dynamic-keep export) takes its min/opt/max
    *values* in the same ``name:AxBxC`` syntax; a fixed-shape model with no such input needs none.
    """
    batches = _batch_profile(manifest.model, profile)
    low, opt, high = batches if batches is not None else (None, None, None)
    profiles = make_profiles(manifest, min_batch=low, opt_batch=opt, max_batch=high)
    if batches is None and not any(p.kind == "values" for p in profiles):
        return []

    def spec(which: str) -> str:
        return ",".join(f"{p.name}:{'x'.join(str(v) for v in getattr(p, which))}" for p in profiles)

    return [f"--minShapes={spec('min')}", f"--optShapes={spec('opt')}", f"--maxShapes={spec('max')}"]


def engine_name(onnx_item: OnnxItem, target: DeviceTarget, precision: str) -> str:
    """``<onnx stem>-<target>-<precision>.engine`` (``engines.targets.engine_file_name``)."""
    return engine_file_name(onnx_item.path.stem, target.name, precision)


def _quantized(manifest: AnyManifest) -> bool:
    """An explicitly quantized (Q/DQ, int8) ONNX, as ``dvit quantize`` writes it."""
    return manifest.precision == "int8"


def device_precision_of(onnx_item: OnnxItem, target: DeviceTarget, precision: str) -> DevicePrecision:
    """The precision decision ``dvit build`` makes (``engines.targets.device_precision``) for the
    engine the device builds from ``onnx_item``: written once there, flavour included."""
    return device_precision(target, precision, quantized=_quantized(onnx_item.manifest))


def built_precision(onnx_item: OnnxItem, target: DeviceTarget, precision: str) -> str:
    """The precision the device build really produces (it names the engine)."""
    return device_precision_of(onnx_item, target, precision).built


def device_precision_strategy(onnx_item: OnnxItem, target: DeviceTarget, precision: str) -> PrecisionStrategy:
    """How the device build gets that precision (its trtexec flags)."""
    return device_precision_of(onnx_item, target, precision).strategy


def trtexec_command(onnx_item: OnnxItem, target: DeviceTarget, *, precision: str, profile: tuple[int, int, int],
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
    args += trtexec_flags(device_precision_strategy(onnx_item, target, precision))
    args += [f"--timingCacheFile={cache_rel}", "--skipInference"]
    return args


def _image_input(manifest: AnyManifest) -> tuple[str, tuple[int, int, int]]:
    """Name and (C, H, W) of the image input, from the manifest (its I/O, else the model config)."""
    inputs = manifest.inputs
    name = (inputs[0].name or "images") if inputs else "images"
    shape = list(inputs[0].shape) if inputs else []
    if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return name, (shape[1], shape[2], shape[3])
    return name, manifest.model.input_shape


def trtexec_benchmark(manifest: AnyManifest, engine_rel: str, profile: tuple[int, int, int]) -> list[str]:
    """``trtexec --loadEngine`` for an engine built from this ONNX: the image shape (the profile's opt
    batch, or the fixed batch) and, for a --dynamic-keep model, the ``keep_counts`` *values* (a
    shape-tensor input: without them trtexec would fill it with ones)."""
    name, (c, h, w) = _image_input(manifest)
    model = manifest.model
    batches = _batch_profile(model, profile)
    n = batches[1] if batches is not None else (model.batch or 1)
    shapes = [f"{name}:{n}x{c}x{h}x{w}"]
    keep = model.keep_input
    if model.dynamic_keep and keep and model.keep_counts:
        shapes.append(f"{keep['name']}:{'x'.join(str(int(v)) for v in model.keep_counts)}")
    args = ['"$TRTEXEC"', f"--loadEngine={engine_rel}"]
    if batches is not None or len(shapes) > 1:
        args.append("--shapes=" + ",".join(shapes))
    return args


def _bash_line(args: list[str]) -> str:
    # $TRTEXEC stays unquoted-expandable; everything else is quoted for the shell.
    return " \\\n    ".join(a if a.startswith("\"$") else shlex.quote(a) for a in args)


def build_script(onnx_items: list[OnnxItem], target: DeviceTarget, *, precision: str, profile: tuple[int, int, int],
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
