"""Atomic writes, hashing and manifests: no half-written artifact is ever left behind."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import BadInput

HASH_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# What our commands write: ``--force`` may replace an existing file only of one of these kinds.
OUTPUT_KINDS = (".onnx", ".engine", ".plan", ".png", ".svg", ".pdf", ".json", ".cache")
# Artifacts that always get a JSON manifest beside them (``x.onnx`` -> ``x.onnx.json``: see ``manifest_path``).
MANIFESTED_KINDS = (".onnx", ".engine", ".plan")
SCHEMA_PREFIX = "dvit-deploy/"


def prepare_output(path: str | os.PathLike, *, force: bool, kinds: tuple[str, ...] | None = None,
                   create: bool = True) -> Path:
    """Check that ``path`` can be written: parent creatable and writable, no clobbering without force.

    ``--force`` replaces only a *file* of a kind the command writes (``kinds``, default: any kind
    dvit writes) and, for artifacts, only a manifest beside it that dvit wrote. A manifest name
    taken by a file that is not ours is refused even with ``--force``: it is the user's file.
    """
    path = Path(path).expanduser()
    if path.exists() and path.is_dir():
        raise BadInput(f"output path {path} is a directory; give a file name")
    if path.exists() and not force:
        raise BadInput(f"output {path} already exists; pass --force to overwrite it")
    allowed = kinds or OUTPUT_KINDS
    if path.exists() and path.suffix.lower() not in allowed:
        raise BadInput(f"refusing to replace {path}: --force replaces only {'/'.join(allowed)} files this command "
                       "writes; choose another output name")
    if path.suffix.lower() in MANIFESTED_KINDS:
        manifest = manifest_path(path)
        data = _our_manifest_data(manifest) if manifest.exists() else None
        if manifest.exists() and data is None:
            raise BadInput(f"refusing to overwrite {manifest}: it is not a dvit manifest (the manifest of {path.name} "
                           "would take its name); choose another output name")
        owner = manifest_owner(data) if data is not None else None
        if owner and owner != path.name and (manifest.parent / owner).exists():
            # A manifest describing another file that is there (renamed by hand): writing would orphan it.
            raise BadInput(f"refusing to write {path}: {manifest.name} beside it is the manifest of {owner}, which "
                           f"{path.name} would orphan; choose another output name or folder")
    blocking_file = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking_file is not None:
        raise BadInput(f"cannot write {path}: {blocking_file} is a file, not a folder")
    if not create:  # a check only, before slow work: nothing is made yet
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create output folder {path.parent}: {exc.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise BadInput(f"output folder {path.parent} is not writable")
    return path


# Temporary names keep this much of the real name (recognisable in a listing) and stay short, so any name
# the file system accepts for the output is also accepted for its temporary twin (255 bytes on most).
TEMP_STEM_CHARS = 40


def temp_prefix(name: str) -> str:
    """``.<first 40 characters of name>.``: the prefix of a temporary file or folder beside ``name``."""
    return f".{name[:TEMP_STEM_CHARS]}."


# Errors of the device written to, not of the input: a library that wraps one (the ONNX exporter's
# "OSError: [Errno 28] …" inside its own error) must still end as the OSError, naming the path.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)


def _write_error_in(exc: BaseException) -> OSError | None:
    """The OSError of a failed write behind ``exc`` (itself, or what it was raised from), if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in WRITE_ERRNOS:
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


