"""The artifact store: default folders (``./export``, ``./engines``), the default-artifact rule,
reading a manifest (with its sha256 check) and finding an artifact's dense twin.

Relative defaults resolve against the current working directory, so ``dvit`` writes to
``./export`` wherever it runs, like other build tools do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from .manifest import EngineArtifact, ModelRecord, OnnxArtifact, QuantizationRecord

from ..errors import BadInput
from ..fileio import manifest_path, read_json

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


ALL_SUFFIXES = (".onnx", ".engine", ".plan")


@dataclass(frozen=True)
class ArtifactFilter:
    """Which artifacts a command can start from, for the default-artifact rule.

    ``accept(path, manifest)`` keeps a candidate; ``what`` names the kept ones in the message when
    none is left (``"fp32 ONNX export"``). ``dvit quantize`` uses one: it can only start from an fp32
    ONNX in ./export, so its default is the newest fp32 pruned export there (else the newest fp32 one).
    """

    accept: Callable[[Path, Mapping[str, Any]], bool]
    what: str
    refusal: str | None = None  # the whole message when none is accepted (else built from ``what``)


def default_artifact(suffixes: tuple[str, ...] = ALL_SUFFIXES, *,
                     only: ArtifactFilter | None = None) -> tuple[Path, str]:
    """The one rule for "the default artifact", used by every command given none.

    Among the files with these suffixes that have a manifest, in ./export and ./engines (and that
    ``only`` accepts, when given): the newest (modification time) *pruned* one; only when there is
    no pruned one, the newest of all (a dense export). A dense twin exported for ``dvit profile``
    therefore never displaces the pruned model. Returns the path and the reason, which every
    command prints.
    """
    folders = (export_dir(), engines_dir())
    found = [p for folder in folders for s in dict.fromkeys(suffixes) for p in artifacts(folder, s)]
    found.sort(key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    where = " or ".join(f"./{f.name}" for f in folders)
    kinds = "/".join(suffixes)
    if only is not None:
        found = [p for p in found if only.accept(p, _manifest_or_empty(p))]
        if not found:
            raise BadInput(only.refusal or f"no {only.what} with a manifest in {where}; run 'dvit export' first "
                           "or pass a path")
    if not found:
        raise BadInput(f"no {kinds} artifact with a manifest in {where}; run 'dvit export' first or pass a path")
    pruned = next((p for p in found if not _is_dense(p)), None)
    if pruned is not None:
        return pruned, f"newest pruned {kinds} artifact in {where}"
    return found[0], f"newest {kinds} artifact in {where}; none of them is pruned"


def _is_dense(artifact: Path) -> bool:
    return bool(_manifest_or_empty(artifact).get("dense"))


def _manifest_or_empty(artifact: Path) -> Mapping[str, Any]:
    """A candidate's manifest for choosing among them (unreadable: empty; it is checked once chosen)."""
    try:
        return read_json(manifest_path(artifact))
    except BadInput:
        return {}


