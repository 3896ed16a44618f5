"""INT8 explicit quantization (Q/DQ) of dvit ONNX exports: ``dvit quantize``."""

from .calibration import CalibrationSource, generated_scenes, mixed_inputs, seeded_noise
from .int8_check import DEFAULT_CHECK_SAMPLES, EXCLUDED_OP_TYPES, QuantizeCheck, check_quantized, qdq_facts
from .core import (DEFAULT_CALIB_SAMPLES, DEFAULT_METHOD, METHODS, QUANTIZED_OP_TYPES, KeptFloat, QuantizeOptions,
                   QuantizeResult, default_output, default_source, excluded_nodes, fp32_exports, quantize_onnx,
                   run_quantize)

run = run_quantize  # the command's one seam: jobs.quantize.run(options, context, source)
from .report import result_json, summary_rows
from .recipe import CPU_RECIPES, DEFAULT_TARGET, RECIPES, TARGETS, Recipe, RecipeChoice, select_recipe

__all__ = (
    "CalibrationSource", "DEFAULT_CALIB_SAMPLES", "DEFAULT_CHECK_SAMPLES", "DEFAULT_METHOD", "EXCLUDED_OP_TYPES",
    "CPU_RECIPES", "DEFAULT_TARGET", "METHODS", "QUANTIZED_OP_TYPES", "RECIPES", "Recipe", "RecipeChoice", "TARGETS",
    "select_recipe", "KeptFloat", "QuantizeCheck", "QuantizeOptions", "QuantizeResult", "fp32_exports", "check_quantized", "default_output",
    "default_source", "excluded_nodes", "generated_scenes", "mixed_inputs", "qdq_facts", "quantize_onnx", "run", "run_quantize",
    "result_json", "seeded_noise", "summary_rows")
