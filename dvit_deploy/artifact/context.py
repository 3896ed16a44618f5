"""The run context: what one command run decides once and every layer below it reads.

It replaces module globals that changed behaviour at a distance (a verification policy set by a
context manager, hidden manifest and digest caches, a "moved checkpoint" stack, environment
variables for verbosity and threads). The CLI builds one per command from its flags; the Python API
takes ``RunContext()`` by default. It is passed explicitly: ``open_artifact(..., context=ctx)``,
``load_model_from_record(record, context=ctx)``, ``jobs.<command>.run(options, ctx, artifact)``.

The caches live inside the context, so they last exactly as long as one run: each manifest is read
once and each file hashed once per run, and a new run starts cold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class RunCaches:
    """Per-run caches, keyed by (path, inode, size, mtime) so a file rewritten during the run (writers
    replace it by a rename: a new inode) is read or hashed again."""

    digests: dict[tuple[Any, ...], str] = field(default_factory=dict)
    manifests: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """What a command run decided once, handed down explicitly.

    ``verify``: check artifacts against the sha256 their manifests record before use (``--no-verify``
    turns a mismatch into ``on_warning``). ``checkpoint``: the moved checkpoint to rebuild PyTorch
    models from instead of the path a manifest recorded (``--checkpoint``; its sha256 must match).
    ``verbose``: show warnings raw. ``threads``: intra-op threads for runners that take them (None:
    the backend's default).
    """

    verify: bool = True
    on_warning: Callable[[str], None] | None = None
    checkpoint: Path | None = None
    verbose: bool = False
    threads: int | None = None
    caches: RunCaches = field(default_factory=RunCaches, compare=False, repr=False)

    def with_changes(self, **changes: Any) -> "RunContext":
        """A copy with ``changes``, sharing this run's caches."""
        return dataclasses.replace(self, **changes)


__all__ = ("RunCaches", "RunContext")
