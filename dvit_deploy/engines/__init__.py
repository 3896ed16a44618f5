"""TensorRT engines: the target table, readiness checks (no TensorRT needed), fp16 graphs, build
plans, builds.

``targets/`` (every TensorRT fact: parser and device targets, precision flags, engine names,
compatibility), ``build_options.py`` (every check of dvit build's options) and ``build_plan.py``
(plans, profiles, engine manifests) need neither torch nor onnx; ``doctor.py`` and ``fp16.py`` need
onnx; only ``trt_build.py`` (and ``runtime/trt_runner.py``) import ``tensorrt``, lazily. The names below load on first use, so
importing one submodule does not import the others.
"""

from __future__ import annotations

from types import MappingProxyType

from ..helpers.lazy import lazy_exports

_EXPORTS = MappingProxyType({
    "DEFAULT_TARGET": "doctor",
    "TARGETS": "doctor",
    "DoctorReport": "doctor",
    "diagnose": "doctor",
    "convert_to_mixed_precision": "fp16",
    "BuildOptions": "build_options",
    "BuildPlan": "build_plan",
    "make_plan": "build_plan",
    "compatibility_problem": "targets",
    "device_precision": "targets",
})
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = tuple(sorted(_EXPORTS))
