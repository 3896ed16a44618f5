"""What an export may be asked for (``ExportOptions``) and every check of it, in one place (torch-free).

The checks run at three moments, each as early as what it needs is known: ``check_options`` from the options
alone (before torch, the checkpoint or the model are loaded), ``check_model_request`` once a checkpoint's
variant is read (before the model is built), and ``check_loaded`` in ``export_onnx`` for library callers that
hand it a model. ``check_request`` is the one variant rule all three apply.

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

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..artifact.store import export_dir, onnx_name
from ..helpers.defaults import DEFAULT_OPSET, EXPORT_CHECK_SAMPLES, MAX_BATCH
from ..helpers.errors import BadInput
from ..helpers.fileio import prepare_output
from ..models.config import DEFAULT_KEEP_RATIO, DEFAULT_VARIANT, VARIANTS, VariantConfig

if TYPE_CHECKING:
    from ..models.checkpoint import LoadedModel, ModelRequest

# Opset 18 is what torch's exporter emits natively, and TensorRT 10.3 (JetPack 6) parses it.
MIN_OPSET, MAX_OPSET = 18, 23
MAX_DYNAMIC_BATCH = MAX_BATCH


@dataclass(frozen=True)
class ExportOptions:
    """What ``dvit export`` was asked for; each field is the flag of the same name."""

    checkpoint: Path | None = None  # None: the seeded random default model
    model: str | None = None  # the variant; detected from the weights when None
    keep_ratio: float | None = None
    stage_ratios: tuple[float, ...] | None = None  # overrides keep_ratio
    dense: bool = False
    opset: int = DEFAULT_OPSET
    batch: int | None = None  # None: dynamic batch
    token_outputs: bool = False
    dynamic_keep: bool = False
    output: Path | None = None  # None: ./export/<variant>-r<ρ>.onnx
    force: bool = False
    use_ema: bool = False
    trust_checkpoint: bool = False
    seed: int | None = None
    check_samples: int = EXPORT_CHECK_SAMPLES

    def __post_init__(self) -> None:
        for name in ("checkpoint", "output"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.stage_ratios is not None and not isinstance(self.stage_ratios, tuple):
            object.__setattr__(self, "stage_ratios", tuple(self.stage_ratios))

    def with_changes(self, **changes: Any) -> "ExportOptions":
        return dataclasses.replace(self, **changes)


def validate_options(opset: int, batch: int | None) -> None:
    """Option checks that need no model, so the CLI can run them before loading one."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise BadInput(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    if batch is not None and not 1 <= batch <= MAX_DYNAMIC_BATCH:
        raise BadInput(f"--batch must be between 1 and {MAX_DYNAMIC_BATCH}, got {batch}")


def default_output(variant: str, dense: bool, stage_ratios: Sequence[float] | None, *, batch: int | None,
                   dynamic_keep: bool) -> Path:
    """``./export/<variant>-r<ρ>[-b<batch>].onnx``: where an export goes when no --output is given."""
    ratio = None if dense or not stage_ratios else stage_ratios[0]
    return export_dir() / onnx_name(variant, dense, ratio, batch=batch, dynamic_keep=dynamic_keep)


def check_options(options: ExportOptions) -> None:
    """The refusals the options alone decide, before torch, the checkpoint or the model are loaded."""
    check_flags(checkpoint_given=options.checkpoint is not None, model_name=options.model,
                keep_ratio=options.keep_ratio, stage_ratios=options.stage_ratios, dense=options.dense,
                dynamic_keep=options.dynamic_keep)
    validate_options(options.opset, options.batch)  # before any time is spent on the model
    if options.output is not None:
        prepare_output(options.output, force=options.force, kinds=(".onnx",))


def check_model_request(options: ExportOptions, request: "ModelRequest") -> None:
    """The refusals that need the variant (known once a checkpoint is read), before the model is built."""
    check_request(request.variant, dense=request.dense, stage_ratios=request.stage_ratios,
                  dynamic_keep=options.dynamic_keep)
    if options.output is None:
        default = default_output(request.variant.name, request.dense, request.stage_ratios,
                                 batch=options.batch, dynamic_keep=options.dynamic_keep)
        prepare_output(default, force=options.force, kinds=(".onnx",), create=False)


def check_loaded(options: ExportOptions, loaded: "LoadedModel") -> Path:
    """``export_onnx``'s refusals for the model it was handed; returns the output path, prepared."""
    validate_options(options.opset, options.batch)
    if options.token_outputs and loaded.dense:
        raise BadInput("--token-outputs needs a pruned model; a dense baseline keeps every token")
    if options.dynamic_keep and loaded.dense:
        raise BadInput("--dynamic-keep needs a pruned model; a dense baseline keeps every token")
    check_request(loaded.variant, dense=loaded.dense, stage_ratios=loaded.stage_ratios,
                  dynamic_keep=options.dynamic_keep)
    output = options.output
    if output is None:
        output = default_output(loaded.variant.name, loaded.dense, loaded.stage_ratios, batch=options.batch,
                                dynamic_keep=options.dynamic_keep)
    output = prepare_output(output, force=options.force, kinds=(".onnx",))
    if output.suffix != ".onnx":
        raise BadInput(f"output {output} must end in .onnx")
    return output


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
    if dense and (keep_ratio is not None or stage_ratios is not None):
        flag = "--keep-ratio" if keep_ratio is not None else "--stage-ratios"
        raise BadInput(f"--dense exports the twin that keeps every token: {flag} does not apply to it")
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
