"""What a bundle is made of: its file names and schema, the artifacts that go in, and the
facts read from their manifests. Shared by ``bundle`` (writing), ``trtexec``, ``triton`` and
``verify`` (reading).

Engine manifests are written by ``dvit build``; they are only read here, defensively, so a field
that is not found is reported as unknown rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ...artifact.manifest import EngineManifest, ModelRecord, OnnxManifest
from ...artifact.store import Artifact
from ...helpers.fileio import manifest_path, sha256_file

BUNDLE_SCHEMA = "dvit-deploy/bundle/1"
BUNDLE_MANIFEST = "bundle.json"
CHECKSUMS = "SHA256SUMS"
DEFAULT_BUNDLES_DIR = "bundles"
ENGINE_SUFFIXES = (".engine", ".plan")
DEFAULT_PROFILE = (1, 8, 32)  # min / opt / max batch when the ONNX batch is dynamic
DEFAULT_QUEUE_DELAY_US = 100


@dataclass
class OnnxItem:
    """An ONNX going into a bundle: the artifact opened (read, checked and typed) once by
    ``bundle.collect_artifacts``."""

    artifact: Artifact

    @property
    def path(self) -> Path:
        return self.artifact.path

    @property
    def manifest(self) -> OnnxManifest:
        return self.artifact.manifest  # type: ignore[return-value]  # an .onnx path types as OnnxManifest

    @property
    def model(self) -> ModelRecord:
        return self.artifact.model

    @property
    def sha256_checked(self) -> bool:
        return self.artifact.sha256_checked

    @property
    def files(self) -> list[Path]:
        data = [self.path.parent / name for name in self.manifest.external_data]
        return [self.path, *data, manifest_path(self.path)]


@dataclass
class EngineItem:
    """An engine going into a bundle (opened once) and the ONNX it was built from, when found."""

    artifact: Artifact
    source: OnnxItem | None = None

    @property
    def path(self) -> Path:
        return self.artifact.path

    @property
    def manifest(self) -> EngineManifest:
        return self.artifact.manifest  # type: ignore[return-value]  # an .engine/.plan path types as EngineManifest

    @property
    def sha256_checked(self) -> bool:
        return self.artifact.sha256_checked

    @property
    def files(self) -> list[Path]:
        return [self.path, manifest_path(self.path)]


def engine_facts(engine: EngineManifest) -> dict[str, Any]:
    """The engine-manifest fields shipping needs (``dvit build``'s layout), None where the manifest
    does not say: bundle.json's engine entries are built from them."""
    return {"tensorrt": engine.tensorrt, "gpu": engine.gpu, "compute_capability": engine.compute_capability,
            "precision": engine.precision, "sha256": engine.sha256, "onnx_sha256": engine.onnx_sha256,
            "onnx_manifest": engine.onnx_manifest, "onnx_path": engine.onnx_path,
            "profiles": [p.to_json() for p in engine.profiles] or None,
            "io": [t.to_json() for t in engine.io] or None}


def graph_problems(path: Path, manifest: OnnxManifest) -> list[str]:
    """The export's structure check on the graph against the manifest's model record (``export.graph``); the
    graph is read only now (onnx stays out of ``import dvit_deploy.jobs.ship``)."""
    from ...export.graph import record_problems

    try:
        return record_problems(path, manifest.model)
    except Exception as exc:  # onnx's DecodeError and kin: not a graph this manifest can describe
        return [f"the file is not a readable ONNX graph ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})"]


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, Mapping):
        return None
    if isinstance(value, (list, tuple)):  # compute capability as [major, minor]
        return ".".join(str(v) for v in value)
    return str(value)


def _bundle_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(root: Path) -> list[str]:
    """``SHA256SUMS`` in ``sha256sum -c`` format (hash, two spaces, relative path) for every file."""
    files = _bundle_files(root)
    lines = [f"{sha256_file(root / rel)}  {rel}" for rel in files]
    (root / CHECKSUMS).write_text("\n".join(lines) + "\n")
    return files
