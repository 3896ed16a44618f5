"""The ``dvit`` executable: installs the top-level handler *before* the heavy imports.

Importing the command modules pulls in torch, timm and onnx (seconds). A Ctrl-C or a SIGTERM
during that time, or anything a command lets escape, must still end in one line and the
documented exit code — never a traceback — and temporary files must be removed on SIGTERM.
So this module imports nothing heavy at the top and wraps the import of the app itself.
"""

from __future__ import annotations

import sys


def main() -> None:
    from .cli.common import exit_code_for, install_signal_handlers  # light: typer and rich only

    install_signal_handlers()
    try:
        app = _import_app()
        app(prog_name="dvit")
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the top-level handler
        sys.exit(exit_code_for(exc))


def _import_app():
    """Import the commands with Ctrl-C/SIGTERM held back until the imports are done (see lazy.signals_held)."""
    from .lazy import signals_held

    with signals_held():
        from .cli import app
    return app


if __name__ == "__main__":
    main()
