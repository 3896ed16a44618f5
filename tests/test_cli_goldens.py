"""Refactors keep the CLI's surface: every command's --help text and the shape of its --json output
(keys and value types) are compared with files recorded from the main that preceded the refactor.

A deliberate change to a help text or a JSON key updates its golden file in the same commit:
``DVIT_UPDATE_GOLDENS=1 pytest tests/test_cli_goldens.py`` rewrites them (review the diff).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from dvit_deploy.cli import app

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("DVIT_UPDATE_GOLDENS") == "1"
runner = CliRunner()
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
COMMANDS = sorted(typer.main.get_command(app).commands)


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no golden {path.name}: record it with DVIT_UPDATE_GOLDENS=1"
    assert text == path.read_text(), f"{name} changed (see the docstring to record a deliberate change)"


def _help_text(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env=ENV)
    assert result.exit_code == 0, result.output
    return "\n".join(line.rstrip() for line in result.stdout.splitlines()) + "\n"


def test_the_command_list_is_unchanged():
    _check("commands.txt", "\n".join(COMMANDS) + "\n")


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_text_is_unchanged(command):
    _check(f"help/{command or 'dvit'}.txt", _help_text(*([command] if command else [])))


def shape(value: Any) -> Any:
    """The JSON's structure: keys and value types, a list by the union of its items' shapes."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        items = [shape(v) for v in value]
        merged: list[Any] = []
        for item in items:
            if item not in merged:
                merged.append(item)
        return merged
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _json_shape(args: list[str]) -> str:
    result = runner.invoke(app, args, env=ENV)
    assert result.exit_code == 0, result.output
    return json.dumps(shape(json.loads(result.stdout)), indent=1, sort_keys=True) + "\n"


def test_flops_json_shape_is_unchanged():
    _check("json/flops.json", _json_shape(["flops", "--model", "deit-s", "--keep-ratio", "0.7", "--per-stage", "--json"]))


def test_export_validate_profile_predict_json_shapes_are_unchanged(workdir):
    from PIL import Image

    export = _json_shape(["export", "--model", "tiny-deit", "--keep-ratio", "0.7", "--token-outputs", "--json"])
    _check("json/export.json", export)
    _check("json/validate.json", _json_shape(["validate", "--samples", "2", "--json"]))
    _check("json/profile.json", _json_shape(["profile", "--batch", "1", "--warmup", "0.05", "--duration", "0.1",
                                             "--json"]))
    Image.new("RGB", (64, 48), (120, 30, 200)).save(workdir / "a.png")
    _check("json/predict.json", _json_shape(["predict", str(workdir / "a.png"), "--json"]))
