"""Default folders (``./export``, ``./engines``) and finding the newest artifact in them.

Relative defaults resolve against the current working directory, so ``dvit`` writes to
``./export`` wherever it runs, like other build tools do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BadInput
from .fileio import manifest_path, read_json

EXPORT_DIR = "export"
ENGINES_DIR = "engines"


def export_dir() -> Path:
    return Path.cwd() / EXPORT_DIR


def engines_dir() -> Path:
    return Path.cwd() / ENGINES_DIR


def onnx_name(variant: str, dense: bool, keep_ratio: float | None, *, batch: int | None = None,
              dynamic_keep: bool = False, suffix: str = "") -> str:
    if dense:
        tag = "dense"
    elif dynamic_keep:
        tag = "dynkeep"
    else:
        tag = f"r{keep_ratio:g}"
    batch_tag = f"-b{batch}" if batch else ""
    return f"{variant}-{tag}{batch_tag}{suffix}.onnx"


def artifacts(folder: Path, suffix: str) -> list[Path]:
    """Artifacts with a manifest beside them, newest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"*{suffix}") if p.is_file() and manifest_path(p).is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def newest_artifact(folder: Path | None = None, suffix: str = ".onnx", what: str = "export") -> Path:
    folder = folder or export_dir()
    found = artifacts(folder, suffix)
    if not found:
        raise BadInput(f"no {suffix} artifact with a manifest in {folder}; run 'dvit {what}' first or pass a path")
    return found[0]


def load_manifest(artifact: str | Path) -> dict[str, Any]:
    artifact = Path(artifact)
    if not artifact.exists():
        raise BadInput(f"artifact {artifact} not found")
    return read_json(manifest_path(artifact), what=f"manifest of {artifact.name}")
