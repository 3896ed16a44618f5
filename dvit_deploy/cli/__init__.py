"""The `dvit` command line: each command parses options, calls the library and prints.

``app`` is loaded on first use (``from dvit_deploy.cli import app``), so the executable's
top-level handler (``dvit_deploy.entry``) is in place before the command modules' heavy imports.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from .commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
