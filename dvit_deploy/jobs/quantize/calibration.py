"""Calibration and check inputs: an image folder (the model's timm preprocessing), generated scenes, noise.

Real photos are the right calibration data. Without them, ``generated_scenes`` draws seeded
synthetic pictures — a colour gradient with overlapping rectangles, ellipses and stripes, some
texture and noise — normalised like photos. Their activation ranges are closer to a photo's than
standard-normal noise is (noise has no spatial structure, so attention and MLP activations look
nothing like real ones), and they need no download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ...helpers.errors import BadInput

SCENES_SEED = 20261129
NOISE_SEED = 20240607


def _normalisation(data_config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, int, int]:
    from ..data import normalize_data_config

    cfg = normalize_data_config(data_config)
    channels, height, width = cfg["input_size"]
    mean = np.asarray(cfg["mean"], np.float32).reshape(-1, 1, 1)
    std = np.asarray(cfg["std"], np.float32).reshape(-1, 1, 1)
    if len(mean) != channels:
        mean = np.full((channels, 1, 1), float(mean.mean()), np.float32)
        std = np.full((channels, 1, 1), float(std.mean()), np.float32)
    return mean, std, height, width


def scene(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    """One synthetic picture, (C, H, W) float32 in [0, 1]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= max(height - 1, 1)
    xx /= max(width - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    c0, c1 = rng.uniform(0, 1, (2, channels, 1, 1)).astype(np.float32)
    img = c0 * (1 - ramp) + c1 * ramp
    for _ in range(int(rng.integers(3, 9))):
        colour = rng.uniform(0, 1, (channels, 1, 1)).astype(np.float32)
        cy, cx = rng.uniform(0, 1, 2)
        ry, rx = rng.uniform(0.05, 0.35, 2)
        kind = rng.integers(0, 3)
        if kind == 0:  # rectangle
            mask = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
        elif kind == 1:  # ellipse
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
        else:  # stripes inside a disc
            period = rng.uniform(0.02, 0.1)
            theta = rng.uniform(0, np.pi)
            stripes = np.sin((np.cos(theta) * xx + np.sin(theta) * yy) * 2 * np.pi / period) > 0
            mask = stripes & (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0)
        alpha = rng.uniform(0.6, 1.0)
        img = np.where(mask[None], alpha * colour + (1 - alpha) * img, img)
    texture = rng.normal(0, rng.uniform(0.01, 0.08), (channels, height, width)).astype(np.float32)
    return np.clip(img + texture, 0.0, 1.0)


def generated_scenes(data_config: Mapping[str, Any], count: int, seed: int = SCENES_SEED) -> np.ndarray:
    """``count`` seeded synthetic pictures, normalised with the model's mean/std: (N, C, H, W) float32."""
    mean, std, height, width = _normalisation(data_config)
    rng = np.random.default_rng(seed)
    out = np.empty((count, len(mean), height, width), np.float32)
    for i in range(count):
        out[i] = (scene(rng, height, width, len(mean)) - mean) / std
    return out


def seeded_noise(data_config: Mapping[str, Any], count: int, seed: int = NOISE_SEED) -> np.ndarray:
    """Standard-normal inputs (what ``dvit validate`` uses by default)."""
    mean, _, height, width = _normalisation(data_config)
    return np.random.default_rng(seed).standard_normal((count, len(mean), height, width), dtype=np.float32)


def mixed_inputs(data_config: Mapping[str, Any], count: int, *, scenes_seed: int = SCENES_SEED,
                 noise_seed: int = NOISE_SEED) -> np.ndarray:
    """Half generated scenes, half seeded noise (scenes first)."""
    scenes = count - count // 2
    return np.concatenate([generated_scenes(data_config, scenes, scenes_seed),
                           seeded_noise(data_config, count // 2, noise_seed)])


class CalibrationSource:
    """Where calibration batches come from: an image folder or generated scenes.

    Images are preprocessed batch by batch, so a large folder is never held in memory at once.
    """

    def __init__(self, data_config: Mapping[str, Any], samples: int, *, folder: Path | None = None,
                 seed: int = SCENES_SEED) -> None:
        if samples < 1:
            raise BadInput(f"--calib-samples must be ≥ 1, got {samples}")
        self.data_config = dict(data_config)
        self.seed = seed
        self.folder = None if folder is None else Path(folder).expanduser()
        self.paths: list[Path] = []
        if self.folder is not None:
            from ..data import list_images

            found = list_images(self.folder, recursive=True)
            self.paths = found[:samples]
            self.samples = len(self.paths)
        else:
            self.samples = samples

    def describe(self) -> dict[str, Any]:
        if self.folder is not None:
            return {"source": "image folder", "path": str(self.folder), "samples": self.samples,
                    "preprocessing": "the model's timm data config (resize, centre crop, normalise)"}
        return {"source": "generated scenes", "seed": self.seed, "samples": self.samples,
                "note": "synthetic pictures (dvit_deploy.jobs.quantize.calibration.generated_scenes); "
                        "calibrate on real images with --calib DIR for a trained checkpoint"}

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        if self.folder is not None:
            from ..data import preprocess_images

            for start in range(0, self.samples, batch):
                yield preprocess_images(self.paths[start:start + batch], self.data_config)
        else:
            rng = np.random.default_rng(self.seed)
            mean, std, height, width = _normalisation(self.data_config)
            for start in range(0, self.samples, batch):
                n = min(batch, self.samples - start)
                yield np.stack([(scene(rng, height, width, len(mean)) - mean) / std for _ in range(n)]).astype(np.float32)


def data_reader(source: CalibrationSource, input_name: str, batch: int, extra_feed: dict[str, np.ndarray],
                on_batch: Callable[[int], None] | None = None):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``source``."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._iter = source.batches(batch)

        def get_next(self):
            chunk = next(self._iter, None)
            if chunk is None:
                return None
            if on_batch is not None:
                on_batch(len(chunk))
            return {input_name: chunk, **extra_feed}

        def rewind(self) -> None:
            self._iter = source.batches(batch)

    return Reader()
