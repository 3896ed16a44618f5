"""What every command shares: consoles, error-to-exit-code handling, JSON output, progress."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from typing import Any, Callable, Iterator, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import CheckFailed, DvitError

# Tables and JSON go to stdout; notes, progress and errors to stderr, so `--json | jq` works.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables.")
FORCE_OPTION = typer.Option(False, "--force", "-f", help="Overwrite an existing output file.")


def handle_errors(func: F) -> F:
    """Turn library errors into one red line and the documented exit code (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CheckFailed as exc:
            if kwargs.get("json_output") and exc.report is not None:
                report = exc.report.to_dict() if hasattr(exc.report, "to_dict") else exc.report
                emit_json({"passed": False, "error": exc.message, "report": report})
            err.print(f"[bold red]check failed:[/] {escape(exc.message)}")
            raise typer.Exit(exc.exit_code) from None
        except DvitError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


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
        err.print(f"[cyan]•[/] {line}")


@contextlib.contextmanager
def phases(title: str) -> Iterator[Callable[[str], None]]:
    """A progress display with one line per phase; yields the ``on_phase(name)`` callback."""
    with Progress(
        SpinnerColumn(finished_text="[green]✓[/]"),
        TextColumn("{task.description}"),
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


def table(title: str, columns: list[str], rows: list[list[Any]] | list[tuple[Any, ...]]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*(str(c) for c in row))
    return t


def parse_floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DvitError(f"{option} takes comma-separated numbers, got '{text}'") from None


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
