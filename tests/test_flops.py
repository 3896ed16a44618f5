"""Analytic GMACs reproduce the DynamicViT paper's numbers (±0.1).

The paper's tables (DeiT-S, LV-ViT-S) were counted by hand without the score predictors; the
released model zoo's figures come from fvcore in the official code, which counts them. Each is
checked against its own convention, unrounded.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dvit_deploy.cli import app
from dvit_deploy.artifact.manifest import ModelRecord
from dvit_deploy.jobs.flops import block_macs, count_macs, macs_for_model
from dvit_deploy.models import get_variant

PAPER_TABLE = {  # variant: {ρ or None (dense): GMACs}, predictors not counted
    "deit-s": {None: 4.6, 0.9: 4.0, 0.8: 3.4, 0.7: 2.9},
    "lvvit-s": {None: 6.6, 0.9: 5.8, 0.8: 5.1, 0.7: 4.6},
}
MODEL_ZOO = {  # released checkpoints' GMACs, predictors counted
    "deit-256": {0.7: 1.3},
    "deit-b": {0.7: 11.4},
    "lvvit-s": {0.5: 3.7},
    "lvvit-m": {0.7: 8.5},
    # DynamicCNN / DynamicSwin zoo (issue 17), linear schedule [ρ, ρ-0.2, ρ-0.4]; dense baselines.
    "convnext-t": {None: 4.5, 0.7: 3.6, 0.9: 3.9},
    "convnext-s": {None: 8.7, 0.7: 5.8, 0.9: 6.8},
    "convnext-b": {None: 15.4, 0.7: 10.2, 0.9: 11.9},
    "swin-t": {None: 4.5, 0.7: 4.0},
    "swin-s": {None: 8.7, 0.7: 6.9},
    "swin-b": {None: 15.4, 0.7: 12.1},
}


def _cases(table):
    return [(v, r, g) for v, entries in table.items() for r, g in entries.items()]


@pytest.mark.parametrize("variant,ratio,expected", _cases(PAPER_TABLE))
def test_reproduces_paper_table(variant, ratio, expected):
    gmacs = count_macs(get_variant(variant), ratio, include_predictors=False).gmacs
    assert abs(gmacs - expected) <= 0.1, f"{variant} ρ={ratio}: {gmacs:.3f} vs {expected}"


@pytest.mark.parametrize("variant,ratio,expected", _cases(MODEL_ZOO))
def test_reproduces_model_zoo_figures(variant, ratio, expected):
    gmacs = count_macs(get_variant(variant), ratio, include_predictors=True).gmacs
    assert abs(gmacs - expected) <= 0.1, f"{variant} ρ={ratio}: {gmacs:.3f} vs {expected}"


def test_block_macs_by_hand():
    deit_s = get_variant("deit-s")
    n, d = 197, 384
    assert block_macs(deit_s, n) == n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * 4 * d


def test_stages_follow_keep_schedule_and_predictors_are_optional():
    variant = get_variant("deit-s")
    report = count_macs(variant, 0.7)
    assert [s.tokens for s in report.stages] == [197, 138, 97, 68]
    assert [s.blocks for s in report.stages] == [(0, 2), (3, 5), (6, 8), (9, 11)]
    assert report.stages[0].predictor_macs == 0
    # Stage k's predictor scores the tokens the previous stage kept: 196, 137, 96.
    per_token = report.stages[1].predictor_macs / 196
    assert report.stages[2].predictor_macs == per_token * 137
    without = count_macs(variant, 0.7, include_predictors=False)
    assert report.total_macs - without.total_macs == sum(s.predictor_macs for s in report.stages)
    dense = count_macs(variant)
    assert len(dense.stages) == 1 and dense.predictor_macs == 0
    assert dense.total_macs > report.total_macs > without.total_macs


def test_manifest_counts_match_variant(tiny_export):
    manifest = tiny_export.manifest.to_json()
    from_manifest = macs_for_model(ModelRecord.from_json(manifest))
    direct = count_macs(get_variant("tiny-deit"), stage_ratios=manifest["stage_ratios"])
    assert from_manifest.total_macs == direct.total_macs
    assert list(from_manifest.keep_counts) == manifest["keep_counts"]


def test_cli_json():
    result = CliRunner().invoke(app, ["flops", "--model", "deit-s", "--keep-ratio", "0.7", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    model = data["models"][0]
    assert model["variant"] == "deit-s"
    assert abs(model["dense"]["gmacs"] - 4.6) <= 0.1
    sparse = model["sparse"][0]
    assert sparse["keep_counts"] == [137, 96, 67]
    # Headline: the paper's convention (2.9 for DeiT-S at ρ=0.7), the predictors beside it.
    assert sparse["include_predictors"] is False and abs(sparse["gmacs"] - 2.9) <= 0.1
    assert sparse["gmacs"] == sparse["gmacs_without_predictors"]
    assert sparse["gmacs_with_predictors"] == pytest.approx(sparse["gmacs"] + sparse["predictor_gmacs"], abs=2e-4)
    assert 0.09 < sparse["predictor_gmacs"] < 0.12
    assert "convention" in data and data["include_predictors"] is False
    with_predictors = json.loads(CliRunner().invoke(
        app, ["flops", "-m", "deit-s", "-r", "0.7", "--with-predictors", "--json"]).stdout)
    assert with_predictors["models"][0]["sparse"][0]["gmacs"] == sparse["gmacs_with_predictors"]


def test_cli_rejects_bad_ratio():
    result = CliRunner().invoke(app, ["flops", "--keep-ratio", "1.5"])
    assert result.exit_code == 2
    assert "keep ratio" in result.output


def test_split_model_macs_by_hand():
    """ConvNeXt-T/0.7 = dense − FFN saved + fast paths + predictors (the issue's check by hand)."""
    variant = get_variant("convnext-t")
    dense, sparse = count_macs(variant), count_macs(variant, 0.7)
    n, c = 196, 384
    saved = sum((end - first + 1) * (n - k) * (8 * c * c - c * c)
                for (first, end), k in zip([(1, 1), (2, 2), (3, 8)], (137, 97, 58)))
    predictors = 3 * n * (c * c + c * (c // 2) + (c // 2) * (c // 4) + (c // 4) * 2)
    assert sparse.keep_counts == (137, 97, 58)
    assert sparse.total_macs == dense.total_macs - saved + predictors
    assert round(saved / 1e9, 2) == 1.02 and round(predictors / 1e9, 2) == 0.14
    assert [s.blocks for s in sparse.stages] == [(0, 0), (1, 1), (2, 2), (3, 8)]
