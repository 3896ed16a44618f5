"""Which artifact a command works on: the default-artifact rule as the CLI says it, and sha256 checks.

Consoles, tables and JSON are in ``output``; progress in ``progress``; exit codes, signals and
warnings in ``failures``; shared options in ``options``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .output import err, styled, warn

if TYPE_CHECKING:
    from ..artifact.context import RunContext
    from ..artifact.store import Artifact


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
    """The command's artifact policy: sha256 checks against the manifests (``--no-verify`` warns), and
    each manifest read once (picking the default, finding a dense twin and opening share one read)."""
    from ..artifact.manifest import verification
    from ..artifact.store import reading_once

    with verification(enabled=not no_verify, on_warning=warn), reading_once():
        yield


def open_or_default(given: Path | None, suffixes: tuple[str, ...] | None = None,
                    backend: str | None = None) -> "Artifact":
    """``given``, or the default artifact (``artifact.store.open_artifact``'s rule, one for every command,
    saying which was picked), opened: manifest read, checked and its sha256 verified once.

    Call it inside ``artifact_checks``, so ``--no-verify`` already holds; hand the Artifact to the job.
    """
    from ..artifact.store import open_artifact
    from ..runtime import artifact_suffixes

    return open_artifact(given, suffixes or artifact_suffixes(backend), on_picked=picked)


def artifact_or_default(given: Path | None, suffixes: tuple[str, ...] | None = None,
                        backend: str | None = None) -> Path:
    """``given``, or the default artifact's path, saying which was picked (commands that hand a path on;
    the ones that open it use ``open_or_default`` inside ``artifact_checks``).
    """
    if given is not None:
        return Path(given).expanduser()
    from ..artifact.store import open_artifact
    from ..runtime import artifact_suffixes

    return open_artifact(None, suffixes or artifact_suffixes(backend), verify=False, on_picked=picked).path


def command_context(no_verify: bool = False, checkpoint: Path | None = None) -> "RunContext":
    """The run's ``RunContext`` from the command's flags (``--no-verify``: a sha256 mismatch warns;
    ``--checkpoint``: where the checkpoint now is), handed to the job's ``run``."""
    from ..artifact.context import RunContext

    return RunContext(verify=not no_verify, on_warning=warn, checkpoint=checkpoint)
