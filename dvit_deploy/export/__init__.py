"""ONNX export of DynamicViT models, and the checks every export goes through.

Names load on first use: ``export.graph`` (onnx only) must not pull in torch for ``dvit doctor``.
"""

from __future__ import annotations

from types import MappingProxyType

from ..helpers.lazy import lazy_exports

_EXPORTS = MappingProxyType({
    "CheckReport": "report", "check_export": "check", "reference_outputs": "check", "seeded_images": "check",
    "check_pruning_structure": "graph", "io_description": "graph", "pruning_stages": "graph",
    "record_problems": "graph",
    "with_topk_outputs": "graph",
    "DEFAULT_OPSET": "onnx_export", "ExportResult": "onnx_export", "export_onnx": "onnx_export",
    "token_output_name": "onnx_export", "ExportOptions": "requests",
})
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = tuple(sorted(_EXPORTS))
