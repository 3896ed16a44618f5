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
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Union

from ..helpers.errors import BadInput
from ..helpers.fileio import sha256_file
from .keep import GEOMETRIC, KeepSchedule, family_splits_tokens, schedule_kind_of

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

    A manifest without ``schema`` is read as the current one (hand-made or early manifests lack it), if it
    holds at least one field dvit writes; one with fields but none of ours (``{"name": "swin", "framework":
    "onnx"}``, another tool's JSON beside an ONNX) is not a dvit manifest. (An empty one records nothing:
    in-memory manifests of tests and tools start that way.)
    """
    schema = manifest.get("schema")
    if schema is None and manifest and not any(name in manifest for name in _OUR_FIELDS):
        raise BadInput(f"{Path(where).name} is not a dvit manifest (no 'schema' and none of the fields dvit "
                       f"writes{_keys_shown(manifest)}): dvit uses the artifacts it wrote; export the model with "
                       "'dvit export'")
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


# Fields only a dvit manifest has: a schema-less JSON without any of them is another tool's.
_OUR_FIELDS = frozenset(_FIELD_TYPES) | {"model", "tensorrt", "rtx", "gpu", "builder", "derived_from", "check"}


def _keys_shown(manifest: Mapping[str, Any]) -> str:
    keys = [str(k) for k in list(manifest)[:4]]
    return f"; it has {', '.join(repr(k) for k in keys)}{', …' if len(manifest) > 4 else ''}" if keys else ""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
DEFAULT_IMG_SIZE, DEFAULT_IN_CHANS, DEFAULT_PATCH_SIZE, DEFAULT_NUM_PATCHES = 224, 3, 16, 196

# Typed records: each reads its JSON once (from_json) and writes it back (to_json). A section dvit
# does not type (a builder's flag list, a check report) is kept verbatim, so nothing is lost when a
# typed manifest is derived into a new one.


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name)
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return None if value in (None, "") or isinstance(value, (Mapping, list, tuple)) else str(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _plain(value: Any) -> Any:
    """A JSON copy of ``value`` (tuples as lists, mappings as dicts), so to_json never shares state."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class TensorRecord:
    """One graph input or output as a manifest lists it (``name``, ``dtype``, ``shape``)."""

    name: str
    dtype: str | None
    shape: tuple[Any, ...]  # ints, or strings for symbolic dims
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TensorRecord":
        shape = data.get("shape")
        return cls(name=str(data.get("name", "")), dtype=_text(data.get("dtype")),
                   shape=tuple(shape) if isinstance(shape, (list, tuple)) else (), raw=_plain(data))

    @classmethod
    def all_from(cls, items: Any) -> tuple["TensorRecord", ...]:
        return tuple(cls.from_json(t) for t in items or () if isinstance(t, Mapping))

    @property
    def is_token_output(self) -> bool:
        from .names import TOKEN_OUTPUT_PREFIX

        return self.name.startswith(TOKEN_OUTPUT_PREFIX)

    @property
    def mode(self) -> str:
        """An engine io entry's direction as the builder recorded it (``input``/``output``; "" when not said)."""
        return str(self.raw.get("mode", self.raw.get("io_mode", "")))

    @property
    def is_shape_tensor(self) -> bool:
        """An engine io entry TensorRT treats as a shape tensor (the keep_counts of a --dynamic-keep engine)."""
        return bool(self.raw.get("shape_tensor"))

    def to_json(self) -> dict[str, Any]:
        return _plain(self.raw)


@dataclass(frozen=True)
class ProfileRecord:
    """One input's optimization profile in an engine: min/opt/max dims (or values, for a shape tensor).

    An engine built with ``--keep-ladder`` has one optimization profile per keep ratio: each of its
    records says which (``profile``, the TensorRT profile index) and the rung's ρ (``keep_ratio``).
    Manifests written before ladders have neither: every record is profile 0, with no ρ.
    """

    name: str
    kind: str  # "shape" (dims) or "values" (shape-tensor input)
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]
    profile: int = 0  # the optimization profile's index in the engine
    keep_ratio: float | None = None  # the ρ this profile pins (--keep-ladder engines only)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ProfileRecord":
        def dims(key: str) -> tuple[int, ...]:
            value = data.get(key)
            return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else ()

        ratio = data.get("keep_ratio")
        return cls(name=str(data.get("name", "")), kind=str(data.get("kind") or "shape"),
                   min=dims("min"), opt=dims("opt"), max=dims("max"), profile=_int(data.get("profile")) or 0,
                   keep_ratio=float(ratio) if isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
                   else None)

    @property
    def pinned(self) -> bool:
        """min = opt = max: the profile gives this input one shape (or one set of values)."""
        return bool(self.min) and self.min == self.opt == self.max

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind, "min": list(self.min), "opt": list(self.opt),
                                "max": list(self.max)}
        if self.profile or self.keep_ratio is not None:  # a ladder's; earlier layouts stay as they were
            data.update(profile=self.profile, keep_ratio=self.keep_ratio)
        return data


