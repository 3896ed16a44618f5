"""Progress on stderr: a live display on a terminal, plain lines when piped (CI logs, ``2> log``)."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from .output import err


@contextlib.contextmanager
def phases(title: str) -> Iterator[Callable[[str], None]]:
    """Progress with one line per phase; yields the ``on_phase(name)`` callback.

    On a terminal: a spinner per phase. Piped (CI logs, ``2> log``): one plain line per phase
    with the time the previous one took, instead of a live display that prints blank lines.
    """
    if not err.is_terminal:
        start = [time.perf_counter()]
        last: list[str] = []

        def on_phase_plain(name: str) -> None:
            now = time.perf_counter()
            if last:
                err.print(f"{title}: {last[-1]} done ({now - start[0]:.1f} s)")
            start[0] = now
            last.append(name)
            err.print(f"{title}: {name} …")

        yield on_phase_plain  # a phase that raised is not reported "done": the error line follows
        if last:
            err.print(f"{title}: {last[-1]} done ({time.perf_counter() - start[0]:.1f} s)")
        return
    with Progress(
        SpinnerColumn(finished_text=Text("✓", style="green")),
        TextColumn("{task.description}", markup=False),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        current: list[Any] = []

        def on_phase(name: str) -> None:
            if current:
                progress.update(current[-1], completed=1, total=1)
            current.append(progress.add_task(f"{title}: {name}", total=None))

        try:
            yield on_phase
        finally:
            if current:
                progress.update(current[-1], completed=1, total=1)


@contextlib.contextmanager
def fraction_progress() -> Iterator[Callable[[str, float], None]]:
    """``on_progress(label, fraction)`` for long measured work: bars on a terminal, lines when piped."""
    if not err.is_terminal:
        reported: dict[str, int] = {}

        def on_progress_plain(label: str, fraction: float) -> None:
            quarter = int(fraction * 4)  # start, 25 %, 50 %, 75 %, done: enough for a log
            if reported.get(label, -1) < quarter:
                reported[label] = quarter
                err.print(f"{label}: {fraction:.0%}")

        yield on_progress_plain
        return
    from rich.progress import BarColumn

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(label: str, fraction: float) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=1.0)
            progress.update(tasks[label], completed=fraction)

        yield on_progress


@contextlib.contextmanager
def count_progress(title: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """``(on_start(total), on_advance(n))`` for item-by-item work: a bar on a terminal, lines when piped."""
    if not err.is_terminal:
        state = {"total": 0, "done": 0, "printed": -1}

        def start_plain(total: int) -> None:
            state["total"] = total
            err.print(f"{title}: {total} item(s)")

        def advance_plain(n: int) -> None:
            state["done"] += n
            tenth = int(10 * state["done"] / max(state["total"], 1))
            if tenth > state["printed"]:
                state["printed"] = tenth
                err.print(f"{title}: {state['done']}/{state['total']}")

        yield start_plain, advance_plain
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn

    with Progress(TextColumn(title, markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err, transient=False) as progress:
        task = progress.add_task(title, total=None)
        yield (lambda total: progress.update(task, total=total)), (lambda n: progress.advance(task, n))


@contextlib.contextmanager
def phases_from_first(title: str) -> Iterator[Callable[[str], None]]:
    """``phases(title)``, started by the first phase: what a job says before it (notes, a refusal) comes
    before any progress display, as when the display was opened only once that work was done."""
    with contextlib.ExitStack() as stack:
        started: list[Callable[[str], None]] = []

        def on_phase(name: str) -> None:
            if not started:
                started.append(stack.enter_context(phases(title)))
            started[0](name)

        yield on_phase


@contextlib.contextmanager
def phases_then_fractions(title: str) -> Iterator[tuple[Callable[[str], None], Callable[[str, float], None]]]:
    """``(on_phase, on_progress)`` for a job that plans, then measures: ``phases(title)`` until the first
    ``on_progress``, which closes it and opens ``fraction_progress`` (one live display at a time)."""
    with contextlib.ExitStack() as bars, contextlib.ExitStack() as planning:
        on_phase = planning.enter_context(phases(title))
        current: list[Callable[[str, float], None]] = []

        def on_progress(label: str, fraction: float) -> None:
            if not current:
                planning.close()
                current.append(bars.enter_context(fraction_progress()))
            current[0](label, fraction)

        yield on_phase, on_progress
