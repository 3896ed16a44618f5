"""Exceptions that carry an exit code and a one-line message for the CLI.

Library code raises these; ``cli`` turns them into one clear line and the documented exit
code (0 ok, 1 a check failed, 2 bad input or missing dependency) without a traceback.
"""

from __future__ import annotations


class DvitError(Exception):
    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class BadInput(DvitError):
    """The user gave something we cannot use: a path, a checkpoint, an option value."""

    exit_code = 2


class MissingDependency(DvitError):
    """An optional package is not installed; the message names the extra to install."""

    exit_code = 2

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs '{package}', which is not installed: "
            f'pip install "dvit-deploy[{extra}]"'
        )
        self.package = package
        self.extra = extra


class CheckFailed(DvitError):
    """A numerical or structural check ran and did not pass."""

    exit_code = 1

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report

