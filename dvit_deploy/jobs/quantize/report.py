"""What ``dvit quantize`` shows of a ``QuantizeResult``: the table's rows and the ``--json`` document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...helpers.compare import Tolerance

if TYPE_CHECKING:
    from .core import QuantizeResult


def result_json(result: "QuantizeResult") -> dict[str, Any]:
    """The document ``dvit quantize --json`` prints."""
    return {"passed": True, **result.manifest.to_json(), "path": str(result.path),
            "manifest": str(result.manifest_path), "source": str(result.source),
            "size_ratio": round(result.size_ratio, 4),
            "seconds": {k: round(v, 2) for k, v in result.seconds.items()}}


def summary_rows(result: "QuantizeResult") -> list[tuple[str, str]]:
    """The table's rows, from the result: the recipe it was quantized with, what stayed float, the check."""
    check = result.check
    choice, kept = result.choice, result.kept_float
    execution = check.execution or {}
    rows = [("recipe", f"{choice.recipe.name} for {choice.target} ({choice.chosen_by}): "
                       f"weights {choice.recipe.weights}, activations {choice.recipe.activations}"),
            ("why this recipe", str(choice.reason)),
            ("CPU", (execution.get("cpu") or {}).get("class", "?") + f" ({(execution.get('cpu') or {}).get('model', '?')})"),
            ("onnxruntime ran", f"{execution.get('kernels', '?')}"
                                + (f" with {execution['session_config']}" if execution.get("session_config") else "")),
            ("onnx.checker (full)", check.checker)]
    if check.stages:
        rows.append(("TopK per stage (K)", f"{len(check.stages)} ({', '.join(str(s['k']) for s in check.stages)})"))
        rows.append(("Gather per stage", ", ".join(str(len(s["gathers"])) for s in check.stages)))
    rows.append(("Q/DQ", f"{check.qdq['quantize_linear']} Q, {check.qdq['dequantize_linear']} DQ; "
                 f"{check.qdq['per_channel_weights']} per-channel int8 weights; zero points 0"))
    rows.append(("kept in float", f"{len(kept.nodes)} nodes: predictors "
                 f"({'/'.join(map(str, kept.predictor_nodes_per_stage)) or 'quantized'}), "
                 f"{', '.join(kept.op_types)}"))
    return rows + _comparison_rows(result)


def _comparison_rows(result: "QuantizeResult") -> list[tuple[str, str]]:
    cmp = result.check.comparison
    if cmp is None:
        return []
    lg = cmp.logits
    confident = ("—" if lg.top1_agreement_confident is None
                 else f"{lg.top1_agreement_confident:.1%} of {lg.confident_samples} with margin ≥ 0.1")
    rows = [(f"ORT int8 vs PyTorch fp32, {cmp.samples} inputs",
             f"top-1 {lg.top1_agreement:.1%} (confident: {confident}), top-5 {lg.top5_agreement:.1%}, "
             f"max |Δlogit| {lg.max_abs:.3f}")]
    for st in cmp.stages:
        rows.append((f"kept tokens stage {st.stage} (K={st.keep_count})",
                     f"mean Jaccard {st.mean_jaccard:.4f}, {st.flipped_samples} input(s) differ "
                     f"({st.near_tie_flips} near-tie)"))
    if cmp.mean_jaccard is not None:
        rows.append(("kept tokens, all stages", f"mean Jaccard {cmp.judged_jaccard:.4f} with near-tie flips as "
                     f"agreeing (raw {cmp.mean_jaccard:.4f}; minimum {Tolerance.for_precision('int8').min_mean_jaccard:g})"))
    return rows
