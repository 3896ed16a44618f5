"""What ``dvit quantize`` shows while and after it runs: phases with a calibration bar, the summary table."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from ..jobs.quantize import summary_rows
from .output import err, human_bytes, out, styled, table
from .progress import phases


def render(result) -> None:
    """The human summary of a ``QuantizeResult``: warnings and notes on stderr, the table on stdout."""
    manifest = result.manifest
    quantization = manifest.quantization
    out.print(table(f"{result.source.name} → INT8 Q/DQ ({quantization.calibration_method}, "
                    f"{quantization.calibration_samples} "
                    f"{quantization.calibration_source})", ["check", "result"], summary_rows(result)))
    out.print(styled("[green]wrote[/] {} ({}, {} of the fp32 file) and {}", result.path,
                     human_bytes(manifest.bytes), f"{result.size_ratio:.0%}", result.manifest_path.name))
    for note in result.check.comparison.notes if result.check.comparison else []:
        err.print(styled("[cyan]•[/] {}", note))
    if manifest.model.random_weights:
        out.print(styled("[yellow]note:[/] random weights: agreement on flat logits and scores understates "
                         "what a trained checkpoint gives"))


@contextlib.contextmanager
def calibration_progress() -> Iterator[tuple[Callable[[str], None], Callable[[int, int], None]]]:
    """Phases as lines/spinners, calibration as a bar (images done of total)."""
    if not err.is_terminal:  # piped: one line per phase with its time (as every command), calibration by quarters
        state = {"last": -1}

        def on_calib_plain(done: int, total: int) -> None:
            quarter = int(4 * done / max(total, 1))
            if quarter > state["last"]:
                state["last"] = quarter
                err.print(f"quantize: calibration {done}/{total} images")

        with phases("quantize") as on_phase_plain:
            yield on_phase_plain, on_calib_plain
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=False) as progress:
        tasks: list = []
        calib_task: list = []

        def on_phase(name: str) -> None:
            if tasks:
                progress.update(tasks[-1], completed=progress.tasks[-1].total or 1, total=progress.tasks[-1].total or 1)
            tasks.append(progress.add_task(f"quantize: {name}", total=None))
            if name.startswith("calibrate"):
                calib_task[:] = [tasks[-1]]

        def on_calib(done: int, total: int) -> None:
            if calib_task:
                progress.update(calib_task[0], completed=done, total=total)

        try:
            yield on_phase, on_calib
        finally:
            if tasks:
                progress.update(tasks[-1], completed=1, total=1)
