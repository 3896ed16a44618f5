"""TensorRT engines: readiness checks (no TensorRT needed), fp16 graphs, build plans, builds.

Only ``trt_build.py`` (and ``runtime/trt_runner.py``) import ``tensorrt``, lazily; everything
else here is plain Python/ONNX and runs on any machine.
"""

from .doctor import DEFAULT_TARGET, TARGETS, DoctorReport, diagnose
from .fp16 import convert_to_mixed_precision
from .manifest import BuildPlan, compatibility_problem, make_plan

__all__ = [
    "DEFAULT_TARGET",
    "TARGETS",
    "BuildPlan",
    "DoctorReport",
    "compatibility_problem",
    "convert_to_mixed_precision",
    "diagnose",
    "make_plan",
]
