"""Will a run fit in memory? An estimate of what it needs, against what this machine (or its cgroup) has.

``profile --batch 4000`` on DeiT-S needs ~30 GB of activations: past the available memory the kernel's
OOM killer ends the process with no message at all. So commands estimate first and refuse in one line.

The model is deliberately conservative (it over-estimates): per image, every tensor alive in the widest
transformer block (the input image, the residual stream and its normalised copy, q/k/v, the attention
scores and probabilities of every head, the MLP's hidden layer) in float32, times a safety factor for
the runtime's own buffers; plus the weights as many times as a backend holds them (the file read, its
arena or compiled copy), plus the interpreter and libraries. Only the CPU is checked: a GPU run's memory
is the device's, which the runtime reports itself.
"""

from __future__ import annotations

from types import MappingProxyType

from dataclasses import dataclass
from pathlib import Path

from ..artifact.manifest import ModelRecord
from ..artifact.store import Artifact
from ..helpers.errors import BadInput

FLOAT32 = 4
ACTIVATION_SAFETY = 1.5  # runtime scratch buffers, fusion temporaries, allocator rounding
BASE_BYTES = 768 << 20  # Python, torch/ORT/OpenVINO libraries and their thread pools
WEIGHT_COPIES = MappingProxyType({"onnxruntime": 2, "openvino": 3, "torch": 2, "tensorrt": 2})  # file read + runtime copy (+ compiled)
DEFAULT_WEIGHT_COPIES = 3


@dataclass(frozen=True)
class MemoryNeed:
    """What one model needs at one batch size on one backend (bytes)."""

    weights: int
    per_image: int
    batch: int

    @property
    def total(self) -> int:
        return self.weights + self.per_image * self.batch


def per_image_bytes(record: ModelRecord) -> int:
    """Float32 activations alive at once in the widest block, for one image (with the safety factor)."""
    config = record.config
    dim = int(config.get("embed_dim", 384))
    heads = int(config.get("num_heads", 6))
    mlp = float(config.get("mlp_ratio", 4.0))
    classes = int(config.get("num_classes", 1000))
    tokens = record.num_patches + 1  # the class token; pruning only lowers this, so the dense count is the bound
    channels, height, width = record.input_shape
    floats = (channels * height * width  # the image, and its patch embedding (below: the stream)
              + tokens * dim * (2 + 3 + mlp)  # residual stream + normalised copy, q/k/v, MLP hidden
              + 2 * heads * tokens * tokens  # attention scores and their softmax
              + classes)
    return int(floats * FLOAT32 * ACTIVATION_SAFETY)


def weight_bytes(artifact: Artifact, backend: str) -> int:
    """The model file(s) as many times as the backend holds them (an ONNX's recorded size, else the file's)."""
    onnx = artifact.onnx
    size = onnx.bytes if onnx is not None else None
    if size is None:
        try:
            size = artifact.path.stat().st_size
        except OSError:
            size = 0
    for name in onnx.external_data if onnx is not None else ():
        try:
            size += (artifact.path.parent / name).stat().st_size
        except OSError:
            pass
    return int(size) * WEIGHT_COPIES.get(backend, DEFAULT_WEIGHT_COPIES)


def available_bytes() -> int | None:
    """Memory this process may still use: MemAvailable, or the cgroup's limit minus its usage if lower."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max":
                continue
            limit, usage = int(limit_text), int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit < (1 << 60):  # cgroup v1 writes a huge number for "no limit"
            candidates.append(max(limit - usage, 0))
    return min(candidates) if candidates else None


def _gb(n: float) -> str:
    return f"{n / (1 << 30):.1f} GB"


def check_fits(needs: list[tuple[str, MemoryNeed]], *, what: str, option: str, device: str = "cpu") -> None:
    """Refuse (one BadInput line) a CPU run whose estimated memory exceeds what is available.

    ``needs``: (artifact name, need) for everything held at once; the largest batch is named in the message.
    """
    if not needs or not str(device).startswith("cpu"):
        return
    available = available_bytes()
    if available is None:
        return
    total = BASE_BYTES + sum(need.total for _, need in needs)
    if total <= available:
        return
    name, worst = max(needs, key=lambda item: item[1].total)
    others = total - worst.total
    fits = max(0, (available - others) // max(worst.per_image, 1))
    advice = (f"use {option} {fits} or less" if fits >= 1 else "free memory or run on a larger machine")
    raise BadInput(f"{what} needs about {_gb(total)} of memory ({name} at {option} {worst.batch}: "
                   f"{_gb(worst.per_image * worst.batch)} of activations, estimated) but {_gb(available)} is "
                   f"available here: it would be killed by the out-of-memory killer; {advice}")
