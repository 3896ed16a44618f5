"""The bundle's words: its device README and the precision each model runs at on the device."""

from __future__ import annotations

from datetime import datetime, timezone

from ... import __version__
from ...engines.targets import DeviceTarget
from ...helpers.fileio import manifest_path
from .layout import CHECKSUMS, EngineItem, OnnxItem
from .rtx import readme_section
from .trtexec import _batch_profile, built_precision, device_precision_of, engine_name, trtexec_benchmark


def precision_label(item: OnnxItem, target: DeviceTarget, precision: str) -> str:
    """The device engine's precision in words: ``int8 (fp16 outside the Q/DQ pairs)`` for a Q/DQ model built
    with --fp16; a TensorRT-RTX target says its engines ship as built."""
    return device_precision_of(item, target, precision).label


def item_precision(item: OnnxItem, target: DeviceTarget, engines: list[EngineItem], precision: str) -> tuple[str, str]:
    """(precision, in words) of what the device runs for one ONNX: for a TensorRT-RTX bundle, the engines built
    from it, as built; elsewhere what the device build makes of it (``device_precision_of``)."""
    if target.flavour != "rtx":
        return built_precision(item, target, precision), precision_label(item, target, precision)
    mine = [e for e in engines if e.source is not None and e.source.path.resolve() == item.path.resolve()]
    built = "/".join(dict.fromkeys(e.manifest.precision for e in mine)) or item.manifest.precision
    return built, f"{built} (no device build: TensorRT-RTX engines ship as built)"


def shipped_precision(target: DeviceTarget, onnx_items: list[OnnxItem], engines: list[EngineItem], precision: str) -> str:
    """bundle.json's ``precision``: what the device runs. A TensorRT-RTX bundle runs its engines as built (an fp16
    engine is fp16, whatever a device build of the ONNX would make); other targets run what their device build
    makes of each ONNX (an int8 Q/DQ model builds int8 whatever --precision says)."""
    if target.flavour == "rtx" and engines:
        return "/".join(dict.fromkeys(e.manifest.precision for e in engines))
    return "/".join(dict.fromkeys(built_precision(i, target, precision) for i in onnx_items)) or precision


def _device_readme(target: DeviceTarget, onnx_items: list[OnnxItem], engines: list[EngineItem], precision: str,
                   profile: tuple[int, int, int], triton_names: list[str]) -> str:
    lines = [f"# DynamicViT bundle for {target.name}", "",
             f"Target: {target.description}. Made by dvit-deploy {__version__} on "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d')}.", "", "## Contents", ""]
    for item in onnx_items:
        model, opset = item.model, item.manifest.opset
        counts = "dense" if model.dense else "/".join(str(c) for c in model.keep_counts)
        batch = "dynamic batch" if _batch_profile(model, profile) else f"batch {model.batch}"
        lines.append(f"- `model/{item.path.name}`: {model.variant or '?'}, kept tokens per stage {counts}, "
                     f"opset {'?' if opset is None else opset}, {batch}, "
                     f"token outputs {'yes' if model.token_outputs else 'no'}, "
                     f"device engine precision {item_precision(item, target, engines, precision)[1]}; "
                     f"manifest `model/{manifest_path(item.path).name}`.")
    for engine in engines:
        built = engine.manifest
        if built.is_rtx:
            lines.append(f"- `engines/{engine.path.name}`: TensorRT-RTX {built.tensorrt or '?'}, "
                         f"{built.precision or '?'}, built ahead of time for compute capability "
                         f"{built.rtx_covers}.")
            continue
        lines.append(f"- `engines/{engine.path.name}`: TensorRT {built.tensorrt or '?'}, "
                     f"{built.precision or '?'}, built on {built.gpu or 'an unknown GPU'} "
                     f"(compute capability {built.compute_capability or '?'}).")
    if triton_names:
        lines.append(f"- `triton/`: a Triton Inference Server model repository ({', '.join(triton_names)}).")
    data_config = (onnx_items[0].model.data_config if onnx_items else None) or {}
    lines += ["", "## Input", ""]
    if data_config:
        lines.append(f"`images`: float32 NCHW {list(data_config.get('input_size', []))}, RGB; resize "
                     f"({data_config.get('interpolation')}, crop_pct {data_config.get('crop_pct')}), centre crop, "
                     f"normalise with mean {list(data_config.get('mean', []))} and std {list(data_config.get('std', []))}.")
    if target.flavour == "rtx":
        return "\n".join(lines + readme_section(engines, target))
    lines += ["", "## On the device", "", "1. Check the files arrived intact:", "", "   ```", f"   sha256sum -c {CHECKSUMS}",
              "   ```", "   (or `dvit verify .` where dvit-deploy is installed.)", "",
              "2. Build the engine here, on the device (engines are specific to the GPU and TensorRT version):", "",
              "   ```", "   ./build_on_device.sh", "   ```", "",
              f"   It runs `trtexec` with the input shapes (batch {profile[0]}/{profile[1]}/{profile[2]} "
              f"min/opt/max for dynamic batch), precision "
              f"{', '.join(dict.fromkeys(precision_label(i, target, precision) for i in onnx_items)) or precision}, "
              "and a timing cache "
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
