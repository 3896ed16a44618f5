"""The typed records inside a manifest: tensors, optimization profiles, ladder rungs, the model, the
quantization section and the ``derived_from`` shape. ``manifest`` assembles them into ONNX and engine
manifests (and re-exports them, so ``artifact.manifest`` stays the one name readers import from).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..helpers.errors import BadInput
from .keep import GEOMETRIC, KeepSchedule, family_splits_tokens, schedule_kind_of

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

    def require_variant(self, purpose: str) -> str:
        """The recorded variant name, or one BadInput line saying ``purpose`` needs it."""
        if self.variant is None:
            raise BadInput(f"the manifest records no model (no 'variant'): cannot {purpose}")
        return self.variant

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
