"""`dvit package` (device bundle, Triton repository) and `dvit verify` (what arrived is intact)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..engines.targets import DEVICE_TARGETS as TARGETS
from ..helpers.errors import BadInput, CheckFailed
from ..helpers.lazy import lazy_import
from ..jobs.ship.layout import DEFAULT_PROFILE
from .common import command_context, artifact_or_default
from .failures import handle_errors
from .options import JSON_OPTION, NO_VERIFY_OPTION, parse_ints
from .output import emit_json, human_bytes, notes, out, styled, table
from .progress import phases

package_job = lazy_import("dvit_deploy.jobs.package")  # loaded when a command runs
verify_job = lazy_import("dvit_deploy.jobs.verify")


@handle_errors
def package(
    artifacts: Optional[List[Path]] = typer.Argument(
        None, help="ONNX models and/or engines to ship \\[default: the default artifact, see README].", show_default=False),
    target: str = typer.Option(..., "--target", "-t", help=f"Device target: {', '.join(TARGETS)}."),
    triton: bool = typer.Option(False, "--triton", help="Also write a Triton Inference Server model repository."),
    triton_python: bool = typer.Option(False, "--triton-python", help="With --triton: also a CPU model on Triton's "
                                       "Python backend (ONNX Runtime inside; the server's Python needs dvit-deploy)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Bundle folder \\[default: ./bundles/<model>-<target>]; the archive is <folder>.tar.gz."),
    precision: str = typer.Option("fp16", "--precision", "-p", help="Engine precision for the device build: fp32, fp16, bf16."),
    batch_profile: Optional[str] = typer.Option(
        None, "--batch-profile", help=f"min,opt,max batch for dynamic-batch models \\[default: {','.join(map(str, DEFAULT_PROFILE))}]."),
    no_archive: bool = typer.Option(False, "--no-archive", help="Write the folder only, no .tar.gz."),
    force: bool = typer.Option(
        False, "--force", "-f", help="Replace an existing bundle: only a folder holding a dvit bundle.json (and its "
        ".tar.gz); any other folder or file is refused, and so are the current folder and its parents."),
    no_verify: bool = NO_VERIFY_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Bundle a model for a device: ONNX, engines, manifests, SHA256SUMS, README, build_on_device.sh."""
    profile = parse_ints(batch_profile, "--batch-profile")
    if profile is not None and len(profile) != 3:
        raise BadInput("--batch-profile takes three integers: min,opt,max")
    context = command_context(no_verify=no_verify)
    paths = list(artifacts) if artifacts else [artifact_or_default(None, context=context)]  # picked inside: read once
    options = package_job.PackageOptions(target, output=output, triton=triton, triton_python=triton_python,
                                  precision=precision, profile=tuple(profile) if profile else DEFAULT_PROFILE,
                                  archive=not no_archive, force=force)
    with phases("package") as on_phase:
        on_phase("collect")  # opening the artifacts is where collecting them starts: the job's own
        opened = package_job.open_artifacts(paths, context)  # "collect" is that same phase, so it is not announced twice
        result = package_job.run(options, context, opened, on_phase=lambda name: name == "collect" or on_phase(name))
    notes(result.notes)
    if json_output:
        emit_json({"passed": True, **result.to_dict()})
        return
    rows = [[f, human_bytes((result.folder / f).stat().st_size)] for f in result.files]
    out.print(table(f"bundle for {result.target}: {result.folder}", ["file", "size"], rows))
    out.print(styled("[green]wrote[/] {}", f"{result.folder}" + (f" and {result.archive}" if result.archive else "")))
    if result.triton_models:
        out.print(f"Triton models: {', '.join(result.triton_models)} (tritonserver --model-repository={result.folder}/triton)")
    step = "./run_on_device.sh" if result.target == "rtx" else "sha256sum -c SHA256SUMS && ./build_on_device.sh"
    out.print(f"on the device: {step}  (or: dvit verify {result.folder})")


@handle_errors
def verify(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar.gz written by 'dvit package'."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Check a bundle: checksums, manifests against files, and engine compatibility where TensorRT is present."""
    report = verify_job.run(verify_job.VerifyOptions(bundle), command_context())
    if json_output:
        emit_json(report.to_dict())
    else:
        out.print(table(f"verify {report.bundle}", ["check", "result", "detail"],
                        [[c.name, _status(c.status), c.detail] for c in report.checks]))
    if not report.passed:
        failed = report.failures[0]
        raise CheckFailed(f"{failed.name}: {failed.detail}" + (f" (+{len(report.failures) - 1} more)" if len(report.failures) > 1 else ""))
    if not json_output:
        out.print(styled("[green]bundle verified[/]"))


def _status(status: str) -> str:
    styles = {"ok": "[green]ok[/]", "failed": "[bold red]FAILED[/]", "skipped": "[yellow]skipped[/]",
              "warning": "[yellow]warning[/]"}
    return styled(styles[status]) if status in styles else status
