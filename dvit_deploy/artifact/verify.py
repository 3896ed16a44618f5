"""The verification policy: checking an artifact against the sha256 its manifest records.

Every ONNX export records ``onnx.sha256`` (and the sha256 of any external-data file); every
engine records ``engine.sha256``. Commands check the artifact they are about to use against
those digests before using it: a file replaced, truncated or edited after export is refused
(exit 2, "does not match its manifest") unless ``--no-verify`` (``RunContext.verify`` off) turns the
refusal into a warning (``RunContext.on_warning``).

Hashing is streamed and cached in the run's context by (path, inode, size, mtime), so an artifact
used by several steps of one command is hashed once, and a file rewritten during the run again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..helpers.errors import BadInput
from ..helpers.fileio import sha256_file
from .context import RunContext
from .manifest import ENGINE_SUFFIXES


def cached_sha256(path: str | os.PathLike, context: RunContext) -> str:
    """The sha256 of ``path``, hashed once per run (``context``) and file state."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    digests = context.caches.digests
    if key not in digests:
        digests[key] = sha256_file(path)
    return digests[key]


def recorded_digests(artifact: Path, manifest: Mapping[str, Any]) -> dict[Path, str]:
    """The files the manifest vouches for, with their recorded sha256 (empty when it records none)."""
    artifact = Path(artifact)
    if artifact.suffix in ENGINE_SUFFIXES:
        record = manifest.get("engine")
        digest = record.get("sha256") if isinstance(record, Mapping) else None
        return {artifact: str(digest)} if isinstance(digest, str) else {}
    record = manifest.get("onnx")
    if not isinstance(record, Mapping):
        return {}
    found: dict[Path, str] = {}
    if isinstance(record.get("sha256"), str):
        found[artifact] = record["sha256"]
    for name, digest in (record.get("external_data_sha256") or {}).items():
        if isinstance(digest, str):
            found[artifact.parent / name] = digest
    return found


def mismatches(artifact: Path, manifest: Mapping[str, Any], context: RunContext) -> list[Path]:
    """Files whose sha256 differs from the manifest (a missing file counts as differing)."""
    bad = []
    for path, expected in recorded_digests(artifact, manifest).items():
        if not path.is_file() or cached_sha256(path, context) != expected.lower():
            bad.append(path)
    return bad


def verify_artifact(artifact: str | os.PathLike, manifest: Mapping[str, Any], context: RunContext) -> bool:
    """Refuse (BadInput) or, with ``context.verify`` off, warn about an artifact that is not what its
    manifest says.

    True when the artifact's sha256 was checked and matches (False: the manifest records no digest,
    or the check was off and it differs).
    """
    bad = mismatches(Path(artifact), manifest, context)
    if not bad:
        return bool(recorded_digests(Path(artifact), manifest))
    names = ", ".join(str(p) for p in bad)
    if context.verify:
        raise BadInput(f"{names} does not match its manifest (sha256 differs): it changed after it was written; "
                       "re-create it, or pass --no-verify to use it anyway")
    if context.on_warning is not None:
        context.on_warning(f"{names} does not match its manifest (sha256 differs); used anyway (--no-verify)")
    return False


__all__ = ("cached_sha256", "mismatches", "recorded_digests", "verify_artifact")
