"""`dvit doctor`: will TensorRT's ONNX parser take this graph? Works without TensorRT or a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..engines.doctor import DEFAULT_TARGET, TARGETS, diagnose, summary_rows
from ..workspace import export_dir, newest_artifact
from .common import JSON_OPTION, emit_json, err, handle_errors, out, table

SEVERITY_STYLE = {"blocker": "[bold red]blocker[/]", "warning": "[yellow]warning[/]", "info": "[dim]info[/]"}


@handle_errors
def doctor(
    onnx_path: Optional[Path] = typer.Argument(None, help="ONNX graph \\[default: the newest in ./export].",
                                               show_default=False),
    target: str = typer.Option(DEFAULT_TARGET, "--target", "-t",
                               help=f"TensorRT parser to check against: {', '.join(TARGETS)}."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Static TensorRT readiness report: operators, opset, TopK, int64, Attention, external data, profiles."""
    path = onnx_path if onnx_path is not None else newest_artifact(export_dir(), ".onnx", "export")
    report = diagnose(path, target)
    if json_output:
        emit_json(report.to_dict())
    else:
        rows = [(SEVERITY_STYLE[s], c, m) for s, c, m in summary_rows(report)]
        out.print(table(f"{path.name} for {report.target.description} (opset {report.opset})",
                        ["severity", "check", "finding"], rows))
        if report.passed:
            out.print(f"[green]ready for {report.target.name}[/]: no blockers")
        else:
            err.print(f"[bold red]not ready for {report.target.name}:[/] {len(report.blockers)} blocker(s)")
    if not report.passed:
        raise typer.Exit(1)
