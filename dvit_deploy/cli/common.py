"""What every command shares: consoles, the one error-to-exit-code handler, JSON output, progress.

User text is never markup: both consoles have rich markup switched off, so a path such as
``out/m[v2].onnx`` or an install hint such as ``dvit-deploy[gpu]`` prints as it is. Our own
styling goes through ``styled(template, *values)``, which escapes every value it inserts.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..errors import CheckFailed, DvitError

# Tables and JSON go to stdout; notes, progress and errors to stderr, so `--json | jq` works.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables.")
FORCE_OPTION = typer.Option(
    False, "--force", "-f",
    help="Replace an existing output file of the kind this command writes (and its dvit manifest); "
         "anything else is refused.")
NO_VERIFY_OPTION = typer.Option(
    False, "--no-verify",
    help="Use artifacts whose sha256 does not match their manifest (warns instead of refusing).")


def styled(template: str, *values: Any) -> Text:
    """Our markup template with every inserted value escaped: ``styled("[green]wrote[/] {}", path)``."""
    return Text.from_markup(template.format(*(escape(str(v)) for v in values)))


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so ``finally`` blocks remove temporary files.

    A BaseException, like KeyboardInterrupt, so library code's ``except Exception`` cannot swallow it.
    """


def install_signal_handlers() -> None:
    import signal

    def on_sigterm(signum: int, frame: Any) -> None:
        raise Terminated()

    with contextlib.suppress(ValueError, OSError):  # not the main thread / not supported here
        signal.signal(signal.SIGTERM, on_sigterm)


def exit_code_for(exc: BaseException) -> int:
    """The one top-level rule: print one line for ``exc`` on stderr and return the exit code."""
    if isinstance(exc, CheckFailed):
        err.print(styled("[bold red]check failed:[/] {}", exc.message))
        return exc.exit_code
    if isinstance(exc, DvitError):
        err.print(styled("[bold red]error:[/] {}", str(exc)))
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        err.print(styled("[yellow]interrupted[/]"))
        return EXIT_INTERRUPTED
    if isinstance(exc, Terminated):
        err.print(styled("[yellow]terminated[/]"))
        return EXIT_TERMINATED
    if isinstance(exc, OSError):
        err.print(styled("[bold red]error:[/] {}", os_error_line(exc)))
        return EXIT_BAD_INPUT
    if isinstance(exc, MemoryError):
        err.print(styled("[bold red]error:[/] out of memory; try a smaller --batch or --samples"))
        return EXIT_BAD_INPUT
    # A bug of ours: still one line, the traceback on request.
    if os.environ.get("DVIT_TRACEBACK"):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    err.print(styled("[bold red]internal error:[/] {}: {} (set DVIT_TRACEBACK=1 for the traceback and "
                     "please report it)", type(exc).__name__, first_line(exc)))
    return EXIT_CHECK_FAILED


def os_error_line(exc: OSError) -> str:
    """'No space left on device: /path/x' — the system's words and the path they concern."""
    reason = exc.strerror or first_line(exc) or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " → ".join(str(os.fsdecode(p)) for p in paths)
    if exc.errno == errno.ENOSPC and not where:
        where = "the output folder"
    return f"{reason}: {where}" if where else reason


def first_line(exc: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


def handle_errors(func: F) -> F:
    """Every command goes through this: library errors become one line and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with captured_warnings():
                return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except CheckFailed as exc:
            if kwargs.get("json_output") and exc.report is not None:
                report = exc.report.to_dict() if hasattr(exc.report, "to_dict") else exc.report
                emit_json({"passed": False, "error": exc.message, "report": report})
            raise typer.Exit(exit_code_for(exc)) from None
        except BaseException as exc:  # noqa: BLE001 - the one place that turns everything into an exit code
            raise typer.Exit(exit_code_for(exc)) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def captured_warnings() -> Iterator[None]:
    """Python/torch warnings become one note line each (no source lines); DVIT_VERBOSE shows them raw."""
    import warnings

    if os.environ.get("DVIT_VERBOSE"):
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                text = first_line(w.message)
                if text not in seen and _worth_showing(w):
                    seen.add(text)
                    err.print(styled("[yellow]warning:[/] {}", text))


def _worth_showing(w: Any) -> bool:
    # Library-internal deprecation chatter is not the user's business; our own and UserWarnings are.
    return not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")
    sys.stdout.flush()


def _default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def notes(lines: list[str]) -> None:
    for line in lines:
        err.print(styled("[cyan]•[/] {}", line))


def warn(line: str) -> None:
    err.print(styled("[bold yellow]warning:[/] {}", line))


def picked(path: Path, why: str) -> None:
    """Say which artifact a command chose when none was given (the default-artifact rule)."""
    err.print(styled("[cyan]using[/] {} ({})", _display(path), why))


def _display(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def artifact_checks(no_verify: bool) -> Iterator[None]:
    """sha256 checks of artifacts against their manifests for this command (``--no-verify`` warns)."""
    from ..artifact.manifest import verification

    with verification(enabled=not no_verify, on_warning=warn):
        yield


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


def table(title: str, columns: list[str], rows: list[list[Any]] | list[tuple[Any, ...]]) -> Table:
    """A table whose cells are plain text (never markup) unless a cell is already a styled ``Text``."""
    t = Table(title=Text(title), title_justify="left")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in row))
    return t


def print_wide(grid: Table, width: int) -> None:
    """Complete rows rather than ellipses on narrow terminals."""
    if out.width >= width:
        out.print(grid)
    else:
        Console(file=out.file, width=width, highlight=False, markup=False, no_color=out.no_color).print(grid)


def finite(value: float | None) -> float | None:
    """The callback of every float option: NaN and ±inf are refused (``--duration nan`` would never end)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def parse_floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DvitError(f"{option} takes comma-separated numbers, got '{text}'") from None
    if not all(math.isfinite(v) for v in values):
        raise DvitError(f"{option} takes finite numbers, got '{text}'")
    return values


def parse_ints(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DvitError(f"{option} takes comma-separated integers, got '{text}'") from None
    if not values or any(v < 1 for v in values):
        raise DvitError(f"{option} takes positive integers, got '{text}'")
    return values


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def artifact_or_default(given: Path | None, suffixes: tuple[str, ...] | None = None,
                        backend: str | None = None) -> Path:
    """``given``, or the default artifact (``artifact.store.open_artifact``'s rule, one for every command),
    saying which was picked.

    Only the path comes back: the job opens it once, inside the command's ``--no-verify`` policy
    (``artifact_checks``), which is not in force yet here; so the default is picked here unverified.
    """
    if given is not None:
        return Path(given).expanduser()
    from ..artifact.store import open_artifact
    from ..runtime import artifact_suffixes

    return open_artifact(None, suffixes or artifact_suffixes(backend), verify=False, on_picked=picked).path


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
