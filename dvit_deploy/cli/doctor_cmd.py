"""`dvit doctor`: will TensorRT's ONNX parser take this graph? Works without TensorRT or a GPU; runs NVIDIA's
TensorRT-RTX parser too where ``tensorrt_rtx`` is installed."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Optional

import typer

from ..engines.targets import DEFAULT_PARSER_TARGET as DEFAULT_TARGET, DEVICE_TARGETS, PARSER_TARGETS as TARGETS
from ..helpers.lazy import lazy_import
from ..jobs import doctor as doctor_job
from .common import artifact_or_default, command_context
from .failures import handle_errors
from .options import JSON_OPTION
from .output import emit_json, err, out, styled, table

doctor_lib = lazy_import("dvit_deploy.engines.doctor")  # onnx: loaded when the command runs

SEVERITY_STYLE = MappingProxyType({"blocker": styled("[bold red]blocker[/]"), "warning": styled("[yellow]warning[/]"),
                                   "info": styled("[dim]info[/]")})


@handle_errors
def doctor(
    onnx_path: Optional[Path] = typer.Argument(None, help="ONNX graph \\[default: the default artifact, see README].",
                                               show_default=False),
    target: str = typer.Option(DEFAULT_TARGET, "--target", "-t",
                               help=f"TensorRT parser to check against: {', '.join(TARGETS)}; or a device target of "
                                    f"'dvit package' ({', '.join(DEVICE_TARGETS)}), checked against its parser."),
    json_output: bool = JSON_OPTION,
) -> None:
    """TensorRT readiness report: operators, opset, TopK, int64, Attention, external data, profiles; with
    tensorrt-rtx installed also NVIDIA's real parser (each error with its node)."""
    context = command_context()
    path = artifact_or_default(onnx_path, (".onnx",), context=context)
    report = doctor_job.run(doctor_job.DoctorOptions(target=target), context, path)
    if json_output:
        emit_json(report.to_dict())
    else:
        rows = [(SEVERITY_STYLE[s], c, m) for s, c, m in doctor_lib.summary_rows(report)]
        out.print(table(f"{path.name} for {report.target.description} (opset {report.opset})",
                        ["severity", "check", "finding"], rows))
        if report.passed:
            out.print(styled("[green]ready for {}[/]: no blockers", report.target.name))
    if not report.passed:  # the failure line on stderr, with --json too (stdout holds only the JSON)
        err.print(styled("[bold red]check failed:[/] not ready for {}: {} blocker(s)", report.target.name,
                         len(report.blockers)))
        raise typer.Exit(1)
