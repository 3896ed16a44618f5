"""What an export may be asked for, decided before torch or a checkpoint is loaded (torch-free).

``jobs.export.run_export`` runs ``check_request`` first with what its flags already say (``--model``, or the
default model when no checkpoint is given), then again once a checkpoint's variant is detected
(``resolve_model``, before ``build_model``), and ``export_onnx`` runs it once more for library callers: one
rule, three moments.

Two requests are refused here, each in one line:

* ``--dynamic-keep`` on ConvNeXt/Swin: their split point is a Slice of a full TopK order, not the TopK's K,
  so a ``keep_counts`` input would need its own shape input (not supported yet);
* a keep ratio of 1 at some predictor position of ConvNeXt/Swin. Their official schedule is linear,
  ``[ρ, ρ−0.2, ρ−0.4]``, so ``ρ = 1`` is *not* "everything kept": it keeps all positions at the first
  predictor only and prunes to 80 % and 60 % after it. That position's decision would split off no
  position at all, leaving each of its Ada blocks an empty fast-path set: the exported graph has no slice
  there, which the export's own structure check rejects (it used to, after 30 s). A model that keeps
  everything is the dense baseline (``--dense``); any ρ below 1 is exported as the official code runs it.
"""

from __future__ import annotations

from typing import Sequence

from ..helpers.errors import BadInput
from ..models.config import DEFAULT_KEEP_RATIO, DEFAULT_VARIANT, VARIANTS, VariantConfig


def check_request(variant: VariantConfig, *, dense: bool, stage_ratios: Sequence[float] | None,
                  dynamic_keep: bool) -> None:
    """Refuse (BadInput, one line) an export of ``variant`` that cannot be written correctly."""
    if dense or not variant.splits_tokens:
        return
    if dynamic_keep:
        raise BadInput(f"--dynamic-keep is not supported for {variant.family} models yet: export one graph per keep "
                       "ratio (their split point is a Slice, not the TopK's K, so it needs its own shape input)")
    if stage_ratios is None:
        return
    positions = variant.num_patches
    counts = [int(positions * r) for r in stage_ratios]
    if positions in counts:
        shown = ", ".join(f"{r:g}" for r in stage_ratios)
        raise BadInput(f"{variant.name}: stage ratios {shown} keep all {positions} positions at predictor "
                       f"{counts.index(positions) + 1}, which would split off none (ConvNeXt/Swin's schedule is "
                       "[ρ, ρ−0.2, ρ−0.4], so ρ = 1 is not 'everything kept'); use ρ below 1, or --dense for the "
                       "model that keeps every position")


def check_flags(*, checkpoint_given: bool, model_name: str | None, keep_ratio: float | None,
                stage_ratios: Sequence[float] | None, dense: bool, dynamic_keep: bool) -> None:
    """``check_request`` from the flags alone, when they name the variant (``--model``, or the default model
    of an export without a checkpoint): before torch, the checkpoint or the model are loaded. A ratio the
    flags do not give (a checkpoint's own ``base_rate``) is checked once the checkpoint is read."""
    if model_name is None and checkpoint_given:
        return
    name = model_name or DEFAULT_VARIANT
    if name not in VARIANTS:
        return  # load_model names the unknown model with the list of known ones
    variant = VARIANTS[name]
    ratios: Sequence[float] | None = stage_ratios
    if ratios is None and (keep_ratio is not None or not checkpoint_given):
        try:
            ratios = variant.stage_ratios(DEFAULT_KEEP_RATIO if keep_ratio is None else keep_ratio)
        except ValueError:
            ratios = None  # an invalid ratio: load_model refuses it in its own words
    check_request(variant, dense=dense, stage_ratios=ratios, dynamic_keep=dynamic_keep)
