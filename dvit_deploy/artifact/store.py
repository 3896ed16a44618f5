"""The artifact store: default folders (``./export``, ``./engines``), the default-artifact rule,
reading a manifest (with its sha256 check) and finding an artifact's dense twin.

Relative defaults resolve against the current working directory, so ``dvit`` writes to
``./export`` wherever it runs, like other build tools do.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

if TYPE_CHECKING:
    from .manifest import AnyManifest, EngineManifest, ModelRecord, OnnxManifest, QuantizationRecord

from ..helpers.errors import BadInput
from ..helpers.fileio import manifest_path, read_json
from .context import RunContext

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

    ``accept(path, manifest)`` keeps a candidate (``manifest`` typed, empty when unreadable); ``what`` names the kept ones in the message when
    none is left (``"fp32 ONNX export"``). ``dvit quantize`` uses one: it can only start from an fp32
    ONNX in ./export, so its default is the newest fp32 pruned export there (else the newest fp32 one).
    """

    accept: Callable[[Path, "AnyManifest"], bool]
    what: str
    refusal: str | None = None  # the whole message when none is accepted (else built from ``what``)


def default_artifact(suffixes: tuple[str, ...] = ALL_SUFFIXES, *, only: ArtifactFilter | None = None,
                     context: RunContext | None = None) -> tuple[Path, str]:
    """The one rule for "the default artifact", used by every command given none.

    Among the files with these suffixes that have a manifest, in ./export and ./engines (and that
    ``only`` accepts, when given): the newest (modification time) *pruned* one; only when there is
    no pruned one, the newest of all (a dense export). A dense twin exported for ``dvit profile``
    therefore never displaces the pruned model. Returns the path and the reason, which every
    command prints. The candidates' manifests are read through ``context``'s cache (a fresh one when None).
    """
    context = RunContext() if context is None else context
    folders = (export_dir(), engines_dir())
    found = [p for folder in folders for s in dict.fromkeys(suffixes) for p in artifacts(folder, s)]
    found.sort(key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    where = " or ".join(f"./{f.name}" for f in folders)
    kinds = "/".join(suffixes)
    maker = "dvit export" if ".onnx" in suffixes else "dvit build"  # engines come from a build, not an export
    if only is not None:
        found = [p for p in found if only.accept(p, _candidate(p, context))]
        if not found:
            raise BadInput(only.refusal or f"no {only.what} with a manifest in {where}; run '{maker}' first "
                           "or pass a path")
    if not found:
        raise BadInput(f"no {kinds} artifact with a manifest in {where}; run '{maker}' first or pass a path")
    pruned = next((p for p in found if not _is_dense(p, context)), None)
    if pruned is not None:
        return pruned, f"newest pruned {kinds} artifact in {where}"
    return found[0], f"newest {kinds} artifact in {where}; none of them is pruned"


def _is_dense(artifact: Path, context: RunContext) -> bool:
    return _candidate(artifact, context).model.dense


def _read_json(path: Path, context: RunContext, **kwargs: Any) -> dict[str, Any]:
    """A manifest JSON, read from disk once per run (``context.caches.manifests``): choosing the default
    artifact, finding a dense twin and opening the chosen one share that read. Keyed by the file's (path,
    inode, size, mtime), so a manifest rewritten during the run (writers replace it by a rename: a new
    inode) is read again."""
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    except OSError:
        return read_json(path, **kwargs)  # missing: read_json says so in its own words
    reads = context.caches.manifests
    if key not in reads:
        reads[key] = read_json(path, **kwargs)
    return copy.deepcopy(reads[key])  # callers own what they get, as from a fresh read


def _candidate(artifact: Path, context: RunContext) -> "AnyManifest":
    """A candidate's typed manifest for choosing among them (unreadable: empty; it is checked once chosen)."""
    from .manifest import manifest_from_json

    try:
        data = _read_json(manifest_path(artifact), context)
        return manifest_from_json(data if isinstance(data, Mapping) else {}, artifact)
    except (BadInput, ValueError, TypeError):  # a field of the wrong type: refused once chosen, with its name
        return manifest_from_json({}, artifact)


def _read_checked(artifact: Path, context: RunContext) -> dict[str, Any]:
    """The manifest JSON beside ``artifact``, refused in one line when missing or not one dvit reads."""
    if not artifact.exists():
        raise BadInput(f"artifact {artifact} not found")
    if artifact.is_dir():
        raise BadInput(f"artifact {artifact} is a folder, not a model file")
    if not manifest_path(artifact).exists():
        raise BadInput(f"{artifact.name} has no dvit manifest ({manifest_path(artifact).name} not found beside it): "
                       "dvit uses the artifacts it wrote, whose manifest says what they are; export the model "
                       "with 'dvit export'")
    data = _read_json(manifest_path(artifact), context, what=f"manifest of {artifact.name}")
    from .manifest import check_manifest

    check_manifest(data, manifest_path(artifact))
    return data


@dataclass(frozen=True)
class Artifact:
    """An opened artifact: its path, its manifest read, checked (schema, field types) and typed once,
    and whether its sha256 was checked against that manifest. Jobs and runners take this, never a
    path with a dict.

    ``manifest`` is an ``OnnxManifest`` or an ``EngineManifest``; a writer deriving a new manifest
    from it (quantize, fp16, build) starts from ``manifest.to_json()`` or ``with_changes``.

    ``context`` is the run it was opened in: later steps on it (checking its sha256, rebuilding its
    PyTorch model, opening its dense twin) use that run's verify policy, caches and moved checkpoint.
    """

    path: Path
    manifest: "AnyManifest"
    sha256_checked: bool
    picked_because: str | None = None  # why the default-artifact rule chose it; None when given
    context: RunContext = field(default_factory=RunContext, compare=False, repr=False)

    @classmethod
    def of(cls, path: str | Path, manifest: Mapping[str, Any] | "AnyManifest", *,
           context: RunContext | None = None) -> "Artifact":
        """An artifact from a manifest in memory (checked and typed; its file's sha256 not checked), in the run
        ``context`` (a fresh one when None)."""
        from .manifest import EngineManifest, OnnxManifest, check_manifest, manifest_from_json

        path = Path(path)
        if not isinstance(manifest, (OnnxManifest, EngineManifest)):
            check_manifest(manifest, manifest_path(path))
            manifest = manifest_from_json(manifest, path)
        return cls(path, manifest, False, context=RunContext() if context is None else context)

    def in_context(self, context: RunContext) -> "Artifact":
        """This artifact under ``context`` (a job's run): later steps (twins, the torch reference, derived
        files) follow that run's policy, caches and moved checkpoint."""
        return self if self.context is context else dataclasses.replace(self, context=context)

    def at_keep_ratio(self, keep_ratio: float) -> "Artifact":
        """This --dynamic-keep artifact run at ρ ``keep_ratio`` (``--keep-ratio`` of validate/profile): its
        model record re-targeted (``ModelRecord.at_keep_ratio``), so every runner feeds that ρ's keep counts
        and the PyTorch reference is rebuilt at it. A --keep-ladder engine takes only its rungs."""
        from .manifest import EngineManifest

        model = self.manifest.model.at_keep_ratio(keep_ratio)
        if isinstance(self.manifest, EngineManifest) and self.manifest.ladder:
            self.manifest.rung_for(keep_ratio=keep_ratio)  # off the ladder: one line naming the rungs
        return dataclasses.replace(self, manifest=self.manifest.with_changes(model=model))

    def verified(self) -> "Artifact":
        """This artifact with its sha256 checked against its manifest now (a mismatch is refused, or only
        warned about when the run's ``context.verify`` is off: ``--no-verify``)."""
        from .verify import verify_artifact

        return dataclasses.replace(self, sha256_checked=verify_artifact(self.path, self.manifest.raw, self.context))

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
        return self.manifest.model

    @property
    def precision(self) -> str:
        """The precision the artifact was written in (a manifest without one: fp32)."""
        return self.manifest.precision

    @property
    def engine(self) -> "EngineManifest | None":
        from .manifest import EngineManifest

        return self.manifest if isinstance(self.manifest, EngineManifest) else None

    @property
    def onnx(self) -> "OnnxManifest | None":
        from .manifest import OnnxManifest

        return self.manifest if isinstance(self.manifest, OnnxManifest) else None

    @property
    def quantization(self) -> "QuantizationRecord | None":
        return self.manifest.quantization


def open_artifact(path: str | Path | None, usable_suffixes: tuple[str, ...] = ALL_SUFFIXES, *,
                  context: RunContext | None = None, only: ArtifactFilter | None = None, verify: bool = True,
                  on_picked: Callable[[Path, str], None] | None = None) -> Artifact:
    """Open ``path`` (or, when None, the default artifact among ``usable_suffixes``: see
    ``default_artifact``; ``on_picked(path, reason)`` is told which) with its manifest read and
    checked once. With ``verify`` the artifact must match its recorded sha256 (a mismatch is refused,
    or only warned about when ``context.verify`` is off: ``--no-verify``).

    ``context``: the run it is opened in (None: a fresh ``RunContext()``); the artifact keeps it.
    """
    from .manifest import manifest_from_json

    context = RunContext() if context is None else context
    why = None
    if path is None:
        chosen, why = default_artifact(usable_suffixes, only=only, context=context)
        if on_picked is not None:
            on_picked(chosen, why)
    else:
        chosen = Path(path).expanduser()
    opened = Artifact(chosen, manifest_from_json(_read_checked(chosen, context), chosen), False, why, context)
    return opened.verified() if verify else opened


M = TypeVar("M")


def typed_manifest(source: "Artifact | AnyManifest", kind: "type[M]") -> "M":
    """The ``kind`` manifest (``OnnxManifest`` or ``EngineManifest``) of an opened artifact, or the manifest
    itself; anything else (a JSON dict, the other kind) is a programming error."""
    manifest = source.manifest if isinstance(source, Artifact) else source
    if not isinstance(manifest, kind):
        raise TypeError(f"expected an Artifact or {kind.__name__}, got {type(manifest).__name__}")
    return manifest


def as_artifact(artifact: "Artifact | str | Path", context: RunContext | None = None) -> Artifact:
    """``artifact`` when already opened, else opened now in ``context`` (callers that still pass a path)."""
    return artifact if isinstance(artifact, Artifact) else open_artifact(artifact, context=context)


def is_dense_twin(sparse: "AnyManifest | Mapping[str, Any]", candidate: "AnyManifest | Mapping[str, Any]") -> bool:
    """Same model (variant, config, checkpoint or seed), batch layout and precision, but dense.

    Typed manifests, or manifest JSON as written (typed here)."""
    from .manifest import EngineManifest, OnnxManifest

    sparse, candidate = (m if isinstance(m, (OnnxManifest, EngineManifest)) else OnnxManifest.from_json(m)
                         for m in (sparse, candidate))
    s, c = sparse.model, candidate.model
    if not c.dense or s.dense:
        return False
    if (s.variant, s.config, s.batch) != (c.variant, c.config, c.batch) or sparse.precision != candidate.precision:
        return False
    if sparse.raw.get("kind") != candidate.raw.get("kind"):
        return False
    if s.checkpoint or c.checkpoint:
        return bool(s.checkpoint and c.checkpoint and s.checkpoint.get("sha256") == c.checkpoint.get("sha256")
                    and s.checkpoint.get("use_ema") == c.checkpoint.get("use_ema"))
    return s.seed == c.seed


def find_dense_twin(artifact: Artifact) -> Path | None:
    """The newest dense twin of ``artifact`` in its folder (same suffix), if any (candidates read in the
    artifact's run)."""
    for candidate in artifacts(artifact.path.parent, artifact.path.suffix):
        if candidate.resolve() == artifact.path.resolve():
            continue
        if is_dense_twin(artifact.manifest, _candidate(candidate, artifact.context)):
            return candidate
    return None