def load_manifest(artifact: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """The manifest beside ``artifact``; with ``verify``, the artifact must match its recorded sha256."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise BadInput(f"artifact {artifact} not found")
    if artifact.is_dir():
        raise BadInput(f"artifact {artifact} is a folder, not a model file")
    if not manifest_path(artifact).exists():
        raise BadInput(f"{artifact.name} has no dvit manifest ({manifest_path(artifact).name} not found beside it): "
                       "dvit uses the artifacts it wrote, whose manifest says what they are; export the model "
                       "with 'dvit export'")
    manifest = read_json(manifest_path(artifact), what=f"manifest of {artifact.name}")
    from .manifest import check_manifest, verify_artifact

    check_manifest(manifest, manifest_path(artifact))
    if verify:
        verify_artifact(artifact, manifest)
    return manifest


@dataclass(frozen=True)
class Artifact:
    """An opened artifact: its path, its manifest checked once (schema, field types) and typed, and
    whether its sha256 was checked against that manifest. Jobs take this instead of (path, dict).

    ``manifest`` is the JSON as read, for writers that derive a new manifest from it (quantize,
    fp16) and for the few readers not typed yet; read typed fields (``model``, ``engine``,
    ``onnx``, ``quantization``) where they exist.
    """

    path: Path
    manifest: Mapping[str, Any]
    sha256_checked: bool
    picked_because: str | None = None  # why the default-artifact rule chose it; None when given

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_engine(self) -> bool:
        from .manifest import ENGINE_SUFFIXES

        return self.path.suffix in ENGINE_SUFFIXES

    @property
    def kind(self) -> str:
        """``engine``, ``int8-onnx`` (explicitly quantized Q/DQ) or ``onnx``."""
        if self.is_engine:
            return "engine"
        return "int8-onnx" if self.precision == "int8" else "onnx"

    @property
    def model(self) -> "ModelRecord":
        from .manifest import ModelRecord

        return ModelRecord.from_json(self.manifest)

    @property
    def precision(self) -> str:
        """The precision the artifact was written in (a manifest without one: fp32)."""
        return str(self.manifest.get("precision") or "fp32")

    @property
    def engine(self) -> "EngineArtifact | None":
        from .manifest import EngineArtifact

        return EngineArtifact.from_json(self.manifest) if self.is_engine else None

    @property
    def onnx(self) -> "OnnxArtifact | None":
        from .manifest import OnnxArtifact

        return None if self.is_engine else OnnxArtifact.from_json(self.manifest)

    @property
    def quantization(self) -> "QuantizationRecord | None":
        from .manifest import QuantizationRecord

        return QuantizationRecord.from_manifest(self.manifest)


def open_artifact(path: str | Path | None, usable_suffixes: tuple[str, ...] = ALL_SUFFIXES, *,
                  only: ArtifactFilter | None = None, verify: bool = True,
                  on_picked: Callable[[Path, str], None] | None = None) -> Artifact:
    """Open ``path`` (or, when None, the default artifact among ``usable_suffixes``: see
    ``default_artifact``; ``on_picked(path, reason)`` is told which) with its manifest read and
    checked once. With ``verify`` the artifact must match its recorded sha256 (a mismatch is refused,
    or only warned about under ``--no-verify``: see ``manifest.verification``).
    """
    why = None
    if path is None:
        chosen, why = default_artifact(usable_suffixes, only=only)
        if on_picked is not None:
            on_picked(chosen, why)
    else:
        chosen = Path(path).expanduser()
    manifest = load_manifest(chosen, verify=False)
    checked = False
    if verify:
        from .manifest import verify_artifact

        checked = verify_artifact(chosen, manifest)
    return Artifact(chosen, manifest, checked, why)


def as_artifact(artifact: "Artifact | str | Path") -> Artifact:
    """``artifact`` when already opened, else opened now (callers that still pass a path)."""
    return artifact if isinstance(artifact, Artifact) else open_artifact(artifact)


def is_dense_twin(sparse: dict[str, Any], candidate: dict[str, Any]) -> bool:
    """Same model (variant, config, checkpoint or seed), batch layout and precision, but dense."""
    if not candidate.get("dense") or sparse.get("dense"):
        return False
    # Compare as JSON would store them (an in-memory manifest holds tuples where a file has lists).
    sparse, candidate = (json.loads(json.dumps(m, default=str)) for m in (sparse, candidate))
    same = ("variant", "config", "batch", "kind")
    if any(sparse.get(k) != candidate.get(k) for k in same):
        return False
    if (sparse.get("precision") or "fp32") != (candidate.get("precision") or "fp32"):
        return False
    s_ckpt, c_ckpt = sparse.get("checkpoint"), candidate.get("checkpoint")
    if s_ckpt or c_ckpt:
        return bool(s_ckpt and c_ckpt and s_ckpt.get("sha256") == c_ckpt.get("sha256")
                    and s_ckpt.get("use_ema") == c_ckpt.get("use_ema"))
    return sparse.get("seed") == candidate.get("seed")


def find_dense_twin(artifact: Path, manifest: dict[str, Any]) -> Path | None:
    """The newest dense twin of ``artifact`` in its folder (same suffix), if any."""
    for candidate in artifacts(artifact.parent, artifact.suffix):
        if candidate.resolve() == artifact.resolve():
            continue
        try:
            other = read_json(manifest_path(candidate))
        except BadInput:
            continue
        if is_dense_twin(manifest, other):
            return candidate
    return None
