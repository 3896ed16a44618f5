"""`dvit flops`: analytic GMACs per variant and keep ratio, dense and sparse, per stage."""

from __future__ import annotations

from typing import List, Optional

import typer

from ..jobs.flops import CONVENTION, FlopsOptions, ModelFlops, run
from .common import command_context
from .failures import handle_errors
from .options import JSON_OPTION, parse_floats
from .output import emit_json, out, table

DEFAULT_RATIOS = "0.9,0.8,0.7"


@handle_errors
def flops(
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="Variant (repeatable) \\[default: all]."),
    keep_ratio: str = typer.Option(DEFAULT_RATIOS, "--keep-ratio", "-r", help="Comma-separated ρ values."),
    with_predictors: bool = typer.Option(
        False, "--with-predictors",
        help="Headline figures include the score predictors (default: the paper's convention, predictors "
             "reported separately)."),
    per_stage: bool = typer.Option(False, "--per-stage", help="Also print the per-stage breakdown."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Analytic GMACs (multiply-adds), dense and per keep ratio, with the counting convention stated."""
    options = FlopsOptions(models=tuple(model or ()), keep_ratios=tuple(parse_floats(keep_ratio, "--keep-ratio") or ()),
                           with_predictors=with_predictors)
    result = run(options, command_context())
    if json_output:
        emit_json(result.to_dict())
        return
    include = result.include_predictors
    columns = ["model", "dense"] + [f"ρ={r:g}" for r in result.keep_ratios]
    rows = [[m.variant, f"{m.dense.gmacs:.2f}"] + [_cell(m, s, include) for s in m.sparse] for m in result.models]
    title = "GMACs per image" + (" (predictors included)" if include else
                                 " (paper convention: backbone; + the predictors' cost)")
    out.print(table(title, columns, rows))
    if per_stage:
        for m in result.models:
            for report in [m.dense, *m.sparse]:
                label = "dense" if report.keep_ratio is None else f"ρ={report.keep_ratio:g}"
                stage_rows = [[s.stage, f"{s.blocks[0]}–{s.blocks[1]}", s.tokens, f"{s.predictor_macs / 1e6:.1f}",
                               f"{s.block_macs / 1e9:.3f}"] for s in report.stages]
                stage_rows.append(["stem + heads", "", "", "", f"{(report.stem_macs + report.head_macs) / 1e9:.3f}"])
                out.print(table(f"{m.variant} {label}: {report.gmacs:.3f} GMACs", ["stage", "blocks", "tokens",
                                "predictor MMACs", "blocks GMACs"], stage_rows))
    out.print(f"convention: {CONVENTION}; headline {'includes' if include else 'excludes'} the score "
              "predictors (the paper's tables exclude them; the released model zoo's figures, measured with "
              "fvcore, include them)", style="dim")


def _cell(model: ModelFlops, report, include: bool) -> str:
    extra = "" if include else f" +{model.both_counts(report)['predictor_gmacs']:.2f}"
    return f"{report.gmacs:.2f}{extra} ({model.dense.total_macs / report.total_macs:.2f}×)"
