"""The Typer classes of ``dvit``: every command's boolean flags shown without a value, and usage errors,
Ctrl-C and SIGTERM in Typer's own code as the one line and exit code every other bad input gets."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from ..helpers.errors import BadInput
from .failures import exit_code_for

# The click that Typer runs on (recent Typer vendors its own copy): its exception classes, found
# through Typer's public ones rather than a private module path.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_NoArgsIsHelp = getattr(sys.modules[_UsageError.__module__], "NoArgsIsHelpError", ())


def _flags_without_a_value(params: list[Any]) -> list[Any]:
    """Boolean flags take no value, so their help shows none: Typer's rich help prints a flag's type
    (``<bool>``) unless it has a metavar, and an empty one prints nothing."""
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """Every command: its boolean flags shown without a value in --help."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_a_value(super().get_params(ctx))


class OneLineErrors(TyperGroup):
    """Usage errors as one line (``error: No such option: --bogus (dvit export --help)``), exit 2.

    Typer draws a multi-line panel with the usage; a deployment tool's callers (scripts, CI logs)
    want the one line every other bad input gets.
    """

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NoArgsIsHelp as exc:  # plain `dvit`: the help, as usual
            print(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except _UsageError as exc:
            where = f" ({exc.ctx.command_path} --help)" if exc.ctx else ""
            sys.exit(exit_code_for(BadInput(exc.format_message().strip() + where)))
        except typer.Abort:
            sys.exit(exit_code_for(KeyboardInterrupt()))
        except _ClickException as exc:
            sys.exit(exit_code_for(BadInput(exc.format_message().strip())))
        sys.exit(code if isinstance(code, int) else 0)

    # Typer turns a Ctrl-C outside a command's own handler (option parsing, an option callback's
    # first import re-raising a held signal) into a silent exit 130; say "interrupted" like everywhere else.
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise typer.Exit(exit_code_for(exc)) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise typer.Exit(exit_code_for(exc)) from None

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_a_value(super().get_params(ctx))
