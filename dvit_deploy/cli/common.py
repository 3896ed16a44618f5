"""Which artifact a command works on: the default-artifact rule as the CLI says it, and sha256 checks.

Consoles, tables and JSON are in ``output``; progress in ``progress``; exit codes, signals and
warnings in ``failures``; shared options in ``options``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from .output import err, styled, warn


def picked(path: Path, why: str) -> None:
    """Say which artifact a command chose when none was given (the default-artifact rule)."""
    err.print(styled("[cyan]using[/] {} ({})", _display(path), why))


def _display(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def artifact_checks(no_verify: bool) -> Iterator[None]:
    """sha256 checks of artifacts against their manifests for this command (``--no-verify`` warns)."""
    from ..artifact.manifest import verification

    with verification(enabled=not no_verify, on_warning=warn):
        yield


def artifact_or_default(given: Path | None, suffixes: tuple[str, ...] | None = None,
                        backend: str | None = None) -> Path:
    """``given``, or the default artifact (``artifact.store.open_artifact``'s rule, one for every command),
    saying which was picked.

    Only the path comes back: the job opens it once, inside the command's ``--no-verify`` policy
    (``artifact_checks``), which is not in force yet here; so the default is picked here unverified.
    """
    if given is not None:
        return Path(given).expanduser()
    from ..artifact.store import open_artifact
    from ..runtime import artifact_suffixes

    return open_artifact(None, suffixes or artifact_suffixes(backend), verify=False, on_picked=picked).path
