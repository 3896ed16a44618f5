"""What one served model is: artifact, backend, batching, the keep-ratio policy, and its Triton config.

A ``ServeSpec`` is decided once, in the ``dvit serve`` process (manifest read and sha256 checked
there), written as JSON into the model repository, and read back by the Python-backend model
inside ``tritonserver`` (``serve.backend``), so both sides agree on names, shapes and limits.

Served tensors (KServe v2 names):

* input ``images`` FP32 ``[B, C, H, W]`` (preprocessed, as the export takes them), or
* input ``image_bytes`` BYTES ``[B, 1]``: encoded JPEG/PNG/WebP files, decoded and preprocessed in the
  server with the model's ``data_config`` (``serve.decode``); a request sends one of the two (both are
  ``optional: true`` in the config; offered when the manifest records the preprocessing);
* input ``keep_ratio`` FP32 ``[B, 1]``, optional, only for ``--dynamic-keep`` artifacts;
* output ``logits`` FP32 ``[B, classes]``;
* output ``kept_patch_ids_stage{k}`` INT64 ``[B, K_k]``: the original patch ids each stage kept
  (when the runner reports kept tokens; ``-1`` dims under dynamic keep, since K follows ρ);
* output ``keep_ratio`` FP32 ``[B, 1]``: the ρ each response was computed at (pruned models).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...artifact.manifest import AnyManifest, EngineManifest
from ...artifact.names import INPUT_NAME, LOGITS_NAME, keep_counts_for
from ...helpers.errors import BadInput
from .decode import IMAGE_BYTES_NAME

if TYPE_CHECKING:
    from ...artifact.store import Artifact

SPEC_FILE = "dvit_serve.json"
SPEC_SCHEMA = "dvit-deploy/serve-spec/1"
KEEP_RATIO_NAME = "keep_ratio"
KEPT_IDS_PREFIX = "kept_patch_ids_stage"
DEFAULT_DYNAMIC_MAX_BATCH = 32  # a dynamic-batch ONNX allows 4096; a server needs a bound (same as package --triton)
DEFAULT_KEEP_RANGE = (0.5, 0.9)  # same default as `dvit build --keep-range`
DEFAULT_QUEUE_DELAY_US = 100
LADDER_TOLERANCE = 1e-6  # a request's ρ is on a ladder rung when this close (as EngineManifest.rung_for)


def kept_ids_name(stage: int) -> str:
    return f"{KEPT_IDS_PREFIX}{stage}"


def model_name_for(artifact: Path) -> str:
    """Triton model names are folder names: letters, digits, '-', '_' (the artifact's stem otherwise)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", artifact.stem)


@dataclass
class ServeSpec:
    artifact: str  # absolute path
    backend: str
    precision: str
    name: str
    max_batch: int
    queue_delay_us: int
    dynamic_batching: bool
    image_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    fixed_batch: int | None  # the artifact's own fixed batch (requests are padded to it), or None
    num_stages: int
    num_patches: int
    dense: bool
    keep_ratio: float | None  # the export's ρ (the default per request under dynamic keep)
    dynamic_keep: bool
    keep_range: tuple[float, float] | None  # allowed per-request ρ (dynamic keep only)
    token_outputs: bool  # kept_patch_ids_stage{k} outputs are served
    verify: bool = True  # the backend re-checks the sha256 when it loads
    slo_ms: float | None = None  # adaptive ρ (dynamic keep): hold this p99 objective (serve.controller)
    slo_step: float = 0.05  # the ρ grid the controller chooses from, over keep_range (few distinct kept counts)
    queue_timeout_ms: float | None = None  # the queue bound: a request that would wait longer is refused
    # Where the backend reads Triton's queue length (``dvit serve`` sets it): under --slo-ms the backend then
    # enforces the bound itself (serve.shedding) and Triton's queue policy, which stops batch prefetching, is off.
    metrics_address: str | None = None
    simulated_service: dict[str, Any] | None = None  # test-only: paced runner (serve.paced.SimulatedService)
    trace_path: str | None = None  # diagnostics: one JSON line per Triton batch here (serve.handler.BatchTrace)
    runner_options: dict[str, Any] = field(default_factory=dict)
    # A --keep-ladder engine: the ρ it may run (its rungs inside keep_range), ascending; None: any ρ in the range.
    # The adaptive controller moves ρ on this grid (it takes the grid as a parameter).
    rungs: tuple[float, ...] | None = None
    data_config: dict[str, Any] | None = None  # the model's preprocessing: set = the image_bytes input is served

    # -- keep policy -------------------------------------------------------------------------
    def counts_for(self, keep_ratio: float) -> tuple[int, ...]:
        """Per-stage kept counts for a request's ρ, or BadInput with the one-line reason."""
        if not self.dynamic_keep:
            raise BadInput(f"{KEEP_RATIO_NAME} is accepted only by --dynamic-keep models")
        lo, hi = self.keep_range or DEFAULT_KEEP_RANGE
        if not (lo - 1e-9 <= keep_ratio <= hi + 1e-9):  # NaN fails too
            raise BadInput(f"{KEEP_RATIO_NAME} {keep_ratio:g} is outside this model's range [{lo:g}, {hi:g}]")
        if self.rungs and not any(abs(keep_ratio - r) <= LADDER_TOLERANCE for r in self.rungs):
            raise BadInput(f"{KEEP_RATIO_NAME} {keep_ratio:g} is not on this engine's ladder; it serves ρ "
                           f"{', '.join(f'{r:g}' for r in self.rungs)}")
        return tuple(int(c) for c in keep_counts_for(float(keep_ratio), self.num_stages, self.num_patches))

    # -- files -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"schema": SPEC_SCHEMA, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ServeSpec":
        if data.get("schema") != SPEC_SCHEMA:
            raise BadInput(f"not a dvit serve spec (schema {data.get('schema')!r})")
        fields = {k: v for k, v in data.items() if k != "schema"}
        fields["image_shape"] = tuple(fields["image_shape"])
        for key in ("keep_range", "rungs"):
            if fields.get(key) is not None:
                fields[key] = tuple(float(v) for v in fields[key])
        return cls(**fields)

    def write(self, folder: Path) -> Path:
        path = folder / SPEC_FILE
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, folder: Path) -> "ServeSpec":
        return cls.from_json(json.loads((Path(folder) / SPEC_FILE).read_text()))

    # -- Triton ------------------------------------------------------------------------------
    @property
    def sheds(self) -> bool:
        """The backend enforces the queue bound (--slo-ms under ``dvit serve``): serve.shedding."""
        return bool(self.queue_timeout_ms and self.slo_ms and self.dynamic_keep and self.metrics_address)

    @property
    def triton_queue_policy(self) -> bool:
        """Triton's queue policy enforces the bound (no --slo-ms, or a repository for another server)."""
        return bool(self.queue_timeout_ms) and not self.sheds

    def outputs(self) -> list[tuple[str, str, list[int]]]:
        """(name, Triton dtype, dims without the batch) of every served output."""
        found = [(LOGITS_NAME, "TYPE_FP32", [self.num_classes])]
        if self.token_outputs:
            counts = [None] * self.num_stages if self.dynamic_keep else list(self._fixed_counts())
            found += [(kept_ids_name(s + 1), "TYPE_INT64", [c if c else -1]) for s, c in enumerate(counts)]
        if not self.dense:
            found.append((KEEP_RATIO_NAME, "TYPE_FP32", [1]))
        return found

    def inputs(self) -> list[tuple[str, str, list[int], bool]]:
        """(name, Triton dtype, dims without the batch, optional)."""
        found = [(INPUT_NAME, "TYPE_FP32", list(self.image_shape), self.data_config is not None)]
        if self.data_config is not None:  # either input may be sent: both optional, the handler wants one
            found.append((IMAGE_BYTES_NAME, "TYPE_STRING", [1], True))
        if self.dynamic_keep:
            found.append((KEEP_RATIO_NAME, "TYPE_FP32", [1], True))
        return found

    def _fixed_counts(self) -> tuple[int, ...]:
        return tuple(int(c) for c in keep_counts_for(float(self.keep_ratio), self.num_stages, self.num_patches)) \
            if self.keep_ratio else ()

    def triton_config(self) -> str:
        """``config.pbtxt`` for the Python backend; Triton checks dtype, shape and batch size against it."""
        def block(name: str, dtype: str, dims: list[int], optional: bool = False) -> list[str]:
            lines = ["  {", f'    name: "{name}"', f"    data_type: {dtype}",
                     f"    dims: [ {', '.join(str(d) for d in dims)} ]"]
            if optional:
                lines.append("    optional: true")
            return lines + ["  }"]

        def joined(blocks: list[list[str]]) -> list[str]:
            lines: list[str] = []
            for i, b in enumerate(blocks):
                lines += b[:-1] + [b[-1] + ("," if i < len(blocks) - 1 else "")]
            return lines

        lines = [f'name: "{self.name}"', 'backend: "python"', f"max_batch_size: {self.max_batch}", "input ["]
        lines += joined([block(*i) for i in self.inputs()]) + ["]", "output ["]
        lines += joined([block(*o) for o in self.outputs()]) + ["]"]
        if self.dynamic_batching and self.max_batch > 1:
            lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {self.queue_delay_us}"]
            if self.triton_queue_policy:  # a request still queued after this is rejected (UNAVAILABLE), not served late
                lines += ["  default_queue_policy {", "    timeout_action: REJECT",
                          f"    default_timeout_microseconds: {int(round(self.queue_timeout_ms * 1e3))}",
                          "    allow_timeout_override: false", "  }"]
            lines += ["}"]
        # One instance: the runner already uses every core (intra-op threads); two would fight over them.
        lines += ["instance_group [", "  {", "    count: 1", "    kind: KIND_CPU", "  }", "]"]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ServeOptions:
    """``dvit serve``'s flags that decide what is served (the server's own are ``server.ServeSettings``).

    ``backend``/``precision`` None: the artifact's own (``server.prepare`` decides them); ``max_batch`` None:
    the artifact's limit; ``keep_range``, ``slo_ms``: ``--dynamic-keep`` artifacts only; ``queue_timeout_ms``:
    Triton's queue policy; ``simulate_service``: test only, ``CALL_MS,RHO:MS,…`` (``serve.paced``);
    ``trace_batches``: a file for the per-batch trace (``serve.handler.BatchTrace``).
    Checked against the artifact by ``make_spec``, in the order the command always checked them."""

    backend: str | None = None
    precision: str | None = None
    name: str | None = None
    max_batch: int | None = None
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    dynamic_batching: bool = True
    keep_range: tuple[float, float] | None = None
    slo_ms: float | None = None
    queue_timeout_ms: float | None = None
    simulate_service: str | None = None
    trace_batches: str | None = None  # diagnostics (hidden flag): a JSON-lines file, one line per Triton batch

    def __post_init__(self) -> None:
        if self.keep_range is not None:
            object.__setattr__(self, "keep_range", tuple(self.keep_range))


