"""How a command ends: the one error-to-exit-code rule, SIGTERM, and warnings as one line each.

Exit codes: 0 ok, 1 a check failed (or a bug of ours), 2 bad input or a missing dependency,
130 Ctrl-C, 143 SIGTERM. ``entry`` imports this module (typer and rich, nothing heavy) before
the commands, so start-up failures take the same path.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
from typing import Any, Callable, Iterator, TypeVar

import typer

from ..helpers.errors import CheckFailed, DvitError
from .output import emit_json, err, styled

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


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


VERBOSE_KEY = "dvit_deploy.verbose"  # where ``dvit --verbose`` is kept in the click context's ``meta``


def verbose_requested() -> bool:
    """Whether the running command was started with ``dvit --verbose`` (the group's option, which the app's
    callback keeps in the click context's ``meta``, shared by the command's context); False outside one."""
    # Typer may run on its own vendored click: its context stack is found through typer.Context's base
    # class (click's Context, whose module imports push_context from the stack's module), not a path.
    core = sys.modules[typer.Context.__mro__[1].__module__]
    stack = sys.modules[core.push_context.__module__]
    ctx = stack.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(VERBOSE_KEY))


@contextlib.contextmanager
def captured_warnings(verbose: bool | None = None) -> Iterator[None]:
    """Python/torch warnings become one note line each (no source lines); ``--verbose`` (``verbose``, by
    default the running command's ``verbose_requested()``) shows them raw."""
    import warnings

    if verbose_requested() if verbose is None else verbose:
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
    # Library-internal deprecation chatter is not the user's business; our own and UserWarnings are. A
    # ResourceWarning (an import's file left open when Ctrl-C lands in it) is the interpreter's, not the user's.
    return not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ResourceWarning))
