"""The one graph rewrite that lets an ONNX-reading backend report kept tokens from an export without
token outputs (ONNX Runtime and OpenVINO both use it).

An export without ``--token-outputs`` has no kept-index outputs, so the runners load an in-memory copy
that also outputs each pruning stage's kept indices (``export.graph.with_topk_outputs``). What "kept
indices" means is the structural reading of ``export.graph.pruning_stages``: for DeiT / LV-ViT the
TopK's own index output (TopK over N with K = kept); for the split models (ConvNeXt / Swin) the TopK
sorts all N positions and a Slice takes the first K, so the kept indices are that Slice's output, not
the TopK's — reading the TopK itself would report every position as kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifact.names import TOKEN_OUTPUT_PREFIX
from ..artifact.store import Artifact
from ..helpers.errors import BadInput


def declared_token_outputs(artifact: Artifact) -> list[str]:
    """The export's own token outputs (``--token-outputs``), stage order."""
    declared = artifact.manifest.token_output_names
    return sorted(declared, key=lambda n: int(n[len(TOKEN_OUTPUT_PREFIX):]))


def graph_with_kept_outputs(artifact: Artifact, path: Path,
                            describe_error: Any = str) -> tuple[Any | None, list[str]]:
    """(in-memory ONNX model with per-stage kept-index outputs, their names in stage order).

    The model is None when no rewrite is needed or possible: the export declares token outputs (the
    names are returned), the model is dense, or the graph has no pruning stage (no names).
    ``describe_error`` turns an ONNX load error into the cause shown to the user.
    """
    declared = declared_token_outputs(artifact)
    if declared or artifact.model.dense:
        return None, declared
    import onnx

    from ..export.graph import pruning_stages, with_topk_outputs

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for unreadable files
        raise BadInput(f"{path.name} is not a readable ONNX file: {describe_error(exc)}") from None
    stages = pruning_stages(model)
    if not stages:
        return None, []
    return with_topk_outputs(model), [s.indices_output for s in stages]
