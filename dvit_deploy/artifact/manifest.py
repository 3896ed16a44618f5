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
from .keep import GEOMETRIC, family_splits_tokens, schedule_kind_of

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


def verify_artifact(artifact: str | os.PathLike, manifest: Mapping[str, Any]) -> bool:
    """Refuse (BadInput) or, with checks off, warn about an artifact that is not what its manifest says.

    True when the artifact's sha256 was checked and matches (False: the manifest records no digest,
    or the check was off and it differs).
    """
    bad = mismatches(Path(artifact), manifest)
    if not bad:
        return bool(recorded_digests(Path(artifact), manifest))
    names = ", ".join(str(p) for p in bad)
    if _policy.enabled:
        raise BadInput(f"{names} does not match its manifest (sha256 differs): it changed after it was written; "
                       "re-create it, or pass --no-verify to use it anyway")
    if _policy.on_warning is not None:
        _policy.on_warning(f"{names} does not match its manifest (sha256 differs); used anyway (--no-verify)")
    return False


# --------------------------------------------------------------------------------------------
# Typed views of the manifests dvit writes (read in one place; each default lives here once)

ONNX_SCHEMA = "dvit-deploy/onnx-manifest/1"
ENGINE_SCHEMA = "dvit-deploy/engine-manifest/1"
KNOWN_SCHEMAS = (ONNX_SCHEMA, ENGINE_SCHEMA)

# The fields every reader relies on, with the JSON types they must have (None allowed where listed).
_INT, _BOOL, _STR, _OBJ, _LIST, _NUM = (int,), (bool,), (str,), (dict,), (list,), (int, float)
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "variant": (_STR, True), "artifact": (_STR, True), "kind": (_STR, True), "precision": (_STR, True),
    "config": (_OBJ, True), "data_config": (_OBJ, True), "onnx": (_OBJ, True), "engine": (_OBJ, True),
    "checkpoint": (_OBJ, True), "quantization": (_OBJ, True), "source_onnx": (_OBJ, True),
    "keep_counts": (_LIST, True), "inputs": (_LIST, True), "outputs": (_LIST, True), "io": (_LIST, True),
    "profiles": (_LIST, True), "num_patches": (_INT, True), "batch": (_INT, True), "opset": (_INT, True),
    "keep_ratio": (_NUM, True), "dense": (_BOOL, True), "dynamic_keep": (_BOOL, True),
    "token_outputs": (_BOOL, True), "dynamic_batch": (_BOOL, True),
}
_JSON_NAMES = {int: "an integer", bool: "true/false", str: "a string", dict: "an object", list: "a list",
               float: "a number"}