def make_spec(artifact: "Artifact", options: ServeOptions, *, token_outputs: bool = True, verify: bool = True,
              runner_options: dict[str, Any] | None = None) -> ServeSpec:
    """The spec for the opened ``artifact`` (its manifest read and checked), with every limit decided.

    ``options.backend`` and ``options.precision`` must be decided (``server.prepare`` does); ``verify``: the
    backend re-checks the sha256 when it loads; ``runner_options``: the runner's keyword options."""
    if options.backend is None or options.precision is None:
        raise TypeError("make_spec needs the backend and precision decided (see serve.server.prepare)")
    simulated_service = None
    if options.simulate_service:
        from .paced import SimulatedService

        simulated_service = SimulatedService.parse(options.simulate_service).to_json()
    max_batch, queue_delay_us, keep_range = options.max_batch, options.queue_delay_us, options.keep_range
    slo_ms, name = options.slo_ms, options.name
    record = artifact.model
    own_limit = _own_batch_limit(artifact.manifest)
    if max_batch is None:
        max_batch = own_limit
    elif max_batch < 1:
        raise BadInput(f"--max-batch must be ≥ 1, got {max_batch}")
    elif record.batch and max_batch != record.batch:
        raise BadInput(f"{artifact.name} has a fixed batch of {record.batch}: --max-batch must be {record.batch}")
    elif max_batch > own_limit:
        raise BadInput(f"--max-batch {max_batch} exceeds what {artifact.name} accepts ({own_limit})")
    if queue_delay_us < 0:
        raise BadInput(f"--max-queue-delay-us must be ≥ 0, got {queue_delay_us}")
    dynamic_keep = record.dynamic_keep
    if keep_range is not None and not dynamic_keep:
        raise BadInput(f"--keep-range needs a --dynamic-keep artifact; {artifact.name} keeps a fixed schedule")
    rungs = _ladder(artifact.manifest)
    if dynamic_keep:
        # a ladder engine's default range is its span (the rungs it has), else the engine's profile range
        span = (rungs[0], rungs[-1]) if rungs else _engine_keep_range(artifact.manifest)
        if keep_range is None and span is None and record.keep_ratio is not None:
            # no range asked for: the default one, widened to hold the export's ρ (its own default)
            keep_range = (min(DEFAULT_KEEP_RANGE[0], record.keep_ratio), max(DEFAULT_KEEP_RANGE[1], record.keep_ratio))
        keep_range = keep_range or span or DEFAULT_KEEP_RANGE
        lo, hi = keep_range
        if not 0.0 < lo <= hi <= 1.0:
            raise BadInput(f"--keep-range must satisfy 0 < low ≤ high ≤ 1, got {lo:g},{hi:g}")
        if rungs:  # a ladder engine runs its rungs only: those inside the range
            rungs = tuple(r for r in rungs if lo - LADDER_TOLERANCE <= r <= hi + LADDER_TOLERANCE)
            if not rungs:
                raise BadInput(f"--keep-range {lo:g},{hi:g} holds no rung of {artifact.name}'s ladder "
                               f"(ρ {', '.join(f'{r:g}' for r in _ladder(artifact.manifest))})")
    if slo_ms is not None and (not dynamic_keep or not slo_ms > 0):
        raise BadInput("--slo-ms needs a --dynamic-keep artifact (ρ is chosen per batch)" if not dynamic_keep
                       else f"--slo-ms must be > 0, got {slo_ms:g}")
    queue_timeout_ms = _queue_timeout(slo_ms, options.queue_timeout_ms, options.dynamic_batching and max_batch > 1)
    name = name or model_name_for(artifact.path)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise BadInput(f"--name '{name}' is not a Triton model name (letters, digits, '-', '_')")
    num_classes = int(record.config.get("num_classes") or _logits_width(artifact.manifest) or 1000)
    keep_ratio = record.keep_ratio
    if rungs and dynamic_keep and not any(keep_ratio is not None and abs(keep_ratio - r) <= LADDER_TOLERANCE
                                          for r in rungs):
        keep_ratio = rungs[-1]  # the export's ρ is no rung: requests without one run at the highest
    elif dynamic_keep and keep_ratio is not None:  # a --keep-range without the export's ρ: its nearest end
        keep_ratio = min(max(float(keep_ratio), keep_range[0]), keep_range[1])
    return ServeSpec(
        artifact=str(artifact.path.resolve()), backend=options.backend, precision=options.precision, name=name,
        max_batch=int(max_batch), queue_delay_us=int(queue_delay_us), dynamic_batching=options.dynamic_batching,
        image_shape=record.input_shape, num_classes=num_classes, fixed_batch=record.batch,
        num_stages=len(record.keep_counts), num_patches=record.num_patches, dense=record.dense,
        keep_ratio=None if keep_ratio is None else float(keep_ratio), dynamic_keep=dynamic_keep,
        keep_range=tuple(keep_range) if dynamic_keep else None,
        token_outputs=token_outputs and not record.dense, verify=verify, runner_options=dict(runner_options or {}),
        slo_ms=None if slo_ms is None else float(slo_ms), queue_timeout_ms=queue_timeout_ms,
        simulated_service=simulated_service,
        trace_path=str(Path(options.trace_batches).resolve()) if options.trace_batches else None,
        rungs=rungs if dynamic_keep and rungs else None, data_config=_served_data_config(record),
    )


