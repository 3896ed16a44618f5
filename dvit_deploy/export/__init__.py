"""ONNX export of DynamicViT models, and the checks every export goes through."""

from .check import CheckReport, check_export, reference_outputs, seeded_images
from .graph import check_pruning_structure, io_description, pruning_stages, with_topk_outputs
from .onnx_export import DEFAULT_OPSET, ExportResult, export_onnx, token_output_name

__all__ = [
    "DEFAULT_OPSET",
    "CheckReport",
    "ExportResult",
    "check_export",
    "check_pruning_structure",
    "export_onnx",
    "io_description",
    "pruning_stages",
    "reference_outputs",
    "seeded_images",
    "token_output_name",
    "with_topk_outputs",
]
