"""The `dvit` command line: each command parses options, calls the library and prints."""

from __future__ import annotations

import typer

from .. import __version__
from .export_cmd import export

app = typer.Typer(
    name="dvit",
    help="DynamicViT deployment: export to ONNX, build TensorRT engines, validate, profile, ship.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(export)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dvit-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """DynamicViT deployment toolchain."""