def _ladder(manifest: AnyManifest) -> tuple[float, ...]:
    """The rungs (ρ, ascending) of a --keep-ladder engine; () for anything else."""
    return tuple(r.keep_ratio for r in manifest.ladder) if isinstance(manifest, EngineManifest) else ()


def _served_data_config(record: Any) -> dict[str, Any] | None:
    """The preprocessing ``dvit predict`` applies to this model (JSON-ready), or None when the manifest
    records none or it does not make the model's input shape (then only ``images`` is served)."""
    from ..data import data_config_of, normalize_data_config

    try:
        config = normalize_data_config(data_config_of(record))
    except (BadInput, TypeError, ValueError, KeyError):  # no data_config, and a config no variant can be made of
        return None
    if tuple(config["input_size"]) != tuple(record.input_shape):
        return None
    return json.loads(json.dumps(config))


def _queue_timeout(slo_ms: float | None, queue_timeout_ms: float | None, dynamic_batching: bool) -> float | None:
    """Triton's queue timeout (``--queue-timeout-ms``; 0: never). Unset: the objective itself under --slo-ms
    (a request queued that long has missed it; docs/serving.md), else never."""
    if queue_timeout_ms is None:
        return float(slo_ms) if slo_ms and dynamic_batching else None
    if not queue_timeout_ms >= 0:
        raise BadInput(f"--queue-timeout-ms must be ≥ 0, got {queue_timeout_ms:g}")
    if queue_timeout_ms and not dynamic_batching:
        raise BadInput("--queue-timeout-ms needs dynamic batching (Triton's queue policy is part of it)")
    return float(queue_timeout_ms) or None


def _own_batch_limit(manifest: AnyManifest) -> int:
    if manifest.model.batch:
        return manifest.model.batch
    # An engine: its optimization profile's max batch (an ONNX with a dynamic batch: the server's bound).
    profile = manifest.profile(INPUT_NAME) if isinstance(manifest, EngineManifest) else None
    return (profile.max[0] if profile is not None and profile.max else 0) or DEFAULT_DYNAMIC_MAX_BATCH


def _engine_keep_range(manifest: AnyManifest) -> tuple[float, float] | None:
    keep = (manifest.model.keep_input or {}).get("name")
    profile = manifest.profile(keep) if isinstance(manifest, EngineManifest) else None
    if profile is None or not profile.min or not profile.max:
        return None
    patches = manifest.model.num_patches
    # The ρ whose first-stage count lies in the profile; counts_for re-checks all stages at run time.
    return (max(profile.min[0] / patches, 1e-6), min(profile.max[0] / patches, 1.0))


def _logits_width(manifest: AnyManifest) -> int | None:
    for tensor in manifest.outputs:
        if tensor.name == LOGITS_NAME and tensor.shape and isinstance(tensor.shape[-1], int):
            return int(tensor.shape[-1])
    return None
