"""What a manifest promises about the file beside it, and checking that promise.

Every ONNX export records ``onnx.sha256`` (and the sha256 of any external-data file); every
engine records ``engine.sha256``. Commands check the artifact they are about to use against
those digests before using it: a file replaced, truncated or edited after export is refused
(exit 2, "does not match its manifest") unless ``--no-verify`` turns the refusal into a warning.

Hashing is streamed and cached per run by (path, size, mtime), so an artifact used by several
steps of one command is read once.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..errors import BadInput
from ..fileio import sha256_file

ENGINE_SUFFIXES = (".engine", ".plan")


@dataclass
class _Policy:
    enabled: bool = True
    on_warning: Callable[[str], None] | None = None


_policy = _Policy()
_digests: dict[tuple[str, int, int], str] = {}


@contextlib.contextmanager
def verification(*, enabled: bool = True, on_warning: Callable[[str], None] | None = None) -> Iterator[None]:
    """Turn the sha256 checks on (default) or into warnings for the duration of a command."""
    previous = _Policy(_policy.enabled, _policy.on_warning)
    _policy.enabled, _policy.on_warning = enabled, on_warning
    try:
        yield
    finally:
        _policy.enabled, _policy.on_warning = previous.enabled, previous.on_warning


def cached_sha256(path: str | os.PathLike) -> str:
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = sha256_file(path)
    return _digests[key]


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


def mismatches(artifact: Path, manifest: Mapping[str, Any]) -> list[Path]:
    """Files whose sha256 differs from the manifest (a missing file counts as differing)."""
    bad = []
    for path, expected in recorded_digests(artifact, manifest).items():
        if not path.is_file() or cached_sha256(path) != expected.lower():
            bad.append(path)
    return bad


def verify_artifact(artifact: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    """Refuse (BadInput) or, with checks off, warn about an artifact that is not what its manifest says."""
    bad = mismatches(Path(artifact), manifest)
    if not bad:
        return
    names = ", ".join(str(p) for p in bad)
    if _policy.enabled:
        raise BadInput(f"{names} does not match its manifest (sha256 differs): it changed after it was written; "
                       "re-create it, or pass --no-verify to use it anyway")
    if _policy.on_warning is not None:
        _policy.on_warning(f"{names} does not match its manifest (sha256 differs); used anyway (--no-verify)")
