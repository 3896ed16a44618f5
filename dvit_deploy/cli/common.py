"""What a command runs in and on: its run context (sha256 checks, moved checkpoint, verbosity), and the
default-artifact rule as the CLI says it.

Consoles, tables and JSON are in ``output``; progress in ``progress``; exit codes, signals and
warnings in ``failures``; shared options in ``options``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .failures import verbose_requested
from .output import err, styled, warn

if TYPE_CHECKING:
    from ..artifact.context import RunContext
    from ..artifact.store import Artifact, ArtifactFilter


def picked(path: Path, why: str) -> None:
    """Say which artifact a command chose when none was given (the default-artifact rule)."""
    err.print(styled("[cyan]using[/] {} ({})", _display(path), why))


def _display(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def command_context(*, no_verify: bool = False, checkpoint: Path | None = None) -> "RunContext":
    """The command's run context, built once from its flags and handed to everything it opens: sha256 checks
    against the manifests (``--no-verify`` warns instead of refusing), the moved checkpoint (``--checkpoint``)
    and ``dvit --verbose``. Its caches make each manifest read, and each file hashed, once per command."""
    from ..artifact.context import RunContext

    return RunContext(verify=not no_verify, on_warning=warn,
                      checkpoint=None if checkpoint is None else Path(checkpoint).expanduser(),
                      verbose=verbose_requested())


def open_or_default(given: Path | None, backend: str | None = None, *, context: "RunContext") -> "Artifact":
    """``given``, or the default artifact among the files ``backend`` runs (``runtime.open_runnable``: the one
    rule of ``artifact.store.open_artifact``, engines only where a GPU runs them), saying which was picked,
    opened in the command's ``context``: manifest read, checked and its sha256 verified once. Hand the
    Artifact to the job.
    """
    from ..runtime import open_runnable

    return open_runnable(given, backend, context=context, on_picked=picked)


def artifact_or_default(given: Path | None, suffixes: tuple[str, ...] | None = None,
                        backend: str | None = None, *, context: "RunContext",
                        only: "ArtifactFilter | None" = None) -> Path:
    """``given``, or the default artifact's path, saying which was picked (commands that hand a path on, to
    a job that opens it in the same ``context``: its manifest is read once)."""
    if given is not None:
        return Path(given).expanduser()
    from ..artifact.store import open_artifact
    from ..runtime import artifact_suffixes

    return open_artifact(None, suffixes or artifact_suffixes(backend), context=context, verify=False, only=only,
                         on_picked=picked).path