RATIO_TOLERANCE = 1e-6  # a requested ρ is on a ladder rung when it is this close (0.7 vs 0.7000000001)


@dataclass(frozen=True)
class LadderRung:
    """One rung of a ``--keep-ladder`` engine: its optimization profile, ρ, and the pinned keep counts."""

    profile: int
    keep_ratio: float
    counts: tuple[int, ...]


@dataclass(frozen=True)
class ModelRecord:
    """The model an artifact holds: variant, config, keep schedule, weights' origin, batch layout.

    Every manifest carries it at top level; ``to_json`` gives those top-level keys (the engine
    writer copies them from the ONNX's record, so an engine describes the same model).
    """

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
    stage_ratios: tuple[float, ...] | None = None
    pruning_locations: tuple[int, ...] = ()
    seed: int | None = None
    checkpoint: Mapping[str, Any] | None = None  # path, sha256, source_key, use_ema, trusted
    random_weights: bool = False
    token_outputs: bool = False
    dynamic_batch: bool | None = None
    data_config: Mapping[str, Any] | None = None  # preprocessing (mean, std, crop) as exported

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ModelRecord":
        batch = data.get("batch")
        ratios = data.get("stage_ratios")
        return cls(
            variant=_text(data.get("variant")),
            config=_plain(_section(data, "config")),
            dense=bool(data.get("dense")),
            keep_counts=tuple(int(k) for k in (data.get("keep_counts") or [])),
            num_patches=int(data.get("num_patches") or DEFAULT_NUM_PATCHES),
            batch=int(batch) if batch else None,
            dynamic_keep=bool(data.get("dynamic_keep")),
            keep_schedule=schedule_kind_of(data),
            keep_ratio=data.get("keep_ratio") if isinstance(data.get("keep_ratio"), (int, float))
            and not isinstance(data.get("keep_ratio"), bool) else None,
            keep_input=_plain(data["keep_input"]) if isinstance(data.get("keep_input"), Mapping) else None,
            stage_ratios=tuple(float(r) for r in ratios) if isinstance(ratios, (list, tuple)) else None,
            pruning_locations=tuple(int(k) for k in data.get("pruning_locations") or ()),
            seed=_int(data.get("seed")),
            checkpoint=_plain(data["checkpoint"]) if isinstance(data.get("checkpoint"), Mapping) else None,
            random_weights=data.get("random_weights") is True,
            token_outputs=data.get("token_outputs") is True,
            dynamic_batch=data.get("dynamic_batch") if isinstance(data.get("dynamic_batch"), bool) else None,
            data_config=_plain(data["data_config"]) if isinstance(data.get("data_config"), Mapping) else None,
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "variant": self.variant, "config": _plain(self.config), "dense": self.dense,
            "keep_ratio": self.keep_ratio, "keep_schedule": self.keep_schedule,
            "stage_ratios": None if self.stage_ratios is None else list(self.stage_ratios),
            "keep_counts": list(self.keep_counts), "pruning_locations": list(self.pruning_locations),
            "num_patches": self.num_patches, "random_weights": self.random_weights, "seed": self.seed,
            "checkpoint": _plain(self.checkpoint), "batch": self.batch, "dynamic_batch": self.dynamic_batch,
            "token_outputs": self.token_outputs, "dynamic_keep": self.dynamic_keep,
            "data_config": _plain(self.data_config),
        }
        if self.keep_input is not None:
            data["keep_input"] = _plain(self.keep_input)
        return data

    @property
    def family(self) -> str | None:
        return _text(self.config.get("family"))

    @property
    def splits_tokens(self) -> bool:
        """ConvNeXt/Swin: per-position kept indices are map positions, never composed across stages."""
        return family_splits_tokens(self.family)

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
    def num_classes(self) -> int:
        return int(self.config.get("num_classes", 1000))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return self.in_chans, self.img_size, self.img_size

    @property
    def fixed_batch(self) -> bool:
        """The graph takes exactly ``batch`` images (an export with ``--batch N``)."""
        return self.batch is not None or self.dynamic_batch is False

    def at_keep_ratio(self, keep_ratio: float) -> "ModelRecord":
        """This --dynamic-keep model run at another ρ: the keep ratio, stage ratios and counts of that ρ
        (``artifact.keep``'s one rule), so runners feed those counts and the reference is rebuilt at ρ."""
        if not self.dynamic_keep:
            raise BadInput(f"--keep-ratio {keep_ratio:g} needs a --dynamic-keep artifact; this one keeps the fixed "
                           f"schedule {list(self.keep_counts)} of ρ {self.keep_ratio if self.keep_ratio is not None else '—'}")
        stages = len(self.keep_counts) or len(self.pruning_locations)
        try:
            schedule = KeepSchedule.from_ratio(float(keep_ratio), stages, self.num_patches, self.keep_schedule)
        except ValueError as exc:
            raise BadInput(f"--keep-ratio {keep_ratio:g}: {exc}") from None
        return dataclasses.replace(self, keep_ratio=float(keep_ratio), stage_ratios=schedule.ratios,
                                   keep_counts=schedule.counts)

    @property
    def identity(self) -> tuple[Any, ...]:
        """What makes two records the same model (for reference caches): variant, config, schedule, weights."""
        ckpt = self.checkpoint or {}
        return (self.variant, repr(sorted(self.config.items())), self.dense, self.stage_ratios, self.seed,
                ckpt.get("sha256"), ckpt.get("use_ema"))


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
    calibration_method: str | None = None
    calibration_samples: int | None = None
    calibration_source: str | None = None
    opset: int | None = None
    derived_from: "DerivedFrom | None" = None
    raw: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, section: Mapping[str, Any]) -> "QuantizationRecord":
        recipe, cpu, calib = _section(section, "recipe"), _section(section, "cpu"), _section(section, "calibration")
        return cls(recipe=_text(recipe.get("name")), target=_text(recipe.get("target")),
                   reduce_range=section.get("reduce_range") is True, cpu_class=_text(cpu.get("class")),
                   calibration_method=_text(calib.get("method")), calibration_samples=_int(calib.get("samples")),
                   calibration_source=_text(calib.get("source")), opset=_int(section.get("opset")),
                   derived_from=DerivedFrom.from_json(section.get("derived_from")), raw=_plain(section))

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "QuantizationRecord | None":
        """None when the manifest describes no int8 graph."""
        if str(manifest.get("precision") or "") != "int8":
            return None
        return cls.from_json(_section(manifest, "quantization"))

    def to_json(self) -> dict[str, Any]:
        return _plain(self.raw or {})


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
        return cls(path=data["path"], artifact=_text(data.get("artifact")) or Path(data["path"]).name,
                   sha256=_text(data.get("sha256")), bytes=_int(data.get("bytes")),
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
class _Manifest:
    """What ONNX and engine manifests share. ``raw`` is the JSON as read: ``to_json`` starts from it
    (sections not typed here pass through) and writes the typed fields over it."""

    model: ModelRecord
    artifact: str | None  # the file the manifest describes
    precision: str  # fp32, fp16 (mixed) or int8
    inputs: tuple[TensorRecord, ...]
    outputs: tuple[TensorRecord, ...]
    quantization: QuantizationRecord | None  # int8 graphs (an engine built from one copies it)
    fp16_conversion: Mapping[str, Any] | None  # how the fp16 graph was made (fp16 ONNX; engines built from it)
    raw: Mapping[str, Any]

    SCHEMA: ClassVar[str] = ""
    KIND: ClassVar[str] = ""

    @staticmethod
    def _common(data: Mapping[str, Any]) -> dict[str, Any]:
        fp16 = data.get("fp16_conversion")
        return dict(model=ModelRecord.from_json(data), artifact=_text(data.get("artifact")),
                    precision=str(data.get("precision") or "fp32"),
                    inputs=TensorRecord.all_from(data.get("inputs")), outputs=TensorRecord.all_from(data.get("outputs")),
                    quantization=QuantizationRecord.from_manifest(data),
                    fp16_conversion=_plain(fp16) if isinstance(fp16, Mapping) else None, raw=_plain(data))

    @property
    def schema(self) -> str | None:
        """The schema the file was written with (None: written before schemas, read as the current one)."""
        return _text(self.raw.get("schema"))

    @property
    def token_output_names(self) -> tuple[str, ...]:
        """The kept-token outputs the graph declares (``tokens_stage1`` …), in order."""
        return tuple(t.name for t in self.outputs if t.is_token_output)

    def with_changes(self, **changes: Any) -> "_Manifest":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = _plain(self.raw)
        data.update(schema=self.SCHEMA, kind=self.KIND, artifact=self.artifact)
        data.update(self.model.to_json())
        data.update(precision=self.precision, inputs=[t.to_json() for t in self.inputs],
                    outputs=[t.to_json() for t in self.outputs])
        for name, value in (("quantization", self.quantization), ("fp16_conversion", self.fp16_conversion)):
            if value is None:
                if isinstance(data.get(name), Mapping):  # derived without it: drop what the source had
                    data.pop(name)
            else:
                data[name] = value.to_json() if hasattr(value, "to_json") else _plain(value)
        return data


@dataclass(frozen=True)
class OnnxManifest(_Manifest):
    """An ONNX manifest (``dvit export``'s layout; ``dvit quantize`` and the fp16 conversion derive from it)."""

    opset: int | None
    sha256: str | None
    bytes: int | None
    external_data: tuple[str, ...]
    external_data_sha256: Mapping[str, str]
    derived_from: DerivedFrom | None  # quantize: inside ``quantization``; fp16: top level

    SCHEMA: ClassVar[str] = ONNX_SCHEMA
    KIND: ClassVar[str] = "onnx"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "OnnxManifest":
        record = _section(data, "onnx")
        quant = _section(data, "quantization")
        digests = record.get("external_data_sha256")
        return cls(
            **cls._common(data),
            opset=_int(data.get("opset")),
            sha256=_text(record.get("sha256")),
            bytes=_int(record.get("bytes")),
            external_data=tuple(str(f) for f in record.get("external_data") or []),
            external_data_sha256={str(k): str(v) for k, v in digests.items()} if isinstance(digests, Mapping) else {},
            derived_from=DerivedFrom.from_json(quant.get("derived_from") or data.get("derived_from")),
        )

    @property
    def kind(self) -> str:
        """What the manifest says it describes: ``onnx``, or a foreign kind a reader must refuse."""
        return str(self.raw.get("kind") or "onnx")

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["kind"] = self.kind
        data["opset"] = self.opset
        data["onnx"] = {**_plain(_section(self.raw, "onnx")), "sha256": self.sha256, "bytes": self.bytes,
                        "external_data": list(self.external_data)}
        # The typed digests win over the section read (a derived graph has none of its source's files).
        if self.external_data_sha256 or "external_data_sha256" in data["onnx"]:
            data["onnx"]["external_data_sha256"] = dict(self.external_data_sha256)
        if self.derived_from is not None and self.quantization is None:
            data["derived_from"] = self.derived_from.to_json()
        return data


@dataclass(frozen=True)
class EngineManifest(_Manifest):
    """An engine manifest (``dvit build``'s layout): the model, how it was built, what it may run on."""

    tensorrt: str | None  # the builder's version
    trt_major: int | None
    flavour: str  # "tensorrt" (TensorRT 10/11) or "rtx" (TensorRT-RTX)
    gpu: str | None
    compute_capability: str | None  # "8.7" (None: built ahead of time without a GPU)
    platform: str | None
    rtx_compute_capabilities: tuple[str, ...]  # what a TensorRT-RTX engine covers (empty for TensorRT)
    version_compatible: bool
    hardware_compat: str | None
    int8_fp16_fallback: bool
    sha256: str | None
    bytes: int | None
    onnx_sha256: str | None
    onnx_path: str | None
    onnx_manifest: str | None
    profiles: tuple[ProfileRecord, ...]
    io: tuple[TensorRecord, ...]
    product: str = "TensorRT"  # what messages call the builder ("TensorRT-RTX")
    strongly_typed: bool = False
    rtx_source: str | None = None  # where the covered compute capabilities came from (TensorRT-RTX)
    runtime_cache: str | None = None  # the file a TensorRT-RTX engine keeps its JIT results in
    inspector: str | None = None  # the engine inspector's layer JSON beside the engine, if written

    SCHEMA: ClassVar[str] = ENGINE_SCHEMA
    KIND: ClassVar[str] = "tensorrt-engine"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "EngineManifest":
        tensorrt, gpu, engine, source = (_section(data, n) for n in ("tensorrt", "gpu", "engine", "source_onnx"))
        builder, rtx = _section(data, "builder"), _section(data, "rtx")
        cc = gpu.get("compute_capability")
        flavour = _text(tensorrt.get("flavour")) or ("rtx" if rtx else "tensorrt")
        return cls(
            **cls._common(data),
            tensorrt=_text(tensorrt.get("version")),
            trt_major=_int(tensorrt.get("major")),
            flavour=flavour,
            gpu=_text(gpu.get("name")),
            compute_capability=".".join(str(v) for v in cc) if isinstance(cc, (list, tuple)) else _text(cc),
            platform=_text(gpu.get("platform")),
            rtx_compute_capabilities=tuple(str(c) for c in rtx.get("compute_capabilities") or ()),
            version_compatible=builder.get("version_compatible") is True,
            hardware_compat=_text(builder.get("hardware_compat")),
            int8_fp16_fallback=builder.get("int8_fp16_fallback") is True,
            sha256=_text(engine.get("sha256")),
            bytes=_int(engine.get("bytes")),
            onnx_sha256=_text(source.get("sha256")),
            onnx_path=_text(source.get("path")),
            onnx_manifest=_text(source.get("manifest")),
            profiles=tuple(ProfileRecord.from_json(p) for p in data.get("profiles") or [] if isinstance(p, Mapping)),
            io=TensorRecord.all_from(data.get("io")),
            product=_text(tensorrt.get("product")) or ("TensorRT-RTX" if flavour == "rtx" else "TensorRT"),
            strongly_typed=tensorrt.get("strongly_typed") is True,
            rtx_source=_text(rtx.get("source")),
            runtime_cache=_text(rtx.get("runtime_cache")),
            inspector=_text(data.get("inspector")),
        )

    @property
    def compute_capability_pair(self) -> tuple[int, ...]:
        """The build GPU's compute capability as numbers, (8, 7); () when not recorded."""
        parts = (self.compute_capability or "").split(".")
        return tuple(int(v) for v in parts) if all(v.isdigit() for v in parts) else ()

    @property
    def is_rtx(self) -> bool:
        return self.flavour == "rtx"

    @property
    def rtx_covers(self) -> str:
        """The compute capabilities a TensorRT-RTX engine covers, for messages ("8.6, 8.9" or "?")."""
        return ", ".join(self.rtx_compute_capabilities) or "?"

    def profile(self, name: str | None) -> ProfileRecord | None:
        """The optimization profile of input ``name`` (None when the engine has none for it); the first
        profile's for a ladder engine (``ladder`` has them all)."""
        return next((p for p in self.profiles if name is not None and p.name == name), None)

    @property
    def profile_count(self) -> int:
        """How many optimization profiles the engine was built with (1 unless it is a ladder)."""
        return len({p.profile for p in self.profiles}) or 1

    def rung_for(self, *, keep_ratio: float | None = None, counts: Any = None) -> LadderRung:
        """The rung (optimization profile) of this ladder engine that serves ``keep_ratio`` (or ``counts``);
        one BadInput line naming the rungs for anything else."""
        rungs = self.ladder
        names = ", ".join(f"{r.keep_ratio:g}" for r in rungs)
        if not rungs:
            raise BadInput("not a --keep-ladder engine")
        if keep_ratio is not None:
            found = next((r for r in rungs if abs(r.keep_ratio - float(keep_ratio)) <= RATIO_TOLERANCE), None)
            if found is None:
                raise BadInput(f"keep ratio {float(keep_ratio):g} is not on this engine's ladder; its rungs are ρ "
                               f"{names} (rebuild with --keep-ladder to add one)")
            return found
        wanted = tuple(int(c) for c in counts) if counts is not None else ()
        found = next((r for r in rungs if r.counts == wanted), None)
        if found is None:
            raise BadInput(f"keep counts {list(wanted)} are on no rung of this engine's ladder (ρ {names}: "
                           + "; ".join(f"{list(r.counts)}" for r in rungs) + ")")
        return found

    @property
    def ladder(self) -> tuple[LadderRung, ...]:
        """The rungs of a ``--keep-ladder`` engine, by ascending ρ (empty for any other engine):
        the pinned values of each profile's keep-count input."""
        keep = (self.model.keep_input or {}).get("name")
        rungs = [LadderRung(p.profile, p.keep_ratio, p.min) for p in self.profiles
                 if p.kind == "values" and p.name == keep and p.keep_ratio is not None and p.pinned]
        return tuple(sorted(rungs, key=lambda r: r.keep_ratio))

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["engine"] = {**_plain(_section(self.raw, "engine")), "sha256": self.sha256, "bytes": self.bytes}
        data["profiles"] = [p.to_json() for p in self.profiles]
        data["io"] = [t.to_json() for t in self.io]
        return data


AnyManifest = Union[OnnxManifest, EngineManifest]


def manifest_from_json(data: Mapping[str, Any], artifact: str | os.PathLike) -> AnyManifest:
    """The typed manifest of ``artifact`` (an engine's by its suffix, else an ONNX's)."""
    if Path(artifact).suffix in ENGINE_SUFFIXES:
        return EngineManifest.from_json(data)
    return OnnxManifest.from_json(data)
