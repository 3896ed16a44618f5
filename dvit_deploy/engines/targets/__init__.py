"""Every TensorRT fact dvit relies on, in one table: no torch, no onnx, no TensorRT needed.

``doctor`` (parser targets), ``build`` (precision flags, hardware compatibility, engine names),
``ship`` (device targets, trtexec flags, engine names, version families) and the TensorRT runner
(may this engine load here?) all read this module, so a fact changes in one place.

* **Parser targets** (``dvit doctor --target``): which ONNX opsets a TensorRT ONNX parser reads and
  whether it imports the opset-23 ``Attention`` op (parser >= 10.14). Sources: onnx-tensorrt
  ``docs/operators.md`` (10.0 and 10.15 editions) and the TensorRT 11.x ONNX Opset Guide.
* **Device targets** (``dvit package --target``): where a bundle goes, its TensorRT release and
  the parser target that release implies (opset limit), strongly typed from TensorRT 11.
* **Precision**: how each precision is obtained per TensorRT major (``BuilderFlag`` names for
  ``dvit build``, the same decision spelled as trtexec flags for ``build_on_device.sh``).
* **Compatibility**: which TensorRT version, platform and GPU may deserialize an engine.
* **Build flavours** (``dvit build --target rtx``): TensorRT and TensorRT-RTX share one builder
  (``trt_build.py``); what differs (module, typing, flags, compute capabilities, timing cache,
  what needs a GPU) is a row of ``BUILD_FLAVOURS``, and where TensorRT-RTX's parser legitimately
  differs from TensorRT 10.x/11.x it is a field of its parser target (``rtx``).

The table is split by concern -- ``versions``, ``parsers`` (doctor), ``devices`` (package), ``precision``,
``flavours`` (TensorRT and TensorRT-RTX) and ``compat`` (hardware compatibility, engine names, may this
engine load here?) -- and every name is re-exported here: ``engines.targets`` stays the one import path.
"""

from __future__ import annotations

from .compat import (AMPERE_CC, HARDWARE_COMPAT, HARDWARE_COMPAT_LEVELS, HARDWARE_COMPAT_SINCE, DeviceInfo,
                     compatibility_problem, engine_file_name, gpu_tag)
from .devices import (DEVICE_TARGETS, DevicePrecision, DeviceTarget, device_precision, devices_refusing_opset,
                      get_device_target, parser_target_named)
from .flavours import (BUILD_FLAVOURS, RTX_COMPUTE_CAPABILITIES, RTX_DEFAULT_COMPUTE_CAPABILITIES, RTX_ENGINE_MAGIC,
                       RTX_NO_FP32_GEMM, BuildFlavour, build_flavour, compute_capability_list,
                       compute_capability_refusal, engine_compute_capability_problem, engine_record,
                       rtx_compatibility_problem)
from .parsers import (DEFAULT_PARSER_TARGET, PARSER_TARGETS, RTX_LACKS_OPS, TRT10_OLDEST_MAX_OPSET, ParserTarget,
                      parser_target_for)
from .precision import (PRECISIONS, TRTEXEC_CLEARED_FLAGS, TRTEXEC_SET_FLAGS, PrecisionStrategy, precision_strategy,
                        trtexec_flags)
from .versions import parse_trt_version, same_tensorrt_release

__all__ = (
    "AMPERE_CC", "BUILD_FLAVOURS", "BuildFlavour", "DEFAULT_PARSER_TARGET", "DEVICE_TARGETS", "DeviceInfo",
    "DevicePrecision", "DeviceTarget", "HARDWARE_COMPAT", "HARDWARE_COMPAT_LEVELS", "HARDWARE_COMPAT_SINCE",
    "PARSER_TARGETS", "PRECISIONS", "ParserTarget", "PrecisionStrategy", "RTX_COMPUTE_CAPABILITIES",
    "RTX_DEFAULT_COMPUTE_CAPABILITIES", "RTX_ENGINE_MAGIC", "RTX_LACKS_OPS", "RTX_NO_FP32_GEMM",
    "TRT10_OLDEST_MAX_OPSET", "TRTEXEC_CLEARED_FLAGS", "TRTEXEC_SET_FLAGS", "build_flavour", "compatibility_problem",
    "compute_capability_list", "compute_capability_refusal", "device_precision", "devices_refusing_opset",
    "engine_compute_capability_problem", "engine_file_name", "engine_record", "get_device_target", "gpu_tag",
    "parse_trt_version", "parser_target_for", "parser_target_named", "precision_strategy", "rtx_compatibility_problem",
    "same_tensorrt_release", "trtexec_flags",
)
