"""The `dvit` command line: each command parses options, calls the library and prints."""

from __future__ import annotations

import typer

from .. import __version__
from .build_cmd import build
from .doctor_cmd import doctor
from .export_cmd import export
from .flops_cmd import flops
from .profile_cmd import profile
from .validate_cmd import validate
from .package_cmd import package, verify
from .predict_cmd import predict
from .eval_cmd import eval_images

app = typer.Typer(
    name="dvit",
    help="DynamicViT deployment: export to ONNX, build TensorRT engines, validate, profile, ship.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(export)
app.command()(doctor)
app.command()(build)
app.command()(validate)
app.command()(profile)
app.command()(flops)
app.command()(package)
app.command()(verify)
app.command()(predict)
app.command(name="eval")(eval_images)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dvit-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """DynamicViT deployment toolchain."""
