"""What a manifest is: the schemas dvit reads, the field check, and the typed ONNX and engine manifests.

Checking an artifact against the sha256 its manifest records (the verification policy) is in
``verify``; the typed records a manifest is made of (model, tensors, profiles, quantization,
``derived_from``) are in ``records`` and importable from here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Union

from ..helpers.errors import BadInput
from .records import (  # noqa: F401 - re-exported: readers import the records from artifact.manifest
    DEFAULT_IMG_SIZE,
    DEFAULT_IN_CHANS,
    DEFAULT_NUM_PATCHES,
    DEFAULT_PATCH_SIZE,
    RATIO_TOLERANCE,
    DerivedFrom,
    LadderRung,
    ModelRecord,
    ProfileRecord,
    QuantizationRecord,
    TensorRecord,
    _int,
    _plain,
    _section,
    _text,
)

ENGINE_SUFFIXES = (".engine", ".plan")

# --------------------------------------------------------------------------------------------
# Typed views of the manifests dvit writes (read in one place; each default lives here once)

ONNX_SCHEMA = "dvit-deploy/onnx-manifest/1"
ENGINE_SCHEMA = "dvit-deploy/engine-manifest/1"
KNOWN_SCHEMAS = (ONNX_SCHEMA, ENGINE_SCHEMA)

# The fields every reader relies on, with the JSON types they must have (None allowed where listed).
_INT, _BOOL, _STR, _OBJ, _LIST, _NUM = (int,), (bool,), (str,), (dict,), (list,), (int, float)
_FIELD_TYPES: Mapping[str, tuple[tuple[type, ...], bool]] = MappingProxyType({
    "variant": (_STR, True), "artifact": (_STR, True), "kind": (_STR, True), "precision": (_STR, True),
    "config": (_OBJ, True), "data_config": (_OBJ, True), "onnx": (_OBJ, True), "engine": (_OBJ, True),
    "checkpoint": (_OBJ, True), "quantization": (_OBJ, True), "source_onnx": (_OBJ, True),
    "keep_counts": (_LIST, True), "inputs": (_LIST, True), "outputs": (_LIST, True), "io": (_LIST, True),
    "profiles": (_LIST, True), "num_patches": (_INT, True), "batch": (_INT, True), "opset": (_INT, True),
    "keep_ratio": (_NUM, True), "dense": (_BOOL, True), "dynamic_keep": (_BOOL, True),
    "token_outputs": (_BOOL, True), "dynamic_batch": (_BOOL, True),
})
_JSON_NAMES = MappingProxyType({int: "an integer", bool: "true/false", str: "a string", dict: "an object",
                                list: "a list", float: "a number"})


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
