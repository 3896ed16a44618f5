"""What --help says: flags shown without a value, TensorRT-RTX named, list options say they take a list."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from dvit_deploy.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())


def test_boolean_flags_show_no_value_in_any_help():
    group = typer.main.get_command(app)
    assert "<bool>" not in _help()
    for name in group.commands:
        text = _help(name)
        assert "<bool>" not in text, name
    build = _help("build")
    assert "--fp16 FP16" in build and "--help Show this message" in build  # flag, then straight its help
    assert "--max-batch <int>" in build  # options that take a value still show its type


def test_help_names_tensorrt_rtx_and_the_compute_capability_list():
    assert "TensorRT-RTX" in _help()
    build = _help("build")
    assert "TensorRT-RTX engine (--target rtx" in build
    assert "--compute-capability <list>" in build and "comma-separated list" in build


def test_readme_command_table_names_tensorrt_rtx():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `dvit doctor` / `dvit build"))
    assert "TensorRT-RTX" in row