def check_manifest(manifest: Mapping[str, Any], where: str | os.PathLike) -> None:
    """Refuse (one BadInput line) a manifest that is not one dvit can read: an unknown ``schema`` (a newer
    dvit-deploy's, or not ours) or a field of the wrong JSON type (``keep_counts: "abc"``).

    A manifest without ``schema`` is read as the current one (hand-made or early manifests lack it).
    """
    schema = manifest.get("schema")
    if schema is not None and schema not in KNOWN_SCHEMAS:
        newer = isinstance(schema, str) and schema.rsplit("/", 1)[0] in {s.rsplit("/", 1)[0] for s in KNOWN_SCHEMAS}
        raise BadInput(f"{where} has schema {schema!r}, which this dvit-deploy does not read (it reads "
                       f"{', '.join(KNOWN_SCHEMAS)})" + ("; it was written by a newer dvit-deploy: upgrade" if newer
                                                          else ""))
    for name, (types, nullable) in _FIELD_TYPES.items():
        if name not in manifest or (nullable and manifest[name] is None):
            continue
        value = manifest[name]
        # JSON true/false are Python bools, which are ints too: only a bool field takes them.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise BadInput(f"{where}: field '{name}' must be {' or '.join(_JSON_NAMES[t] for t in types)}, "
                           f"got {_shown(value)}")
    counts = manifest.get("keep_counts")
    if isinstance(counts, list) and not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in counts):
        raise BadInput(f"{where}: field 'keep_counts' must be a list of token counts (integers ≥ 0), got {_shown(counts)}")
    for section, keys in (("onnx", ("sha256",)), ("engine", ("sha256",))):
        record = manifest.get(section)
        if isinstance(record, Mapping):
            for key in keys:
                if record.get(key) is not None and not isinstance(record[key], str):
                    raise BadInput(f"{where}: field '{section}.{key}' must be a string, got {_shown(record[key])}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
DEFAULT_IMG_SIZE, DEFAULT_IN_CHANS, DEFAULT_PATCH_SIZE, DEFAULT_NUM_PATCHES = 224, 3, 16, 196


@dataclass(frozen=True)
class ModelRecord:
    """The model an artifact holds: variant, config, keep schedule (every manifest carries it at top level)."""

    variant: str | None
    config: Mapping[str, Any]
    dense: bool
    keep_counts: tuple[int, ...]
    num_patches: int
    batch: int | None  # a fixed batch, or None for a dynamic one
    dynamic_keep: bool
    keep_schedule: str = GEOMETRIC  # "geometric" (ViTs) or "linear" (ConvNeXt/Swin); absent = geometric
    keep_ratio: float | None = None  # as the export recorded it (None for a dense model)
    keep_input: Mapping[str, Any] | None = None  # the keep-count input (name, dtype, shape) of a dynamic-keep graph

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ModelRecord":
        config = data.get("config") if isinstance(data.get("config"), Mapping) else {}
        batch = data.get("batch")
        return cls(
            variant=data.get("variant"),
            config=dict(config),
            dense=bool(data.get("dense")),
            keep_counts=tuple(int(k) for k in (data.get("keep_counts") or [])),
            num_patches=int(data.get("num_patches") or DEFAULT_NUM_PATCHES),
            batch=int(batch) if batch else None,
            dynamic_keep=bool(data.get("dynamic_keep")),
            keep_schedule=schedule_kind_of(data),
            keep_ratio=data.get("keep_ratio") if isinstance(data.get("keep_ratio"), (int, float)) else None,
            keep_input=dict(data["keep_input"]) if isinstance(data.get("keep_input"), Mapping) else None,
        )

    @property
    def splits_tokens(self) -> bool:
        """ConvNeXt/Swin: per-position kept indices are map positions, never composed across stages."""
        return family_splits_tokens(self.config.get("family"))

    @property
    def img_size(self) -> int:
        return int(self.config.get("img_size", DEFAULT_IMG_SIZE))

    @property
    def in_chans(self) -> int:
        return int(self.config.get("in_chans", DEFAULT_IN_CHANS))

    @property
    def patch_size(self) -> int:
        return int(self.config.get("patch_size", DEFAULT_PATCH_SIZE))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return self.in_chans, self.img_size, self.img_size


@dataclass(frozen=True)
class EngineArtifact:
    """An engine manifest (``dvit build``'s layout), typed; ``to_json`` gives back the same JSON."""

    model: ModelRecord
    tensorrt: str | None
    gpu: str | None
    compute_capability: str | None  # "8.7"
    platform: str | None
    precision: str | None
    sha256: str | None
    onnx_sha256: str | None
    onnx_path: str | None
    onnx_manifest: str | None
    profiles: list[Mapping[str, Any]]
    io: list[Mapping[str, Any]]
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "EngineArtifact":
        def section(name: str) -> Mapping[str, Any]:
            value = data.get(name)
            return value if isinstance(value, Mapping) else {}

        tensorrt, gpu, engine, source = section("tensorrt"), section("gpu"), section("engine"), section("source_onnx")
        cc = gpu.get("compute_capability")
        return cls(
            model=ModelRecord.from_json(data),
            tensorrt=_text(tensorrt.get("version")),
            gpu=_text(gpu.get("name")),
            compute_capability=".".join(str(v) for v in cc) if isinstance(cc, (list, tuple)) else _text(cc),
            platform=_text(gpu.get("platform")),
            precision=_text(data.get("precision")),
            sha256=_text(engine.get("sha256")),
            onnx_sha256=_text(source.get("sha256")),
            onnx_path=_text(source.get("path")),
            onnx_manifest=_text(source.get("manifest")),
            profiles=[p for p in data.get("profiles") or [] if isinstance(p, Mapping)],
            io=[t for t in data.get("io") or [] if isinstance(t, Mapping)],
            raw=data,
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw)


def _text(value: Any) -> str | None:
    return None if value in (None, "") or isinstance(value, (Mapping, list, tuple)) else str(value)


@dataclass(frozen=True)
class QuantizationRecord:
    """An int8 manifest's ``quantization`` section, typed (``dvit quantize`` writes it).

    Files quantized before recipes existed (or by another tool) have no recipe: they read as
    full-range weights (``reduce_range`` False), the safe assumption for choosing kernels.
    """

    recipe: str | None
    target: str | None
    reduce_range: bool
    cpu_class: str | None

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "QuantizationRecord | None":
        """None when the manifest describes no int8 graph."""
        if str(manifest.get("precision") or "") != "int8":
            return None
        section = manifest.get("quantization")
        section = section if isinstance(section, Mapping) else {}
        recipe = section.get("recipe") if isinstance(section.get("recipe"), Mapping) else {}
        cpu = section.get("cpu") if isinstance(section.get("cpu"), Mapping) else {}
        return cls(recipe=_text(recipe.get("name")), target=_text(recipe.get("target")),
                   reduce_range=section.get("reduce_range") is True, cpu_class=_text(cpu.get("class")))


@dataclass(frozen=True)
class DerivedFrom:
    """The artifact a derived ONNX (int8, fp16) was made from: the one shape every writer uses.

    ``path`` is relative to the derived file's folder. Manifests written before this shape read too:
    fp16 graphs recorded an absolute ``path`` and no ``bytes``/``artifact``.
    """

    path: str
    artifact: str
    sha256: str | None
    bytes: int | None
    transform: str | None = None

    @classmethod
    def of(cls, source: Path, derived: Path, *, sha256: str, transform: str | None = None) -> "DerivedFrom":
        return cls(path=os.path.relpath(Path(source).resolve(), Path(derived).parent.resolve()),
                   artifact=Path(source).name, sha256=sha256, bytes=Path(source).stat().st_size, transform=transform)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "DerivedFrom | None":
        if not isinstance(data, Mapping) or not isinstance(data.get("path"), str):
            return None
        size = data.get("bytes")
        return cls(path=data["path"], artifact=_text(data.get("artifact")) or Path(data["path"]).name,
                   sha256=_text(data.get("sha256")), bytes=size if isinstance(size, int) else None,
                   transform=_text(data.get("transform")))

    def source_path(self, derived: Path) -> Path:
        """Where the source is: an old absolute path as it is, a relative one from ``derived``'s folder."""
        path = Path(self.path)
        return path if path.is_absolute() else Path(derived).parent / path

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "artifact": self.artifact, "sha256": self.sha256,
                                "bytes": self.bytes}
        if self.transform is not None:
            data["transform"] = self.transform
        return data


