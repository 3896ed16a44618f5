"""The Typer app: every command registered, and the global options."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from ..helpers.errors import BadInput
from .build_cmd import build
from .failures import VERBOSE_KEY, exit_code_for
from .doctor_cmd import doctor
from .export_cmd import export
from .flops_cmd import flops
from .profile_cmd import profile
from .validate_cmd import validate
from .package_cmd import package, verify
from .predict_cmd import predict
from .eval_cmd import eval_images
from .quantize_cmd import quantize
from .serve_cmd import serve
from .tradeoff_cmd import tradeoff

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


app = typer.Typer(
    name="dvit",
    cls=OneLineErrors,
    help="DynamicViT deployment: export to ONNX, build TensorRT and TensorRT-RTX engines, validate, profile, ship.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command(cls=Command)(export)
app.command(cls=Command)(doctor)
app.command(cls=Command)(build)
app.command(cls=Command)(validate)
app.command(cls=Command)(profile)
app.command(cls=Command)(flops)
app.command(cls=Command)(package)
app.command(cls=Command)(verify)
app.command(cls=Command)(predict)
app.command(name="eval", cls=Command)(eval_images)
app.command(cls=Command)(quantize)
app.command(cls=Command)(serve)
app.command(cls=Command)(tradeoff)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dvit-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library warnings as they come, with their source."),
) -> None:
    """DynamicViT deployment toolchain."""
    ctx.meta[VERBOSE_KEY] = verbose  # read by the command's warnings capture and run context
