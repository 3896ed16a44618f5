"""Console output shared by every command: the two consoles, styled text, JSON, tables, notes.

User text is never markup: both consoles have rich markup switched off, so a path such as
``out/m[v2].onnx`` or an install hint such as ``dvit-deploy[gpu]`` prints as it is. Our own
styling goes through ``styled(template, *values)``, which escapes every value it inserts.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# Tables and JSON go to stdout; notes, progress and errors to stderr, so `--json | jq` works.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def styled(template: str, *values: Any) -> Text:
    """Our markup template with every inserted value escaped: ``styled("[green]wrote[/] {}", path)``."""
    return Text.from_markup(template.format(*(escape(str(v)) for v in values)))


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


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