@dataclass(frozen=True)
class OnnxArtifact:
    """An ONNX manifest (``dvit export``'s layout; ``dvit quantize`` and the fp16 conversion add to it), typed."""

    model: ModelRecord
    precision: str  # fp32, fp16 (mixed) or int8 (Q/DQ)
    opset: int | None
    sha256: str | None
    bytes: int | None
    external_data: tuple[str, ...]
    derived_from: DerivedFrom | None  # quantize: inside ``quantization``; fp16: top level
    quantization: QuantizationRecord | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "OnnxArtifact":
        record = data.get("onnx") if isinstance(data.get("onnx"), Mapping) else {}
        quant = data.get("quantization") if isinstance(data.get("quantization"), Mapping) else {}
        size = record.get("bytes")
        return cls(
            model=ModelRecord.from_json(data),
            precision=str(data.get("precision") or "fp32"),
            opset=data.get("opset") if isinstance(data.get("opset"), int) else None,
            sha256=_text(record.get("sha256")),
            bytes=size if isinstance(size, int) else None,
            external_data=tuple(str(f) for f in record.get("external_data") or []),
            derived_from=DerivedFrom.from_json(quant.get("derived_from") or data.get("derived_from")),
            quantization=QuantizationRecord.from_manifest(data),
            raw=data,
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw)