@contextlib.contextmanager
def errors_name(path: str | os.PathLike, temporary: str | os.PathLike) -> Iterator[None]:
    """An OSError about ``temporary`` names ``path`` instead, and one about ``temporary/x`` names ``path/x``:
    the user's names, not our temporary ones (``.m.0m2jtmfw``). One that names nothing (a write to an open
    file: a full disk) names ``path``; a full disk wrapped in another library's error is raised as itself."""
    try:
        yield
    except Exception as raised:  # an interrupt or SIGTERM stays what it is
        written = _write_error_in(raised)
        exc = raised if isinstance(raised, OSError) else written
        if exc is None:
            raise
        tmp, real = os.fspath(temporary), os.fspath(path)
        if exc.filename is None and exc.filename2 is None and exc.errno in WRITE_ERRNOS:
            exc.filename = real
        for attr in ("filename", "filename2"):
            value = getattr(exc, attr, None)
            if isinstance(value, (str, os.PathLike)):
                text = os.fspath(value)
                if text == tmp:
                    setattr(exc, attr, real)
                elif isinstance(text, str) and text.startswith(tmp + os.sep):
                    setattr(exc, attr, os.path.join(real, os.path.relpath(text, tmp)))
        if exc is raised:
            raise
        raise exc from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    ``replace=False`` publishes without clobbering: if ``path`` appeared meanwhile (another process),
    nothing is replaced and BadInput says so (see ``publish_no_clobber``).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as exc:  # it names the random temporary name it tried
        exc.filename = str(path)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with errors_name(path, tmp_path):
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; artifacts are ordinary files
            if replace:
                os.replace(tmp_path, path)
            else:
                publish_no_clobber(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def publish_no_clobber(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` only if ``dst`` does not exist, atomically (a hard link fails on an existing
    name; checking first and renaming would let two processes both "win")."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise BadInput(f"output {dst} already exists (written while this command ran); pass --force to overwrite "
                       "it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS):
            raise
        # A file system without hard links: O_EXCL claims the name, then the data is renamed over the claim.
        try:
            os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise BadInput(f"output {dst} already exists (written while this command ran); pass --force to "
                           "overwrite it") from None
        os.replace(src, dst)
        return
    os.unlink(src)


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2, default=_json_default) + "\n").encode())


def publish_artifact(moves: list[tuple[Path, Path]], artifact: Path, manifest: Any, *, replace: bool = True) -> None:
    """Move a checked artifact's files from their temporary names into place, then write its manifest.

    Give data files before the graph in ``moves``: a reader never sees a graph whose weights are
    missing, nor a manifest for a graph that is not there (the graph is removed if the manifest
    cannot be written). ``replace=False`` (no ``--force``): every file is published without clobbering,
    so of two commands racing to one output exactly one succeeds; the loser removes what it placed.
    """
    placed: list[Path] = []
    try:
        for src, dst in moves:
            with errors_name(dst, src):
                if replace:
                    os.replace(src, dst)
                else:
                    publish_no_clobber(src, dst)
            placed.append(dst)
    except BaseException:
        if not replace:
            for dst in placed:
                dst.unlink(missing_ok=True)
        raise
    try:
        write_json_atomic(manifest_path(artifact), manifest)
    except OSError:
        Path(artifact).unlink(missing_ok=True)
        raise


MANIFEST_SUFFIX = ".json"


def manifest_path(artifact: str | os.PathLike) -> Path:
    """The JSON manifest that sits beside an artifact, the one place that names it, for readers and writers.

    Named after the whole file name: ``x.onnx`` -> ``x.onnx.json``, ``x.engine`` -> ``x.engine.json``, so an
    ONNX and the engine built from it keep their own manifests in one folder under trtexec's naming
    (``--onnx=m.onnx --saveEngine=m.engine``). dvit-deploy 0.1 named it ``x.json``: such a manifest is still
    this artifact's while no ``x.onnx.json`` exists and it describes this file (``legacy_manifest_of``), and a
    rewrite then replaces it in place (no second manifest left behind)."""
    path = Path(artifact)
    current = path.with_name(path.name + MANIFEST_SUFFIX)
    if path.suffix.lower() in MANIFESTED_KINDS and not current.exists():
        legacy = legacy_manifest_of(path)
        if legacy is not None:
            return legacy
    return current


def legacy_manifest_of(artifact: Path) -> Path | None:
    """``x.json`` beside ``x.onnx`` when it is x.onnx's manifest as 0.1 wrote it: a JSON object naming this
    file as its ``artifact``, or carrying a dvit schema and naming no other file. Anything else (the user's
    ``x.json``, the manifest of ``x.engine``) is not this artifact's and is never read or written for it."""
    legacy = artifact.with_suffix(MANIFEST_SUFFIX)
    if legacy == artifact or not legacy.is_file():
        return None
    data = _json_object(legacy)
    if data is None:
        return None
    owner = data.get("artifact")
    if owner == artifact.name:
        return legacy
    ours = str(data.get("schema", "")).startswith(SCHEMA_PREFIX)
    return legacy if ours and owner is None else None


def _json_object(path: str | os.PathLike) -> dict[str, Any] | None:
    """A small JSON file's object, or None (unreadable, not JSON, not an object, too big to be a manifest)."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(1 << 22))  # manifests are small; a big file is not one of ours
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _our_manifest_data(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON of a manifest written by dvit-deploy (its ``schema`` says so), or None."""
    data = _json_object(path)
    ours = data is not None and str(data.get("schema", "")).startswith(SCHEMA_PREFIX)
    return data if ours else None


def is_our_manifest(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a JSON manifest written by dvit-deploy (its ``schema`` says so)."""
    return _our_manifest_data(path) is not None


def manifest_owner(data: dict[str, Any]) -> str | None:
    """The file name a dvit manifest describes (its ``artifact`` field), or None."""
    owner = data.get("artifact")
    return owner if isinstance(owner, str) and owner and "/" not in owner else None


def is_same_or_parent_of_cwd(folder: Path) -> bool:
    """The current folder, one of its parents, or ``/``: never replaced or removed by any command."""
    folder = folder.expanduser().resolve()
    cwd = Path.cwd().resolve()
    return folder == cwd or folder in cwd.parents or folder == Path(folder.anchor)


def read_json(path: str | os.PathLike, what: str = "manifest") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{what} {path} not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{what} {path} is not valid JSON: {exc}") from None
    except RecursionError:  # Python's parser recurses per level; no manifest of ours is nested this deep
        raise BadInput(f"{what} {path} is nested too deeply to be a dvit manifest") from None
    if not isinstance(data, dict):
        raise BadInput(f"{what} {path} does not hold a JSON object")
    return data


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
