"""The Typer app: every command registered, and the global options."""

from __future__ import annotations

import typer

from .. import __version__
from .build_cmd import build
from .failures import VERBOSE_KEY
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
from .group import Command, OneLineErrors
from .tradeoff_cmd import tradeoff

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
