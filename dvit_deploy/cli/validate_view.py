"""`dvit validate`'s human table: one row per artifact and backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .output import print_wide, styled, table

TABLE_WIDTH = 140


def print_report(report: Any) -> None:
    rows = []
    for r in report.results:
        name = Path(r.artifact).name
        if r.comparison is None:
            rows.append([name, r.backend, "—", "—", "—", "—", "—", "—", styled("[yellow]skipped[/]: {}", r.reason)])
            continue
        lg = r.comparison.logits
        tokens = _token_summary(r)
        status = styled("[green]pass[/]") if r.passed else styled("[red]FAIL[/]: {}", "; ".join(r.comparison.failures))
        rows.append([name, f"{_short(r.executes)} {r.precision}", f"{lg.max_abs:.2e}", f"{lg.mean_abs:.2e}",
                     f"{lg.cosine_min:.6f}", _top1(r), f"{lg.top5_agreement:.0%}", tokens, status])
    grid = table(f"validate vs PyTorch fp32 — {report.samples} inputs, {report.inputs}",
                 ["artifact", "backend", "max |Δ|", "mean |Δ|", "cos min", "top-1", "top-5",
                  "kept tokens (Jaccard per stage)", "result"], rows)
    print_wide(grid, TABLE_WIDTH)


def _top1(result) -> str:
    """Raw top-1 agreement; for precisions judged by agreement also on the confidently classified inputs."""
    lg = result.comparison.logits
    text = f"{lg.top1_agreement:.0%}"
    if result.comparison.judged_by == "agreement" and lg.top1_agreement_confident is not None:
        text += f" (conf. {lg.top1_agreement_confident:.0%} of {lg.confident_samples})"
    return text


def _token_summary(result) -> str:
    if result.token_info == "dense model":
        return "dense (no pruning)"
    if not result.comparison.stages:
        return styled("[yellow]no token info[/]")
    parts = [f"S{s.stage}: {s.mean_jaccard:.4f}" + (f" ({s.flipped_samples} flip" + (
             f", {s.near_tie_flips} near-tie)" if s.near_tie_flips else ")") if s.flipped_samples else "")
             for s in result.comparison.stages]
    if result.comparison.judged_by == "agreement" and result.comparison.mean_jaccard is not None:
        parts.append(f"mean {result.comparison.mean_jaccard:.4f}")
    return ", ".join(parts)


def _short(executes: str | None) -> str:
    """'onnxruntime 1.31.1 CPUExecutionProvider' -> 'onnxruntime CPU'."""
    words = (executes or "").replace("ExecutionProvider", "").split()
    return " ".join(w for w in words if not w[:1].isdigit())
