"""`dvit flops`: analytic GMACs per variant and keep ratio, dense and sparse, per stage."""

from __future__ import annotations

from typing import List, Optional

import typer

from ..helpers.errors import BadInput
from ..jobs.flops import CONVENTION, count_macs
from ..models import VARIANTS, get_variant
from ..models.config import validate_keep_ratio
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
    names = model or [n for n in VARIANTS if not n.startswith("tiny-")]
    for name in names:
        if name not in VARIANTS:
            raise BadInput(f"unknown model '{name}'; known: {', '.join(VARIANTS)}")
    ratios = parse_floats(keep_ratio, "--keep-ratio") or []
    for ratio in ratios:
        try:
            validate_keep_ratio(ratio)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    include = with_predictors
    reports = []
    for name in names:
        variant = get_variant(name)
        dense = count_macs(variant, include_predictors=include)
        sparse = []
        for ratio in ratios:
            try:
                sparse.append(count_macs(variant, ratio, include_predictors=include))
            except ValueError as exc:
                raise BadInput(f"{name}, ρ={ratio}: {exc}") from None
        reports.append((name, dense, sparse))

    if json_output:
        emit_json({
            "convention": CONVENTION,
            "include_predictors": include,
            "models": [{"variant": name, "dense": dense.to_dict(),
                        "sparse": [s.to_dict() | _both_counts(name, s, dense) for s in sparse]}
                       for name, dense, sparse in reports],
        })
        return
    columns = ["model", "dense"] + [f"ρ={r:g}" for r in ratios]
    rows = [[name, f"{dense.gmacs:.2f}"] + [_cell(name, s, dense, include) for s in sparse]
            for name, dense, sparse in reports]
    title = "GMACs per image" + (" (predictors included)" if include else
                                 " (paper convention: backbone; + the predictors' cost)")
    out.print(table(title, columns, rows))
    if per_stage:
        for name, dense, sparse in reports:
            for report in [dense, *sparse]:
                label = "dense" if report.keep_ratio is None else f"ρ={report.keep_ratio:g}"
                stage_rows = [[s.stage, f"{s.blocks[0]}–{s.blocks[1]}", s.tokens, f"{s.predictor_macs / 1e6:.1f}",
                               f"{s.block_macs / 1e9:.3f}"] for s in report.stages]
                stage_rows.append(["stem + heads", "", "", "", f"{(report.stem_macs + report.head_macs) / 1e9:.3f}"])
                out.print(table(f"{name} {label}: {report.gmacs:.3f} GMACs", ["stage", "blocks", "tokens",
                                "predictor MMACs", "blocks GMACs"], stage_rows))
    out.print(f"convention: {CONVENTION}; headline {'includes' if include else 'excludes'} the score "
              "predictors (the paper's tables exclude them; the released model zoo's figures, measured with "
              "fvcore, include them)", style="dim")


def _both_counts(name: str, report, dense) -> dict:
    """Both conventions for every sparse entry, whatever the headline uses."""
    variant = get_variant(name)
    without = count_macs(variant, report.keep_ratio, include_predictors=False)
    with_ = count_macs(variant, report.keep_ratio, include_predictors=True)
    return {
        "ratio_to_dense": round(dense.total_macs / report.total_macs, 4),
        "gmacs_without_predictors": round(without.gmacs, 4),
        "gmacs_with_predictors": round(with_.gmacs, 4),
        "predictor_gmacs": round(with_.predictor_macs / 1e9, 4),
    }


def _cell(name: str, report, dense, include: bool) -> str:
    extra = "" if include else f" +{_both_counts(name, report, dense)['predictor_gmacs']:.2f}"
    return f"{report.gmacs:.2f}{extra} ({dense.total_macs / report.total_macs:.2f}×)"
