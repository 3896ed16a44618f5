"""torch's ONNX exporter as dvit runs it: quiet, without onnxscript's pattern rewriter, then light passes.

Shared by the fixed-ratio export (``onnx_export``) and ``--dynamic-keep`` (``dynamic_keep``); both import
it, neither imports the other's module for it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from ..helpers.errors import DvitError

# torch's exporter runs onnxscript's full optimizer by default; most of its time goes to the pattern
# rewriter, whose fusions ONNX Runtime, OpenVINO and TensorRT redo when they load the graph. dvit
# exports without it and runs the light passes below (constant folding, dead nodes, constant lifting,
# CSE): measured on DeiT-S (benchmarks/bench_export.py) the graph stays small (654 vs 629 nodes,
# 1407 with no pass at all), every check passes, ORT throughput is unchanged, ~1.5 s faster.
EXPORTER_OPTIMIZE = False


def light_optimize(program: Any) -> None:
    """Constant folding, unused-node removal, constant lifting and CSE on an exported program's IR."""
    import onnx_ir as ir
    from onnx_ir.passes import common as common_passes
    from onnxscript.optimizer import _constant_folding

    ir.passes.PassManager([
        ir.passes.PassManager([_constant_folding.FoldConstantsPass(
            shape_inference=True, input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
            output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT),
            common_passes.RemoveUnusedNodesPass()], steps=2, early_stop=True),
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common_passes.DeduplicateInitializersPass(),
        common_passes.CommonSubexpressionEliminationPass(),
    ])(program.model)


def export_program(module: torch.nn.Module, args: tuple[Any, ...], path: Path, *, external_data: bool,
                   failure: str, **kwargs: Any) -> None:
    """Run torch's exporter on ``module(*args)``, optimize lightly and save to ``path``.

    The exporter narrates its phases on stdout and raises many exception types: its output is kept out of the
    CLI's, and a failure becomes one ``DvitError`` line starting with ``failure``."""
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, optimize=EXPORTER_OPTIMIZE, verbose=False,
                                        **kwargs)
            light_optimize(program)
            program.save(str(path), external_data=external_data)
    except Exception as exc:  # the exporter raises many types; report it as one line
        raise DvitError(f"{failure}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
