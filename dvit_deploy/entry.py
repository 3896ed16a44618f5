"""The ``dvit`` executable: installs the top-level handler *before* the heavy imports.

Importing the command modules pulls in torch, timm and onnx (seconds). A Ctrl-C or a SIGTERM
during that time, or anything a command lets escape, must still end in one line and the
documented exit code — never a traceback — and temporary files must be removed on SIGTERM.
So this module imports nothing heavy at the top, and holds signals back even while the handler's
own modules (typer, rich: ~0.1 s) import: from the first line of ``main`` on, a Ctrl-C or SIGTERM
is one line and 130/143.
"""

from __future__ import annotations

import sys


class _TerminatedAtStartUp(BaseException):
    """SIGTERM before ``cli.failures`` (and its Terminated) is imported."""


def main() -> None:
    import signal

    from .helpers.lazy import signals_held  # standard library only

    def terminated(signum: int, frame: object) -> None:
        raise _TerminatedAtStartUp()

    try:
        signal.signal(signal.SIGTERM, terminated)  # what a held SIGTERM is delivered to
    except (ValueError, OSError):  # not the main thread / not supported here
        pass
    try:
        with signals_held():
            from .cli.failures import exit_code_for, install_signal_handlers  # typer and rich
    except KeyboardInterrupt as exc:
        from .cli.failures import exit_code_for

        sys.exit(exit_code_for(exc))
    except _TerminatedAtStartUp:
        from .cli.failures import Terminated, exit_code_for

        sys.exit(exit_code_for(Terminated()))
    try:
        install_signal_handlers()
        app = _import_app()
        app(prog_name="dvit")
    except SystemExit:
        raise
    except _TerminatedAtStartUp:  # in the instant before install_signal_handlers replaced it
        from .cli.failures import Terminated

        sys.exit(exit_code_for(Terminated()))
    except BaseException as exc:  # noqa: BLE001 - the top-level handler
        sys.exit(exit_code_for(exc))


def _import_app():
    """Import the commands with Ctrl-C/SIGTERM held back until the imports are done (see lazy.signals_held)."""
    from .helpers.lazy import signals_held

    with signals_held():
        from .cli import app
    return app


if __name__ == "__main__":
    main()
